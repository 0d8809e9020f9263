"""``pii_memorization``: does the fine-tuned model complete synthetic PII seeded into the raw chat logs?"""

from typing import Optional

import dagster as dg
from pydantic import Field

from intent_assets.assets.common import MODEL_OWNERS, PII_REDACTED, counts_table
from intent_assets.deploy import k8s_config
from intent_assets.model.head import is_head_model
from intent_assets.paths import PROJECT_DIR, SAMPLE_DIR, project_path
from intent_assets.privacy.memorization import hf_generator, load_canaries, memorization_check
from intent_assets.resources import ArtifactStore, InferenceEngine


class PiiMemorizationConfig(dg.Config):
    canaries_path: str = Field(
        default=str((SAMPLE_DIR / "banking77_pii_manifest.jsonl").relative_to(PROJECT_DIR)),
        description="JSONL of synthetic PII values seeded into the raw logs (entity_type, value), e.g. the shipped "
        "sample's manifest. Relative paths are from the project folder.",
    )
    max_canaries: Optional[int] = Field(default=64, ge=1, description="Seeded sample of canaries to try (None: all).")
    prefix_share: float = Field(default=0.5, gt=0.0, lt=1.0, description="Share of each value given as the prompt.")
    max_new_tokens: int = Field(default=16, ge=1, le=256, description="Tokens generated per canary prompt.")


@dg.asset(
    group_name="model",
    owners=[*MODEL_OWNERS, "team:privacy"],
    kinds={"pytorch"},
    tags={**PII_REDACTED, "compute": "gpu"},
    op_tags=k8s_config.PII_MEMORIZATION,
    pool=k8s_config.GPU_POOL,
    check_specs=[dg.AssetCheckSpec("no_canary_completed", asset="pii_memorization",
                                   description="The fine-tuned model completes none of the canary PII values.")],
)
def pii_memorization(context: dg.AssetExecutionContext, config: PiiMemorizationConfig, inference: InferenceEngine,
                     artifacts: ArtifactStore, awq_model: dict):
    """Prompts the fine-tuned 4-bit model with a type cue and the first part of each canary (synthetic PII known to
    be in the raw chat logs) and counts how many it completes greedily (goal: 0). A completion would mean raw PII
    reached training. Metadata and logs hold entity types and counts only, never the canary values.

    A classification head's router answers labels only, so its outputs cannot carry a canary; its fine-tuned
    backbone is probed all the same, generating through the base model's LM head (``model_type`` in metadata). It
    is probed in 16-bit (the merged weights beside the 4-bit ones): the compressed checkpoint of a classifier does
    not load as a causal LM, and the 16-bit weights remember at least what their rounding does.
    """
    canaries = load_canaries(project_path(config.canaries_path), limit=inference.cap("canaries", config.max_canaries))
    artifacts.fetch(awq_model["model_dir"])  # prod: from S3, verified against its manifest
    head = is_head_model(awq_model["model_dir"])
    if head:
        artifacts.fetch(awq_model["merged_dir"])
        model, tokenizer = inference.load(awq_model["merged_dir"], causal_lm=True)
    else:
        model, tokenizer = inference.load(awq_model["model_dir"], quantized=True)
    result = memorization_check(hf_generator(model, tokenizer, config.max_new_tokens, inference.batch_size), canaries,
                                prefix_share=config.prefix_share)
    context.log.info(f"pii_memorization: {result['completed']} of {result['canaries']} canaries completed")
    per_type = {k: v["completed"] for k, v in result["per_type"].items()}
    tried = {k: v["canaries"] for k, v in result["per_type"].items()}
    yield dg.MaterializeResult(
        metadata={
            "canaries": result["canaries"],
            "completed": result["completed"],
            "completion_rate": round(result["completed"] / result["canaries"], 4) if result["canaries"] else 0.0,
            "canaries_by_type": counts_table(tried, "entity_type", "canaries"),
            "completed_by_type": counts_table(per_type, "entity_type", "completed"),
            "model_dir": dg.MetadataValue.path(awq_model["model_dir"]),
            "model_type": "classification head: its backbone probed through the LM head" if head else "generative",
        }
    )
    yield dg.AssetCheckResult(
        check_name="no_canary_completed",
        passed=result["completed"] == 0 and result["canaries"] > 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"canaries": result["canaries"], "completed": result["completed"]},
    )
