"""``dataset_splits`` and ``quarantined_labels``: labelled customer messages split into train/validation/test."""

import dagster as dg
import pandas as pd
from pydantic import Field, field_validator

from intent_assets.assets.common import DATA_OWNERS, PII_REDACTED, column_lineage, counts_table, image
from intent_assets.data.splits import DEFAULT_VALIDATION_SHARE, SPLITS, resolve_splits, split_counts
from intent_assets.data.taxonomy import Taxonomy, label_sets, labelled_messages, labels_long, partition_by_taxonomy
from intent_assets.deploy import k8s_config
from intent_assets.plots import bar_chart
from intent_assets.resources import ArtifactStore

SPLIT_COLUMNS = ["record_id", "conversation_key", "text", "intent", "intents", "split"]

class DatasetSplitsConfig(dg.Config):
    fractions: list[float] = Field(
        default=[0.8, 0.1, 0.1],
        description="Train, validation and test shares (sum to 1) of the hash split, used when the input gives no test split.",
    )
    salt: str = Field(default="intent-assets-v1", description="Changing it reshuffles every split: do not, once a test split is in use.")
    validation_share: float = Field(
        default=DEFAULT_VALIDATION_SHARE,
        ge=0.0,
        lt=1.0,
        description="When the input gives train and test splits but no validation: the share of the given train rows "
        "that become validation (by the hash of their conversation, never taken from test).",
    )

    @field_validator("fractions")
    @classmethod
    def _three_shares(cls, value: list[float]) -> list[float]:
        if len(value) != 3 or any(v < 0 for v in value) or abs(sum(value) - 1.0) > 1e-6:
            raise ValueError(f"fractions must be three non-negative shares summing to 1, got {value}")
        return value

@dg.multi_asset(
    outs={
        "dataset_splits": dg.AssetOut(
            description="Labelled customer messages (redacted) with their split: train / validation / test.",
            owners=DATA_OWNERS,
            tags=PII_REDACTED,
            kinds={"pandas", "parquet"},
        ),
        "quarantined_labels": dg.AssetOut(
            description="Labelled messages kept out of training with a reason: intent not in the taxonomy (field "
            "intent), or no split while the input gives splits for the other rows (field split).",
            owners=DATA_OWNERS,
            tags=PII_REDACTED,
            kinds={"pandas", "parquet"},
        ),
    },
    group_name="data",
    op_tags=k8s_config.DATA_STEP,
)
def dataset_splits(
    context: dg.AssetExecutionContext,
    config: DatasetSplitsConfig,
    artifacts: ArtifactStore,
    redacted_corpus: pd.DataFrame,
    intent_taxonomy: dict,
):
    """Train/validation/test: the input's own split when it gives a test split, else a stable hash of the conversation.

    An official split (a ``split`` column, CLINC150's keys, Banking77's ``train.csv`` / ``test.csv``) is kept as
    given, so figures compare with published ones; without a given validation split, ``validation_share`` of the
    given train rows become validation. Otherwise the hash split: the test split does not change when new rows
    arrive and no conversation is in two splits. Only customer messages with a label are training data: one intent,
    or a label set (column ``intents``; ``intent`` is its first label), which may be empty (a message that carries
    no intent, as NLU++ labels some). Labels outside the taxonomy (and rows without a split when the others have one) go to ``quarantined_labels``.
    Metadata ``split_source`` says which source was used.
    """
    taxonomy = Taxonomy.from_dict(intent_taxonomy)
    labelled = labelled_messages(redacted_corpus)
    known, outside = partition_by_taxonomy(labelled, taxonomy)
    assigned, unsplit, source = resolve_splits(known, tuple(config.fractions), config.salt, config.validation_share)
    outside = pd.concat([outside, unsplit], ignore_index=True) if len(unsplit) else outside
    splits = assigned[SPLIT_COLUMNS].reset_index(drop=True)
    table = split_counts(labels_long(splits))
    sizes = pd.Series([len(x) for x in label_sets(splits)], dtype=int)
    per_split = splits["split"].value_counts().reindex(list(SPLITS), fill_value=0).to_dict()
    missing = [n for n in taxonomy.names if n not in table.index]
    plots = artifacts.path("plots")
    context.log.info(f"{len(splits)} labelled rows ({source['split_source']}): {per_split}; {len(outside)} set aside")
    if source["note"]:
        context.log.warning(source["note"])
    yield dg.Output(
        splits,
        output_name="dataset_splits",
        metadata={
            "rows_in": len(redacted_corpus),
            "rows_not_training": len(redacted_corpus) - len(labelled),
            "rows_labelled": len(labelled),
            "rows_out": len(splits),
            "rows_quarantined": len(outside),
            "reconciles": len(labelled) == len(splits) + len(outside),
            "split_source": source["split_source"],
            "validation_source": source["validation_source"],
            **({"split_note": source["note"]} if source["note"] else {}),
            **{f"rows_{k}": int(v) for k, v in per_split.items()},
            "intents_present": int(table.shape[0]),
            # label sets (NLU++, multi-intent exports): instruction_dataset then answers with lists
            "rows_with_several_intents": int((sizes > 1).sum()),
            "rows_labelled_with_no_intent": int((sizes == 0).sum()),
            "intents_per_row": dg.MetadataValue.json({str(k): int(v) for k, v in sorted(sizes.value_counts().items())}),
            "intents_without_examples": dg.MetadataValue.json(missing),
            "min_train_rows_per_intent": int(table["train"].min()) if len(table) else 0,
            "min_test_rows_per_intent": int(table["test"].min()) if len(table) else 0,
            "rows_per_intent": image(
                bar_chart(table["train"].sort_values(ascending=False).to_dict(), "training rows per intent", "rows"),
                plots / "train_rows_per_intent.png",
                "training rows per intent",
            ),
            "dagster/row_count": len(splits),
            "dagster/column_lineage": column_lineage({
                **{c: [("redacted_corpus", c)] for c in ("record_id", "conversation_key", "text", "intent")},
                "intents": [("redacted_corpus", "intents"), ("redacted_corpus", "intent")],
                "split": [("redacted_corpus", "split"), ("redacted_corpus", "conversation_key")],
            }),
        },
    )
    yield dg.Output(
        outside.reset_index(drop=True)[["record_id", "conversation_key", "text", "intent", "field", "reason"]],
        output_name="quarantined_labels",
        metadata={
            "rows": len(outside),
            "by_label": counts_table(outside["intent"].value_counts().to_dict(), "label", "rows"),
            "by_field": counts_table(outside["field"].value_counts().to_dict(), "field", "rows"),
            "dagster/row_count": len(outside),
        },
    )
