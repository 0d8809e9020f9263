"""The ``prod`` resources against a moto S3 server: tables through dagster-aws, raw and redacted in separate
buckets, model directories published and fetched with a verified manifest."""

import shutil

import dagster as dg
import pandas as pd
import pytest

from intent_assets.assets.common import partition_range_tags
from intent_assets.assets.intent_taxonomy import intent_taxonomy
from intent_assets.assets.raw_chat_logs import raw_chat_logs
from intent_assets.definitions import build_definitions
from intent_assets.deploy.s3_artifacts import ManifestError, list_keys
from intent_assets.resources import S3ArtifactStore, prod_resources, resources_for

RAW, REDACTED = "intent-raw-pii", "intent-redacted"


@pytest.fixture
def prod_env(s3_endpoint, s3_client, monkeypatch, tmp_path):
    for bucket in (RAW, REDACTED):
        s3_client.create_bucket(Bucket=bucket)
    monkeypatch.setenv("INTENT_ASSETS_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("INTENT_ASSETS_RAW_BUCKET", RAW)
    monkeypatch.setenv("INTENT_ASSETS_BUCKET", REDACTED)
    yield prod_resources(tmp_path / "scratch")
    for bucket in (RAW, REDACTED):
        keys = list_keys(s3_client, bucket, "")
        if keys:
            s3_client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})
        s3_client.delete_bucket(Bucket=bucket)


def test_tables_round_trip_through_s3_with_raw_pii_in_its_own_bucket(prod_env, s3_client):
    @dg.asset(ins={"raw_chat_logs": dg.AssetIn(), "intent_taxonomy": dg.AssetIn()})
    def reads_back(raw_chat_logs: pd.DataFrame, intent_taxonomy: dict) -> None:
        assert len(raw_chat_logs) > 0 and {"text", "speaker"} <= set(raw_chat_logs.columns)
        assert intent_taxonomy["intents"]

    result = dg.materialize(
        [raw_chat_logs, intent_taxonomy, reads_back],
        resources={k: v for k, v in prod_env.items() if k in ("io_manager", "raw_io_manager", "chat_log_source")},
        run_config={"ops": {"raw_chat_logs": {"config": {"limit": 40}}}},
        selection=["raw_chat_logs", "quarantined_records", "intent_taxonomy", "reads_back"],
        tags=partition_range_tags("2025-01-01", "2025-01-03"),
        raise_on_error=False,
    )
    failures = [e.event_specific_data.error.to_string() for e in result.all_events if e.is_step_failure]
    assert result.success, failures
    raw_keys = set(list_keys(s3_client, RAW, ""))
    redacted_keys = set(list_keys(s3_client, REDACTED, ""))
    # one object per daily partition (the sample's first 40 records are from the first three days)
    assert {f"raw/{a}/2025-01-0{d}.parquet" for a in ("raw_chat_logs", "quarantined_records") for d in (1, 2, 3)} <= raw_keys
    assert "redacted/intent_taxonomy.json" in redacted_keys
    assert not any("raw_chat_logs" in k or "quarantined_records" in k for k in redacted_keys)  # no PII here
    assert not any(k.endswith(".pkl") or "pickle" in k for k in raw_keys | redacted_keys)


def test_a_day_landed_in_the_raw_bucket_is_listed_then_read_for_its_partition_only(prod_env, s3_client, tmp_path, monkeypatch):
    import tempfile

    from intent_assets.paths import DEFAULT_CHAT_LOGS

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the step stages the downloaded day
    from intent_assets.sensors import chat_log_days_sensor

    lines = DEFAULT_CHAT_LOGS.read_text().splitlines()
    day = [line for line in lines if '"2025-01-02' in line]
    s3_client.put_object(Bucket=RAW, Key="chat_logs/2025-01-02.jsonl", Body="\n".join(day).encode())
    s3_client.put_object(Bucket=RAW, Key="chat_logs/day=2025-01-03/part-0.jsonl", Body=b"{broken\n")
    resources = {k: v for k, v in prod_env.items() if k in ("raw_io_manager", "chat_log_source")}
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            requests = chat_log_days_sensor(context).run_requests
        assert [r.partition_key for r in requests] == ["2025-01-02", "2025-01-03"]
        result = dg.materialize([raw_chat_logs], resources=resources, instance=instance,
                                partition_key="2025-01-02", run_config=requests[0].run_config)
    assert result.success
    mat = result.asset_materializations_for_node("raw_chat_logs")[0]
    assert mat.metadata["rows_in"].value == len(day) and mat.metadata["source"].value == f"s3://{RAW}/chat_logs/"
    assert {"raw/raw_chat_logs/2025-01-02.parquet"} == {k for k in list_keys(s3_client, RAW, "raw/") if "raw_chat_logs" in k}
    # the downloaded day files lived in a temporary folder: no raw copy left on the pod's disk
    assert list((tmp_path / "tmp").iterdir()) == []


def test_artifact_store_publishes_a_model_directory_and_another_pod_fetches_it_verified(prod_env, tmp_path):
    # as in a step: EnvVars (bucket, endpoint, region) resolved, the nested dagster-aws S3Resource initialized
    with dg.build_resources({"artifacts": prod_env["artifacts"]}) as resources:
        store: S3ArtifactStore = resources.artifacts
        client = store.s3.get_client()
        adapter = store.path("lora_adapter", "run1", "adapter")
        (adapter / "adapter_model.safetensors").write_bytes(b"\1" * 4096)
        (adapter / "adapter_config.json").write_text('{"r": 64}')
        assert store.publish(adapter) == f"s3://{REDACTED}/artifacts/lora_adapter/run1/adapter/"
        assert "artifacts/lora_adapter/run1/adapter/_manifest.json" in list_keys(client, REDACTED, "artifacts")

        other_root = tmp_path / "other-pod" / "artifacts"
        other_pod = store.model_copy(update={"base_dir": str(other_root)})
        fetched = other_pod.fetch(other_root / "lora_adapter" / "run1" / "adapter")
        assert (fetched / "adapter_config.json").read_text() == '{"r": 64}'
        assert other_pod.fetch(other_root / "never", missing_ok=True) == other_root / "never"
        assert other_pod.fetch(tmp_path / "baked-into-image", missing_ok=True) == tmp_path / "baked-into-image"
        with pytest.raises(ValueError, match="prod artifacts live under"):
            other_pod.publish(tmp_path)

        client.put_object(Bucket=REDACTED, Key="artifacts/lora_adapter/run1/adapter/adapter_config.json", Body=b'{"r": 8}')
        third_root = tmp_path / "third-pod"
        with pytest.raises(ManifestError, match="adapter_config.json"):
            store.model_copy(update={"base_dir": str(third_root)}).fetch(third_root / "lora_adapter" / "run1" / "adapter")
        assert not (third_root / "lora_adapter" / "run1" / "adapter").exists()

        # the corrections sensor lists stored batches without downloading them
        for name in ("batch-a", "batch-b"):
            (store.path("agent_corrections", "batches", name) / "batch.json").write_text("{}")
            store.publish(store.path("agent_corrections", "batches", name))
        assert other_pod.children(other_root / "agent_corrections" / "batches") == ["batch-a", "batch-b"]
        assert other_pod.children(other_root / "nothing") == []


def test_champion_uri_names_the_s3_prefix_of_the_champion_for_the_serving_chart(prod_env, tmp_path, monkeypatch, capsys):
    """What k8s/README.md step 9 runs in the code-server pod: the registry is fetched from S3 in a fresh pod and the
    champion's model prefix is printed, as the intent-router chart's model.uri."""
    from intent_assets.cli import main
    from intent_assets.loop.registry import GateDecision, ModelRegistry

    monkeypatch.setenv("INTENT_ASSETS_ENV", "prod")
    monkeypatch.setenv("INTENT_ASSETS_DATA_DIR", str(tmp_path / "scratch"))  # every pod's scratch data folder
    assert main(["champion-uri"]) == 1 and "has no champion yet" in capsys.readouterr().err

    with dg.build_resources({"artifacts": prod_env["artifacts"]}) as resources:  # the pod that ran model_promotion
        store = resources.artifacts
        model = store.path("awq_model", "rk1", "quantized")
        registry = ModelRegistry(store.path("registry"))
        entry = registry.register(str(model), "rk1", {"macro_f1": 0.8}, {})
        registry.decide(entry["version"], GateDecision(promote=True, reasons=["first model"]))
        store.publish(registry.root)
    shutil.rmtree(tmp_path / "scratch")  # the code server is another pod: nothing local, the registry comes from S3
    assert main(["champion-uri"]) == 0
    assert capsys.readouterr().out.strip() == f"s3://{REDACTED}/artifacts/awq_model/rk1/quantized/"


def test_prod_is_selected_by_the_environment_variable_and_local_stays_the_default(monkeypatch):
    monkeypatch.delenv("INTENT_ASSETS_ENV", raising=False)
    assert type(resources_for()["io_manager"]).__name__ == "LocalTableIOManager"
    monkeypatch.setenv("INTENT_ASSETS_ENV", "prod")
    assert type(resources_for()["io_manager"]).__name__ == "S3TableIOManager"
    assert type(resources_for()["corrections"]).__name__ == "FileCorrections"  # files in the raw bucket
    monkeypatch.setenv("INTENT_ASSETS_CORRECTIONS_DSN", "host=db user=x")
    assert type(resources_for()["corrections"]).__name__ == "PostgresCorrections"
    defs = build_definitions()
    assert defs.resolve_job_def("training_job").executor_def.name == "k8s_prod"
    # tiny (the browser test, quick demos): steps in the run's own process; local keeps Dagster's multiprocess default
    assert build_definitions("tiny").resolve_job_def("training_job").executor_def.name == "in_process"
    assert build_definitions("local").resolve_job_def("training_job").executor_def.name == "multi_or_in_process_executor"


def test_paraphrase_llm_without_credentials_tears_down_cleanly(monkeypatch):
    from intent_assets.resources import ParaphraseLLM

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    llm = ParaphraseLLM()
    context = dg.build_init_resource_context()
    llm.setup_for_execution(context)
    assert not llm.configured
    llm.teardown_after_execution(context)  # dagster-openai's closes a client that was never made: AttributeError


def test_full_data_switch_lifts_the_cpu_caps_and_keeps_the_tuned_recipe(monkeypatch, tmp_path):
    """INTENT_ASSETS_ENV=full: every training message, the whole test split; the generative router trains epochs
    until early stopping, the classification head its own 3-epoch schedule."""
    from intent_assets.assets.lora_adapter import LoraAdapterConfig

    monkeypatch.setenv("INTENT_ASSETS_ENV", "full")
    monkeypatch.setenv("INTENT_ASSETS_DATA_DIR", str(tmp_path))
    full = resources_for()
    assert type(full["io_manager"]).__name__ == "LocalTableIOManager"
    trainer, inference = full["trainer"], full["inference"]
    recipe = LoraAdapterConfig(head="generative").training_config(trainer.budget(), trainer.defaults())
    assert recipe.max_train_examples is None and recipe.max_steps is None and recipe.early_stopping_patience >= 1
    assert recipe.num_epochs == 8 and recipe.checkpoint_steps == 100 and recipe.max_eval_examples == 256
    head = LoraAdapterConfig().training_config(trainer.budget(), trainer.defaults())
    assert (head.head, head.num_epochs, head.early_stopping_patience, head.max_train_examples) == ("classifier", 3, 0, None)
    assert LoraAdapterConfig(num_epochs=2).training_config(trainer.budget(), trainer.defaults()).num_epochs == 2
    assert inference.cap("test_examples", None) is None and full["chat_log_source"].cap(None) is None
    monkeypatch.setenv("INTENT_ASSETS_ENV", "local")
    local = resources_for()["trainer"]
    capped = LoraAdapterConfig().training_config(local.budget(), local.defaults())
    assert capped.max_train_examples and capped.max_steps  # the embedded default stays a CPU-sized run
    assert capped.num_epochs == 3  # the recipe's


# ------------------------------------------------------------------------------------ partitioned tables, locally
def test_a_partitioned_table_is_one_file_per_day_and_reads_back_as_one_frame(tmp_path):
    from intent_assets.resources import LocalTableIOManager

    io = LocalTableIOManager(base_dir=str(tmp_path))
    key = dg.AssetKey("daily")
    out = lambda keys: dg.build_output_context(asset_key=key, partition_key=keys[0]) if len(keys) == 1 else None  # noqa: E731
    io.handle_output(out(["2025-01-02"]), {"2025-01-02": pd.DataFrame({"day": ["2025-01-02"], "n": [2]})})
    io.handle_output(out(["2025-01-04"]), {"2025-01-04": pd.DataFrame({"day": ["2025-01-04"] * 2, "n": [4, 5]})})
    assert sorted(p.name for p in (tmp_path / "daily").iterdir()) == ["2025-01-02.parquet", "2025-01-04.parquet"]
    # every stored day, in day order; some days (a missing one is skipped); one missing day alone is an error
    assert list(io.load_table("daily")["n"]) == [2, 4, 5]
    assert list(io.load_table("daily", ["2025-01-01", "2025-01-02", "2025-01-03"])["n"]) == [2]
    with pytest.raises(FileNotFoundError, match=r"partition\(s\) 2025-01-03..2025-01-03 not materialized yet"):
        io.load_table("daily", ["2025-01-03"])
    # a partitioned output must say which day each frame is
    with pytest.raises(TypeError, match="one DataFrame per partition key of the run"):
        io.handle_output(out(["2025-01-05"]), pd.DataFrame({"n": [1]}))
    with pytest.raises(TypeError, match="got \\['2025-01-06'\\]"):
        io.handle_output(out(["2025-01-05"]), {"2025-01-06": pd.DataFrame({"n": [1]})})
