"""``lora_adapter``: supervised LoRA fine-tuning of the base model on ``instruction_dataset``."""

import hashlib
import json
from pathlib import Path
from typing import Literal, Optional

import dagster as dg
import pandas as pd
from pydantic import Field, model_validator

from intent_assets import k8s_config
from intent_assets.assets.common import MODEL_OWNERS, PII_REDACTED, image
from intent_assets.instructions import write_jsonl
from intent_assets.plots import line_chart
from intent_assets.resources import TRAINER_DEFAULTED, ArtifactStore, TrainerBackend
from intent_assets.training import CHECKPOINTS_DIR, LoraTrainingConfig, train_lora


class LoraAdapterConfig(dg.Config):
    """The fine-tuning recipe. Defaults are the seed design (QLoRA r=64, alpha=16, dropout 0.1, lr 2e-4,
    effective batch 128, up to 3 epochs with early stopping on validation loss); the environment's
    ``trainer`` resource may cap sizes to what its machine affords, and fills the fields left unset here
    (learning rate, micro-batch) with its own values: a capped short schedule needs a higher learning rate."""

    backend: Literal["peft", "qlora", "unsloth"] = Field(default="peft", description="peft (CPU or GPU), qlora (4-bit NF4 base via bitsandbytes, GPU), unsloth (GPU).")
    r: int = Field(default=64, ge=1, le=1024, description="LoRA rank (1-1024).")
    alpha: float = Field(default=16, gt=0, le=4096, description="LoRA alpha (update scaled by alpha / r).")
    dropout: float = Field(default=0.1, ge=0, lt=1, description="LoRA dropout, in [0, 1).")
    learning_rate: Optional[float] = Field(default=None, gt=0, le=1, description="Peak learning rate, in (0, 1]. Unset: the trainer resource's (the embedded CPU demo's short schedule), else the seed's 2e-4.")
    effective_batch_size: int = Field(default=128, ge=1, description="Examples per optimizer step (gradient accumulation).")
    per_device_batch_size: Optional[int] = Field(default=None, ge=1, description="Examples per forward/backward pass; must divide effective_batch_size. Unset: the trainer resource's, else 8.")
    num_epochs: float = Field(default=3, gt=0, le=100, description="Epochs, at most (early stopping may end sooner).")
    early_stopping_patience: int = Field(default=1, ge=0, description="Evaluations without a better validation loss before stopping (0: never stop early).")
    checkpoint_steps: int = Field(default=20, ge=1, description="Checkpoint (and evaluate) every N optimizer steps; a re-run resumes from the last one.")
    max_steps: Optional[int] = Field(default=None, ge=1, description="Stop after N optimizer steps.")
    max_train_examples: Optional[int] = Field(default=None, ge=1, description="Train on a seeded subset of this size (the data set size, subset).")
    max_eval_examples: Optional[int] = Field(default=None, ge=1, description="Validate on a seeded subset of this size.")
    bf16: Literal["auto", "true", "false"] = Field(default="auto", description="auto, true or false: bf16 autocast (fast on AMX CPUs).")
    seed: int = Field(default=42, ge=0, description="Seed for subsets, shuffling and LoRA init.")

    @model_validator(mode="after")
    def _valid_recipe(self):
        self.training_config()  # raises a clear error before any work starts
        return self

    def training_config(self, budget: Optional[dict] = None, defaults: Optional[dict] = None) -> LoraTrainingConfig:
        """The recipe: this config, then the environment's ``defaults`` for fields left unset here, then the seed
        defaults of ``LoraTrainingConfig``; finally the environment's ``budget`` caps."""
        values = self.model_dump()
        for key in TRAINER_DEFAULTED:
            if values[key] is None:
                values[key] = (defaults or {}).get(key, LoraTrainingConfig.model_fields[key].default)
        bf16 = values.pop("bf16")
        if bf16 not in ("auto", "true", "false"):
            raise ValueError(f"bf16 must be 'auto', 'true' or 'false', got {bf16!r}")
        values["bf16"] = bf16 if bf16 == "auto" else bf16 == "true"
        for key, cap in (budget or {}).items():
            if key == "max_effective_batch_size":
                values["effective_batch_size"] = min(values["effective_batch_size"], cap)
                values["per_device_batch_size"] = min(values["per_device_batch_size"], values["effective_batch_size"])
                while values["effective_batch_size"] % values["per_device_batch_size"]:
                    values["per_device_batch_size"] -= 1
            elif key in CAPPED_FIELDS:
                values[CAPPED_FIELDS[key]] = min(values[CAPPED_FIELDS[key]], cap)
            elif key in values:
                values[key] = cap if values[key] is None else min(values[key], cap)
        return LoraTrainingConfig(**values)


CAPPED_FIELDS = {"max_lora_r": "r", "max_checkpoint_steps": "checkpoint_steps"}  # trainer cap -> recipe field


def _fingerprint(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\x1f")
    return digest.hexdigest()[:16]


@dg.asset(
    group_name="model",
    op_tags=k8s_config.LORA_ADAPTER,
    owners=MODEL_OWNERS,
    kinds={"pytorch", "peft", "huggingface"},
    tags={**PII_REDACTED, "compute": "gpu"},
)
def lora_adapter(
    context: dg.AssetExecutionContext,
    config: LoraAdapterConfig,
    artifacts: ArtifactStore,
    trainer: TrainerBackend,
    base_model: dict,
    instruction_dataset: pd.DataFrame,
) -> dict:
    """A LoRA adapter fine-tuned on the redacted instruction records (loss on the assistant answer only).

    TRL's SFTTrainer with early stopping on validation loss; checkpoints every ``checkpoint_steps``: a run with
    the same recipe, data and base model resumes from the last checkpoint after an interruption. Progress (step,
    loss, ETA) is logged while it trains.
    """
    training = config.training_config(trainer.budget(), trainer.defaults()).model_copy(update={"device": trainer.device})
    records = instruction_dataset[instruction_dataset["split"].isin(["train", "validation"])]
    data_key = _fingerprint(*records["messages"].tolist())
    run_key = _fingerprint(json.dumps(training.model_dump(mode="json"), sort_keys=True), data_key, str(base_model.get("path")))
    workdir = artifacts.path("lora_adapter", run_key)
    paths = write_jsonl(records, workdir / "data")
    context.log.info(f"training run {run_key} in {workdir} (budget {trainer.budget() or 'none'}, "
                     f"environment defaults {trainer.defaults() or 'none'})")
    artifacts.fetch(base_model["path"])  # prod: from S3, verified against its manifest
    artifacts.fetch(workdir / CHECKPOINTS_DIR, missing_ok=True)  # resume from a checkpoint another pod published
    result = train_lora(Path(base_model["path"]), paths["train"], paths.get("validation"), workdir, training, log=context.log.info)

    curve = image(
        line_chart(
            {"training loss": result.train_loss_history, "validation loss": result.eval_loss_history},
            "LoRA fine-tuning loss", "optimizer step", "loss",
        ),
        artifacts.path("plots") / "lora_loss.png",
        "loss curve",
    )
    context.add_output_metadata(
        {
            "adapter_dir": dg.MetadataValue.path(result.adapter_dir),
            "backend": result.backend,
            "device": result.device,
            "dtype": result.dtype,
            "train_examples": result.train_examples,
            "train_examples_dropped_too_long": result.extra.get("dropped_too_long", 0),
            "eval_examples": result.eval_examples,
            "optimizer_steps": result.steps,
            "epochs_completed": result.epochs_completed,
            "final_train_loss": result.train_loss_history[-1][1] if result.train_loss_history else None,
            "best_validation_loss": result.best_eval_loss,
            "stopped_early": result.stopped_early,
            "resumed_from_checkpoint": result.resumed_from or "no",
            "tokens_per_second": result.tokens_per_second,
            "seconds_per_step": result.seconds_per_step,
            "trainable_parameters": result.trainable_params,
            "total_parameters": result.total_params,
            "trainable_share": round(result.trainable_params / max(result.total_params, 1), 4),
            "wall_seconds": result.wall_seconds,
            "loss_curve": curve,
            "recipe": dg.MetadataValue.json(training.model_dump(mode="json")),
            "budget_caps": dg.MetadataValue.json(trainer.budget()),
            "environment_defaults": dg.MetadataValue.json(trainer.defaults()),
        }
    )
    if (workdir / CHECKPOINTS_DIR).is_dir():
        artifacts.publish(workdir / CHECKPOINTS_DIR)
    uri = artifacts.publish(result.adapter_dir)
    if uri:
        context.add_output_metadata({"adapter_uri": dg.MetadataValue.url(uri)})
    return {"adapter_dir": result.adapter_dir, "base_model_dir": str(base_model["path"]), "run_key": run_key, "best_eval_loss": result.best_eval_loss, "steps": result.steps}
