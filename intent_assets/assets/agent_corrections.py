"""``agent_corrections``: support agents' corrections of predicted intents, validated, redacted and merged into a
ledger (one row per message, the latest correction wins)."""

import hashlib
import time
from collections import Counter

import dagster as dg
import pandas as pd
from pydantic import Field

from intent_assets.assets.common import MODEL_OWNERS, PII_REDACTED, counts_table
from intent_assets.data.taxonomy import Taxonomy
from intent_assets.deploy import k8s_config
from intent_assets.loop.corrections import Batch, BatchStore, build_ledger, corrected_answer, validate_batch
from intent_assets.resources import ArtifactStore, CorrectionsSource

BATCH_TAG = "intent_assets/corrections_batch"
BATCHES_DIR = ("agent_corrections", "batches")  # under the artifact store


class BatchRef(dg.Config):
    batch_id: str = Field(description="Deterministic id of the batch in its source (file and fingerprint, or id range).")
    position: str = Field(description="Sortable arrival position of the batch (the sensor's high-water mark).")


class AgentCorrectionsConfig(dg.Config):
    batches: list[BatchRef] = Field(
        default=[],
        description="Batches to ingest (the sensor names one per run). Empty: every batch of the source after the "
        "newest one already stored, up to max_batches.",
    )
    max_batches: int = Field(default=100, ge=1, description="Most batches one run ingests when none are named.")


def store_for(artifacts: ArtifactStore) -> BatchStore:
    """The stored batches, made present locally first (prod: from S3)."""
    root = artifacts.path(*BATCHES_DIR)
    for name in artifacts.children(root):
        artifacts.fetch(root / name, missing_ok=True)
    return BatchStore(root)


def ledger_version(ledger: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    for source_row, answer in zip(ledger["source_row"], corrected_answer(ledger)):
        digest.update(f"{source_row}\x1f{answer}\x1e".encode())
    return digest.hexdigest()[:16]


@dg.asset(
    group_name="corrections",
    op_tags=k8s_config.PII_HEAVY_DATA_STEP,
    owners=MODEL_OWNERS,
    kinds={"pandas", "parquet"},
    tags=PII_REDACTED,
)
def agent_corrections(
    context: dg.AssetExecutionContext,
    config: AgentCorrectionsConfig,
    artifacts: ArtifactStore,
    corrections: CorrectionsSource,
    intent_taxonomy: dict,
) -> pd.DataFrame:
    """Support agents' corrections (message, predicted intent, corrected intent), one row per message.

    Each run ingests new batches from the corrections source (the ``agent_corrections_sensor`` names one batch per
    run): every record is validated like a chat log and its text redacted like ``redacted_corpus``; unknown intents,
    empty texts and bad fields are quarantined with a reason. Each batch is stored under its id, atomically, so a
    batch ingested twice (a retried or restarted run) replaces itself: no correction is lost or counted twice.
    The output is the ledger of every stored batch: per message the latest correction wins; conflicts (one
    message corrected to different intents) are counted. Message, conversation and agent ids are pseudonymised.
    A correction of a multi-intent message may carry a list (``corrected_intents``, every label in the taxonomy).
    """
    taxonomy = Taxonomy.from_dict(intent_taxonomy)
    store = store_for(artifacts)
    source = corrections.client()
    if config.batches:
        todo = [Batch(b.batch_id, b.position) for b in config.batches]
    else:
        todo = source.batches_after(store.high_water_mark(), config.max_batches)
    context.log.info(f"{len(todo)} batch(es) to ingest from {corrections.describe()}")

    rows_in = accepted_n = 0
    quarantine_reasons: Counter = Counter()
    pii_by_type: Counter = Counter()
    started = time.monotonic()
    for i, batch in enumerate(todo, start=1):
        raw = source.read(batch.batch_id)
        accepted, quarantined, by_type = validate_batch(raw, batch.batch_id, set(taxonomy.names))
        if len(accepted) + len(quarantined) != len(raw):
            raise RuntimeError(f"batch {batch.batch_id}: {len(raw)} records in, {len(accepted)} accepted + "
                               f"{len(quarantined)} quarantined out")
        path = store.write(batch, accepted, quarantined, {
            "rows_in": len(raw), "accepted": len(accepted), "quarantined": len(quarantined), "run_id": context.run_id,
            "pii_by_type": dict(by_type)})
        artifacts.publish(path)
        rows_in += len(raw)
        accepted_n += len(accepted)
        quarantine_reasons.update(quarantined["reason"])
        pii_by_type.update(by_type)
        eta = (time.monotonic() - started) / i * (len(todo) - i)
        context.log.info(f"batch {i}/{len(todo)} {batch.batch_id}: {len(raw)} in, {len(accepted)} accepted, "
                         f"{len(quarantined)} quarantined; eta {eta:.0f}s")

    all_accepted, all_quarantined = store.load()
    ledger = build_ledger(all_accepted)
    stored = store.batches()
    total_in = sum(b["rows_in"] for b in stored)
    context.add_output_metadata({
        "batches_ingested_this_run": len(todo),
        "rows_in_this_run": rows_in,
        "accepted_this_run": accepted_n,
        "quarantined_this_run": rows_in - accepted_n,
        "records_redacted_this_run": accepted_n,
        "quarantine_reasons_this_run": counts_table(dict(quarantine_reasons), "reason"),
        "pii_by_type_this_run": counts_table(dict(pii_by_type), "entity_type"),
        "batches_stored": len(stored),
        "rows_in_total": total_in,
        "accepted_total": len(all_accepted),
        "quarantined_total": len(all_quarantined),
        "duplicate_source_rows": ledger.duplicate_source_rows,
        "superseded_corrections": ledger.superseded,
        "conflicting_messages": ledger.conflicting_messages,
        "ledger_corrections": len(ledger.corrections),
        "model_was_wrong": int((ledger.corrections["predicted_intent"] != corrected_answer(ledger.corrections)).sum()),
        "corrections_version": ledger_version(ledger.corrections),
        "source": corrections.describe(),
        "dagster/row_count": len(ledger.corrections),
    })
    return ledger.corrections
