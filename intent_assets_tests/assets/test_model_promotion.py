"""``model_promotion`` on hand-made eval reports (no training): the gate weighs the classical baselines of the
challenger's own report, the policy can relax that, and the metadata shows the best baseline."""

import json

import dagster as dg
import pytest

from intent_assets.assets.eval_report import FINE_TUNED, ZERO_SHOT
from intent_assets.assets.model_promotion import model_promotion
from intent_assets.loop.registry import ModelRegistry
from intent_assets.resources import ArtifactStore, RetrainPolicy

TFIDF, MINILM = "TF-IDF + linear SVM", "MiniLM-L6 + logistic regression"


def metrics(score: float) -> dict:
    return {"accuracy": score, "macro_f1": score, "micro_f1": score,
            "per_intent": {i: {"f1": score, "precision": score, "recall": score, "support": 4} for i in ("a", "b")}}


def promote(tmp_path, systems: dict[str, float], policy: RetrainPolicy, run_key: str = "rk1"):
    """Materialize model_promotion over an eval report with these systems' scores."""
    report_dir = tmp_path / "eval_report" / run_key
    report_dir.mkdir(parents=True)
    report = {"systems": {name: {"metrics": metrics(v)} for name, v in systems.items()}, "fine_tuned": FINE_TUNED,
              "n": 8, "run_key": run_key, "champion": None}
    (report_dir / "report.json").write_text(json.dumps(report))

    @dg.asset(name="eval_report")
    def fake_eval_report() -> dict:
        return {"report_dir": str(report_dir), "run_key": run_key}

    @dg.asset(name="awq_model")
    def fake_awq_model() -> dict:
        return {"model_dir": str(tmp_path / "awq_model" / run_key / "quantized"), "run_key": run_key}

    with dg.instance_for_test() as instance:
        result = dg.materialize([fake_eval_report, fake_awq_model, model_promotion], instance=instance,
                                resources={"artifacts": ArtifactStore(base_dir=str(tmp_path)), "retrain_policy": policy})
    assert result.success
    mat = result.asset_materializations_for_node("model_promotion")[0]
    meta = {k: v.value for k, v in mat.metadata.items()}
    (check,) = result.get_asset_check_evaluations()
    return meta, check, ModelRegistry(tmp_path / "registry")


def test_a_challenger_below_its_best_baseline_is_not_promoted(tmp_path):
    meta, check, registry = promote(tmp_path, {TFIDF: 0.85, MINILM: 0.92, ZERO_SHOT: 0.13, FINE_TUNED: 0.48}, RetrainPolicy())
    assert meta["decision"] == "refused" and meta["champion_version"] == 0 and check.passed is False
    assert meta["best_baseline"] == MINILM and meta["best_baseline_macro_f1"] == 0.92 and meta["baseline_check"] == "required"
    assert "macro_f1 0.4800 vs best baseline MiniLM-L6 + logistic regression 0.9200: below it" in meta["gate"]
    assert registry.alias("champion") is None and registry.load()["history"][-1]["event"] == "refused"


def test_relaxed_policy_promotes_it_and_the_reasons_say_so(tmp_path):
    meta, check, registry = promote(tmp_path, {TFIDF: 0.85, MINILM: 0.92, ZERO_SHOT: 0.13, FINE_TUNED: 0.48},
                                    RetrainPolicy(require_beating_baselines=False))
    assert meta["decision"] == "promoted" and check.passed is True and meta["baseline_check"] == "relaxed"
    reason = ("baseline check relaxed by RetrainPolicy.require_beating_baselines=False: challenger macro_f1 0.4800 < "
              "best baseline MiniLM-L6 + logistic regression 0.9200")
    assert reason in meta["gate"] and reason in registry.load()["history"][-1]["reasons"]
    assert registry.alias("champion")["version"] == 1


def test_a_challenger_that_beats_its_baselines_is_promoted_on_the_policys_metric(tmp_path):
    meta, check, _ = promote(tmp_path, {TFIDF: 0.85, ZERO_SHOT: 0.13, FINE_TUNED: 0.90},
                             RetrainPolicy(promotion_metric="accuracy"))
    assert meta["decision"] == "promoted" and check.passed is True
    assert meta["best_baseline"] == TFIDF and meta["best_baseline_accuracy"] == 0.85
    assert "accuracy 0.9000 vs best baseline TF-IDF + linear SVM 0.8500: at least as good" in meta["gate"]


@pytest.mark.parametrize("relaxed", [False, True])
def test_a_report_without_baseline_rows_says_so(tmp_path, relaxed):
    meta, check, _ = promote(tmp_path, {ZERO_SHOT: 0.13, FINE_TUNED: 0.90},
                             RetrainPolicy(require_beating_baselines=not relaxed))
    assert meta["best_baseline"] == "none in the report" and meta["best_baseline_macro_f1"] is None
    assert "no classical baseline" in meta["gate"]
    assert meta["decision"] == ("promoted" if relaxed else "refused") and check.passed is relaxed
