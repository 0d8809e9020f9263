"""``synthetic_augments``: quality-gated paraphrases for rare intents from an OpenAI-compatible endpoint."""

import dagster as dg
import pandas as pd
from pydantic import Field

from intent_assets.assets.common import DATA_OWNERS, PII_REDACTED, counts_table
from intent_assets.data.augment import (
    QualityGate,
    ResponseCache,
    generate_augments,
    make_openai_chat,
    plan_requests,
)
from intent_assets.data.taxonomy import Taxonomy, single_intent
from intent_assets.deploy import k8s_config
from intent_assets.resources import ArtifactStore, ParaphraseLLM

AUGMENT_COLUMNS = ["intent", "text", "accepted", "reason", "predicted_intent", "prompt_hash", "from_cache"]

class SyntheticAugmentsConfig(dg.Config):
    min_examples: int = Field(default=100, ge=0, description="Intents with fewer training rows than this get paraphrases.")
    max_share: float = Field(default=0.3, ge=0.0, le=1.0, description="Cap on synthetic rows per intent, as a share of its real training rows.")
    max_rounds: int = Field(default=2, ge=1, le=5, description="At most this many requests per intent.")

@dg.asset(
    group_name="data",
    op_tags=k8s_config.DATA_STEP,
    owners=DATA_OWNERS,
    kinds={"openai", "pandas", "parquet"},
    tags=PII_REDACTED,
)
def synthetic_augments(
    context: dg.AssetExecutionContext,
    config: SyntheticAugmentsConfig,
    paraphrase_llm: ParaphraseLLM,
    artifacts: ArtifactStore,
    dataset_splits: pd.DataFrame,
    intent_taxonomy: dict,
) -> pd.DataFrame:
    """Paraphrases of rare intents' training messages, asked of an OpenAI-compatible chat endpoint.

    Only candidates that pass the quality gate are used downstream: not a duplicate of real data, PII-free
    after the same redaction, and still assigned to the target intent by a cheap classifier trained on the real
    training split (its single-intent messages). The synthetic share per intent is capped. Every candidate is kept here with its reason.
    Responses are cached by prompt hash, so re-materializing costs nothing. Without credentials the result is
    empty and the metadata says why; the graph goes on.
    """
    taxonomy = Taxonomy.from_dict(intent_taxonomy)
    # paraphrases keep one intent: they are asked of (and gated on) single-intent messages only
    train = single_intent(dataset_splits[dataset_splits["split"] == "train"])
    plan = plan_requests(train["intent"].value_counts().to_dict(), config.min_examples, config.max_share)
    base = {"intents_below_threshold": len(plan), "rows_planned": int(sum(plan.values())), "max_share": config.max_share}
    if not plan or not paraphrase_llm.configured:
        reason = "no intent is below min_examples" if not plan else "no API key configured (set OPENAI_API_KEY, and OPENAI_BASE_URL for a non-OpenAI endpoint)"
        context.log.info(f"synthetic_augments skipped: {reason}")
        context.add_output_metadata({**base, "skipped": reason, "rows_accepted": 0, "dagster/row_count": 0})
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(AUGMENT_COLUMNS, [str, str, bool, str, str, str, bool])})

    gate = QualityGate(train["text"].tolist(), train["intent"].tolist())
    cache = ResponseCache(artifacts.path("cache", "paraphrases"))
    examples = train.groupby("intent")["text"].apply(list).to_dict()
    with paraphrase_llm.get_client(context) as client:
        chat = make_openai_chat(client, paraphrase_llm.model, paraphrase_llm.temperature)
        frame, stats = generate_augments(
            chat, paraphrase_llm.model, plan, taxonomy.descriptions, examples, gate, cache, max_rounds=config.max_rounds
        )
    accepted = frame[frame["accepted"]]
    context.log.info(f"synthetic_augments: {len(accepted)} accepted of {len(frame)} candidates; {stats.get('requests', 0)} requests")
    context.add_output_metadata(
        {
            **base,
            "model": paraphrase_llm.model,
            "requests": int(stats.get("requests", 0)),
            "cache_hits": int(stats.get("cache_hits", 0)),
            "candidates": len(frame),
            "rows_accepted": len(accepted),
            "rows_rejected": len(frame) - len(accepted),
            "by_reason": counts_table(frame["reason"].value_counts().to_dict(), "reason", "candidates"),
            "accepted_by_intent": counts_table(accepted["intent"].value_counts().to_dict(), "intent", "rows"),
            "dagster/row_count": len(frame),
        }
    )
    return frame[AUGMENT_COLUMNS].reset_index(drop=True)
