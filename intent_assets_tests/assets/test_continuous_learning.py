"""The continuous-learning loop end to end, on a tiny configuration: a corrections file is dropped, the corrections
sensor ticks, the run ingests it, the retraining sensor fires, the retraining run trains a challenger, the gate
decides and the registry records it. The corrections are sabotage (every training message relabelled to a wrong
intent): the challenger must be refused and the champion must stay."""

import json

import dagster as dg
import pandas as pd
import pytest

from intent_assets.assets.common import days_of_run_config
from intent_assets.assets.model_promotion import rollback_job
from intent_assets.definitions import ASSETS
from intent_assets.loop.registry import ModelRegistry
from intent_assets.resources import RetrainPolicy, local_resources
from intent_assets.sensors import agent_corrections_sensor, retrain_on_corrections

TINY = {
    "raw_chat_logs": {"config": {"limit": 700}},
    "lora_adapter": {"config": {"max_steps": 2, "max_train_examples": 16, "max_eval_examples": 4, "effective_batch_size": 4,
                                "per_device_batch_size": 2, "checkpoint_steps": 1, "r": 8}},
    "awq_model": {"config": {"num_calibration_samples": 2, "max_calibration_tokens": 32}},
    "eval_report": {"config": {"max_test_examples": 24, "latency_requests": 2, "include_minilm": False}},
}
# the sabotaged retraining learns its wrong labels for real: more steps, a high learning rate
SABOTAGE_TRAINING = {"max_steps": 12, "max_train_examples": 48, "max_eval_examples": 4, "effective_batch_size": 4,
                     "per_device_batch_size": 4, "checkpoint_steps": 12, "r": 8, "learning_rate": 3e-3}
NOT_AUDIT = dg.AssetSelection.assets("pii_memorization")


def tick(instance, sensor, resources, cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        result = sensor(context)
    assert isinstance(result, dg.SensorResult) and result.run_requests, getattr(result, "skip_message", result)
    return result.run_requests


def meta(result, key):
    mat = result.asset_materializations_for_node(key)[0]
    return {k: v.value for k, v in mat.metadata.items()}


@pytest.mark.slow
def test_sabotaged_corrections_train_a_challenger_that_is_refused(seeded_data_root, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    data_root = seeded_data_root  # the session's converted base model, reused by base_model
    # the baseline check is relaxed: the tiny challengers are below TF-IDF anyway, and what this test shows is that
    # the champion comparison alone refuses the sabotaged model (test_model_promotion covers the baseline check)
    resources = {**local_resources(data_root),
                 "retrain_policy": RetrainPolicy(min_new_corrections=50, require_beating_baselines=False)}
    with dg.instance_for_test() as instance:
        first = dg.materialize(ASSETS, selection=dg.AssetSelection.all() - NOT_AUDIT, resources=resources,
                               run_config={"ops": TINY}, instance=instance, tags=days_of_run_config({"ops": TINY}))
        assert first.success
        assert meta(first, "agent_corrections")["ledger_corrections"] == 0
        # the ML engineer makes the first model the champion (whatever the gate said of it): the rollback job
        assert rollback_job.execute_in_process(
            run_config={"ops": {"rollback_champion": {"config": {"version": 1, "reason": "test: v1 is the champion"}}}},
            resources={"artifacts": resources["artifacts"]}, instance=instance).success
        registry = ModelRegistry(data_root / "artifacts" / "registry")
        assert registry.alias("champion")["version"] == 1

        # agents "correct" every training message to the wrong intent
        splits = pd.read_parquet(data_root / "redacted" / "dataset_splits.parquet")
        names = sorted(json.loads((data_root / "redacted" / "intent_taxonomy.json").read_text())["intents"], key=lambda i: i["name"])
        names = [i["name"] for i in names]
        train = splits[splits["split"] == "train"]
        inbox = data_root / "raw" / "corrections_inbox"
        inbox.mkdir(parents=True)
        with open(inbox / "sabotage.jsonl", "w", encoding="utf-8") as fh:
            for n, (text, intent) in enumerate(zip(train["text"], train["intent"])):
                wrong = names[(names.index(intent) + 1) % len(names)]
                fh.write(json.dumps({"message_id": f"s{n}", "conversation_id": f"c{n}", "text": text, "predicted_intent": intent,
                                     "corrected_intent": wrong, "agent_id": "a1", "timestamp": "2026-11-25T09:00:00Z"}) + "\n")

        (request,) = tick(instance, agent_corrections_sensor, resources)
        ingest = dg.materialize(ASSETS, selection=dg.AssetSelection.assets("agent_corrections"), resources=resources,
                                run_config=request.run_config, tags=request.tags, instance=instance)
        assert ingest.success and meta(ingest, "agent_corrections")["ledger_corrections"] == len(train)

        (retrain,) = tick(instance, retrain_on_corrections, resources)
        ops = {"lora_adapter": {"config": SABOTAGE_TRAINING}, "awq_model": TINY["awq_model"], "eval_report": TINY["eval_report"]}
        result = dg.materialize(ASSETS, selection=dg.AssetSelection.assets("agent_corrections").downstream() - NOT_AUDIT,
                                resources=resources, run_config={"ops": ops}, tags=retrain.tags, instance=instance)
        assert result.success

    dataset = meta(result, "instruction_dataset")
    assert dataset["corrections_relabelled"] == len(train) and dataset["corrections_added"] == 0
    report = meta(result, "eval_report")
    assert "champion v1 (16-bit)" in report["systems"]  # the champion, scored on the same split in the same run, in the
    # precision the challenger is judged in (in-process: its merged 16-bit weights)
    promotion = meta(result, "model_promotion")
    assert promotion["decision"] == "refused" and promotion["champion_version"] == 1
    assert promotion["baseline_check"] == "relaxed" and "baseline check relaxed by" in promotion["gate"]
    assert promotion["best_baseline"] == "TF-IDF + linear SVM"  # include_minilm is false here
    assert "vs champion" in promotion["gate"]
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["challenger_promoted"] is False
    data = registry.load()
    assert data["aliases"] == {"champion": 1, "challenger": 2}
    assert [h["event"] for h in data["history"]][-1] == "refused"
    lineage = registry.version(2)["lineage"]
    assert lineage["agent_corrections"]["corrections_version"] and lineage["instruction_dataset"]["run_id"] == result.run_id
