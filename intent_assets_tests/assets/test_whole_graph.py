"""The whole graph, raw chat logs to evaluation report, materialized in-process on a tiny configuration."""

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from intent_assets.assets.common import days_of_run_config
from intent_assets.definitions import ASSETS, CHECKS
from intent_assets.model.head import head_labels, is_head_config, is_head_model
from intent_assets.paths import DEFAULT_CHAT_LOGS
from intent_assets.resources import LocalTableIOManager, local_resources
from intent_assets_tests.assets.materializations import output_meta

# Unique synthetic values seeded into the raw logs of the tiny run: none may be found anywhere downstream of the raw
# location (files, Dagster events and metadata, run logs). Each value also appears digits-only / lower-cased.
CANARIES = {
    "PERSON": "Zebulon Quixwell", "EMAIL": "zq.canary7731@example.org", "PHONE": "+44 7700 900417",
    "CREDIT_CARD": "4539 1488 0343 6467", "SSN": "536-22-8419", "ACCOUNT_NUMBER": "83920174",
    "ADDRESS": "1742 Brindlecombe Lane", "IBAN": "GB33 BUKB 2020 1555 5555 55",
}
CANARY_MESSAGES = [
    ("card_arrival", "Hi, my name is {PERSON}, I live at {ADDRESS}. Where is my new card?"),
    ("card_arrival", "my card {CREDIT_CARD} still has not arrived, email me at {EMAIL}"),
    ("transfer_into_account", "I want to move money into account number {ACCOUNT_NUMBER} from {IBAN}"),
    ("verify_my_identity", "my ssn is {SSN}, call me on {PHONE} to verify my identity"),
]


def _canary_needles() -> dict[str, str]:
    needles = {}
    for kind, value in CANARIES.items():
        needles[value.lower()] = kind
        digits = "".join(c for c in value if c.isdigit())
        if len(digits) >= 8:
            needles[digits] = kind
    needles["quixwell"] = "PERSON"
    needles["brindlecombe"] = "ADDRESS"
    needles["canary7731"] = "EMAIL"
    return needles


def seeded_logs(path: Path, limit: int = 900) -> Path:
    """The first ``limit`` shipped records plus one conversation per canary message."""
    lines = DEFAULT_CHAT_LOGS.read_text(encoding="utf-8").splitlines()[:limit]
    for i, (intent, template) in enumerate(CANARY_MESSAGES):
        record = {"conversation_id": f"canary-{i}", "turn": 1, "timestamp": "2025-01-01T00:00:00Z", "speaker": "customer",
                  "text": template.format(**CANARIES), "intent": intent, "channel": "chat"}
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def find_canaries(text: str) -> list[str]:
    low = text.lower()
    squashed = "".join(c for c in low if c.isdigit())  # digits written with other separators
    found = [kind for needle, kind in _canary_needles().items() if needle in low]
    found += [f"{kind} (digits)" for needle, kind in _canary_needles().items() if needle.isdigit() and needle in squashed
              and needle not in low]
    return found


def _file_text(path: Path) -> str:
    if path.suffix == ".parquet":
        return pd.read_parquet(path).to_csv(index=False)
    return path.read_bytes().decode("utf-8", errors="ignore")


TINY = {
    "ops": {
        "raw_chat_logs": {"config": {"limit": 900 + len(CANARY_MESSAGES)}},
        "lora_adapter": {"config": {"max_steps": 2, "max_train_examples": 16, "max_eval_examples": 4, "effective_batch_size": 4,
                                    "per_device_batch_size": 2, "checkpoint_steps": 1, "r": 8}},
        "awq_model": {"config": {"num_calibration_samples": 2, "max_calibration_tokens": 32}},
        "eval_report": {"config": {"max_test_examples": 12, "latency_requests": 2}},
        "pii_memorization": {"config": {"max_canaries": 8, "max_new_tokens": 8}},
    }
}


@pytest.mark.slow
def test_whole_graph_materializes_end_to_end(data_root, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("INTENT_ASSETS_AUDIT_SALT", raising=False)
    config = json.loads(json.dumps(TINY))
    config["ops"]["raw_chat_logs"]["config"]["path"] = str(seeded_logs(tmp_path / "seeded_logs.jsonl"))
    canary_file = tmp_path / "canaries.jsonl"
    canary_file.write_text("".join(json.dumps({"entity_type": k, "value": v}) + "\n" for k, v in CANARIES.items()))
    config["ops"]["pii_memorization"]["config"]["canaries_path"] = str(canary_file)
    # a persistent (SQLite) instance, as `make run` uses: every event and metadata value must serialize
    with dg.instance_for_test() as instance:
        result = dg.materialize([*ASSETS, *CHECKS], resources=local_resources(data_root), run_config=config, instance=instance,
                               tags=days_of_run_config(config))
        assert result.success
        # zero leaks: every Dagster event of the run (metadata included) and every captured log line
        from dagster._serdes import serialize_value

        events = "\n".join(serialize_value(e) for e in instance.all_logs(result.run_id))
        event_leaks = find_canaries(events)
        log_leaks = {str(p): find_canaries(_file_text(p)) for p in Path(instance.root_directory).rglob("*") if p.is_file()}
    assert event_leaks == [], f"canary PII in Dagster events/metadata: {event_leaks}"
    assert {k: v for k, v in log_leaks.items() if v} == {}, "canary PII in the instance's logs or storage"
    # the canaries really were in the raw data (the test can fail) ...
    raw = LocalTableIOManager(base_dir=str(data_root / "raw")).load_table("raw_chat_logs")
    raw_text = raw.to_csv(index=False)
    assert set(find_canaries(raw_text)) >= set(CANARIES)
    # ... and nowhere outside the raw location: tables, instruction dataset, adapter training data, eval report
    downstream = [p for p in data_root.rglob("*") if p.is_file() and (data_root / "raw") not in p.parents]
    assert any(p.suffix == ".jsonl" and "lora_adapter" in p.parts for p in downstream)
    file_leaks = {str(p.relative_to(data_root)): hits for p in downstream if (hits := find_canaries(_file_text(p)))}
    assert file_leaks == {}, f"canary PII outside the raw location: {file_leaks}"
    # the auditor's view: one row per raw record, positions and types only
    audit = LocalTableIOManager(base_dir=str(data_root / "redacted")).load_table("pii_audit_log")
    assert len(audit) == len(raw)
    assert audit["audit_id"].is_unique and (data_root / "raw" / ".audit_salt").is_file()

    # memorization: the fine-tuned model completes none of the seeded canaries
    memo = output_meta(result, "pii_memorization")
    assert memo["canaries"] == len(CANARIES) and memo["completed"] == 0
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    model_quality = {"fine_tuned_beats_zero_shot", "fine_tuned_beats_classical_baselines", "challenger_promoted"}  # a 2-step fine-tune: either
    assert {k: v for k, v in checks.items() if k not in model_quality} == {
        "redacted_corpus_has_no_pii": True, "no_canary_completed": True, "raw_chat_logs_schema": True,
        "quarantine_share_within_limit": True, "synthetic_share_within_cap": True}
    assert model_quality <= set(checks)
    assert output_meta(result, "base_model")["reused_cached_conversion"] is False  # converted inside the asset
    adapter = output_meta(result, "lora_adapter")
    assert adapter["optimizer_steps"] == 2 and adapter["trainable_parameters"] > 0
    # the default router: a classification head (every message here has one intent)
    assert adapter["router_head"] == "classifier" and output_meta(result, "eval_report")["router"] == "classification head"
    assert is_head_model(adapter["adapter_dir"]) and len(head_labels(adapter["adapter_dir"])) > 1  # labels travel
    assert memo["model_type"].startswith("classification head")
    assert adapter["train_examples"] + adapter["train_examples_dropped_too_long"] == 16
    assert "data:image/png;base64," in adapter["loss_curve"]
    awq = output_meta(result, "awq_model")
    assert awq["size_mb_after"] < 0.6 * awq["size_mb_before"]
    config = json.loads((data_root / "artifacts" / "awq_model").glob("*/quantized/config.json").__next__().read_text())
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    # a sequence-classification model, merged and quantized with its head kept 16-bit
    assert is_head_config(config) and "score" in config["quantization_config"]["ignore"] and "score" in awq["kept_16bit"]
    # the served model carries its labels and the exact system prompt it was trained with (for any client)
    quantized = next((data_root / "artifacts" / "awq_model").glob("*/quantized"))
    info = json.loads((quantized / "intent_assets.json").read_text())
    train = pd.read_parquet(data_root / "redacted" / "instruction_dataset.parquet").query("split == 'train'")
    assert info["system_prompt"] == json.loads(train["messages"].iloc[0])[0]["content"]
    assert set(train["intent"]) <= set(info["labels"]) and len(info["labels"]) == len(set(info["labels"]))
    # the default compact prompt lists no intent: the labels come from the taxonomy, in its order
    taxonomy = json.loads((data_root / "redacted" / "intent_taxonomy.json").read_text())
    assert info["labels"] == [i["name"] for i in taxonomy["intents"]] and "- card_arrival" not in info["system_prompt"]
    assert output_meta(result, "instruction_dataset")["system_prompt_style"] == "compact"
    assert "intent_assets.json" in {f["path"] for f in json.loads((quantized / "manifest.json").read_text())["files"]}
    report = output_meta(result, "eval_report")
    # the first model of an empty registry is promoted only if it beats the zero-shot base model and scores at least
    # the best classical baseline of the same report (a 2-step fine-tune usually does not: then it is refused)
    promotion = output_meta(result, "model_promotion")
    scores = {name: s["macro_f1"] for name, s in report["systems"].items()}
    best = max(("TF-IDF + linear SVM", "MiniLM-L6 + logistic regression"), key=scores.__getitem__)
    assert promotion["best_baseline"] == best and promotion["best_baseline_macro_f1"] == scores[best]
    # the in-process engine serves the merged 16-bit weights; the 4-bit model is scored beside it (what 4 bits cost)
    assert report["served_system"] == "fine-tuned 16-bit (merged)"
    assert {"fine-tuned 16-bit (merged)", "fine-tuned 4-bit (AWQ)"} <= set(report["systems"])
    ours = scores[report["served_system"]]
    accuracy = {name: s["accuracy"] for name, s in report["systems"].items()}
    beats = ours > scores["base model zero-shot"] and ours >= scores[best]
    assert promotion["decision"] == ("promoted" if beats else "refused") and checks["challenger_promoted"] == beats
    assert ("below it" in promotion["gate"]) == (ours < scores[best])
    above_baselines = ours >= scores[best] and accuracy[report["served_system"]] >= max(
        accuracy["TF-IDF + linear SVM"], accuracy["MiniLM-L6 + logistic regression"])
    assert checks["fine_tuned_beats_classical_baselines"] == above_baselines  # accuracy and macro-F1
    assert report["test_examples"] == 12
    assert report["out_of_taxonomy_rate"] == 0.0  # a head (and constrained decoding) can only give taxonomy labels
    assert 0.0 <= report["accuracy"] <= 1.0
    for name in ("TF-IDF + linear SVM", "MiniLM-L6 + logistic regression", "base model zero-shot", "fine-tuned 4-bit (AWQ)",
                 "fine-tuned 16-bit (merged)"):
        assert name in report["systems"] and report["systems"][name]["oot_rate"] == 0.0 or name.startswith(("TF", "Mini"))
    markdown = (data_root / "artifacts" / "eval_report").glob("*/report.md").__next__().read_text()
    assert "| fine-tuned 4-bit (AWQ) |" in markdown and "| fine-tuned 16-bit (merged) |" in markdown
    # the merged 16-bit model carries what a client needs too: the in-process engine serves it
    assert json.loads((quantized.parent / "merged" / "intent_assets.json").read_text()) == info
    # the report holds labels and numbers only: no test message reaches it
    test_texts = pd.read_parquet(data_root / "redacted" / "instruction_dataset.parquet").query("split == 'test'")["text"]
    assert not any(t in markdown for t in test_texts if len(t) > 20)


@pytest.mark.slow
def test_a_multi_intent_run_trains_and_scores_label_sets_end_to_end(seeded_data_root, monkeypatch):
    """Blended multi-intent messages (issue 15) through the whole graph: list answers in the instruction dataset and
    in training, label sets decoded inside the taxonomy, and the report's multi-intent table with the one-vs-rest
    baselines of the same run."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    data_root = seeded_data_root  # the base model's conversion is the first test's: here it is reused
    config = json.loads(json.dumps(TINY))
    config["ops"]["raw_chat_logs"]["config"]["limit"] = 900
    config["ops"]["instruction_dataset"] = {"config": {"blend_share": 0.3}}
    config["ops"]["eval_report"]["config"].update({"max_test_examples": 16, "include_champion": False})
    del config["ops"]["pii_memorization"]
    selection = dg.AssetSelection.all() - dg.AssetSelection.assets("pii_memorization")
    result = dg.materialize([*ASSETS, *CHECKS], resources=local_resources(data_root), run_config=config,
                            tags=days_of_run_config(config), selection=selection)
    assert result.success

    dataset = output_meta(result, "instruction_dataset")
    assert dataset["answer_format"] == "intents" and dataset["blended_rows"]["train"] > 0 and dataset["blended_rows"]["test"] > 0
    trained = [json.loads(line) for p in (data_root / "artifacts" / "lora_adapter").glob("*/data/*.jsonl") for line in p.read_text().splitlines()]
    assert trained and all(json.loads(r["messages"][-1]["content"]).keys() == {"intents"} for r in trained)
    report = output_meta(result, "eval_report")
    multi = report["multi_intent"]
    served = report["served_system"]
    assert {"TF-IDF one-vs-rest + threshold", "MiniLM-L6 one-vs-rest + threshold", served, "base model zero-shot"} <= set(multi)
    assert 0.0 <= report["exact_set_accuracy"] <= 1.0 and report["out_of_taxonomy_rate"] == 0.0
    full = json.loads(Path(report["report_json"]).read_text())
    sets = full["multi_intent"]["systems"]
    assert sets[served]["oot_rate"] == 0.0 and sets["base model zero-shot"]["oot_rate"] == 0.0
    assert sets[served]["messages"] == full["multi_intent"]["n"] == 16
    assert max(int(k) for k in sets[served]["gold_intent_counts"]) >= 2  # the test blends are scored as sets
    assert "## Multi-intent messages (label sets)" in Path(report["report_markdown"]).read_text()
    assert "model_promotion" in {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert output_meta(result, "base_model")["reused_cached_conversion"] is True
    assert output_meta(result, "lora_adapter")["router_head"] == "generative"  # head auto: label sets need it


@pytest.mark.slow
def test_the_generative_router_runs_the_whole_graph(seeded_data_root, monkeypatch):
    """lora_adapter's head: generative (one field away from the default head) through the graph: the model writes
    the intent's name, awq_model quantizes a causal LM, eval_report scores it by constrained decoding (16-bit served,
    4-bit beside it) in the one table with the baselines, and the gate and the memorization probe take it."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    data_root = seeded_data_root
    config = json.loads(json.dumps(TINY))
    config["ops"]["raw_chat_logs"]["config"]["limit"] = 900
    config["ops"]["lora_adapter"]["config"].update({"head": "generative", "max_steps": 3})
    config["ops"]["eval_report"]["config"].update({"include_champion": False, "include_zero_shot": False})
    config["ops"]["pii_memorization"]["config"]["max_canaries"] = 2
    result = dg.materialize([*ASSETS, *CHECKS], resources=local_resources(data_root), run_config=config,
                            tags=days_of_run_config(config))
    assert result.success

    adapter = output_meta(result, "lora_adapter")
    assert adapter["router_head"] == "generative" and not is_head_model(adapter["adapter_dir"])
    quantized = Path(output_meta(result, "awq_model")["model_dir"])
    assert not is_head_model(quantized) and not is_head_model(quantized.parent / "merged")
    report = output_meta(result, "eval_report")
    systems = report["systems"]
    assert report["served_system"] in systems and report["out_of_taxonomy_rate"] == 0.0
    assert report["router"] == "generative"
    assert {"TF-IDF + linear SVM", "MiniLM-L6 + logistic regression"} <= set(systems) and len(systems) >= 4
    assert output_meta(result, "pii_memorization")["model_type"] == "generative"
    assert "model_promotion" in {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
