"""``instruction_dataset``: chat-formatted fine-tuning records (system taxonomy, redacted user text, JSON answer)."""

import hashlib
from typing import Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from intent_assets.assets.common import DATA_OWNERS, PII_REDACTED, column_lineage, image
from intent_assets.data.augment import ResponseCache, make_openai_chat
from intent_assets.data.multi_intent import blend_splits, rewrite_blends
from intent_assets.data.taxonomy import Taxonomy, is_multi_intent
from intent_assets.deploy import k8s_config
from intent_assets.loop.corrections import apply_corrections
from intent_assets.model.base_model import load_tokenizer
from intent_assets.model.instructions import build_records, length_stats, system_prompt, token_lengths, write_jsonl
from intent_assets.plots import histogram
from intent_assets.resources import ArtifactStore, ParaphraseLLM


def _synthetic_rows(augments: pd.DataFrame) -> pd.DataFrame:
    accepted = augments[augments["accepted"]]
    ids = [
        "syn-" + hashlib.sha256(f"{i}\x1f{t}".encode()).hexdigest()[:12] for i, t in zip(accepted["intent"], accepted["text"])
    ]
    return pd.DataFrame({"record_id": ids, "split": "train", "intent": accepted["intent"].to_numpy(),
                         "intents": [[i] for i in accepted["intent"]], "text": accepted["text"].to_numpy(), "synthetic": True})


def _rewrite(context, config, paraphrase_llm: ParaphraseLLM, artifacts: ArtifactStore, blends: pd.DataFrame):
    """The blends, a share of the training ones rewritten by the paraphrase endpoint; and the metadata saying how."""
    wanted = int(round(config.blend_rewrite_share * int((blends["split"] == "train").sum())))
    if not wanted:
        return blends, {}
    if not paraphrase_llm.configured:
        return blends, {"blend_rewrites": "rules only: no API key configured (set OPENAI_API_KEY, and OPENAI_BASE_URL "
                                          "for a non-OpenAI endpoint)"}
    cache = ResponseCache(artifacts.path("cache", "blend_rewrites"))
    with paraphrase_llm.get_client(context) as client:
        chat = make_openai_chat(client, paraphrase_llm.model, paraphrase_llm.temperature)
        out, attempts = rewrite_blends(blends, config.blend_rewrite_share, chat, paraphrase_llm.model,
                                       paraphrase_llm.temperature, cache, seed=config.blend_seed)
    reasons = attempts["reason"].value_counts().to_dict()
    context.log.info(f"instruction_dataset: {reasons.get('accepted', 0)} of {len(attempts)} training blends rewritten "
                     f"by {paraphrase_llm.model}")
    for error, n in attempts.loc[attempts["error"] != "", "error"].value_counts().items():
        context.log.warning(f"instruction_dataset: {n} blend rewrite request(s) failed: {error}")
    return out, {"blend_rewrites": dg.MetadataValue.json({"model": paraphrase_llm.model, "attempted": len(attempts),
                                                          "by_reason": {k: int(v) for k, v in sorted(reasons.items())},
                                                          "from_cache": int(attempts["from_cache"].sum())})}


class InstructionDatasetConfig(dg.Config):
    prompt_style: Literal["compact", "taxonomy"] = Field(
        default="compact",
        description="compact: the system prompt names the task and the taxonomy but lists no intents (about 60 "
        "tokens; the model learns the names, constrained decoding keeps answers inside the taxonomy; half the CPU "
        "time per training step). taxonomy: every intent listed by name, as the seed did (689 tokens on Banking77).",
    )
    describe_intents: bool = Field(
        default=False,
        description="With prompt_style taxonomy: list each intent's description too, not only its name (on "
        "Banking77 1,502 instead of 689 prompt tokens, paid by every training step and every request).",
    )
    answer_format: Literal["auto", "intent", "intents"] = Field(
        default="auto",
        description="intent: {\"intent\": \"<name>\"}. intents: a list, {\"intents\": [...]}, for every record (one "
        "element for a single-intent message, [] for none). auto: the list when the data carries label sets other "
        "than one intent (NLU++) or blend_share adds blended messages, else one intent.",
    )
    blend_share: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Blended multi-intent messages (2-3 single-intent utterances of different intents joined as "
        "BlendX did) added to each split, built from that split's own single-intent messages only, as this share "
        "of the split's rows; marked synthetic. 0: none. 0.15: the measured multi-intent setting (blended Banking77: "
        "exact set 1.07-1.08x the best one-vs-rest baseline, single-intent accuracy 0.65 point below a "
        "single-intent-only model over two seeds; BENCHMARKS.md).",
    )
    blend_seed: int = Field(default=0, description="Seed of the blends: the same data and seed give the same blends.")
    blend_rewrite_share: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="When the paraphrase endpoint is configured (OPENAI_API_KEY): this share of the training blends "
        "is rewritten by it into one natural message, each rewrite judged (changed, similar length, content words "
        "kept, no personal data) and the rule-built blend kept when rejected. Validation and test blends stay "
        "rule-built. 0: rules only.",
    )
    list_order: Literal["auto", "stated", "taxonomy"] = Field(
        default="auto",
        description="Order of the labels in a list answer. auto: a blend's in the order its parts appear in the "
        "message, an annotated set's in the taxonomy's order. stated: every set as the record gives it. taxonomy: "
        "every set in the taxonomy's order (one canonical answer per set). NLU++ banking, exact set: taxonomy 0.716, "
        "stated 0.620; blended Banking77: stated 0.714, taxonomy 0.685 (BENCHMARKS.md).",
    )


@dg.asset(
    group_name="data",
    op_tags=k8s_config.HEAVY_DATA_STEP,
    owners=DATA_OWNERS,
    kinds={"jsonl", "pandas", "openai"},
    tags=PII_REDACTED,
)
def instruction_dataset(
    context: dg.AssetExecutionContext,
    config: InstructionDatasetConfig,
    artifacts: ArtifactStore,
    paraphrase_llm: ParaphraseLLM,
    dataset_splits: pd.DataFrame,
    synthetic_augments: pd.DataFrame,
    agent_corrections: pd.DataFrame,
    intent_taxonomy: dict,
) -> pd.DataFrame:
    """Chat records (system, user, assistant) for train / validation / test, also written as JSONL files.

    The system prompt (``prompt_style``) names the task and the taxonomy; the ``taxonomy`` style also lists its
    intents (with ``describe_intents`` their descriptions too). It is byte-identical in every record so a server can cache it; the user turn is the redacted utterance; the assistant answers ``{"intent": "<name>"}``, or
    ``{"intents": [...]}`` for every record when the data carries label sets (``answer_format``). ``blend_share``
    adds blended multi-intent messages to each split from that split's own messages (test blends from the frozen
    test split only, for testing); with the paraphrase endpoint configured, ``blend_rewrite_share`` of the training
    blends are rewritten by it into one natural message (judged; a rejected rewrite keeps the rule-built blend).
    Synthetic paraphrases (accepted ones only) are added to the training split only. Agents' corrections relabel
    the train and validation examples they match and add the others to the training split; the frozen test split
    never changes.
    """
    taxonomy = Taxonomy.from_dict(intent_taxonomy)
    real = dataset_splits.assign(synthetic=False)
    if "intents" not in real:  # a table stored before label sets
        real["intents"] = [[i] for i in real["intent"]]
    real = real[["record_id", "split", "intent", "intents", "text", "synthetic"]]
    blends = blend_splits(real, config.blend_share, config.blend_seed)
    blends, rewrites = _rewrite(context, config, paraphrase_llm, artifacts, blends)
    answers = config.answer_format
    if answers == "auto":
        answers = "intents" if is_multi_intent(real) or len(blends) else "intent"
    examples = pd.concat([real, _synthetic_rows(synthetic_augments), blends], ignore_index=True)
    applied = apply_corrections(examples, agent_corrections)
    examples = applied.examples
    records = build_records(examples, taxonomy, config.describe_intents, config.prompt_style, answers, config.list_order)
    paths = write_jsonl(records, artifacts.path("instruction_dataset"))

    tokenizer = load_tokenizer(artifacts.path("base_model") / "tokenizer")
    lengths = token_lengths(tokenizer, records["messages"])
    system_tokens = len(tokenizer(system_prompt(taxonomy, config.describe_intents, config.prompt_style, answers,
                                              config.list_order))["input_ids"])
    per_split = records["split"].value_counts().to_dict()
    stats = length_stats(lengths)
    context.log.info(f"instruction_dataset: {per_split}; tokens per record {stats}")
    context.add_output_metadata(
        {
            **{f"rows_{k}": int(v) for k, v in sorted(per_split.items())},
            "rows_total": len(records),
            "synthetic_rows": int(records["synthetic"].sum()),
            "answer_format": answers,
            **({"list_order": config.list_order} if answers == "intents" else {}),
            "blended_rows": dg.MetadataValue.json({k: int(v) for k, v in blends["split"].value_counts().sort_index().items()}),
            **rewrites,
            "corrections_relabelled": applied.relabelled,
            "corrections_confirmed": applied.confirmed,
            "corrections_added": applied.added,
            "corrections_ignored_test_split": applied.ignored_test_split,
            "synthetic_share_of_train": round(float(records.loc[records["split"] == "train", "synthetic"].mean() or 0.0), 4),
            "system_prompt_tokens": system_tokens,
            "system_prompt_style": config.prompt_style,
            "system_prompt_describes_intents": config.describe_intents,
            "tokens_per_record": dg.MetadataValue.json(stats),
            "tokens_total": int(lengths.sum()),
            "token_length_histogram": image(
                histogram(lengths, "tokens per chat record (SmolLM2 tokenizer)", "tokens"),
                artifacts.path("plots") / "instruction_token_lengths.png",
                "token lengths",
            ),
            **{f"file_{k}": dg.MetadataValue.path(str(p)) for k, p in paths.items()},
            "taxonomy_version": f"{taxonomy.name} v{taxonomy.version} ({taxonomy.fingerprint})",
            "dagster/row_count": len(records),
            # the user turn of every prompt is the redacted text: raw_chat_logs.text -> redacted_corpus.text ->
            # dataset_splits.text -> instruction_dataset.messages
            "dagster/column_lineage": column_lineage({
                "text": [("dataset_splits", "text"), ("synthetic_augments", "text"), ("agent_corrections", "text")],
                "messages": [("dataset_splits", "text"), ("synthetic_augments", "text"), ("dataset_splits", "intent"),
                             ("intent_taxonomy", "intents")],
                "record_id": [("dataset_splits", "record_id")],
                "intent": [("dataset_splits", "intent"), ("synthetic_augments", "intent"), ("agent_corrections", "corrected_intent")],
                "split": [("dataset_splits", "split")],
            }),
        }
    )
    return records
