"""The whole graph, raw chat logs to evaluation report, materialized in-process on a tiny configuration."""

import json

import dagster as dg
import pandas as pd

from intent_assets.definitions import ASSETS, CHECKS
from intent_assets.resources import local_resources

TINY = {
    "ops": {
        "raw_chat_logs": {"config": {"limit": 900}},
        "lora_adapter": {"config": {"max_steps": 2, "max_train_examples": 16, "max_eval_examples": 4, "effective_batch_size": 4,
                                    "per_device_batch_size": 2, "checkpoint_steps": 1, "r": 8}},
        "awq_model": {"config": {"num_calibration_samples": 2, "max_calibration_tokens": 32}},
        "eval_report": {"config": {"max_test_examples": 12, "latency_requests": 2}},
    }
}


def test_whole_graph_materializes_end_to_end(data_root, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    # a persistent (SQLite) instance, as `make run` uses: every event and metadata value must serialize
    with dg.instance_for_test() as instance:
        result = dg.materialize([*ASSETS, *CHECKS], resources=local_resources(data_root), run_config=TINY, instance=instance)
    assert result.success

    def meta(key):
        for event in result.get_asset_materialization_events():
            mat = event.event_specific_data.materialization
            if mat.asset_key == dg.AssetKey(key):
                return {k: v.value for k, v in mat.metadata.items()}
        raise KeyError(key)

    adapter = meta("lora_adapter")
    assert adapter["optimizer_steps"] == 2 and adapter["trainable_parameters"] > 0
    assert adapter["train_examples"] + adapter["train_examples_dropped_too_long"] == 16
    assert "data:image/png;base64," in adapter["loss_curve"]
    awq = meta("awq_model")
    assert awq["size_mb_after"] < 0.6 * awq["size_mb_before"]
    config = json.loads((data_root / "artifacts" / "awq_model").glob("*/quantized/config.json").__next__().read_text())
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    report = meta("eval_report")
    assert report["test_examples"] == 12
    assert report["out_of_taxonomy_rate"] == 0.0  # constrained decoding can only emit taxonomy labels
    assert 0.0 <= report["accuracy"] <= 1.0
    for name in ("TF-IDF + linear SVM", "MiniLM-L6 + logistic regression", "base model zero-shot", "fine-tuned 4-bit (AWQ)"):
        assert name in report["systems"] and report["systems"][name]["oot_rate"] == 0.0 or name.startswith(("TF", "Mini"))
    markdown = (data_root / "artifacts" / "eval_report").glob("*/report.md").__next__().read_text()
    assert "| fine-tuned 4-bit (AWQ) |" in markdown
    # the report holds labels and numbers only: no test message reaches it
    test_texts = pd.read_parquet(data_root / "redacted" / "instruction_dataset.parquet").query("split == 'test'")["text"]
    assert not any(t in markdown for t in test_texts if len(t) > 20)
