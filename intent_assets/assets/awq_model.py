"""``awq_model``: the fine-tuned model merged and quantized to 4-bit AWQ (W4A16, compressed-tensors)."""

import json
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field, field_validator

from intent_assets.assets.common import MODEL_OWNERS, PII_REDACTED
from intent_assets.data.multi_intent import list_decoding
from intent_assets.data.taxonomy import Taxonomy
from intent_assets.deploy import k8s_config
from intent_assets.model.head import head_input_text, is_head_model
from intent_assets.model.quantization import QuantizationSettings, merge_adapter, quantize_awq
from intent_assets.resources import ArtifactStore, TrainerBackend
from intent_assets.serving.champion import SERVING_INFO, serving_info_text


class AwqModelConfig(dg.Config):
    num_calibration_samples: int = Field(default=16, ge=1, description="Redacted training prompts used for AWQ calibration (cost grows linearly).")
    max_calibration_tokens: int = Field(default=128, ge=16, description="Tokens kept per calibration prompt (its end: user message and answer header).")
    keep_edge_layers: int = Field(default=1, ge=0, description="Decoder layers kept in 16-bit at each end of the stack (the first and the last N), the most sensitive to 4-bit rounding: on the embedded default keeping 1 at each end raised the 4-bit model from 0.88x to 0.98x of the 16-bit accuracy for +9% size (bench/awq_ablation.py, BENCHMARKS.md). 0: quantize every layer.")
    ignore: list[str] = Field(default=["lm_head"], description="Modules kept in 16-bit (names, or 're:<regex>' as llm-compressor takes them), e.g. the most sensitive layers: 're:.*layers\\.0\\..*' keeps the first decoder layer dense. lm_head (tied to the embeddings) always stays dense.")
    group_size: int = Field(default=32, ge=-1, description="Input channels per quantization scale; must divide the hidden size (576 for SmolLM2: 32, 64 or 192); -1: one scale per output channel.")

    @field_validator("group_size")
    @classmethod
    def _group_size(cls, value: int) -> int:
        if value == 0:
            raise ValueError("group_size must be a positive number of input channels, or -1 for one scale per output channel")
        return value


def edge_layers(model_dir: Path, keep: int) -> list[str]:
    """llm-compressor ``ignore`` patterns for the first and last ``keep`` decoder layers of the model in ``model_dir``."""
    if keep <= 0:
        return []
    layers = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))["num_hidden_layers"]
    chosen = sorted({*range(min(keep, layers)), *range(max(layers - keep, 0), layers)})
    return [rf"re:.*layers\.({'|'.join(map(str, chosen))})\..*"]


@dg.asset(
    group_name="model",
    op_tags=k8s_config.AWQ_MODEL,
    pool=k8s_config.GPU_POOL,
    owners=MODEL_OWNERS,
    kinds={"llmcompressor", "safetensors"},
    tags={**PII_REDACTED, "compute": "gpu"},
)
def awq_model(
    context: dg.AssetExecutionContext,
    config: AwqModelConfig,
    artifacts: ArtifactStore,
    trainer: TrainerBackend,
    lora_adapter: dict,
    instruction_dataset: pd.DataFrame,
    intent_taxonomy: dict,
) -> dict:
    """The adapter merged into the base model, quantized to 4-bit AWQ with llm-compressor (int4 weights, one
    scale per group, activations 16-bit) and saved in the compressed-tensors format vLLM loads.

    The merged 16-bit model is kept beside it (``merged/``): the in-process engine serves those weights (it would
    dequantize the 4-bit ones to 16-bit anyway), vLLM the 4-bit ones; ``eval_report`` scores both.

    Calibrated on redacted training prompts (system + user, as served; a classification head's router: the user
    turn as its head reads it). The model directory also carries
    ``intent_assets.json`` (the labels and the training system prompt) for its clients: ``intent-assets classify``
    and any OpenAI client of the vLLM server. Metadata: size before and after, calibration samples, wall time.
    """
    wanted = {"num_calibration_samples": config.num_calibration_samples, "max_calibration_tokens": config.max_calibration_tokens}
    caps = trainer.calibration_budget()  # the environment's caps only ever lower the run config's values
    root = artifacts.path("awq_model", lora_adapter["run_key"])
    merged = root / "merged"
    if not (merged / "config.json").is_file():
        artifacts.fetch(lora_adapter["base_model_dir"])  # prod: from S3, verified against their manifests
        artifacts.fetch(lora_adapter["adapter_dir"])
        merge_adapter(Path(lora_adapter["base_model_dir"]), Path(lora_adapter["adapter_dir"]), merged)
    head = is_head_model(merged)  # a classification head's router: its head ("score") stays 16-bit like lm_head
    ignore = list(dict.fromkeys(["lm_head", *(["score"] if head else []), *config.ignore,
                                 *edge_layers(merged, config.keep_edge_layers)]))
    settings = QuantizationSettings(**{k: min(v, caps.get(k, v)) for k, v in wanted.items()}, group_size=config.group_size, ignore=ignore)
    train = instruction_dataset[instruction_dataset["split"] == "train"]
    prompts = [json.loads(m)[:2] for m in train["messages"]]  # system + user, no answer
    system_prompt = prompts[0][0]["content"]
    if head:  # a classification head reads the user turn alone (intent_assets.model.head)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(merged)
        prompts = [head_input_text(tokenizer, p[-1]["content"]) for p in prompts]
    out = root / "quantized"
    if out.exists():
        shutil.rmtree(out)
    context.log.info(f"AWQ: {settings.scheme_description}, {settings.num_calibration_samples} calibration prompts")
    # the served model carries what a client needs: its labels and the system prompt it was trained with
    # a model trained on label sets answers lists as large as its largest training set, empty where training had none
    bounds = list_decoding(train["intents"]) if "intents" in train else (None, False)
    info = {SERVING_INFO: serving_info_text(Taxonomy.from_dict(intent_taxonomy).names, system_prompt, *bounds)}
    # the in-process engine serves these merged 16-bit weights of the same model (serving.in_process_model_dir)
    (merged / SERVING_INFO).write_text(info[SERVING_INFO], encoding="utf-8")
    result = quantize_awq(merged, prompts, out, settings, log=context.log.info, extra_files=info)
    context.add_output_metadata(
        {
            "model_dir": dg.MetadataValue.path(str(result.out_dir)),
            "scheme": result.scheme,
            "kept_16bit": dg.MetadataValue.json(ignore),
            "size_mb_before": round(result.size_bytes_before / 1e6, 1),
            "size_mb_after": round(result.size_bytes_after / 1e6, 1),
            "compression_ratio": round(result.compression_ratio, 3),
            "calibration_samples": result.calibration_samples,
            "calibration_tokens": result.calibration_tokens,
            "wall_seconds": round(result.wall_seconds, 1),
            "manifest": dg.MetadataValue.path(str(result.manifest_path)),
        }
    )
    uri = artifacts.publish(result.out_dir)
    merged_uri = artifacts.publish(merged)
    if uri:
        context.add_output_metadata({"model_uri": dg.MetadataValue.url(uri), "merged_model_uri": dg.MetadataValue.url(merged_uri)})
    return {"model_dir": str(result.out_dir), "merged_dir": str(merged), "run_key": lora_adapter["run_key"]}
