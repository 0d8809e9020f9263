"""What an analyst sees in the Dagster UI without running anything: every asset documented, owned, grouped, kinded,
tagged and linked to its code; checks for data and model quality; launchpad config validated before work starts;
the ``tiny`` environment's caps."""

import dagster as dg
import pandas as pd
import pytest
from pydantic import ValidationError

from intent_assets import quality
from intent_assets.assets.awq_model import AwqModelConfig
from intent_assets.assets.lora_adapter import LoraAdapterConfig
from intent_assets.assets.raw_chat_logs import RawChatLogsConfig, raw_chat_logs
from intent_assets.definitions import build_definitions, defs
from intent_assets.progress import Progress
from intent_assets.resources import ChatLogSource, InferenceEngine, TrainerBackend, resources_for


def test_every_asset_has_description_owner_group_kinds_tags_and_a_code_reference():
    graph = defs.resolve_asset_graph()
    missing = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        refs = node.metadata.get("dagster/code_references")
        gaps = [name for name, ok in (
            ("description", bool(node.description and len(node.description) > 40)),
            ("owners", bool(node.owners)),
            ("group", node.group_name in {"data", "model", "corrections"}),
            ("kinds", bool(node.kinds)),
            ("tags", "pii" in node.tags),
            ("code reference", bool(refs and refs.code_references)),
        ) if not ok]
        if gaps:
            missing[key.to_user_string()] = gaps
    assert missing == {}


def test_code_references_point_at_the_defining_files():
    graph = defs.resolve_asset_graph()
    refs = graph.get(dg.AssetKey("eval_report")).metadata["dagster/code_references"].code_references
    assert any(getattr(r, "file_path", "").endswith("intent_assets/assets/eval_report.py") for r in refs)


def test_link_code_references_to_git_when_a_repository_url_is_set(monkeypatch):
    monkeypatch.setenv("INTENT_ASSETS_GIT_URL", "https://git.example.com/acme/intent_assets")
    monkeypatch.setenv("INTENT_ASSETS_GIT_BRANCH", "release")
    graph = build_definitions("local").resolve_asset_graph()
    (ref,) = graph.get(dg.AssetKey("eval_report")).metadata["dagster/code_references"].code_references
    assert ref.url.startswith("https://git.example.com/acme/intent_assets/tree/release/intent_assets/assets/eval_report.py")


EXPECTED_CHECKS = {
    # data quality
    "raw_chat_logs": {"raw_chat_logs_schema"},
    "quarantined_records": {"quarantine_share_within_limit"},
    "redacted_corpus": {"redacted_corpus_has_no_pii"},
    "instruction_dataset": {"synthetic_share_within_cap"},
    # model quality
    "eval_report": {"fine_tuned_beats_zero_shot", "fine_tuned_beats_classical_baselines"},
    "pii_memorization": {"no_canary_completed"},
    "model_promotion": {"challenger_promoted"},
}


def test_data_and_model_quality_checks_are_defined_and_described():
    graph = defs.resolve_asset_graph()
    found: dict[str, set[str]] = {}
    for check_key in graph.asset_check_keys:
        found.setdefault(check_key.asset_key.to_user_string(), set()).add(check_key.name)
    assert found == EXPECTED_CHECKS
    for check_key in graph.asset_check_keys:
        assert graph.get_check_spec(check_key).description, check_key


# ------------------------------------------------------------------------------------------ launchpad config
def test_a_value_outside_the_choices_is_rejected_when_the_run_config_is_validated():
    """Dagster validates run config before it launches a run (the launchpad shows the error): a backend that does
    not exist never reaches a step."""
    job = defs.resolve_job_def("training_job")
    with pytest.raises(dg.DagsterInvalidConfigError, match="backend"):
        dg.validate_run_config(job, {"ops": {"lora_adapter": {"config": {"backend": "tpu"}}}})
    with pytest.raises(dg.DagsterInvalidConfigError, match="dtype"):
        dg.validate_run_config(job, {"ops": {"base_model": {"config": {"dtype": "int3"}}}})
    assert dg.validate_run_config(job, {"ops": {"lora_adapter": {"config": {"backend": "qlora", "r": 16}}}})


@pytest.mark.parametrize("config_cls, values, message", [
    (LoraAdapterConfig, {"r": 0}, "greater than or equal to 1"),
    (LoraAdapterConfig, {"dropout": 1.5}, "less than 1"),
    (LoraAdapterConfig, {"learning_rate": -1e-3}, "greater than 0"),
    (LoraAdapterConfig, {"num_epochs": 0}, "greater than 0"),
    (AwqModelConfig, {"group_size": 0}, "group_size must be a positive"),
    (AwqModelConfig, {"num_calibration_samples": 0}, "greater than or equal to 1"),
    (RawChatLogsConfig, {"path": "no/such/logs.jsonl"}, "no file or folder"),
])
def test_out_of_range_values_get_a_clear_error(config_cls, values, message):
    with pytest.raises(ValidationError, match=message):
        config_cls(**values)


def test_an_invalid_config_fails_the_step_before_any_work(tmp_path):
    """Range checks run when the step parses its config, before the asset's body: no output is written."""
    resources = {"raw_io_manager": resources_for("local")["raw_io_manager"].model_copy(update={"base_dir": str(tmp_path)}),
                 "chat_log_source": ChatLogSource()}
    result = dg.materialize([raw_chat_logs], resources=resources, raise_on_error=False, partition_key="2025-01-01",
                            run_config={"ops": {"raw_chat_logs": {"config": {"path": str(tmp_path / "missing.jsonl")}}}})
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "no file or folder" in failure.event_specific_data.error.to_string()
    assert not any(tmp_path.rglob("*.parquet"))


# ------------------------------------------------------------------------------------------ tiny environment
def test_the_tiny_environment_caps_a_default_materialization(monkeypatch):
    monkeypatch.setenv("INTENT_ASSETS_ENV", "tiny")
    resources = resources_for()
    trainer, inference = resources["trainer"], resources["inference"]
    recipe = LoraAdapterConfig().training_config(trainer.budget(), trainer.defaults())
    assert (recipe.max_steps, recipe.r, recipe.max_train_examples, recipe.checkpoint_steps) == (2, 8, 16, 1)
    assert recipe.effective_batch_size % recipe.per_device_batch_size == 0
    assert trainer.calibration_budget() == {"num_calibration_samples": 2, "max_calibration_tokens": 32}
    assert inference.cap("test_examples", None) == 12 and inference.cap("latency_requests", 32) == 2
    assert resources["chat_log_source"].cap(None) == 900
    # the local default has none of these caps on evaluation or data; prod none at all
    local = resources_for("local")
    assert local["inference"].cap("test_examples", None) is None and local["chat_log_source"].cap(None) is None
    assert TrainerBackend().budget() == {} and TrainerBackend().calibration_budget() == {}


def test_caps_only_lower_values():
    engine = InferenceEngine(max_test_examples=12)
    assert engine.cap("test_examples", 5) == 5 and engine.cap("test_examples", 500) == 12
    assert ChatLogSource(max_records=10).cap(3) == 3
    recipe = LoraAdapterConfig(r=4).training_config(TrainerBackend(max_lora_r=8).budget())
    assert recipe.r == 4


# ------------------------------------------------------------------------------------------ quality rules
def test_quarantine_share_rule():
    assert quality.quarantine_share(990, 10)[0]
    passed, details = quality.quarantine_share(80, 20)
    assert not passed and details["quarantine_share"] == 0.2
    assert not quality.quarantine_share(0, 0)[0]


def test_synthetic_share_rule_flags_an_intent_over_its_cap():
    rows = [("train", "a", False)] * 10 + [("train", "a", True)] * 3 + [("train", "b", False)] * 10 + [("train", "b", True)] * 4
    frame = pd.DataFrame(rows, columns=["split", "intent", "synthetic"])
    passed, details = quality.synthetic_share_by_intent(frame, max_share=0.3)
    assert not passed and set(details["intents_over_cap"]) == {"b"}
    assert quality.synthetic_share_by_intent(frame[frame["intent"] == "a"], max_share=0.3)[0]


def test_compare_systems_rule():
    summary = {"ft": {"macro_f1": 0.5}, "svm": {"macro_f1": 0.9}, "zs": {"macro_f1": 0.1}}
    assert quality.compare_systems(summary, "ft", ("zs",))[0]
    passed, details = quality.compare_systems(summary, "ft", ("svm", "zs"))
    assert not passed and details["best_baseline"] == "svm" and details["margin"] == -0.4
    assert not quality.compare_systems(summary, "missing", ("svm",))[0]


def test_a_list_model_is_checked_against_the_list_baselines_on_every_test_message():
    from intent_assets.assets.checks import fine_tuned_beats_classical_baselines

    ft = "fine-tuned 16-bit (merged)"
    single = {ft: {"accuracy": 0.73, "macro_f1": 0.13}, "TF-IDF + linear SVM": {"accuracy": 0.87, "macro_f1": 0.14}}
    sets = lambda ours: {ft: {"exact_set_accuracy": ours},  # noqa: E731  (eval_report's multi_intent summary)
                         "TF-IDF one-vs-rest + threshold": {"exact_set_accuracy": 0.55}}
    report = {"fine_tuned": ft, "summary": single}
    assert not fine_tuned_beats_classical_baselines(report).passed  # single-label: below TF-IDF
    listed = fine_tuned_beats_classical_baselines({**report, "multi_intent": sets(0.73)})
    assert listed.passed and listed.metadata["single_intent_passed"].value is False
    assert listed.metadata["label_sets_best_baseline"].value == "TF-IDF one-vs-rest + threshold"
    assert not fine_tuned_beats_classical_baselines({**report, "multi_intent": sets(0.50)}).passed


def test_schema_rule_reports_columns_and_checks_but_no_values():
    from intent_assets.data.chat_logs import CHAT_LOG_SCHEMA

    frame = pd.DataFrame({"record_id": ["r1"], "conversation_id": ["c1"], "turn": [1],
                          "timestamp": pd.to_datetime(["2025-01-01"], utc=True), "speaker": ["robot"],
                          "text": ["secret value 4111"], "intent": [""], "channel": ["chat"]})
    violations = quality.schema_violations(frame, CHAT_LOG_SCHEMA)
    assert violations and violations[0]["column"] == "speaker"
    assert "robot" not in str(violations) and "4111" not in str(violations)
    assert quality.schema_violations(frame.assign(speaker="customer"), CHAT_LOG_SCHEMA) == []


# ------------------------------------------------------------------------------------------ progress
def test_progress_logs_a_handful_of_lines_with_an_eta():
    lines: list[str] = []
    progress = Progress(lines.append, "eval", total=50, unit="batch")
    for i in range(1, 51):
        progress.update(i)
    assert len(lines) == 10 and lines[-1].startswith("eval: batch 50/50") and "ETA" in lines[0]


def test_time_predictions_logs_batch_progress():
    from intent_assets.model.baselines import time_predictions

    lines: list[str] = []
    time_predictions(lambda batch: ["x"] * len(batch), [f"t{i}" for i in range(40)], batch_size=4, single_requests=1,
                     log=lines.append, label="svm")
    assert lines[-1].startswith("svm: batch 10/10") and len(lines) == 10


def test_awq_layer_progress_logs_each_tenth_of_the_layers_and_removes_its_hooks():
    import torch

    from intent_assets.model.quantization import layer_progress

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = torch.nn.Module()
            self.model.layers = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(30))

        def forward(self, x):
            for layer in self.model.layers:
                x = layer(x)
            return x

    model, lines = Tiny(), []
    with layer_progress(model, lines.append):
        for _ in range(2):  # calibration passes run every layer several times: one line per layer reached
            model(torch.zeros(1, 4))
    assert lines[0].startswith("AWQ: layer 3/30") and lines[-1].startswith("AWQ: layer 30/30") and len(lines) == 10
    assert all(not layer._forward_pre_hooks for layer in model.model.layers)
