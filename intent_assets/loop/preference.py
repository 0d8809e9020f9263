"""DPO from agents' corrections, on top of the supervised adapter (no Dagster import).

A correction where the model was wrong (``predicted_intent != corrected_intent``) is a preference pair: for the same
prompt as a training record (the dataset's system prompt + the redacted user message), the corrected answer
``{"intent": "<corrected>"}`` is *chosen* and the model's answer ``{"intent": "<predicted>"}`` is *rejected*.

``train_dpo(base_model_dir, sft_adapter_dir, pairs, system_prompt, output_dir, config)``:

1. merges the SFT adapter into the base model (``output_dir/merged_sft``, bf16): that model is both the starting
   policy and the DPO reference, so the update is measured against the supervised model;
2. adds a fresh LoRA adapter and runs TRL's ``DPOTrainer`` (sigmoid loss, ``beta``; plus ``sft_weight`` x the
   chosen answer's NLL when set, i.e. RPO) for a few steps; the reference
   log-probabilities come from the same model with the adapter disabled, so no second copy is held in memory;
3. saves the DPO adapter (PEFT format) to ``output_dir/adapter`` and a summary to ``output_dir/dpo_summary.json``.

``merged_sft`` + ``adapter`` is a (base model, adapter) pair like the SFT one: merge and quantize it the same way.

A second call with the same inputs (fingerprint in the summary: SFT adapter, base model, pairs, settings) reuses the
finished adapter. Every pair shares the system prompt; the shared-prefix forward of ``training`` computes it once per
micro-batch (chosen and rejected rows included), which is what makes DPO affordable on CPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from intent_assets.data.corpus import normalize
from intent_assets.model.instructions import answer
from intent_assets.paths import atomic_dir, sha256_file

MERGED_DIR = "merged_sft"
ADAPTER_DIR = "adapter"
SUMMARY_FILE = "dpo_summary.json"


class DpoConfig(BaseModel):
    """How to run DPO on the corrections. Every field has a default; ranges are checked on construction."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    beta: float = Field(0.1, gt=0, le=10, description="DPO beta: how far the policy may move from the SFT model "
                        "(higher: less).")
    learning_rate: float = Field(5e-4, gt=0, le=1, description="Peak learning rate (AdamW) of the DPO adapter.")
    sft_weight: float = Field(0.0, ge=0, le=100, description="Weight of an SFT (negative log-likelihood) loss on the "
                              "chosen answer added to the DPO loss (RPO); 0: plain DPO. Keeps DPO from lowering the "
                              "chosen answer's probability along with the rejected one.")
    num_epochs: float = Field(2, gt=0, le=100, description="Passes over the pairs (unless max_steps).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    max_pairs: int = Field(512, ge=1, description="Use at most this many pairs: the most recent corrections.")
    effective_batch_size: int = Field(8, ge=1, description="Pairs per optimizer step.")
    per_device_batch_size: int = Field(4, ge=1, description="Pairs per forward/backward pass (each is 2 rows).")
    r: int = Field(16, ge=1, le=1024, description="Rank of the DPO LoRA adapter.")
    alpha: float = Field(16, gt=0, le=4096, description="LoRA alpha of the DPO adapter.")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout of the DPO adapter.")
    target_modules: str | list[str] = Field("all-linear", description="Modules that get DPO LoRA weights.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Share of the optimizer steps spent warming up.")
    max_seq_length: int = Field(2048, ge=16, le=131072, description="Prompt + answer cut to this many tokens.")
    bf16: bool | Literal["auto"] = Field("auto", description="bf16 autocast over bf16 weights; auto: when the CPU "
                                         "has AMX or AVX512-BF16, or the GPU supports bf16.")
    share_prompt_prefix: bool = Field(True, description="Compute the prompt prefix shared by a micro-batch's rows "
                                      "once (exact, much faster with the long system prompt).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU.")
    seed: int = Field(42, ge=0, description="Seed for the pair subset, shuffling and LoRA init.")
    num_threads: int | None = Field(None, ge=1, le=1024, description="CPU threads for PyTorch (None: its default).")

    @model_validator(mode="after")
    def _check(self) -> "DpoConfig":
        if self.effective_batch_size % self.per_device_batch_size != 0:
            raise ValueError(
                f"DPO effective_batch_size ({self.effective_batch_size}) must be a multiple of per_device_batch_size "
                f"({self.per_device_batch_size})")
        if isinstance(self.target_modules, list) and (not self.target_modules or not all(self.target_modules)):
            raise ValueError("target_modules must be 'all-linear' or a non-empty list of module names")
        if not self.target_modules:
            raise ValueError("target_modules must be 'all-linear' or a non-empty list of module names")
        return self

    @property
    def gradient_accumulation_steps(self) -> int:
        return self.effective_batch_size // self.per_device_batch_size


@dataclass
class DpoResult:
    adapter_dir: str
    merged_sft_dir: str
    pairs: int
    steps: int
    epochs_completed: float
    history: dict[str, list[tuple[int, float]]]  # loss, rewards/margins, rewards/accuracies, ... per logged step
    wall_seconds: float
    seconds_per_step: float
    trainable_params: int
    device: str
    dtype: str
    reused: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def last(self, name: str) -> float | None:
        points = self.history.get(name) or []
        return points[-1][1] if points else None


# --------------------------------------------------------------------------------------------------------------
# pairs


def select_pairs(pairs: pd.DataFrame, max_pairs: int, exclude_texts=()) -> tuple[pd.DataFrame, dict]:
    """Usable pairs (``text, chosen, rejected``): chosen != rejected, non-empty text, not a message of
    ``exclude_texts`` (the frozen test split: DPO must never see it), one pair per text (the last wins), and at most
    ``max_pairs`` (the last ones: the ledger is in time order). Returns (pairs, counts of what was dropped)."""
    excluded = {normalize(t) for t in exclude_texts}
    frame = pairs[["text", "chosen", "rejected"]].copy()
    frame = frame[frame["text"].astype(str).str.strip().astype(bool) & (frame["chosen"] != frame["rejected"])]
    invalid = len(pairs) - len(frame)
    keys = frame["text"].map(normalize)
    in_test = keys.isin(excluded)
    frame, keys = frame[~in_test], keys[~in_test]
    deduped = frame[~keys.duplicated(keep="last")]
    capped = deduped.tail(max_pairs).reset_index(drop=True)
    return capped, {"pairs_in": len(pairs), "invalid": int(invalid), "test_split": int(in_test.sum()),
                    "duplicate_text": len(frame) - len(deduped), "over_max_pairs": len(deduped) - len(capped),
                    "pairs_used": len(capped)}


def preference_records(pairs: pd.DataFrame, system_prompt: str) -> list[dict]:
    """TRL's conversational preference format, prompted exactly like the SFT records (``chat_record``)."""
    return [{"prompt": [{"role": "system", "content": system_prompt}, {"role": "user", "content": str(text)}],
             "chosen": [{"role": "assistant", "content": answer(str(chosen))}],
             "rejected": [{"role": "assistant", "content": answer(str(rejected))}]}
            for text, chosen, rejected in zip(pairs["text"], pairs["chosen"], pairs["rejected"])]


def pairs_digest(pairs: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    for text, chosen, rejected in zip(pairs["text"], pairs["chosen"], pairs["rejected"]):
        digest.update(f"{text}\x1f{chosen}\x1f{rejected}\x1e".encode())
    return digest.hexdigest()


def _dir_digest(directory: Path) -> str:
    """Names and contents of the files of a model or adapter directory (~1 s for a 135M model)."""
    digest = hashlib.sha256()
    for path in sorted(Path(directory).iterdir()):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def dpo_fingerprint(base_model_dir: Path, sft_adapter_dir: Path, pairs: pd.DataFrame, system_prompt: str,
                    config: DpoConfig) -> dict:
    return {"base_model": _dir_digest(base_model_dir), "sft_adapter": _dir_digest(sft_adapter_dir),
            "pairs": pairs_digest(pairs), "system_prompt": hashlib.sha256(system_prompt.encode()).hexdigest(),
            "config": config.model_dump(mode="json")}


# --------------------------------------------------------------------------------------------------------------
# training


def _history(log_history: list[dict]) -> dict[str, list[tuple[int, float]]]:
    names = ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected", "logps/chosen",
             "logps/rejected")
    return {name: [(int(e["step"]), float(e[name])) for e in log_history if name in e and "train_runtime" not in e]
            for name in names}


def train_dpo(base_model_dir: Path, sft_adapter_dir: Path, pairs: pd.DataFrame, system_prompt: str,
              output_dir: Path, config: DpoConfig | None = None, *,
              log: Callable[[str], None] = print) -> DpoResult:
    """DPO on ``pairs`` (``text, chosen, rejected`` intents; already selected) over the SFT adapter merged into the
    base model. Writes ``output_dir/merged_sft`` (the reference and starting policy), ``output_dir/adapter`` (the DPO
    adapter) and ``output_dir/dpo_summary.json``; returns a ``DpoResult``."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, PrinterCallback
    from trl import DPOConfig, DPOTrainer

    from intent_assets.model.quantization import merge_adapter
    from intent_assets.model.training import (
        _find_backbone,
        _load_tokenizer,
        _progress_callback,
        common_trainer_args,
        datasets_progress_bars,
        enable_shared_prefix,
        ensure_trl_lm_head,
        resolve_bf16,
        resolve_device,
    )

    config = config or DpoConfig()
    if pairs.empty:
        raise ValueError("no preference pairs: DPO needs corrections where the model was wrong")
    started = time.perf_counter()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    merged_dir, adapter_dir, summary_path = output_dir / MERGED_DIR, output_dir / ADAPTER_DIR, output_dir / SUMMARY_FILE
    fingerprint = json.loads(json.dumps(dpo_fingerprint(base_model_dir, sft_adapter_dir, pairs, system_prompt, config)))
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = None
    if (summary and summary.get("fingerprint") == fingerprint and (adapter_dir / "adapter_config.json").is_file()
            and (merged_dir / "config.json").is_file()):
        log(f"DPO adapter for these pairs and settings already in {adapter_dir}: reused")
        result = DpoResult(**{**summary["result"], "reused": True})
        result.history = {k: [tuple(p) for p in v] for k, v in result.history.items()}
        return result
    summary_path.unlink(missing_ok=True)

    device = resolve_device(config.device)
    bf16 = resolve_bf16(config.bf16, device)
    ensure_trl_lm_head()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)

    log(f"merging the SFT adapter into the base model: {merged_dir}")
    if merged_dir.exists():
        shutil.rmtree(merged_dir)
    merge_adapter(base_model_dir, sft_adapter_dir, merged_dir)

    from peft import LoraConfig

    random.seed(config.seed)
    torch.manual_seed(config.seed)
    dtype = torch.bfloat16 if bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=dtype)
    model.config.use_cache = False
    tokenizer = _load_tokenizer(merged_dir)
    args = DPOConfig(
        output_dir=str(output_dir / "checkpoints"),
        **common_trainer_args(config, bf16=bf16, device=device),
        beta=config.beta,
        loss_type=["sigmoid", "sft"] if config.sft_weight else ["sigmoid"],
        loss_weights=[1.0, config.sft_weight] if config.sft_weight else None,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        # TRL turns it on by default; it would also switch the shared prompt prefix off (recomputed full rows)
        gradient_checkpointing=False,
    )
    peft_config = LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout, bias="none",
                             task_type="CAUSAL_LM", target_modules=config.target_modules)
    dataset = Dataset.from_list(preference_records(pairs, system_prompt))
    progress = _progress_callback(log)
    bars = datasets_progress_bars(False)
    try:
        trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=peft_config, callbacks=[progress])
    finally:
        datasets_progress_bars(bars)
    trainer.remove_callback(PrinterCallback)
    share_prefix = config.share_prompt_prefix
    if share_prefix:
        enable_shared_prefix(_find_backbone(trainer.model))
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    log(f"DPO (beta {config.beta}, lr {config.learning_rate:g}, LoRA r={config.r}) on {len(dataset)} pairs, "
        f"{device}, {'bf16' if bf16 else 'fp32'}, batch {config.per_device_batch_size} x "
        f"{config.gradient_accumulation_steps} accumulation")
    trainer.train()
    state = trainer.state

    with atomic_dir(adapter_dir) as tmp:
        trainer.model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
    history = _history(state.log_history)
    result = DpoResult(
        adapter_dir=str(adapter_dir), merged_sft_dir=str(merged_dir), pairs=len(dataset), steps=int(state.global_step),
        epochs_completed=round(float(state.epoch or 0.0), 4), history=history,
        wall_seconds=round(time.perf_counter() - started, 3),
        seconds_per_step=round(progress.step_seconds / progress.steps_timed, 3) if progress.steps_timed else 0.0,
        trainable_params=int(trainable), device=device, dtype="bfloat16" if bf16 else "float32",
        extra={"share_prompt_prefix": share_prefix, "gradient_checkpointing": bool(trainer.args.gradient_checkpointing),
               "beta": config.beta, "step_seconds": progress.durations},
    )
    tmp_path = output_dir / f".{SUMMARY_FILE}.tmp"
    tmp_path.write_text(json.dumps({"fingerprint": fingerprint, "result": result.to_dict()}, indent=1) + "\n",
                        encoding="utf-8")
    tmp_path.replace(summary_path)
    log(f"DPO done: {result.steps} steps, final loss {result.last('loss')}, reward margin "
        f"{result.last('rewards/margins')}, reward accuracy {result.last('rewards/accuracies')}; adapter in {adapter_dir}")
    return result
