"""``dataset_splits`` and ``quarantined_labels``: labelled customer messages split into train/validation/test."""

import dagster as dg
import pandas as pd
from pydantic import Field, field_validator

from intent_assets import k8s_config
from intent_assets.assets.common import DATA_OWNERS, PII_REDACTED, column_lineage, counts_table, image
from intent_assets.plots import bar_chart
from intent_assets.resources import ArtifactStore
from intent_assets.splits import SPLITS, assign_splits, split_counts
from intent_assets.taxonomy import Taxonomy, partition_by_taxonomy

SPLIT_COLUMNS = ["record_id", "conversation_key", "text", "intent", "split"]

class DatasetSplitsConfig(dg.Config):
    fractions: list[float] = Field(default=[0.8, 0.1, 0.1], description="Train, validation and test shares (sum to 1).")
    salt: str = Field(default="intent-assets-v1", description="Changing it reshuffles every split: do not, once a test split is in use.")

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
            description="Labelled messages whose intent is not in the taxonomy, kept out of training with a reason.",
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
    """Stratified train/validation/test assignment by a stable hash of the conversation.

    The test split does not change when new rows arrive and no conversation is in two splits. Only customer
    messages with a label are training data; labels outside the taxonomy go to ``quarantined_labels``.
    """
    taxonomy = Taxonomy.from_dict(intent_taxonomy)
    labelled = redacted_corpus[(redacted_corpus["speaker"] == "customer") & (redacted_corpus["intent"] != "")]
    known, outside = partition_by_taxonomy(labelled, taxonomy)
    splits = assign_splits(known, tuple(config.fractions), config.salt)[SPLIT_COLUMNS].reset_index(drop=True)
    table = split_counts(splits)
    per_split = splits["split"].value_counts().reindex(list(SPLITS), fill_value=0).to_dict()
    missing = [n for n in taxonomy.names if n not in table.index]
    plots = artifacts.path("plots")
    context.log.info(f"{len(splits)} labelled rows: {per_split}; {len(outside)} outside the taxonomy")
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
            **{f"rows_{k}": int(v) for k, v in per_split.items()},
            "intents_present": int(table.shape[0]),
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
                "split": [("redacted_corpus", "conversation_key")],
            }),
        },
    )
    yield dg.Output(
        outside.reset_index(drop=True)[["record_id", "conversation_key", "text", "intent", "field", "reason"]],
        output_name="quarantined_labels",
        metadata={
            "rows": len(outside),
            "by_label": counts_table(outside["intent"].value_counts().to_dict(), "label", "rows"),
            "dagster/row_count": len(outside),
        },
    )
