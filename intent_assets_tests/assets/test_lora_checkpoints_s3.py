"""``lora_adapter`` in ``prod`` against a moto S3 server: checkpoints reach S3 while training runs, one prefix and
one manifest each, and a fresh pod (its scratch volume wiped) resumes from the newest one that verifies.

Every materialization here is a separate "pod": the scratch directory is wiped in between, so whatever the next
one needs (base model, tables, checkpoints) must come from S3, verified.
"""

import json
import logging
import shutil
import threading
import time
from pathlib import Path

import boto3
import dagster as dg
import pandas as pd
import pytest

from intent_assets.assets.base_model import base_model
from intent_assets.assets.lora_adapter import lora_adapter
from intent_assets.deploy.s3_artifacts import MANIFEST_KEY, list_keys
from intent_assets.model.base_model import SMOLLM2_DIR_NAME
from intent_assets.model.checkpoints import CheckpointPublisher, restore_checkpoint
from intent_assets_tests.assets.test_lora_adapter import EXAMPLES, SYSTEM
from intent_assets_tests.test_resources import REDACTED, prod_env  # noqa: F401 (fixture)

TINY = {"max_steps": 4, "checkpoint_steps": 2, "max_eval_examples": 1, "effective_batch_size": 2,
        "per_device_batch_size": 2, "r": 8, "dropout": 0.0, "early_stopping_patience": 0, "learning_rate": 1e-3}


def _rows() -> pd.DataFrame:
    splits = ["train"] * 6 + ["validation", "test"]
    rows = pd.DataFrame({"record_id": [f"r{i}" for i in range(8)], "split": splits,
                         "intent": [i for _, i in EXAMPLES], "text": [t for t, _ in EXAMPLES], "synthetic": False})
    rows["messages"] = [json.dumps([{"role": "system", "content": SYSTEM}, {"role": "user", "content": t},
                                    {"role": "assistant", "content": json.dumps({"intent": i})}]) for t, i in EXAMPLES]
    return rows


@dg.asset(name="instruction_dataset")
def fake_instruction_dataset() -> pd.DataFrame:
    return _rows()


@dg.asset(name="agent_corrections")
def fake_agent_corrections() -> pd.DataFrame:
    return pd.DataFrame({"text": ["x"], "predicted_intent": ["card_arrival"], "corrected_intent": ["card_arrival"]})


ASSETS = [base_model, fake_instruction_dataset, fake_agent_corrections, lora_adapter]


def _pod(resources: dict, selection: list[str], run_config: dict | None = None):
    """One materialization in its own instance; returns (metadata of lora_adapter or None, log entries)."""
    instance = dg.DagsterInstance.ephemeral()
    resources = {k: v for k, v in resources.items() if k in ("io_manager", "artifacts", "trainer")}
    result = dg.materialize(ASSETS, resources=resources, selection=selection, run_config=run_config or {},
                            instance=instance, raise_on_error=False)
    failures = [e.event_specific_data.error.to_string() for e in result.all_events if e.is_step_failure]
    assert result.success, failures
    logs = [(entry.level, entry.user_message) for entry in instance.all_logs(result.run_id) if entry.user_message]
    mats = result.asset_materializations_for_node("lora_adapter")
    return ({k: v.value for k, v in mats[0].metadata.items()} if mats else None), logs


def _train(resources):
    return _pod(resources, ["lora_adapter"], {"ops": {"lora_adapter": {"config": TINY}}})


@pytest.mark.slow
def test_checkpoints_reach_s3_while_training_and_fresh_pods_resume_from_the_newest_that_verifies(
        prod_env, base_model_dir, s3_client, s3_endpoint, tmp_path, one_torch_thread):
    scratch = tmp_path / "scratch"
    # pod A: base_model (the converted model seeded where the asset caches it, so no 20 s conversion) -> S3
    shutil.copytree(base_model_dir, scratch / "artifacts" / "base_model" / SMOLLM2_DIR_NAME)
    _pod(prod_env, ["base_model", "instruction_dataset", "agent_corrections"])
    assert f"artifacts/base_model/{SMOLLM2_DIR_NAME}/{MANIFEST_KEY}" in list_keys(s3_client, REDACTED, "artifacts")
    shutil.rmtree(scratch)

    # pod B: lora_adapter alone; the base model must come from S3 (verified). A watcher polls S3 and the local
    # disk while it trains: checkpoint-2's manifest must show up in S3 before checkpoint-4 exists on disk.
    seen, stop = {}, threading.Event()

    def watch():
        client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
        while not stop.is_set():
            keys = list_keys(client, REDACTED, "artifacts/lora_adapter")
            if any(k.endswith(f"/checkpoints/checkpoint-2/{MANIFEST_KEY}") for k in keys) and not seen:
                seen["checkpoint-4 on disk"] = any(scratch.glob("artifacts/lora_adapter/*/checkpoints/checkpoint-4"))
                seen["adapter on disk"] = any(scratch.glob("artifacts/lora_adapter/*/adapter"))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        meta, logs = _train(prod_env)
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert seen == {"checkpoint-4 on disk": False, "adapter on disk": False}, seen  # published during training
    assert meta["optimizer_steps"] == 4 and meta["resumed_from_checkpoint"] == "no"
    assert meta["checkpoints_published"] == 2 and meta["checkpoint_fetched_from_store"] == "no"
    messages = [m for _, m in logs]
    published_2 = next(i for i, m in enumerate(messages) if m.startswith("published checkpoint-2 to s3://"))
    step_3 = next(i for i, m in enumerate(messages) if m.startswith("step 3/4 loss"))
    assert published_2 < step_3, messages
    run_key = Path(meta["adapter_dir"]).parent.name
    prefix = f"artifacts/lora_adapter/{run_key}/checkpoints"
    keys = set(list_keys(s3_client, REDACTED, prefix))
    for step in (2, 4):
        assert f"{prefix}/checkpoint-{step}/{MANIFEST_KEY}" in keys
        assert f"{prefix}/checkpoint-{step}/trainer_state.json" in keys
        assert f"{prefix}/checkpoint-{step}/run.json" in keys  # the run's fingerprint travels with each checkpoint
        manifest = json.loads(s3_client.get_object(Bucket=REDACTED, Key=f"{prefix}/checkpoint-{step}/{MANIFEST_KEY}")["Body"].read())
        assert {"adapter_model.safetensors", "optimizer.pt", "trainer_state.json", "run.json"} <= {f["path"] for f in manifest["files"]}
    assert f"{prefix}/{MANIFEST_KEY}" not in keys  # no whole-directory publish any more

    # pod C: a fresh pod; the newest checkpoint (4 of 4) verifies: it resumes there and has nothing left to train
    shutil.rmtree(scratch)
    meta, logs = _train(prod_env)
    assert meta["checkpoint_fetched_from_store"] == "checkpoint-4" and meta["resumed_from_checkpoint"].endswith("/checkpoint-4")
    assert meta["optimizer_steps"] == 4 and meta["checkpoints_rejected"] == [] and meta["checkpoints_published"] == 0
    assert any("checkpoint-4 already holds all 4 steps" in m for _, m in logs)  # not a 5th step (Trainer.train would)

    # pod D: the previous pod was preempted while uploading checkpoint-4 (files there, manifest not yet written):
    # a fresh pod skips it, resumes from checkpoint-2, trains steps 3-4 and publishes checkpoint-4 again
    shutil.rmtree(scratch)
    s3_client.delete_object(Bucket=REDACTED, Key=f"{prefix}/checkpoint-4/{MANIFEST_KEY}")
    meta, logs = _train(prod_env)
    assert meta["checkpoint_fetched_from_store"] == "checkpoint-2" and meta["resumed_from_checkpoint"].endswith("/checkpoint-2")
    assert meta["checkpoints_rejected"] == ["checkpoint-4"] and meta["optimizer_steps"] == 4
    assert meta["checkpoints_published"] == 1  # checkpoint-4, complete again
    assert f"{prefix}/checkpoint-4/{MANIFEST_KEY}" in list_keys(s3_client, REDACTED, prefix)
    warnings = [m for level, m in logs if level == logging.WARNING]
    assert any("checkpoint checkpoint-4" in m and "_manifest.json" in m for m in warnings), warnings

    # pod E: checkpoint-4's weights corrupted in S3 (manifest intact): a warning naming it, back to checkpoint-2
    shutil.rmtree(scratch)
    s3_client.put_object(Bucket=REDACTED, Key=f"{prefix}/checkpoint-4/adapter_model.safetensors", Body=b"\0" * 1024)
    meta, logs = _train(prod_env)
    assert meta["checkpoint_fetched_from_store"] == "checkpoint-2" and meta["checkpoints_rejected"] == ["checkpoint-4"]
    assert meta["optimizer_steps"] == 4 and meta["final_train_loss"] is not None
    warnings = [m for level, m in logs if level == logging.WARNING]
    assert any("checkpoint checkpoint-4" in m and "adapter_model.safetensors" in m and "ManifestError" in m
               for m in warnings), warnings


def _fake_checkpoint(directory, step: int):
    directory.mkdir(parents=True)
    (directory / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (directory / "adapter_model.safetensors").write_bytes(bytes([step]) * 2048)


def test_publisher_withdraws_rotated_checkpoints_and_restore_skips_broken_ones(prod_env, s3_client, tmp_path):
    """The bookkeeping around the trainer, without training: rotation mirrored in S3, fall-back on a broken
    checkpoint, nothing at all published, and an S3 failure while publishing that does not stop training."""
    with dg.build_resources({"artifacts": prod_env["artifacts"]}) as resources:
        store = resources.artifacts
        checkpoints = store.path("lora_adapter", "run1", "checkpoints")
        infos, warnings = [], []
        publisher = CheckpointPublisher(store, checkpoints, infos.append, warnings.append)
        for step in (1, 2, 3):
            _fake_checkpoint(checkpoints / f"checkpoint-{step}", step)
            if step == 3:
                shutil.rmtree(checkpoints / "checkpoint-1")  # the trainer rotated it away (save_total_limit=2)
            publisher(checkpoints / f"checkpoint-{step}")
        assert publisher.published == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
        assert publisher.withdrawn == ["checkpoint-1"] and not warnings
        assert store.children(checkpoints) == ["checkpoint-2", "checkpoint-3"]
        assert not list_keys(s3_client, REDACTED, "artifacts/lora_adapter/run1/checkpoints/checkpoint-1")

        # another pod: checkpoint-3 corrupted in S3 -> checkpoint-2, with a warning naming checkpoint-3
        other_root = tmp_path / "other-pod" / "artifacts"
        other = store.model_copy(update={"base_dir": str(other_root)})
        s3_client.put_object(Bucket=REDACTED, Key="artifacts/lora_adapter/run1/checkpoints/checkpoint-3/trainer_state.json",
                             Body=b"{}")
        fetched, rejected = restore_checkpoint(other, other_root / "lora_adapter" / "run1" / "checkpoints",
                                               infos.append, warnings.append)
        assert (fetched, rejected) == ("checkpoint-2", ["checkpoint-3"])
        assert len(warnings) == 1 and "checkpoint-3" in warnings[0] and "trainer_state.json" in warnings[0]
        restored = other_root / "lora_adapter" / "run1" / "checkpoints"
        assert sorted(p.name for p in restored.iterdir()) == ["checkpoint-2"]
        # that pod already has a checkpoint now: nothing is fetched again
        assert restore_checkpoint(other, restored, infos.append, warnings.append) == (None, [])
        # nothing published for a run: nothing fetched, no warning
        assert restore_checkpoint(other, other_root / "lora_adapter" / "run2" / "checkpoints",
                                  infos.append, warnings.append) == (None, [])
        assert len(warnings) == 1

        # S3 failing during a publish (here: the bucket is gone) is a warning, never an exception in the trainer
        broken = store.model_copy(update={"bucket": "no-such-bucket"})
        failing = CheckpointPublisher(broken, checkpoints, infos.append, warnings.append)
        failing(checkpoints / "checkpoint-3")
        assert failing.published == [] and "could not publish checkpoint-3" in warnings[-1]
