import dagster as dg
import pytest
from dagster._core.definitions.backfill_policy import BackfillPolicyType  # not exported at the top level

from intent_assets.assets.redacted_corpus import redacted_corpus_has_no_pii
from intent_assets.definitions import build_definitions, defs

DATA_ASSETS = {
    "raw_chat_logs", "quarantined_records", "intent_taxonomy", "redacted_corpus", "dataset_splits",
    "quarantined_labels", "synthetic_augments", "instruction_dataset", "pii_audit_log",
}
MODEL_ASSETS = {"base_model", "lora_adapter", "awq_model", "eval_report", "model_promotion", "pii_memorization"}
CORRECTION_ASSETS = {"agent_corrections"}
GROUPS = {**{a: "data" for a in DATA_ASSETS}, **{a: "model" for a in MODEL_ASSETS}, **{a: "corrections" for a in CORRECTION_ASSETS}}


def test_definitions_load_with_every_asset_and_job():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == DATA_ASSETS | MODEL_ASSETS | CORRECTION_ASSETS
    data = defs.resolve_job_def("data_job")  # instruction_dataset reads the corrections ledger: both in one job
    assert {k.to_user_string() for k in data.asset_layer.selected_asset_keys} == DATA_ASSETS | CORRECTION_ASSETS
    training = defs.resolve_job_def("training_job")
    assert {k.to_user_string() for k in training.asset_layer.selected_asset_keys} == MODEL_ASSETS


def test_the_continuous_learning_loop_is_wired():
    graph = defs.resolve_asset_graph()
    parents = lambda name: {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}  # noqa: E731
    assert "agent_corrections" in parents("instruction_dataset")
    assert {"eval_report", "awq_model"} <= parents("model_promotion")
    retrain = defs.resolve_job_def("retrain_job")
    assert {k.to_user_string() for k in retrain.asset_layer.selected_asset_keys} >= {
        "agent_corrections", "instruction_dataset", "lora_adapter", "awq_model", "eval_report", "model_promotion"}
    assert {s.name for s in defs.sensors} == {"agent_corrections_sensor", "retrain_on_corrections", "chat_log_days_sensor"}
    assert [s.cron_schedule for s in defs.schedules] == ["0 3 * * 1"]
    assert defs.resolve_job_def("rollback_job") is not None


def test_the_model_half_reads_the_instruction_dataset():
    graph = defs.resolve_asset_graph()
    parents = lambda name: {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}  # noqa: E731
    assert "instruction_dataset" in parents("lora_adapter")
    assert "lora_adapter" in parents("awq_model")
    assert {"awq_model", "instruction_dataset"} <= parents("eval_report")


def test_every_asset_is_documented_owned_grouped_and_kinded():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        name = key.to_user_string()
        assert node.description, f"{name} has no description"
        assert node.owners, f"{name} has no owner"
        assert node.group_name == GROUPS[name], name
        assert node.kinds, f"{name} has no kinds"
        assert node.tags.get("pii") in {"raw", "redacted", "none"}, f"{name} has no pii tag"


def test_raw_and_redacted_assets_use_different_io_managers():
    graph = defs.resolve_asset_graph()
    io_key = lambda name: graph.get(dg.AssetKey(name)).io_manager_key  # noqa: E731
    assert io_key("raw_chat_logs") == io_key("quarantined_records") == "raw_io_manager"
    assert io_key("redacted_corpus") == io_key("instruction_dataset") == io_key("pii_audit_log") == "io_manager"
    resources = build_definitions().resources
    assert resources["raw_io_manager"].base_dir != resources["io_manager"].base_dir  # separate locations


def test_pii_tags_mark_raw_and_redacted_assets():
    graph = defs.resolve_asset_graph()
    tag = lambda name: graph.get(dg.AssetKey(name)).tags.get("pii")  # noqa: E731
    assert tag("raw_chat_logs") == tag("quarantined_records") == "raw"
    for name in ("redacted_corpus", "pii_audit_log", "dataset_splits", "instruction_dataset", "lora_adapter", "eval_report"):
        assert tag(name) == "redacted", name


def test_the_pii_check_is_blocking():
    checks = {c.name for c in defs.resolve_asset_graph().asset_check_keys}
    assert "redacted_corpus_has_no_pii" in checks
    (spec,) = redacted_corpus_has_no_pii.check_specs
    assert spec.blocking and spec.asset_key == dg.AssetKey("redacted_corpus")


def test_unknown_environment_is_an_error():
    with pytest.raises(ValueError, match="unknown environment"):
        build_definitions("mars")


DAILY = {"raw_chat_logs", "quarantined_records", "redacted_corpus", "pii_audit_log"}


@pytest.mark.parametrize("environment, policy, per_run", [("local", BackfillPolicyType.SINGLE_RUN, None),
                                                          ("prod", BackfillPolicyType.MULTI_RUN, 7)])
def test_the_raw_and_redacted_tables_are_daily_partitions_with_a_backfill_policy_per_environment(
        environment, policy, per_run, monkeypatch):
    monkeypatch.setenv("INTENT_ASSETS_BUCKET", "b")
    monkeypatch.setenv("INTENT_ASSETS_RAW_BUCKET", "r")
    graph = build_definitions(environment).resolve_asset_graph()
    partitioned = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).partitions_def is not None}
    assert partitioned == DAILY  # dataset_splits onward read every day
    for key in DAILY:
        node = graph.get(dg.AssetKey(key))
        assert isinstance(node.partitions_def, dg.DailyPartitionsDefinition)
        assert node.partitions_def.start.date().isoformat() == "2025-01-01"
        assert (node.backfill_policy.policy_type, node.backfill_policy.max_partitions_per_run) == (policy, per_run)
    # the step that updates the persisted near-duplicate index runs in its own pool (limit 1: dagster.yaml)
    assert graph.get(dg.AssetKey("redacted_corpus")).pools == {"dedup_index"}
