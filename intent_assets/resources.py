"""Every external system as a Dagster resource, and the one place where each environment picks its resources.

* ``local`` (the embedded default): files under ``$INTENT_ASSETS_DATA_DIR`` (default ``<project>/data``), raw
  (PII) tables in ``raw/`` and everything redacted in ``redacted/``, run artifacts in ``artifacts/``; the
  Dagster instance is SQLite under ``$DAGSTER_HOME``.
* ``prod`` arrives with the EKS issue (S3, Postgres); selecting it before then is an error, not a silent fallback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import dagster as dg
import pandas as pd
from dagster_openai import OpenAIResource
from pydantic import Field

from intent_assets.paths import data_dir


class LocalTableIOManager(dg.ConfigurableIOManager):
    """Stores DataFrames as Parquet and dicts as JSON under ``base_dir/<asset key>``."""

    base_dir: str = Field(description="Folder that holds this IO manager's files.")

    def _path(self, context, suffix: str) -> Path:
        return Path(self.base_dir, *context.asset_key.path).with_suffix(suffix)

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        if isinstance(obj, pd.DataFrame):
            path = self._path(context, ".parquet")
            path.parent.mkdir(parents=True, exist_ok=True)
            obj.to_parquet(path.with_suffix(".parquet.tmp"), index=False)
        elif isinstance(obj, dict):
            path = self._path(context, ".json")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.with_suffix(".json.tmp").write_text(json.dumps(obj, indent=1, ensure_ascii=False), encoding="utf-8")
        else:
            raise TypeError(f"{context.asset_key.to_user_string()}: cannot store a {type(obj).__name__}")
        path.with_suffix(path.suffix + ".tmp").replace(path)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext):
        for suffix in (".parquet", ".json"):
            path = self._path(context.upstream_output, suffix)
            if path.is_file():
                if suffix == ".parquet":
                    return pd.read_parquet(path)
                return json.loads(path.read_text(encoding="utf-8"))
        raise FileNotFoundError(f"{context.asset_key.to_user_string()}: not materialized yet under {self.base_dir}")


class ArtifactStore(dg.ConfigurableResource):
    """Where stages write files that are not tables (JSONL datasets, caches, reports, models)."""

    base_dir: str = Field(description="Root folder for artifacts.")

    def path(self, *parts: str) -> Path:
        path = Path(self.base_dir, *parts)
        path.mkdir(parents=True, exist_ok=True)
        return path


class ParaphraseLLM(OpenAIResource):
    """An OpenAI-compatible chat-completions endpoint for paraphrase generation (dagster-openai's resource).

    ``base_url``, ``api_key`` and ``model`` come from the environment (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``,
    ``INTENT_ASSETS_PARAPHRASE_MODEL``). Without an API key the resource is "not configured" and the
    ``synthetic_augments`` asset materializes an empty result that says why.
    """

    api_key: Optional[str] = Field(default=None, description="API key (from the environment, never from code).")
    model: str = Field(default="gpt-4o-mini", description="Model name sent with each request.")
    temperature: float = Field(default=0.9, ge=0.0, le=2.0)
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=2, ge=0)

    @property
    def configured(self) -> bool:
        return bool(self.api_key)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if not self.configured:
            return  # no client without credentials: the asset reports why and materializes an empty result
        from openai import Client

        self._client = Client(
            api_key=self.api_key,
            organization=self.organization,
            project=self.project,
            base_url=self.base_url,
            timeout=self.timeout_s,
            max_retries=self.max_retries,
        )


# run-config fields of lora_adapter that, when left unset, take the trainer resource's value
TRAINER_DEFAULTED = ("learning_rate", "per_device_batch_size")


class TrainerBackend(dg.ConfigurableResource):
    """Where ``lora_adapter`` trains and the environment's budget for it.

    The run config (``LoraAdapterConfig``) says *what* to train (the seed design: r=64, alpha=16, batch 128, ...);
    this resource says what the machine can afford. The embedded CPU default caps the run to a short demo;
    production GPU pods have no caps. A cap only ever lowers a value set in the run config. The ``learning_rate``
    and ``per_device_batch_size`` here apply only where the run config leaves them unset: a run capped to ~100
    optimizer steps learns little at the seed's 2e-4, which is meant for effective batch 128 over full epochs.
    """

    device: str = Field(default="auto", description="auto (CUDA when available), cpu or cuda.")
    max_train_examples: Optional[int] = Field(default=None, ge=1, description="Cap on training examples.")
    max_eval_examples: Optional[int] = Field(default=None, ge=1, description="Cap on validation examples.")
    max_steps: Optional[int] = Field(default=None, ge=1, description="Cap on optimizer steps.")
    max_effective_batch_size: Optional[int] = Field(default=None, ge=1, description="Cap on the effective batch.")
    learning_rate: Optional[float] = Field(default=None, gt=0, le=1, description="Learning rate where the run config sets none.")
    per_device_batch_size: Optional[int] = Field(default=None, ge=1, description="Micro-batch where the run config sets none.")

    def budget(self) -> dict:
        return {k: v for k, v in self.model_dump().items() if k.startswith("max_") and v is not None}

    def defaults(self) -> dict:
        return {k: v for k, v in self.model_dump().items() if k in TRAINER_DEFAULTED and v is not None}


class InferenceEngine(dg.ConfigurableResource):
    """How the evaluation runs a model: transformers in-process with constrained decoding over the taxonomy."""

    kind: str = Field(default="transformers", description="transformers (in-process).")
    device: str = Field(default="auto", description="auto (CUDA when available), cpu or cuda.")
    dtype: str = Field(default="bfloat16", description="bfloat16 (fast on AMX CPUs and GPUs) or float32.")
    batch_size: int = Field(default=16, ge=1, description="Requests per forward pass.")

    def load(self, model_dir: str, adapter_dir: Optional[str] = None, quantized: bool = False):
        """(model, tokenizer) for a base model directory, optionally with a LoRA adapter or as a 4-bit model."""
        from intent_assets.base_model import load_base_model, resolve_device

        if self.kind != "transformers":
            raise ValueError(f"InferenceEngine.kind={self.kind!r}: only 'transformers' is available")
        device = resolve_device(self.device)
        if quantized:
            from intent_assets.quantization import load_quantized_for_inference

            return load_quantized_for_inference(model_dir, device=device, dtype=self.dtype)
        model, tokenizer = load_base_model(Path(model_dir), dtype=self.dtype, device=device)
        if adapter_dir:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter_dir).eval()
        return model, tokenizer


def _env_or_none(name: str):
    """``EnvVar(name)`` when the variable is set (so the value is never written into config), else None."""
    return dg.EnvVar(name) if os.environ.get(name) else None


LOCAL_TRAINING_BUDGET = {
    # caps: ~80 optimizer steps of 16 examples (one pass over 1,280 of them), validation on 128
    "max_train_examples": 1280, "max_eval_examples": 128, "max_effective_batch_size": 16, "max_steps": 80,
    # defaults where the run config sets none: that short schedule needs a higher learning rate than the seed's
    # 2e-4 (measured: bench/lr_sweep.py, BENCHMARKS.md); micro-batch = effective batch is 1.18x faster on CPU
    "learning_rate": 3e-3, "per_device_batch_size": 16,
}


def local_resources(root: Path | None = None) -> dict:
    root = Path(root) if root is not None else data_dir()
    llm_kwargs = {"base_url": _env_or_none("OPENAI_BASE_URL"), "api_key": _env_or_none("OPENAI_API_KEY")}
    if os.environ.get("INTENT_ASSETS_PARAPHRASE_MODEL"):
        llm_kwargs["model"] = dg.EnvVar("INTENT_ASSETS_PARAPHRASE_MODEL")
    return {
        "io_manager": LocalTableIOManager(base_dir=str(root / "redacted")),
        "raw_io_manager": LocalTableIOManager(base_dir=str(root / "raw")),
        "artifacts": ArtifactStore(base_dir=str(root / "artifacts")),
        "paraphrase_llm": ParaphraseLLM(**{k: v for k, v in llm_kwargs.items() if v is not None}),
        # one CPU machine: a short demo fine-tune (see README "Embedded default budget")
        "trainer": TrainerBackend(**LOCAL_TRAINING_BUDGET),
        "inference": InferenceEngine(),
    }


def environment_name(environment: str | None = None) -> str:
    """The environment asked for: ``environment``, else ``$INTENT_ASSETS_ENV``, else ``local``."""
    return environment or os.environ.get("INTENT_ASSETS_ENV", "local")


def resources_for(environment: str | None = None) -> dict:
    """The resources of one environment: ``$INTENT_ASSETS_ENV`` (default ``local``)."""
    environment = environment_name(environment)
    if environment == "local":
        return local_resources()
    raise ValueError(f"INTENT_ASSETS_ENV={environment!r}: unknown environment (available: local)")
