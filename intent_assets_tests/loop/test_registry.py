"""The promotion gate and the model registry."""

import pytest

from intent_assets.loop.registry import ModelRegistry, RegistryError, best_baseline, promotion_gate


def scores(macro: float, per_intent: dict[str, float] | None = None) -> dict:
    per_intent = per_intent or {"a": macro, "b": macro}
    return {"macro_f1": macro, "accuracy": macro, "micro_f1": macro,
            "per_intent": {k: {"f1": v, "support": 5, "precision": v, "recall": v} for k, v in per_intent.items()}}


LOW = {"TF-IDF + linear SVM": scores(0.05)}  # baselines every challenger of the older tests beats


def test_gate_without_champion_needs_to_beat_zero_shot():
    assert promotion_gate(scores(0.5), None, scores(0.2), margin=0.01, max_intent_f1_drop=0.1, baselines=LOW).promote
    refused = promotion_gate(scores(0.2), None, scores(0.2), margin=0.01, max_intent_f1_drop=0.1, baselines=LOW)
    assert not refused.promote and not refused.checks["beats_zero_shot"]
    assert not promotion_gate(scores(0.9), None, None, margin=0.01, max_intent_f1_drop=0.1, baselines=LOW).promote


def test_gate_needs_margin_over_champion_and_no_large_intent_drop():
    champion = scores(0.60, {"a": 0.6, "b": 0.6})
    assert promotion_gate(scores(0.62, {"a": 0.62, "b": 0.62}), champion, scores(0.1), margin=0.01, max_intent_f1_drop=0.1, baselines=LOW).promote
    small = promotion_gate(scores(0.605), champion, scores(0.1), margin=0.01, max_intent_f1_drop=0.1, baselines=LOW)
    assert not small.promote and not small.checks["beats_champion_by_margin"]
    lopsided = promotion_gate(scores(0.70, {"a": 0.95, "b": 0.45}), champion, scores(0.1), margin=0.01, max_intent_f1_drop=0.1, baselines=LOW)
    assert not lopsided.promote and not lopsided.checks["no_intent_f1_drop"]
    assert any("(b)" in r for r in lopsided.reasons)


def test_registry_register_decide_rollback(tmp_path):
    registry = ModelRegistry(tmp_path / "registry")
    v1 = registry.register("/m/1", "run1", {"macro_f1": 0.5}, {"instruction_dataset": "x"})
    registry.decide(v1["version"], promotion_gate(scores(0.5), None, scores(0.1), margin=0, max_intent_f1_drop=1, baselines=LOW))
    v2 = registry.register("/m/2", "run2", {"macro_f1": 0.4}, {})
    registry.decide(v2["version"], promotion_gate(scores(0.4), scores(0.5), scores(0.1), margin=0, max_intent_f1_drop=1, baselines=LOW))
    assert registry.alias("champion")["version"] == 1 and registry.alias("challenger")["version"] == 2
    assert registry.register("/m/2", "run2", {"macro_f1": 0.41}, {})["version"] == 2  # same run: same version
    registry.rollback(2, "testing")
    assert registry.alias("champion")["model_dir"] == "/m/2"
    assert [h["event"] for h in registry.load()["history"]] == ["promoted", "refused", "rolled back"]
    with pytest.raises(RegistryError, match="version 9"):
        registry.rollback(9)


def test_gate_refuses_a_challenger_below_the_best_classical_baseline():
    """The incident: a 0.48 challenger became champion with a 0.92 baseline in the same report."""
    baselines = {"TF-IDF + linear SVM": scores(0.85), "MiniLM-L6 + logistic regression": scores(0.92)}
    assert best_baseline(baselines, "macro_f1") == ("MiniLM-L6 + logistic regression", 0.92)
    refused = promotion_gate(scores(0.48), None, scores(0.13), margin=0.005, max_intent_f1_drop=0.1, baselines=baselines)
    assert not refused.promote
    assert refused.checks == {"beats_zero_shot": True, "beats_classical_baselines": False}
    assert "macro_f1 0.4800 vs best baseline MiniLM-L6 + logistic regression 0.9200: below it" in refused.reasons
    # at least as good as the best baseline: promoted (a tie is enough; the margin can demand more)
    assert promotion_gate(scores(0.92), None, scores(0.13), margin=0.005, max_intent_f1_drop=0.1, baselines=baselines).promote
    demanding = promotion_gate(scores(0.92), None, scores(0.13), margin=0.005, max_intent_f1_drop=0.1,
                               baselines=baselines, baseline_margin=0.01)
    assert not demanding.promote and any("+ margin 0.0100 = 0.9300: below it" in r for r in demanding.reasons)
    tolerant = promotion_gate(scores(0.90), None, scores(0.13), margin=0.005, max_intent_f1_drop=0.1,
                              baselines=baselines, baseline_margin=-0.05)
    assert tolerant.promote
    # the comparison uses the gate's metric, not always macro-F1
    by_accuracy = {"TF-IDF + linear SVM": {**scores(0.30), "accuracy": 0.95}}
    assert not promotion_gate(scores(0.6), None, scores(0.1), margin=0, max_intent_f1_drop=1, baselines=by_accuracy,
                              metric="accuracy").promote
    assert promotion_gate(scores(0.6), None, scores(0.1), margin=0, max_intent_f1_drop=1, baselines=by_accuracy).promote


def test_gate_baseline_check_relaxed_by_the_policy_says_so():
    baselines = {"MiniLM-L6 + logistic regression": scores(0.92)}
    relaxed = promotion_gate(scores(0.48), None, scores(0.13), margin=0.005, max_intent_f1_drop=0.1, baselines=baselines,
                             require_beating_baselines=False)
    assert relaxed.promote and "beats_classical_baselines" not in relaxed.checks
    assert ("baseline check relaxed by RetrainPolicy.require_beating_baselines=False: challenger macro_f1 0.4800 < "
            "best baseline MiniLM-L6 + logistic regression 0.9200") in relaxed.reasons
    # relaxed does not mean the other checks are: zero-shot still has to be beaten
    assert not promotion_gate(scores(0.10), None, scores(0.13), margin=0.005, max_intent_f1_drop=0.1, baselines=baselines,
                              require_beating_baselines=False).promote


@pytest.mark.parametrize("baselines", [{}, None])
def test_gate_without_baseline_rows_says_so(baselines):
    refused = promotion_gate(scores(0.7), None, scores(0.1), margin=0, max_intent_f1_drop=1, baselines=baselines)
    assert not refused.promote and refused.checks["beats_classical_baselines"] is False
    assert any(r.startswith("no classical baseline") for r in refused.reasons)
    relaxed = promotion_gate(scores(0.7), None, scores(0.1), margin=0, max_intent_f1_drop=1, baselines=baselines,
                             require_beating_baselines=False)
    assert relaxed.promote and any("relaxed" in r and "no classical baseline in this report" in r for r in relaxed.reasons)


def test_gate_weighs_label_sets_when_the_test_split_has_multi_intent_messages():
    kwargs = dict(margin=0.0, max_intent_f1_drop=0.1, baselines=LOW)
    sets = {"challenger": 0.60, "baselines": {"TF-IDF one-vs-rest + threshold": 0.55,
                                              "MiniLM-L6 one-vs-rest + threshold": 0.70}, "champion": None}
    refused = promotion_gate(scores(0.9), None, scores(0.1), label_sets=sets, **kwargs)
    assert not refused.promote and refused.checks["beats_multi_label_baselines"] is False
    assert any("best multi-label baseline MiniLM-L6 one-vs-rest + threshold 0.7000" in r for r in refused.reasons)
    relaxed = promotion_gate(scores(0.9), None, scores(0.1), label_sets=sets, require_beating_baselines=False, **kwargs)
    assert relaxed.promote and any("relaxed" in r for r in relaxed.reasons if r.startswith("label sets"))
    better = {**sets, "challenger": 0.75}
    assert promotion_gate(scores(0.9), None, scores(0.1), label_sets=better, **kwargs).promote
    worse_than_champion = promotion_gate(scores(0.9), scores(0.8), scores(0.1), label_sets={**better, "champion": 0.8}, **kwargs)
    assert not worse_than_champion.promote and worse_than_champion.checks["label_sets_no_worse_than_champion"] is False
    # a list model below the single-label baselines on the single-intent subset, above the list baselines on every
    # message: the label sets decide, the subset comparison stays in the reasons
    high = {"TF-IDF + linear SVM": scores(0.95)}
    subset_below = promotion_gate(scores(0.9), None, scores(0.1), margin=0.0, max_intent_f1_drop=0.1, baselines=high,
                                  label_sets=better)
    assert subset_below.promote and "beats_classical_baselines" not in subset_below.checks
    assert any(r.startswith("single-intent test messages only, informational") and "below it" in r for r in subset_below.reasons)
    assert not promotion_gate(scores(0.9), None, scores(0.1), margin=0.0, max_intent_f1_drop=0.1, baselines=high).promote
    # no multi-intent table: the gate is what it was
    assert promotion_gate(scores(0.9), None, scores(0.1), label_sets=None, **kwargs).checks.keys() == {
        "beats_zero_shot", "beats_classical_baselines"}
