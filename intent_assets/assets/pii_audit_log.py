"""``pii_audit_log``: one row per raw record saying which detectors fired, on which types, where: never the values."""

import dagster as dg
import pandas as pd

from intent_assets.assets.common import (DAILY, DAILY_BACKFILL, PII_REDACTED, PRIVACY_OWNERS, add_day_metadata, by_day,
                                         counts_table, day_counts, day_table)
from intent_assets.data.corpus import redaction_processes
from intent_assets.deploy import k8s_config
from intent_assets.privacy import pii_audit
from intent_assets.resources import AuditSalt

AUDIT_LINEAGE = dg.TableColumnLineage(
    deps_by_column={
        "audit_id": [dg.TableColumnDep(asset_key=dg.AssetKey("raw_chat_logs"), column_name=c) for c in ("conversation_id", "turn")],
        "record_id": [dg.TableColumnDep(asset_key=dg.AssetKey("raw_chat_logs"), column_name="record_id")],
        "positions": [dg.TableColumnDep(asset_key=dg.AssetKey("raw_chat_logs"), column_name="text")],
        "counts": [dg.TableColumnDep(asset_key=dg.AssetKey("raw_chat_logs"), column_name="text")],
    }
)


@dg.asset(
    group_name="data",
    owners=PRIVACY_OWNERS,
    kinds={"pandas", "parquet"},
    tags={**PII_REDACTED, "audit": "pii"},
    op_tags=k8s_config.PII_DATA_STEP,
    partitions_def=DAILY,
    backfill_policy=DAILY_BACKFILL,
)
def pii_audit_log(context: dg.AssetExecutionContext, audit_salt: AuditSalt, raw_chat_logs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The auditor's view of redaction: one row per raw chat message with a keyed, non-reversible ``audit_id``
    (HMAC of conversation id and turn with a secret salt), the graph-wide ``record_id`` (the join key into
    ``redacted_corpus``, ``dataset_splits`` and ``instruction_dataset``), and the entity types, detectors, counts
    and character positions of what ``intent_assets.privacy.pii`` redacted. Holds no personal data: no text, no values.
    Partitioned by day like ``raw_chat_logs`` (its ``day`` column).
    """
    salt, salt_source = audit_salt.resolve()
    # the same worker rule as redaction: every core from PARALLEL_REDACTION_FROM messages on (a long backfill)
    rows = pii_audit.audit_rows(raw_chat_logs, salt, processes=redaction_processes(len(raw_chat_logs)))
    stats = pii_audit.summary(rows)
    context.log.info(f"pii_audit_log: {len(rows)} records, {int(rows['pii_count'].sum())} spans; salt from {salt_source.split(':')[0]}")
    keys = sorted(context.partition_keys)
    records, raw = day_counts(rows), day_counts(raw_chat_logs)
    add_day_metadata(context, "pii_audit_log", keys, records=records, dagster__row_count=records,
                     reconciles_with_raw={d: records.get(d, 0) == raw.get(d, 0) for d in keys})
    context.add_output_metadata(
        {
            "run_records": len(rows),
            "days": len(keys),
            "by_day": day_table(records=records),
            "records_with_pii": int((rows["pii_count"] > 0).sum()),
            "spans_total": int(rows["pii_count"].sum()),
            "spans_by_type": counts_table(stats["spans_by_type"], "entity_type", "spans"),
            "spans_by_detector": counts_table(stats["spans_by_detector"], "detector", "spans"),
            "salt_source": salt_source,
            "salt_from_environment": salt_source.startswith("environment"),
            "run_reconciles_with_raw": len(rows) == len(raw_chat_logs),
            "dagster/column_lineage": AUDIT_LINEAGE,
        }
    )
    return by_day(rows, keys)
