"""The continuous-learning loop: jobs, sensors and the weekly schedule.

* ``agent_corrections_sensor`` watches the corrections source and requests one ``corrections_job`` run per new
  batch, with the batch id as ``run_key``. Its cursor is a high-water mark of batch positions plus the batches
  requested but not yet stored. A batch whose runs all failed is requested again (``<batch id>#retry<n>``); a batch
  already stored is never requested again, even from a lost cursor. A tick requests at most
  ``RetrainPolicy.max_batches_per_tick`` batches: a backlog spreads over ticks, each far inside Dagster's 60 s.
* ``retrain_on_corrections`` requests ``retrain_job`` once ``RetrainPolicy.min_new_corrections`` corrections
  were accepted since the last retraining it requested.
* ``weekly_retrain`` runs ``retrain_job`` every Monday at 03:00 UTC whatever the count.
* ``chat_log_days_sensor`` watches where each day's chat logs land (``ChatLogSource.landing``: a local folder, or
  a prefix of the raw bucket) and requests one ``daily_logs_job`` run per day whose files are new or changed, for
  that day's partition only (run key: the day and a fingerprint of its files). Its cursor maps each day to the
  fingerprint last requested; a day rewritten or completed by a late file is requested again (re-running a day
  replaces its rows and its share of the dedup index). It lists; it never reads a file.
"""

import hashlib
import json

import dagster as dg

from intent_assets.assets.agent_corrections import BATCH_TAG, BATCHES_DIR, agent_corrections
from intent_assets.assets.common import DAILY
from intent_assets.assets.pii_audit_log import pii_audit_log
from intent_assets.assets.raw_chat_logs import LANDING, raw_chat_logs
from intent_assets.assets.redacted_corpus import redacted_corpus
from intent_assets.loop.corrections import BatchStore
from intent_assets.resources import ArtifactStore, ChatLogSource, CorrectionsSource, RetrainPolicy

corrections_job = dg.define_asset_job(
    "corrections_job", selection=dg.AssetSelection.assets(agent_corrections),
    description="Ingest one batch of agents' corrections (validated, redacted, stored; the ledger updated).",
)
retrain_job = dg.define_asset_job(
    "retrain_job", selection=dg.AssetSelection.assets(agent_corrections).downstream(),
    description="Corrections → instruction dataset → LoRA adapter → 4-bit model → evaluation → promotion gate.",
)

LANDING_CONFIG = {"ops": {"raw_chat_logs": {"config": {"path": LANDING}}}}
daily_logs_job = dg.define_asset_job(
    "daily_logs_job", selection=dg.AssetSelection.assets(raw_chat_logs, redacted_corpus, pii_audit_log), partitions_def=DAILY,
    description="Days of landed chat logs (ChatLogSource.landing): validated, quarantined, redacted, deduplicated "
    "against history, audited.",
    config=LANDING_CONFIG,
)

FAILED = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
MAX_DAYS_PER_TICK = 31  # a backlog of landed days spreads over ticks (each run is one day)


def batch_run_request(batch_id: str, position: str, run_key: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=run_key,
        run_config={"ops": {"agent_corrections": {"config": {"batches": [{"batch_id": batch_id, "position": position}]}}}},
        tags={BATCH_TAG: BatchStore.dirname(batch_id)},
    )


@dg.sensor(job=corrections_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def agent_corrections_sensor(context: dg.SensorEvaluationContext, corrections: CorrectionsSource,
                             artifacts: ArtifactStore, retrain_policy: RetrainPolicy):
    """One run per new batch of corrections (run_key = batch id); failed batches are retried."""
    state = json.loads(context.cursor) if context.cursor else {"hwm": None, "inflight": {}}
    stored = set(artifacts.children(artifacts.path(*BATCHES_DIR)))  # one listing, no download

    def is_stored(batch_id: str) -> bool:
        return BatchStore.dirname(batch_id) in stored

    requests = []
    for batch_id, position in sorted(state["inflight"].items(), key=lambda kv: kv[1]):
        if is_stored(batch_id):
            del state["inflight"][batch_id]
            continue
        runs = context.instance.get_runs(filters=dg.RunsFilter(tags={BATCH_TAG: BatchStore.dirname(batch_id)}))
        if runs and all(r.status in FAILED for r in runs):
            requests.append(batch_run_request(batch_id, position, f"{batch_id}#retry{len(runs)}"))
    new = corrections.client().batches_after(state["hwm"], retrain_policy.max_batches_per_tick)
    for batch in new:
        if not is_stored(batch.batch_id):
            requests.append(batch_run_request(batch.batch_id, batch.position, batch.batch_id))
            state["inflight"][batch.batch_id] = batch.position
    if new:
        state["hwm"] = new[-1].position
    cursor = json.dumps(state, sort_keys=True)
    if not requests:
        return dg.SensorResult(skip_reason=f"no new corrections in {corrections.describe()}", cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)


@dg.sensor(job=retrain_job, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.STOPPED)
def retrain_on_corrections(context: dg.SensorEvaluationContext, retrain_policy: RetrainPolicy):
    """Retrain once enough corrections were accepted since the last retraining this sensor requested."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey("agent_corrections"))
    if event is None or event.asset_materialization is None:
        return dg.SkipReason("agent_corrections was never materialized")
    metadata = event.asset_materialization.metadata
    accepted, version = int(metadata["accepted_total"].value), str(metadata["corrections_version"].value)
    last = int(context.cursor or 0)
    if accepted - last < retrain_policy.min_new_corrections:
        return dg.SkipReason(f"{accepted - last} new corrections since the last retraining "
                             f"(threshold {retrain_policy.min_new_corrections})")
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"retrain-{version}")], cursor=str(accepted))


weekly_retrain = dg.ScheduleDefinition(
    name="weekly_retrain", job=retrain_job, cron_schedule="0 3 * * 1", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Retrain on whatever corrections there are, every Monday 03:00 UTC.",
)

@dg.sensor(job=daily_logs_job, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.STOPPED)
def chat_log_days_sensor(context: dg.SensorEvaluationContext, chat_log_source: ChatLogSource):
    """One ``daily_logs_job`` run per landed day whose files are new or changed (that day's partition only)."""
    requested = json.loads(context.cursor) if context.cursor else {}
    valid = set(DAILY.get_partition_keys())
    requests, outside = [], []
    for day, files in sorted(chat_log_source.day_files().items()):
        fingerprint = hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]
        if requested.get(day) == fingerprint:
            continue
        if day not in valid:
            outside.append(day)
            continue
        requests.append(dg.RunRequest(run_key=f"{day}:{fingerprint}", partition_key=day, run_config=LANDING_CONFIG))
        requested[day] = fingerprint
        if len(requests) >= MAX_DAYS_PER_TICK:
            break
    if outside:
        context.log.warning(f"landed files of day(s) outside the partitions ({outside[0]}..{outside[-1]}): not requested")
    cursor = json.dumps(requested, sort_keys=True)
    if not requests:
        return dg.SensorResult(skip_reason=f"no new or changed day files in {chat_log_source.describe()}", cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)


SENSORS = [agent_corrections_sensor, retrain_on_corrections, chat_log_days_sensor]
SCHEDULES = [weekly_retrain]
JOBS = [corrections_job, retrain_job, daily_logs_job]
