"""The corrections sensor and the retraining sensor, evaluated with ``build_sensor_context``; exactly-once ingestion
when the sensor loses its cursor and when a run is killed mid-batch, against a real PostgreSQL server."""

import json
import os
import subprocess
import sys
import textwrap

import dagster as dg
import pandas as pd
import pytest

from intent_assets.assets.agent_corrections import BATCH_TAG, agent_corrections
from intent_assets.assets.intent_taxonomy import intent_taxonomy
from intent_assets.loop.corrections import BatchStore
from intent_assets.resources import FileCorrections, PostgresCorrections, RetrainPolicy, local_resources
from intent_assets.sensors import agent_corrections_sensor, retrain_on_corrections
from intent_assets_tests.loop.test_corrections import correction, insert_rows, needs_postgres, pg_dsn, write_jsonl  # noqa: F401

BANKING = ["card_arrival", "lost_or_stolen_card", "top_up_failed"]


def tick(instance, resources: dict, cursor: str | None, sensor=agent_corrections_sensor):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        result = sensor(context)
    if isinstance(result, dg.SkipReason):
        return [], cursor, result.skip_message
    skip = result.skip_reason.skip_message if result.skip_reason else None
    return list(result.run_requests or []), result.cursor, skip


def ingest(instance, resources: dict, request: dg.RunRequest):
    result = dg.materialize([intent_taxonomy, agent_corrections], resources=resources, instance=instance, run_config=request.run_config,
                            tags=request.tags, selection=[agent_corrections])
    assert result.success
    mat = result.asset_materializations_for_node("agent_corrections")[0]
    return {k: v.value for k, v in mat.metadata.items()}


@pytest.fixture
def setup(tmp_path):
    resources = local_resources(tmp_path / "data")
    inbox = tmp_path / "data" / "raw" / "corrections_inbox"
    with dg.instance_for_test() as instance:
        assert dg.materialize([intent_taxonomy], resources=resources, instance=instance).success
        yield instance, resources, inbox


def test_folder_sensor_new_files_no_change_and_restart_with_saved_cursor(setup):
    instance, resources, inbox = setup
    requests, cursor, skip = tick(instance, resources, None)
    assert requests == [] and "no new corrections" in skip

    write_jsonl(inbox / "2026-11-24.jsonl", [correction(1), correction(2, corrected="not_an_intent")])
    requests, cursor1, _ = tick(instance, resources, cursor)
    assert len(requests) == 1 and requests[0].run_key.startswith("file:2026-11-24.jsonl:")
    # the daemon dies before saving the cursor: the next tick asks for the very same run_key (Dagster dedups it)
    again, _, _ = tick(instance, resources, cursor)
    assert [r.run_key for r in again] == [r.run_key for r in requests]

    meta = ingest(instance, resources, requests[0])
    assert (meta["rows_in_this_run"], meta["accepted_this_run"], meta["quarantined_this_run"]) == (2, 1, 1)
    # no change: nothing to do, from the saved cursor or from a lost one (the batch is stored)
    assert tick(instance, resources, cursor1)[0] == []
    assert tick(instance, resources, None)[0] == []

    write_jsonl(inbox / "2026-11-25.jsonl", [correction(3)])
    requests, _, _ = tick(instance, resources, cursor1)
    assert [r.run_key.split(":")[1] for r in requests] == ["2026-11-25.jsonl"]


def test_a_backlog_spreads_over_ticks(setup):
    instance, resources, inbox = setup
    for i in range(5):
        write_jsonl(inbox / f"f{i}.jsonl", [correction(i)])
        os.utime(inbox / f"f{i}.jsonl", ns=(10**9 * (i + 1),) * 2)
    resources = {**resources, "retrain_policy": RetrainPolicy(max_batches_per_tick=2)}
    cursor, seen = None, []
    for _ in range(3):
        requests, cursor, _ = tick(instance, resources, cursor)
        assert len(requests) <= 2
        seen += [r.run_key.split(":")[1] for r in requests]
    assert seen == [f"f{i}.jsonl" for i in range(5)]


def test_retrain_sensor_fires_at_the_threshold(setup):
    instance, resources, inbox = setup
    policy = {"retrain_policy": RetrainPolicy(min_new_corrections=3)}
    assert tick(instance, policy, None, retrain_on_corrections)[0] == []  # never materialized
    write_jsonl(inbox / "a.jsonl", [correction(i) for i in range(2)])
    ingest(instance, resources, tick(instance, resources, None)[0][0])
    requests, cursor, skip = tick(instance, policy, None, retrain_on_corrections)
    assert requests == [] and "2 new corrections" in skip
    write_jsonl(inbox / "b.jsonl", [correction(i) for i in range(2, 4)])
    os.utime(inbox / "b.jsonl", ns=(os.stat(inbox / "a.jsonl").st_mtime_ns + 10**9,) * 2)
    ingest(instance, resources, dg.RunRequest(run_config={}))  # a manual run: every new batch
    requests, cursor, _ = tick(instance, policy, None, retrain_on_corrections)
    assert len(requests) == 1 and requests[0].run_key.startswith("retrain-") and cursor == "4"
    assert tick(instance, policy, cursor, retrain_on_corrections)[0] == []


KILLER = textwrap.dedent("""
    import json, os, signal, sys
    import dagster as dg
    import pandas as pd
    from intent_assets.assets.agent_corrections import agent_corrections
    from intent_assets.assets.intent_taxonomy import intent_taxonomy
    from intent_assets.resources import PostgresCorrections, local_resources

    # SIGKILL this run worker in the middle of storing the batch (after its first file is written)
    original = pd.DataFrame.to_parquet
    def to_parquet(self, path, *args, **kwargs):
        if str(path).endswith("quarantined.parquet"):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, path, *args, **kwargs)
    pd.DataFrame.to_parquet = to_parquet

    args = json.loads(sys.argv[1])
    resources = {**local_resources(args["root"]), "corrections": PostgresCorrections(dsn=args["dsn"], batch_size=args["batch_size"])}
    instance = dg.DagsterInstance.from_config(args["home"])
    dg.materialize([intent_taxonomy, agent_corrections], resources=resources, instance=instance, run_config=args["run_config"],
                   tags=args["tags"], selection=[agent_corrections])
""")


@needs_postgres
def test_exactly_once_when_the_sensor_and_a_run_die_mid_batch(tmp_path, pg_dsn):  # noqa: F811
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    root = tmp_path / "data"
    rows = [correction(i, message=f"msg{i % 20}", ts=f"2026-11-{10 + i // 20}T10:00:00Z",
                       corrected=BANKING[i % 3] if i % 17 else "not_an_intent") for i in range(50)]
    insert_rows(pg_dsn, rows)
    valid = [r for r in rows if r["corrected_intent"] != "not_an_intent"]
    resources = {**local_resources(root), "corrections": PostgresCorrections(dsn=pg_dsn, batch_size=20),
                 "retrain_policy": RetrainPolicy(max_batches_per_tick=2)}
    instance = dg.DagsterInstance.from_config(str(home))
    assert dg.materialize([intent_taxonomy], resources=resources, instance=instance).success

    requests, cursor, _ = tick(instance, resources, None)
    assert [r.run_key for r in requests] == ["pg:intent_corrections:0-20", "pg:intent_corrections:20-40"]
    assert [r.run_key for r in tick(instance, resources, None)[0]] == [r.run_key for r in requests]  # lost cursor

    ingest(instance, resources, requests[0])
    # the second batch's run worker is killed mid-batch
    args = {"root": str(root), "dsn": pg_dsn, "batch_size": 20, "home": str(home), "run_config": requests[1].run_config,
            "tags": requests[1].tags}
    killed = subprocess.run([sys.executable, "-c", KILLER, json.dumps(args)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "DAGSTER_HOME": str(home)})
    assert killed.returncode == -9, killed.stderr[-2000:]
    store = BatchStore(root / "artifacts" / "agent_corrections" / "batches")
    assert not store.has("pg:intent_corrections:20-40")  # nothing half-written is visible
    (run,) = instance.get_runs(filters=dg.RunsFilter(tags={BATCH_TAG: requests[1].tags[BATCH_TAG]}))
    assert run.status == dg.DagsterRunStatus.STARTED
    instance.report_run_failed(run)  # what Dagster's run monitoring does when a run worker is gone

    # the restarted sensor: retries the dead batch, and requests the last one
    requests, cursor, _ = tick(instance, resources, cursor)
    assert [r.run_key for r in requests] == ["pg:intent_corrections:20-40#retry1", "pg:intent_corrections:40-50"]
    for request in requests:
        meta = ingest(instance, resources, request)
    assert tick(instance, resources, cursor)[0] == []

    ledger = pd.read_parquet(root / "redacted" / "agent_corrections.parquet")
    # every correction exactly once: all 50 rows in, each stored once; one ledger row per corrected message
    assert meta["rows_in_total"] == 50 == meta["accepted_total"] + meta["quarantined_total"]
    assert meta["accepted_total"] == len(valid) and meta["duplicate_source_rows"] == 0
    assert len(ledger) == len({r["message_id"] for r in valid})
    assert ledger["source_row"].is_unique
    # the latest correction of each message wins
    latest = {}
    for r in valid:
        latest[r["message_id"]] = r["corrected_intent"]
    from intent_assets.loop.corrections import message_key

    assert dict(zip(ledger["message_key"], ledger["corrected_intent"])) == {message_key(m): i for m, i in latest.items()}
    assert meta["conflicting_messages"] > 0 and meta["superseded_corrections"] == len(valid) - len(ledger)


# ---------------------------------------------------------------------------------- new days of chat logs land
def _day(chats, day):
    return chats[chats["timestamp"].str.startswith(day)]


def test_landed_day_files_are_materialized_one_partition_each_and_a_changed_day_again(tmp_path):
    from intent_assets.definitions import defs
    from intent_assets.paths import DEFAULT_CHAT_LOGS
    from intent_assets.sensors import chat_log_days_sensor

    resources = local_resources(tmp_path / "data")
    landing = tmp_path / "data" / "raw" / "landing"
    chats = pd.read_json(DEFAULT_CHAT_LOGS, lines=True, dtype=False, convert_dates=False)
    with dg.instance_for_test() as instance:
        requests, cursor, skip = tick(instance, resources, None, chat_log_days_sensor)
        assert requests == [] and "no new or changed day files" in skip
        landing.mkdir(parents=True)
        _day(chats, "2025-01-02").to_json(landing / "2025-01-02.jsonl", orient="records", lines=True)
        _day(chats, "2025-01-03").to_json(landing / "chats-2025-01-03.jsonl", orient="records", lines=True)
        (landing / "notes.txt").write_text("not a day file")
        requests, cursor, _ = tick(instance, resources, cursor, chat_log_days_sensor)
        assert [r.partition_key for r in requests] == ["2025-01-02", "2025-01-03"]
        assert tick(instance, resources, cursor, chat_log_days_sensor)[0] == []  # nothing new: nothing asked

        job = defs.resolve_job_def("daily_logs_job")
        result = job.execute_in_process(run_config=requests[0].run_config, partition_key=requests[0].partition_key,
                                        instance=instance, resources=resources)
        assert result.success
        mat = result.asset_materializations_for_node("raw_chat_logs")[0]
        assert mat.partition == "2025-01-02" and mat.metadata["rows_in"].value == len(_day(chats, "2025-01-02"))
        assert [p.name for p in (tmp_path / "data" / "raw" / "raw_chat_logs").iterdir()] == ["2025-01-02.parquet"]

        # a late file for a day already requested: that day again, and only that day
        _day(chats, "2025-01-04").head(5).assign(timestamp="2025-01-02T23:00:00Z").to_json(
            landing / "2025-01-02-late.jsonl", orient="records", lines=True)
        requests, cursor, _ = tick(instance, resources, cursor, chat_log_days_sensor)
        assert [r.partition_key for r in requests] == ["2025-01-02"] and requests[0].run_key.startswith("2025-01-02:")
