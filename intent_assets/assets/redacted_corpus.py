"""``redacted_corpus``: every message with personal data replaced by typed placeholders, deduplicated."""

import dagster as dg
import pandas as pd
from pydantic import Field

from intent_assets.assets.common import (DAILY, DAILY_BACKFILL, PII_REDACTED, PRIVACY_OWNERS, add_day_metadata, by_day,
                                         column_lineage, counts_table, day_counts, day_table)
from intent_assets.data.corpus import PARALLEL_REDACTION_FROM, deduplicate, redact_frame, redaction_processes
from intent_assets.data.near_duplicates import DuplicateIndex
from intent_assets.deploy import k8s_config
from intent_assets.privacy import leak_scan
from intent_assets.resources import ArtifactStore

# The near-duplicate index of every day materialized so far (intent_assets.data.near_duplicates), one per environment
# in its artifact store. Runs that update it take turns: the pool k8s_config.DEDUP_POOL has a limit of 1.
DEDUP_INDEX_DIR = ("dedup_index",)

class RedactedCorpusConfig(dg.Config):
    near_duplicate_threshold: float = Field(
        default=0.9,
        gt=0.0,
        le=1.0,
        description="Cosine similarity (character 3–5-gram TF-IDF) at or above which two customer messages of the "
        "same intent count as near-duplicates (candidates from MinHash LSH); 1.0 keeps exact-duplicate removal only.",
    )
    redaction_processes: int = Field(
        default=0,
        ge=0,
        description="Worker processes for redaction; 0: every core when there are at least "
        f"{PARALLEL_REDACTION_FROM:,} messages, else one (a spawned worker first imports the redaction stack).",
    )

@dg.asset(
    group_name="data",
    op_tags=k8s_config.PII_DATA_STEP,
    owners=PRIVACY_OWNERS,
    kinds={"pandas", "parquet", "scrubadub"},
    tags=PII_REDACTED,
    partitions_def=DAILY,
    backfill_policy=DAILY_BACKFILL,
    pool=k8s_config.DEDUP_POOL,
)
def redacted_corpus(context: dg.AssetExecutionContext, config: RedactedCorpusConfig, artifacts: ArtifactStore,
                    raw_chat_logs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Chat messages with PII replaced by typed placeholders (``{{EMAIL}}``, ``{{PERSON}}``, ...), deduplicated.

    Redaction: scrubadub plus the project's detectors (``intent_assets.privacy.pii.redact``): Luhn-checked cards,
    IBAN, SSN, phone numbers, emails (also obfuscated), account and order numbers after cue words, names after
    self-introductions, street addresses, usernames and passwords. Conversation ids are pseudonymised.
    Deduplication (customer messages only): exact on normalized text, near-duplicates within an intent (MinHash LSH
    candidates, TF-IDF cosine decides: ``intent_assets.data.near_duplicates``); when the
    input gives splits, within a split only, and never in a given test split (it stays whole, as published).
    Nothing past this asset ever sees raw text; a blocking check re-scans it with an independent pass.

    Partitioned by day like ``raw_chat_logs``: a run redacts only its days, and deduplicates them against every
    day materialized before (a persisted index in the artifact store). Re-running a day first takes that day's
    own entries out of the index. Where a message repeats across days, the copy materialized first is kept.
    """
    keys = sorted(context.partition_keys)
    processes = redaction_processes(len(raw_chat_logs), config.redaction_processes)
    redacted, by_type = redact_frame(raw_chat_logs, processes=processes)
    index_dir = artifacts.fetch(artifacts.path(*DEDUP_INDEX_DIR), missing_ok=True)
    index = DuplicateIndex.load(index_dir)
    dropped = index.drop_source(keys)
    history = len(index)
    kept, removed = deduplicate(redacted, near_threshold=config.near_duplicate_threshold, index=index)
    index.save(index_dir)
    artifacts.publish(index_dir)
    kinds = removed["kind"].value_counts().to_dict()
    context.log.info(
        f"redacted {len(redacted)} messages of {len(keys)} day(s) ({sum(by_type.values())} PII spans); removed "
        f"{len(removed)} duplicates against {history} messages of other days"
    )
    in_by_day, out_by_day = day_counts(redacted), day_counts(kept)
    removed_by_day = redacted.loc[redacted["record_id"].isin(removed["record_id"]), "day"].value_counts().to_dict()
    add_day_metadata(context, "redacted_corpus", keys, rows_in=in_by_day, rows_out=out_by_day,
                     duplicates_removed=removed_by_day, dagster__row_count=out_by_day,
                     reconciles={d: in_by_day.get(d, 0) == out_by_day.get(d, 0) + removed_by_day.get(d, 0) for d in keys})
    context.add_output_metadata(
        {
            "run_rows_in": len(raw_chat_logs),
            "run_rows_out": len(kept),
            "days": len(keys),
            "by_day": day_table(rows_in=in_by_day, rows_out=out_by_day, duplicates_removed=removed_by_day),
            "dedup_index_messages_before": history,
            "dedup_index_messages_after": len(index),
            "dedup_index_entries_replaced": dropped,
            "redaction_processes": processes,
            "run_duplicates_removed": len(removed),
            "duplicates_exact": int(kinds.get("exact", 0)),
            "duplicates_near": int(kinds.get("near", 0)),
            "duplicate_label_conflicts": int(removed["label_conflict"].sum()) if len(removed) else 0,
            "run_reconciles": len(raw_chat_logs) == len(kept) + len(removed),
            "messages_with_pii": int((redacted["pii_count"] > 0).sum()),
            "pii_spans_total": int(sum(by_type.values())),
            "pii_by_type": counts_table(dict(by_type.most_common()), "entity_type", "spans"),
            "dagster/column_lineage": column_lineage({
                "record_id": [("raw_chat_logs", "record_id")],
                "conversation_key": [("raw_chat_logs", "conversation_id")],
                "text": [("raw_chat_logs", "text")],
                "pii_types": [("raw_chat_logs", "text")],
                "pii_count": [("raw_chat_logs", "text")],
                **{c: [("raw_chat_logs", c)] for c in ("turn", "timestamp", "speaker", "intent", "intents", "channel", "split", "split_source", "day")},
            }),
        }
    )
    return by_day(kept, keys)

@dg.asset_check(asset=redacted_corpus, blocking=True, partitions_def=DAILY,
                description="Independent re-scan of the redacted text finds no PII.")
def redacted_corpus_has_no_pii(redacted_corpus: pd.DataFrame) -> dg.AssetCheckResult:
    """Fails (and blocks everything downstream) if the independent scanner finds emails, Luhn-valid card numbers,
    long digit runs, IBANs or SSNs left in the redacted text. Reports record ids and types, never values."""
    counts, flagged = leak_scan.scan(zip(redacted_corpus["record_id"], redacted_corpus["text"]))
    return dg.AssetCheckResult(
        passed=not flagged,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "rows_scanned": len(redacted_corpus),
            "records_flagged": len(flagged),
            "findings_by_type": counts_table(dict(counts), "type", "findings"),
            "flagged_record_ids": dg.MetadataValue.json(flagged[:50]),
        },
    )
