"""``lora_adapter``: supervised LoRA fine-tuning of the base model on ``instruction_dataset``."""

import hashlib
import json
from pathlib import Path
from typing import Literal, Optional

import dagster as dg
import pandas as pd
from pydantic import Field, model_validator

from intent_assets.assets.common import MODEL_OWNERS, PII_REDACTED, image
from intent_assets.deploy import k8s_config
from intent_assets.loop.corrections import preference_pairs
from intent_assets.loop.preference import DpoConfig, pairs_digest, select_pairs, train_dpo
from intent_assets.model.checkpoints import CheckpointPublisher, restore_checkpoint
from intent_assets.model.head import HEAD_SCHEDULE, resolve_head, why_not_head
from intent_assets.model.instructions import dataset_system_prompt, write_jsonl
from intent_assets.model.training import CHECKPOINTS_DIR, RECIPES, LoraTrainingConfig, train_lora
from intent_assets.plots import line_chart
from intent_assets.resources import TRAINER_DEFAULTED, ArtifactStore, TrainerBackend

DPO_FIELDS = {  # run config field -> DpoConfig field
    "dpo_beta": "beta", "dpo_learning_rate": "learning_rate", "dpo_num_epochs": "num_epochs",
    "dpo_max_steps": "max_steps", "dpo_max_pairs": "max_pairs", "dpo_effective_batch_size": "effective_batch_size",
    "dpo_per_device_batch_size": "per_device_batch_size", "dpo_r": "r", "dpo_sft_weight": "sft_weight",
}


class LoraAdapterConfig(dg.Config):
    """The fine-tuning recipe. ``recipe`` picks the starting point: ``tuned`` (default: alpha = 2r, no dropout,
    lr 1e-3, batch 16, class-balanced subsets, no backward pass through the shared prompt prefix; measured in
    bench/recipe_sweep.py) or ``seed`` (the seed design: r=64, alpha=16, dropout 0.1, lr 2e-4, effective batch 128,
    up to 3 epochs). Every field set here wins over the recipe; fields left unset take the ``trainer`` resource's
    values where it has some, else the recipe's. The environment's ``trainer`` resource then caps sizes to what its
    machine affords (a cap only lowers a value)."""

    recipe: Literal["tuned", "seed"] = Field(default="tuned", description="Starting point for every field left unset: tuned (what bench/recipe_sweep.py measured best) or seed (the seed design: r=64, alpha=16, dropout 0.1, lr 2e-4, effective batch 128, 3 epochs).")
    head: Literal["recipe", "auto", "generative", "classifier"] = Field(default="recipe", description="classifier: a linear head over the last token (one intent per message, one forward pass, no system prompt; peft backend; trained on its own schedule where unset: 3 epochs of cosine, no early stopping); generative: the model writes the intent's name (constrained decoding over the taxonomy; label sets and DPO too); auto: classifier where it can be (every training and validation message has one intent, backend peft, no dpo_from_corrections), else generative; recipe: the recipe's (tuned auto, seed generative).")
    backend: Literal["peft", "qlora", "unsloth"] = Field(default="peft", description="peft (CPU or GPU), qlora (4-bit NF4 base via bitsandbytes, GPU), unsloth (GPU).")
    method: Literal["recipe", "lora", "full"] = Field(default="recipe", description="lora: a LoRA adapter over the frozen base; full: every weight of the (small) base model trained (peft backend; r, alpha and dropout unused); recipe: the recipe's (lora).")
    r: Optional[int] = Field(default=None, ge=1, le=1024, description="LoRA rank (1-1024). Unset: the recipe's (64).")
    alpha: Optional[float] = Field(default=None, gt=0, le=4096, description="LoRA alpha (update scaled by alpha / r). Unset: the recipe's (tuned 128, seed 16).")
    dropout: Optional[float] = Field(default=None, ge=0, lt=1, description="LoRA dropout, in [0, 1). Unset: the recipe's (tuned 0, seed 0.1).")
    use_rslora: Optional[bool] = Field(default=None, description="Rank-stabilized LoRA (scale alpha / sqrt(r)). Unset: the recipe's (off).")
    learning_rate: Optional[float] = Field(default=None, gt=0, le=1, description="Peak learning rate, in (0, 1]. Unset: the trainer resource's, else the recipe's (tuned 1e-3, seed 2e-4).")
    effective_batch_size: Optional[int] = Field(default=None, ge=1, description="Examples per optimizer step (gradient accumulation). Unset: the recipe's (tuned 16, seed 128).")
    per_device_batch_size: Optional[int] = Field(default=None, ge=1, description="Examples per forward/backward pass; must divide effective_batch_size. Unset: the trainer resource's, else the recipe's (tuned 16, seed 8).")
    num_epochs: Optional[float] = Field(default=None, gt=0, le=100, description="Epochs, at most (early stopping may end sooner). Unset: the environment's (full: 8), else the recipe's (3).")
    train_sampling: Literal["recipe", "random", "balanced"] = Field(default="recipe", description="How a capped training subset is picked: random, or balanced (every intent about equally often); recipe: the recipe's (tuned balanced, seed random).")
    prefix_gradients: Optional[bool] = Field(default=None, description="Backpropagate through the system prompt shared by a micro-batch (exact gradients, slower) or not (same loss; the adapter learns from each message's own tokens). Unset: the recipe's (tuned off, seed on).")
    group_by_length: Optional[bool] = Field(default=None, description="Micro-batches of messages of about the same length (less padding; 1.3x faster steps on CPU). Unset: the recipe's (tuned on, seed off).")
    early_stopping_patience: Optional[int] = Field(default=None, ge=0, description="Evaluations without a better validation loss before stopping (0: never stop early; the adapter with the lowest validation loss is kept either way). Unset: 1, or 0 for a classification head (its schedule).")
    early_stopping_min_epochs: float = Field(default=1.0, ge=0, description="Evaluations before this many epochs never count toward the patience: no run stops early before it has seen every training example once (0: every evaluation counts).")
    anneal_on_plateau: Optional[float] = Field(default=None, ge=0, le=1, description="When the patience runs out, decay the learning rate linearly to 0 over this share of the steps done, then stop (0: stop at once, at the schedule's learning rate). Unset: the recipe's (tuned 1.0: as many steps as were done, seed 0).")
    checkpoint_steps: Optional[int] = Field(default=None, ge=1, description="Checkpoint (and evaluate) every N optimizer steps; a re-run resumes from the last one. Unset: the trainer resource's, else 20.")
    max_steps: Optional[int] = Field(default=None, ge=1, description="Stop after N optimizer steps.")
    max_train_examples: Optional[int] = Field(default=None, ge=1, description="Train on a seeded subset of this size (the data set size, subset).")
    max_eval_examples: Optional[int] = Field(default=None, ge=1, description="Validate on a seeded subset of this size.")
    bf16: Literal["auto", "true", "false"] = Field(default="auto", description="auto, true or false: bf16 autocast (fast on AMX CPUs).")
    seed: int = Field(default=42, ge=0, description="Seed for subsets, shuffling and LoRA init.")
    dpo_from_corrections: bool = Field(default=False, description="After SFT, run DPO on the agents' corrections where the model was wrong (chosen: the corrected intent, rejected: the predicted one) over the SFT model; the result goes through the same evaluation and promotion gate. Off: the SFT adapter as is.")
    dpo_beta: float = Field(default=0.1, description="DPO beta: how far the policy may move from the SFT model (higher: less). Used only with dpo_from_corrections.")
    dpo_learning_rate: float = Field(default=5e-4, description="Peak learning rate of the DPO LoRA adapter. Used only with dpo_from_corrections.")
    dpo_num_epochs: float = Field(default=2, description="Passes over the preference pairs (unless dpo_max_steps). Used only with dpo_from_corrections.")
    dpo_max_steps: Optional[int] = Field(default=None, description="Stop DPO after N optimizer steps. Used only with dpo_from_corrections.")
    dpo_max_pairs: int = Field(default=512, description="Use at most this many preference pairs (the most recent corrections). Used only with dpo_from_corrections.")
    dpo_effective_batch_size: int = Field(default=8, description="Preference pairs per DPO optimizer step. Used only with dpo_from_corrections.")
    dpo_per_device_batch_size: int = Field(default=4, description="Preference pairs per DPO forward/backward pass (2 rows each). Used only with dpo_from_corrections.")
    dpo_sft_weight: float = Field(default=0.0, description="Weight of an SFT loss on the corrected answer added to the DPO loss (RPO); 0: plain DPO, which measurably lowered accuracy in bench/dpo_from_corrections.py (BENCHMARKS.md). Used only with dpo_from_corrections.")
    dpo_r: int = Field(default=16, description="LoRA rank of the DPO adapter (trained over the merged SFT model). Used only with dpo_from_corrections.")

    @model_validator(mode="after")
    def _valid_recipe(self):
        training = self.training_config()  # raises a clear error before any work starts
        self.dpo_config()
        if self.dpo_from_corrections and training.head == "classifier":
            raise ValueError("dpo_from_corrections trains a generative router (it prefers one answer over another): "
                             "not with head 'classifier'")
        return self

    def dpo_config(self) -> DpoConfig:
        """The DPO settings (validated whether or not the flag is on, so a typo fails before any work)."""
        bf16 = self.bf16 if self.bf16 == "auto" else self.bf16 == "true"
        return DpoConfig(**{target: getattr(self, name) for name, target in DPO_FIELDS.items()}, bf16=bf16,
                         seed=self.seed)

    def training_config(self, budget: Optional[dict] = None, defaults: Optional[dict] = None,
                        single_label: Optional[bool] = None) -> LoraTrainingConfig:
        """The recipe: this config, then, for a classification head, its schedule (``head.HEAD_SCHEDULE``), then the
        environment's ``defaults`` for fields left unset here, then the chosen ``recipe`` (``training.RECIPES``);
        finally the environment's ``budget`` caps. ``single_label``: whether every training and validation message
        has one intent (``head: auto``; None: not known yet)."""
        values = {k: v for k, v in self.model_dump().items() if k not in DPO_FIELDS and k not in ("dpo_from_corrections", "recipe")}
        preset = RECIPES[self.recipe]
        for key in ("train_sampling", "method", "head"):
            if values[key] == "recipe":
                values[key] = None
        values["head"] = resolve_head(values["head"] or preset["head"], self.backend, self.dpo_from_corrections,
                                      single_label)
        schedule = HEAD_SCHEDULE if values["head"] == "classifier" else {}
        for key, value in values.items():
            if value is None and key in schedule:
                values[key] = schedule[key]
            elif value is None and key in TRAINER_DEFAULTED and (defaults or {}).get(key) is not None:
                values[key] = defaults[key]
            elif value is None and key in preset:
                values[key] = preset[key]
            elif value is None:
                values[key] = LoraTrainingConfig.model_fields[key].default
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


def _why_head(config: LoraAdapterConfig, single_label: bool) -> str:
    """Why ``lora_adapter`` trains this router (``head: auto`` resolved, or set in the run config)."""
    if config.head in ("generative", "classifier"):
        return "set in the run config"
    if config.head == "recipe" and RECIPES[config.recipe]["head"] != "auto":
        return f"the {config.recipe} recipe's"
    reason = why_not_head(config.backend, config.dpo_from_corrections, single_label)
    return f"head auto: {reason or 'one intent per message'}"


def _fingerprint(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\x1f")
    return digest.hexdigest()[:16]


@dg.asset(
    group_name="model",
    op_tags=k8s_config.LORA_ADAPTER,
    pool=k8s_config.GPU_POOL,
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
    agent_corrections: pd.DataFrame,
) -> dict:
    """A LoRA adapter fine-tuned on the redacted instruction records: by default (``head: auto``) a classification
    head over the base model wherever every message has one intent (cross-entropy over the labels), else the
    generative router (loss on the assistant answer only). Metadata ``router_head`` says which.

    Validation loss picks the adapter kept (and, for the generative router, stops the run early); checkpoints every
    ``checkpoint_steps``: a run with the same recipe, data and base model (the same ``run_key``, hence the same work
    directory) resumes from the last checkpoint after an interruption. Progress (step, loss, ETA) is logged while it
    trains.

    Checkpoints survive the pod (``prod``, spot GPU nodes): each one is published to the artifact store as soon as
    the trainer has written it, as its own prefix ``lora_adapter/<run_key>/checkpoints/checkpoint-N/`` with its
    own manifest and the run's fingerprint (``run.json``); checkpoints the trainer rotates away are withdrawn. A
    fresh pod with no local checkpoint fetches the newest published one that verifies, falling back to older ones
    with a warning when it was half-published or corrupted. Metadata: ``resumed_from_checkpoint``,
    ``checkpoint_fetched_from_store``, ``checkpoints_rejected``, ``checkpoints_published``.

    With ``dpo_from_corrections`` (default off), the agents' corrections where the model was wrong become
    preference pairs (chosen: the corrected intent, rejected: the predicted one; never a test-split message) and a
    DPO adapter is trained over the SFT model merged into the base: the output then names that merged model as
    ``base_model_dir`` and the DPO adapter as ``adapter_dir``, so the 4-bit model, the evaluation and the promotion
    gate judge it like any other. Without usable pairs the SFT adapter is the output.
    """
    records = instruction_dataset[instruction_dataset["split"].isin(["train", "validation"])]
    # a label-set column (multi-intent data): one intent in every set still lets a classification head route it
    single_label = "intents" not in records or bool(records["intents"].map(len).eq(1).all())
    training = config.training_config(trainer.budget(), trainer.defaults(), single_label).model_copy(
        update={"device": trainer.device})
    context.log.info(f"router: {training.head} ({_why_head(config, single_label)})")
    data_key = _fingerprint(*records["messages"].tolist())
    run_key = _fingerprint(json.dumps(training.model_dump(mode="json"), sort_keys=True), data_key, str(base_model.get("path")))
    workdir = artifacts.path("lora_adapter", run_key)
    paths = write_jsonl(records, workdir / "data")
    context.log.info(f"training run {run_key} in {workdir} (budget {trainer.budget() or 'none'}, "
                     f"environment defaults {trainer.defaults() or 'none'})")
    artifacts.fetch(base_model["path"])  # prod: from S3, verified against its manifest
    checkpoints = workdir / CHECKPOINTS_DIR
    # a fresh pod (the last one preempted): the newest checkpoint it published that verifies
    fetched, rejected = restore_checkpoint(artifacts, checkpoints, context.log.info, context.log.warning)
    publisher = CheckpointPublisher(artifacts, checkpoints, context.log.info, context.log.warning)
    result = train_lora(Path(base_model["path"]), paths["train"], paths.get("validation"), workdir, training,
                        log=context.log.info, on_checkpoint=publisher)

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
            # the step where the patience ran out and the learning rate began its decay (anneal_on_plateau)
            "annealed_from_step": result.extra.get("annealed_from_step") or "no",
            "resumed_from_checkpoint": result.resumed_from or "no",
            "checkpoint_fetched_from_store": fetched or "no",
            "checkpoints_rejected": dg.MetadataValue.json(rejected),
            "checkpoints_published": len(publisher.published),
            "tokens_per_second": result.tokens_per_second,
            "seconds_per_step": result.seconds_per_step,
            "trainable_parameters": result.trainable_params,
            "total_parameters": result.total_params,
            "trainable_share": round(result.trainable_params / max(result.total_params, 1), 4),
            "wall_seconds": result.wall_seconds,
            "loss_curve": curve,
            "router_head": training.head,
            "recipe": dg.MetadataValue.json(training.model_dump(mode="json")),
            "budget_caps": dg.MetadataValue.json(trainer.budget()),
            "environment_defaults": dg.MetadataValue.json(trainer.defaults()),
        }
    )
    uri = artifacts.publish(result.adapter_dir)
    if uri:
        context.add_output_metadata({"adapter_uri": dg.MetadataValue.url(uri)})
    output = {"adapter_dir": result.adapter_dir, "base_model_dir": str(base_model["path"]), "run_key": run_key, "best_eval_loss": result.best_eval_loss, "steps": result.steps}
    if config.dpo_from_corrections:
        output = _dpo_from_corrections(context, config, artifacts, output, workdir, instruction_dataset, agent_corrections)
    return output


def _dpo_from_corrections(context, config: LoraAdapterConfig, artifacts: ArtifactStore, sft: dict, workdir: Path,
                          instruction_dataset: pd.DataFrame, agent_corrections: pd.DataFrame) -> dict:
    """DPO over the SFT model on the corrections where the model was wrong; returns the asset's output."""
    settings = config.dpo_config()
    test_texts = instruction_dataset.loc[instruction_dataset["split"] == "test", "text"]
    pairs, counts = select_pairs(preference_pairs(agent_corrections), settings.max_pairs, exclude_texts=test_texts)
    context.add_output_metadata({"dpo_applied": False, "dpo_pairs": dg.MetadataValue.json(counts)})
    if pairs.empty:
        context.log.info(f"dpo_from_corrections: no usable preference pairs ({counts}): the SFT adapter is the output")
        return sft
    system = dataset_system_prompt(instruction_dataset["messages"])
    dpo_key = _fingerprint(json.dumps(settings.model_dump(mode="json"), sort_keys=True), pairs_digest(pairs), system)
    run_key = _fingerprint(sft["run_key"], "dpo", dpo_key)
    out = workdir / "dpo" / dpo_key
    result = train_dpo(Path(sft["base_model_dir"]), Path(sft["adapter_dir"]), pairs, system, out, settings,
                       log=context.log.info)
    curve = image(
        line_chart({"DPO loss": result.history["loss"], "reward margin": result.history["rewards/margins"],
                    "reward accuracy": result.history["rewards/accuracies"]},
                   "DPO on corrections", "optimizer step", "value"),
        artifacts.path("plots") / "lora_dpo.png", "DPO curve",
    )
    pair_counts = pairs.groupby(["rejected", "chosen"]).size().sort_values(ascending=False).head(10)
    context.add_output_metadata({
        "dpo_applied": True,
        "dpo_pairs_used": result.pairs,
        "dpo_steps": result.steps,
        "dpo_epochs_completed": result.epochs_completed,
        "dpo_final_loss": result.last("loss"),
        "dpo_final_reward_margin": result.last("rewards/margins"),
        "dpo_final_reward_accuracy": result.last("rewards/accuracies"),
        "dpo_curve": curve,
        "dpo_history": dg.MetadataValue.json({k: [list(p) for p in v] for k, v in result.history.items()}),
        "dpo_top_corrections": dg.MetadataValue.json([{"predicted": r, "corrected": c, "pairs": int(n)}
                                                      for (r, c), n in pair_counts.items()]),
        "dpo_seconds_per_step": result.seconds_per_step,
        "dpo_wall_seconds": result.wall_seconds,
        "dpo_reused": result.reused,
        "dpo_settings": dg.MetadataValue.json(settings.model_dump(mode="json")),
        "dpo_adapter_dir": dg.MetadataValue.path(result.adapter_dir),
        "dpo_reference_model_dir": dg.MetadataValue.path(result.merged_sft_dir),
        "sft_run_key": sft["run_key"],
    })
    artifacts.publish(result.merged_sft_dir)
    uri = artifacts.publish(result.adapter_dir)
    if uri:
        context.add_output_metadata({"dpo_adapter_uri": dg.MetadataValue.url(uri)})
    return {**sft, "adapter_dir": result.adapter_dir, "base_model_dir": result.merged_sft_dir, "run_key": run_key,
            "sft_adapter_dir": sft["adapter_dir"], "dpo_steps": result.steps, "dpo_pairs": result.pairs}
