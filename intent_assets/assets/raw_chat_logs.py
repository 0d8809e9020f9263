"""``raw_chat_logs`` and ``quarantined_records``: historical support chats, validated (holds raw PII)."""

import tempfile
from pathlib import Path
from typing import Optional

import dagster as dg
from dagster_pandera import pandera_schema_to_dagster_type
from pydantic import Field, field_validator

from intent_assets.assets.common import (DAILY, DAILY_BACKFILL, DATA_OWNERS, PII_RAW, add_day_metadata, by_day,
                                         counts_table, day_counts, day_table)
from intent_assets.data.chat_logs import CHAT_LOG_SCHEMA, DEFAULT_MAX_TEXT_CHARS, DEFAULT_TEST_FOLDS, load_chat_logs
from intent_assets.data.days import Calendar, today
from intent_assets.deploy import k8s_config
from intent_assets.paths import DEFAULT_CHAT_LOGS, PROJECT_DIR, project_path
from intent_assets.resources import ChatLogSource

LANDING = "landing"
ChatLogsType = pandera_schema_to_dagster_type(CHAT_LOG_SCHEMA)
ChatLogsByDay = dg.DagsterType(
    name="ChatLogsByDay",
    description="One validated chat-log DataFrame per day of the run (pandera schema ChatLogs).",
    type_check_fn=lambda context, value: isinstance(value, dict) and all(
        ChatLogsType.type_check(context, frame).success for frame in value.values()),
    metadata=ChatLogsType.metadata,
)

class RawChatLogsConfig(dg.Config):
    path: str = Field(
        default=str(DEFAULT_CHAT_LOGS.relative_to(PROJECT_DIR)),
        description=(
            "File or folder of chat logs (JSONL, CSV, Parquet) or of a plain labelled data set (text + "
            "intent/label/category; CLINC150's data_full.json too). Relative paths are from the project folder. "
            f"'{LANDING}': the day files where this environment's exports land (chat_log_source.landing, local or S3)."
        ),
    )
    max_text_chars: int = Field(default=DEFAULT_MAX_TEXT_CHARS, gt=0, description="Longer messages are quarantined.")
    limit: Optional[int] = Field(default=None, gt=0, description="Read only the first N records (tiny runs).")
    test_folds: int = Field(default=DEFAULT_TEST_FOLDS, ge=0, description=(
        "Fold files (fold0, fold1, ... as NLU++ ships them): this many highest-numbered folds are the test split, "
        "the others train. 0: no split from folds."))

    @field_validator("path")
    @classmethod
    def _exists(cls, value: str) -> str:
        if value != LANDING and not project_path(value).exists():
            raise ValueError(f"no file or folder at {value!r} (relative paths are from {PROJECT_DIR})")
        return value

    def resolved_path(self) -> Path:
        return project_path(self.path)

@dg.multi_asset(
    outs={
        "raw_chat_logs": dg.AssetOut(
            dagster_type=ChatLogsByDay,
            io_manager_key="raw_io_manager",
            description="One validated row per chat message, as logged. Holds raw personal data: restricted location.",
            owners=DATA_OWNERS,
            tags=PII_RAW,
            kinds={"pandas", "parquet"},
        ),
        "quarantined_records": dg.AssetOut(
            io_manager_key="raw_io_manager",
            description="Input records that failed validation, each with the failing field and the reason. Raw PII.",
            owners=DATA_OWNERS,
            tags=PII_RAW,
            kinds={"pandas", "parquet"},
        ),
    },
    group_name="data",
    op_tags=k8s_config.PII_DATA_STEP,
    partitions_def=DAILY,
    backfill_policy=DAILY_BACKFILL,
)
def raw_chat_logs(context: dg.AssetExecutionContext, config: RawChatLogsConfig, chat_log_source: ChatLogSource):
    """Reads historical support chat logs from the configured location and validates every record (pandera).

    Bad records (missing text, unknown speaker, unparseable timestamp, invalid UTF-8, over-long message,
    malformed line, repeated conversation turn) are never dropped: they go to ``quarantined_records`` with the
    field and reason, and ``rows_in = rows_out + rows_quarantined`` is reported.

    Partitioned by day (``intent_assets.data.days``: the timestamp's date, else a date in the file name, else the
    first day for undated labelled data sets). A run reads only the records of its days, and counts reconcile per
    day (``by_day``) and in total; a timestamp outside the partitioned days is quarantined, not dropped.
    """
    keys = sorted(context.partition_keys)
    limit = chat_log_source.cap(config.limit)  # the environment may cap it (INTENT_ASSETS_ENV=tiny)
    calendar = Calendar(first=DAILY.start.date().isoformat(), last=max(today(), keys[-1]))
    with tempfile.TemporaryDirectory(prefix="landing-") as scratch:  # S3 day files, deleted at the end (raw PII)
        path = chat_log_source.stage(keys, Path(scratch)) if config.path == LANDING else config.resolved_path()
        result = load_chat_logs(path, max_text_chars=config.max_text_chars, limit=limit, days=keys, calendar=calendar,
                                test_fold_count=config.test_folds)
    source = chat_log_source.describe() if config.path == LANDING else str(path)
    valid, quarantined = result.valid, result.quarantined
    context.log.info(f"read {result.rows_in} records of {len(keys)} day(s) ({keys[0]}..{keys[-1]}) from "
                     f"{len(result.files)} file(s): {len(valid)} valid, {len(quarantined)} quarantined")
    speakers = valid["speaker"].value_counts().to_dict()
    out_by_day, quarantined_by_day, in_by_day = day_counts(valid), day_counts(quarantined), result.rows_in_by_day
    # each day's page: that day's counts (they reconcile per day); the output metadata: the run's
    add_day_metadata(context, "raw_chat_logs", keys, rows_in=in_by_day, rows_out=out_by_day,
                     rows_quarantined=quarantined_by_day, dagster__row_count=out_by_day,
                     reconciles={d: in_by_day.get(d, 0) == out_by_day.get(d, 0) + quarantined_by_day.get(d, 0) for d in keys})
    add_day_metadata(context, "quarantined_records", keys, rows=quarantined_by_day, dagster__row_count=quarantined_by_day)
    yield dg.Output(
        by_day(valid, keys),
        output_name="raw_chat_logs",
        metadata={
            "source": dg.MetadataValue.path(source),
            "days": len(keys),
            "days_with_records": len(set(out_by_day) | set(quarantined_by_day)),
            "by_day": day_table(rows_in=in_by_day, rows_out=out_by_day, rows_quarantined=quarantined_by_day),
            "input_kind": result.input_kind,
            **({"files_skipped": dg.MetadataValue.json(result.skipped)} if result.skipped else {}),
            "record_limit": limit if limit is not None else "none",
            "run_rows_in": result.rows_in,
            "run_rows_out": len(valid),
            "run_rows_quarantined": len(quarantined),
            "run_reconciles": result.rows_in == len(valid) + len(quarantined) == sum(in_by_day.values()),
            "conversations": int(valid["conversation_id"].nunique()),
            "customer_messages": int(speakers.get("customer", 0)),
            "agent_messages": int(speakers.get("agent", 0)),
            "labelled_messages": int((valid["intent"] != "").sum()),
            "distinct_labels": int(valid.loc[valid["intent"] != "", "intent"].nunique()),
            # multi-intent messages (a label set of several, or labelled with none): intent_assets.data.chat_logs
            "messages_with_several_intents": int(valid["intents"].map(lambda v: v is not None and len(v) > 1).sum()),
            "messages_labelled_with_no_intent": int(valid["intents"].map(lambda v: v is not None and len(v) == 0).sum()),
        },
    )
    yield dg.Output(
        by_day(quarantined, keys),
        output_name="quarantined_records",
        metadata={
            "run_rows": len(quarantined),
            "by_reason": counts_table(result.reasons, "reason", "rows"),
            "by_field": counts_table(quarantined["field"].value_counts().to_dict(), "field", "rows"),
        },
    )
