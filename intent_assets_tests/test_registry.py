"""The promotion gate and the model registry."""

import pytest

from intent_assets.registry import ModelRegistry, RegistryError, promotion_gate


def scores(macro: float, per_intent: dict[str, float] | None = None) -> dict:
    per_intent = per_intent or {"a": macro, "b": macro}
    return {"macro_f1": macro, "accuracy": macro, "micro_f1": macro,
            "per_intent": {k: {"f1": v, "support": 5, "precision": v, "recall": v} for k, v in per_intent.items()}}


def test_gate_without_champion_needs_to_beat_zero_shot():
    assert promotion_gate(scores(0.5), None, scores(0.2), margin=0.01, max_intent_f1_drop=0.1).promote
    refused = promotion_gate(scores(0.2), None, scores(0.2), margin=0.01, max_intent_f1_drop=0.1)
    assert not refused.promote and not refused.checks["beats_zero_shot"]
    assert not promotion_gate(scores(0.9), None, None, margin=0.01, max_intent_f1_drop=0.1).promote


def test_gate_needs_margin_over_champion_and_no_large_intent_drop():
    champion = scores(0.60, {"a": 0.6, "b": 0.6})
    assert promotion_gate(scores(0.62, {"a": 0.62, "b": 0.62}), champion, scores(0.1), margin=0.01, max_intent_f1_drop=0.1).promote
    small = promotion_gate(scores(0.605), champion, scores(0.1), margin=0.01, max_intent_f1_drop=0.1)
    assert not small.promote and not small.checks["beats_champion_by_margin"]
    lopsided = promotion_gate(scores(0.70, {"a": 0.95, "b": 0.45}), champion, scores(0.1), margin=0.01, max_intent_f1_drop=0.1)
    assert not lopsided.promote and not lopsided.checks["no_intent_f1_drop"]
    assert any("(b)" in r for r in lopsided.reasons)


def test_registry_register_decide_rollback(tmp_path):
    registry = ModelRegistry(tmp_path / "registry")
    v1 = registry.register("/m/1", "run1", {"macro_f1": 0.5}, {"instruction_dataset": "x"})
    registry.decide(v1["version"], promotion_gate(scores(0.5), None, scores(0.1), margin=0, max_intent_f1_drop=1))
    v2 = registry.register("/m/2", "run2", {"macro_f1": 0.4}, {})
    registry.decide(v2["version"], promotion_gate(scores(0.4), scores(0.5), scores(0.1), margin=0, max_intent_f1_drop=1))
    assert registry.alias("champion")["version"] == 1 and registry.alias("challenger")["version"] == 2
    assert registry.register("/m/2", "run2", {"macro_f1": 0.41}, {})["version"] == 2  # same run: same version
    registry.rollback(2, "testing")
    assert registry.alias("champion")["model_dir"] == "/m/2"
    assert [h["event"] for h in registry.load()["history"]] == ["promoted", "refused", "rolled back"]
    with pytest.raises(RegistryError, match="version 9"):
        registry.rollback(9)
