"""The prod instance (k8s/dagster.yaml): dagster-postgres run, event-log and schedule storage, against a real
PostgreSQL 15 on 127.0.0.1 started for this module."""

import os

import dagster as dg
import pytest
import yaml
from dagster._core.instance import DagsterInstance

from intent_assets.paths import PROJECT_DIR
from intent_assets_tests.postgres_server import postgres_bin_dir, postgres_server

INSTANCE_YAML = PROJECT_DIR / "k8s" / "dagster.yaml"


@pytest.fixture(scope="module")
def postgres():
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        if os.environ.get("INTENT_ASSETS_REQUIRE_POSTGRES"):  # set by .ci/run: CI never skips this
            pytest.fail("PostgreSQL server binaries not installed and INTENT_ASSETS_REQUIRE_POSTGRES is set")
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql; .ci/run installs them)")
    with postgres_server(bin_dir) as server:
        yield server


@pytest.fixture
def prod_instance(postgres, tmp_path, monkeypatch):
    """A DAGSTER_HOME holding k8s/dagster.yaml's storage and coordinator sections, with the pod's environment."""
    config = yaml.safe_load(INSTANCE_YAML.read_text())
    # the K8sRunLauncher and the S3 compute logs need a cluster and a bucket: tested elsewhere (job specs, moto)
    storage_only = {k: v for k, v in config.items() if k not in ("run_launcher", "compute_logs") and not k.startswith("x-")}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(storage_only))
    for name, value in {"DAGSTER_PG_HOST": postgres["host"], "DAGSTER_PG_PORT": str(postgres["port"]),
                        "DAGSTER_PG_DB": postgres["db"], "DAGSTER_PG_USER": postgres["user"],
                        "DAGSTER_PG_PASSWORD": postgres["password"]}.items():
        monkeypatch.setenv(name, value)
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        yield instance


def test_the_prod_instance_keeps_runs_events_and_schedules_in_postgres(prod_instance):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    assert isinstance(prod_instance.run_storage, PostgresRunStorage)
    assert isinstance(prod_instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(prod_instance.schedule_storage, PostgresScheduleStorage)
    assert prod_instance.run_storage.postgres_url.startswith("postgresql+psycopg2://")
    assert type(prod_instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    concurrency = prod_instance.get_concurrency_config()
    assert concurrency.pool_config.default_pool_limit == 2  # the GPU steps' pool (k8s_config.GPU_POOL)
    assert concurrency.run_queue_config.max_concurrent_runs == 8

    @dg.asset
    def tiny() -> int:
        return 1

    result = dg.materialize([tiny], instance=prod_instance)
    assert result.success
    assert prod_instance.get_run_by_id(result.run_id).is_success  # run storage
    event = prod_instance.get_latest_materialization_event(dg.AssetKey("tiny"))  # event-log storage
    assert event is not None and event.run_id == result.run_id
    assert prod_instance.all_instigator_state() == []  # schedule storage: its tables exist and answer


def test_the_instance_file_holds_no_secret_and_uses_the_psycopg2_scheme():
    text = INSTANCE_YAML.read_text()
    config = yaml.safe_load(text)
    for section in ("run_storage", "event_log_storage", "schedule_storage"):
        db = config[section]["config"]["postgres_db"]
        assert db["password"] == {"env": "DAGSTER_PG_PASSWORD"} and db["scheme"] == "postgresql+psycopg2"
    assert config["run_launcher"]["config"]["postgres_password_secret"] == "dagster-postgresql-secret"
