"""Supervised LoRA fine-tuning of the base model on the instruction dataset (no Dagster import).

``train_lora(base_model_dir, train_jsonl, validation_jsonl, output_dir, config)`` trains a LoRA adapter with TRL's
``SFTTrainer`` on the chat records written by ``instructions.write_jsonl``: every record becomes a
prompt/completion pair (system + user → assistant), so the loss covers the assistant answer and its end-of-turn
token only. Checkpoints go to ``output_dir/checkpoints`` (a second call resumes from the last one; an
``on_checkpoint`` callback sees each one as soon as it is written, e.g. to upload it), the adapter
(PEFT format) to ``output_dir/adapter`` and a summary to ``output_dir/training_summary.json``.

Three backends behind ``load_model_for_training``: ``peft`` (plain LoRA, CPU or GPU), ``qlora`` (4-bit NF4 base
through bitsandbytes; runs on CPU too, slowly) and ``unsloth`` (its ``FastLanguageModel``; needs the package).

Speed on CPU. Every record starts with the same ~1,200-token system prompt, which dominates the cost of a step.
With ``share_prompt_prefix`` (default) the decoder computes the prefix that all rows of a micro-batch share once
and lets every row attend to it through the KV cache (gradients flow back through it once): the loss and the
gradients are those of the full batch (up to float rounding, and LoRA dropout masks on the prefix shared by the
rows), at a fraction of the compute. bf16 autocast over bf16 base weights (LoRA weights stay fp32) is the other
lever (``bf16="auto"``: on CPUs with AMX or AVX512-BF16, on GPUs that support it). On a machine whose cores other
jobs share, ``num_threads=1`` avoids PyTorch's spinning threads collapsing (measured 7x slower with 2 threads).

TRL 1.15 scores tokens through a fused LM head written in Triton, absent from CPU builds of PyTorch:
``ensure_trl_lm_head`` plugs in a plain PyTorch version when Triton is missing (it only sees the answer tokens).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from intent_assets.model import base_model
from intent_assets.paths import atomic_dir

BACKENDS = ("peft", "qlora", "unsloth")
LINEAR_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SUMMARY_FILE = "training_summary.json"
CHECKPOINTS_DIR = "checkpoints"
ADAPTER_DIR = "adapter"


# The recipes ``lora_adapter`` starts from (its run config's ``recipe``); set fields win, the environment's caps apply
# after. SEED: the seed design, as the project started (QLoRA paper defaults). TUNED: what bench/recipe_sweep.py
# measured best (BENCHMARKS.md, "The fine-tuned router against its baselines"): a larger update scale (alpha = 2r),
# no LoRA dropout (a short schedule does not overfit, and dropout was a quarter of a CPU step), every intent seen
# equally often when the environment caps the examples, and no backward pass through the shared prompt prefix.
# When the patience runs out, an anneal as long as the run so far: 0.25 of it scored lower on both full sets
# (Banking77 0.880 against 0.903, CLINC150 92.4% against 93.2% in-scope; BENCHMARKS.md). The router is a
# classification head wherever one can be (``head: auto``, ``intent_assets.model.head.resolve_head``: one intent per
# message, the peft backend, no DPO), on its own schedule (``head.HEAD_SCHEDULE``): it scored above the generative
# router on every single-label set where both ran (BENCHMARKS.md), and the generative router stays one field away.
SEED_RECIPE = {"method": "lora", "r": 64, "alpha": 16, "dropout": 0.1, "use_rslora": False, "learning_rate": 2e-4,
               "effective_batch_size": 128, "per_device_batch_size": 8, "num_epochs": 3, "train_sampling": "random",
               "prefix_gradients": True, "group_by_length": False, "anneal_on_plateau": 0.0, "head": "generative"}
TUNED_RECIPE = {"method": "lora", "r": 64, "alpha": 128, "dropout": 0.0, "use_rslora": False, "learning_rate": 1e-3,
                "effective_batch_size": 16, "per_device_batch_size": 16, "num_epochs": 3,
                "train_sampling": "balanced", "prefix_gradients": False, "group_by_length": True,
                "anneal_on_plateau": 1.0, "head": "auto"}
RECIPES = {"seed": SEED_RECIPE, "tuned": TUNED_RECIPE}


class TrainingBackendUnavailable(RuntimeError):
    """The chosen backend cannot run here (package missing, no GPU, ...); the message says what to install."""


# --------------------------------------------------------------------------------------------------------------
# configuration


class LoraTrainingConfig(BaseModel):
    """How to fine-tune the LoRA adapter. Every field has a default; ranges are checked on construction."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    backend: Literal["peft", "qlora", "unsloth"] = Field(
        "peft", description="peft: LoRA on the full-precision base (CPU or GPU); qlora: base loaded in 4-bit NF4 "
        "through bitsandbytes (GPU; slow on CPU); unsloth: unsloth's FastLanguageModel (needs the unsloth package).")
    method: Literal["lora", "full"] = Field(
        "lora", description="lora: train a LoRA adapter over the frozen base; full: train every weight of the base "
        "(small base models: SmolLM2-135M is 2 GB of weights, gradients and AdamW state in fp32; peft backend only; "
        "r, alpha, dropout and target_modules are then unused).")
    head: Literal["generative", "classifier"] = Field(
        "generative", description="generative: the model writes {\"intent\": \"<name>\"} (constrained decoding "
        "over the taxonomy at inference); classifier: a linear head over the last token's hidden state "
        "(AutoModelForSequenceClassification, trained in full beside the LoRA adapter), one label per message, no "
        "system prompt (intent_assets.model.head). peft backend only.")
    r: int = Field(64, ge=1, le=1024, description="LoRA rank.")
    alpha: float = Field(16, gt=0, le=4096, description="LoRA alpha (the update is scaled by alpha / r).")
    dropout: float = Field(0.1, ge=0, lt=1, description="LoRA dropout. 0 is markedly faster on CPU.")
    use_rslora: bool = Field(False, description="Rank-stabilized LoRA: scale the update by alpha / sqrt(r) instead "
                             "of alpha / r.")
    target_modules: str | list[str] = Field(
        "all-linear", description="Modules that get LoRA weights: 'all-linear' or a list of module names.")
    learning_rate: float = Field(2e-4, gt=0, le=1, description="Peak learning rate (AdamW).")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts",
                          "polynomial", "inverse_sqrt"] = Field("cosine", description="Learning-rate schedule.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of the optimizer steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0, lt=1, description="AdamW weight decay.")
    effective_batch_size: int = Field(
        128, ge=1, description="Examples per optimizer step; gradient accumulation = effective / per-device.")
    per_device_batch_size: int = Field(8, ge=1, description="Examples per forward/backward pass (micro-batch).")
    num_epochs: float = Field(3, gt=0, le=100, description="Passes over the training set (unless max_steps).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    max_train_examples: int | None = Field(None, ge=1, description="Train on a seeded random subset of this size.")
    max_eval_examples: int | None = Field(None, ge=1, description="Evaluate on a seeded random subset of this size.")
    train_sampling: Literal["random", "balanced"] = Field(
        "random", description="How max_train_examples picks its subset: random (seeded) or balanced (round-robin "
        "over intents, so every intent is seen about max_train_examples / intents times; small intents give all "
        "they have).")
    max_seq_length: int = Field(2048, ge=16, le=131072, description="Sequences are cut to this many tokens "
                                "(examples whose answer falls entirely beyond it are dropped).")
    checkpoint_steps: int = Field(20, ge=1, description="Save a resumable checkpoint every N optimizer steps.")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept (the best one is kept in addition).")
    eval_strategy: Literal["steps", "epoch"] = Field(
        "steps", description="steps: evaluate every eval_steps; epoch: evaluate and checkpoint at each epoch end "
        "(checkpoint_steps is then unused).")
    eval_steps: int | None = Field(None, ge=1, description="Evaluate every N optimizer steps; default: at each "
                                   "checkpoint (checkpoint_steps must be a multiple of it when early stopping).")
    early_stopping_patience: int | None = Field(
        1, ge=0, description="Stop after this many evaluations without a lower validation loss; 0 or None: never "
        "(the best adapter by validation loss is kept either way).")
    early_stopping_threshold: float = Field(0.0, ge=0, description="Minimum decrease of the validation loss that "
                                            "counts as an improvement.")
    early_stopping_min_epochs: float = Field(
        1.0, ge=0, description="Evaluations before this many epochs never count toward the patience: early stopping "
        "ends no run before it has seen every training example this often (0: every evaluation counts).")
    anneal_on_plateau: float = Field(
        0.0, ge=0, le=1, description="When early stopping would stop the run, first decay the learning rate "
        "linearly to 0 over this share of the steps done so far (whole evaluation intervals, at least one), then "
        "stop; the best adapter by validation loss is kept as always. 0: stop at once. A run ended by its patience "
        "long before its schedule (at most 8 epochs in the full-data switch) otherwise stops near its peak "
        "learning rate, never annealed.")
    bf16: bool | Literal["auto"] = Field(
        "auto", description="bf16 autocast over bf16 base weights; auto: on when the CPU has AMX or AVX512-BF16, "
        "or the GPU supports bf16.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass (less memory, ~30% slower); not combined "
        "with share_prompt_prefix.")
    share_prompt_prefix: bool = Field(
        True, description="Compute the prompt prefix shared by a micro-batch's rows once (exact, much faster when "
        "the system prompt is long). peft and qlora backends only.")
    attn_implementation: Literal["auto", "sdpa", "eager"] = Field(
        "auto", description="Attention kernel while training: auto = eager on CPU (PyTorch's CPU flash-attention "
        "backward is slow for short rows over a long cached prefix: measured in bench/train_step.py), sdpa on GPU.")
    group_by_length: bool = Field(
        False, description="Batch messages of about the same length together (transformers' LengthGroupedSampler): "
        "less padding in every micro-batch, the same examples per epoch.")
    prefix_gradients: bool = Field(
        True, description="With share_prompt_prefix: backpropagate through the shared prompt prefix (exact "
        "gradients). False computes the prefix without autograd: same loss, the adapter learns from each row's own "
        "tokens only, and the ~700-token prefix costs a forward pass instead of a forward and a backward.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU.")
    seed: int = Field(42, ge=0, description="Seed for subsets, shuffling, LoRA init and dropout.")
    num_threads: int | None = Field(None, ge=1, le=1024, description="CPU threads for PyTorch (None: its default, "
                                    "one per core); 1 holds up far better on a machine shared with other jobs.")
    logging_steps: int = Field(1, ge=1, description="Log the training loss every N optimizer steps.")

    @model_validator(mode="after")
    def _check(self) -> "LoraTrainingConfig":
        if self.effective_batch_size % self.per_device_batch_size != 0:
            raise ValueError(
                f"effective_batch_size ({self.effective_batch_size}) must be a multiple of per_device_batch_size "
                f"({self.per_device_batch_size}): gradient accumulation steps = effective / per-device")
        if isinstance(self.target_modules, list):
            if not self.target_modules or not all(isinstance(m, str) and m for m in self.target_modules):
                raise ValueError("target_modules must be 'all-linear' or a non-empty list of module names")
        elif not self.target_modules:
            raise ValueError("target_modules must be 'all-linear' or a non-empty list of module names")
        if (self.early_stopping_patience and self.eval_strategy == "steps" and self.eval_steps is not None
                and self.checkpoint_steps % self.eval_steps != 0):
            raise ValueError(
                f"checkpoint_steps ({self.checkpoint_steps}) must be a multiple of eval_steps ({self.eval_steps}) "
                "when early stopping is on (the best adapter is restored from a checkpoint)")
        if self.head == "classifier" and self.backend != "peft":
            raise ValueError(f"head 'classifier' trains with backend 'peft' only, not {self.backend!r}")
        if self.gradient_checkpointing and self.share_prompt_prefix:
            raise ValueError("gradient_checkpointing and share_prompt_prefix cannot be combined (gradient "
                             "checkpointing drops the KV cache the shared prefix lives in): turn one off")
        return self

    @property
    def gradient_accumulation_steps(self) -> int:
        return self.effective_batch_size // self.per_device_batch_size

    @property
    def resolved_eval_steps(self) -> int:
        return self.eval_steps or self.checkpoint_steps


# --------------------------------------------------------------------------------------------------------------
# result


@dataclass
class TrainingResult:
    adapter_dir: str
    backend: str
    device: str
    dtype: str
    train_examples: int
    eval_examples: int
    steps: int
    epochs_completed: float
    train_loss_history: list[tuple[int, float]]
    eval_loss_history: list[tuple[int, float]]
    best_eval_loss: float | None
    tokens_per_second: float
    trainable_params: int
    total_params: int
    wall_seconds: float
    resumed_from: str | None
    stopped_early: bool
    seconds_per_step: float = 0.0
    tokens_processed: int = 0
    computed_tokens_per_second: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------------------
# hardware


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_fast_bf16() -> bool:
    """AMX (Intel Sapphire Rapids+) or AVX512-BF16 (Cooper Lake, AMD Zen 4+): bf16 matmuls run natively."""
    flags = _cpu_flags()
    return bool({"amx_bf16", "avx512_bf16"} & flags)


def resolve_device(device: str) -> str:
    """``base_model.resolve_device``, with a missing GPU reported as an unavailable training backend."""
    try:
        return base_model.resolve_device(device)
    except ValueError as exc:
        raise TrainingBackendUnavailable(str(exc)) from exc


def resolve_attention(config: "LoraTrainingConfig", device: str) -> str:
    """The attention kernel for training: the config's, or for ``auto`` eager on CPU and sdpa on GPU."""
    if config.attn_implementation != "auto":
        return config.attn_implementation
    return "sdpa" if device.startswith("cuda") else "eager"


def resolve_bf16(setting: bool | str, device: str) -> bool:
    import torch

    if setting == "auto":
        if device.startswith("cuda"):
            return bool(torch.cuda.is_bf16_supported())
        return cpu_has_fast_bf16()
    if setting and device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        raise ValueError("bf16=True but this GPU does not support bf16")
    return bool(setting)


# --------------------------------------------------------------------------------------------------------------
# data


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not JSON ({exc})") from exc
    return records


def to_prompt_completion(record: dict) -> dict:
    """A chat record ``{"messages": [system?, user, assistant]}`` → ``{"prompt": [...], "completion": [...]}``."""
    messages = record.get("messages")
    if not isinstance(messages, list) or len(messages) < 2:
        raise ValueError(f"record {record.get('record_id')!r}: 'messages' must hold at least a user and an "
                         "assistant turn")
    if messages[-1].get("role") != "assistant":
        raise ValueError(f"record {record.get('record_id')!r}: the last message must be the assistant's answer")
    clean = [{"role": m["role"], "content": m["content"]} for m in messages]
    return {"prompt": clean[:-1], "completion": clean[-1:]}


def balanced_indices(labels: list, limit: int, seed: int = 42) -> list[int]:
    """``limit`` indices taken round-robin over the distinct ``labels`` (each label's own order seeded-shuffled):
    every label gets ``limit // labels`` or one more, a label with fewer rows gives all it has and the rest goes
    to the others. Sorted, so the file's order is kept."""
    rng = random.Random(seed)
    by_label: dict = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    queues = []
    for label in sorted(by_label, key=str):
        rows = by_label[label]
        rng.shuffle(rows)
        queues.append(rows)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < limit and any(depth < len(q) for q in queues):
        for rows in queues:
            if depth < len(rows) and len(chosen) < limit:
                chosen.append(rows[depth])
        depth += 1
    return sorted(chosen)


def chat_records(path: Path, limit: int | None = None, seed: int = 42, sampling: str = "random") -> list[dict]:
    """The JSONL chat records at ``path`` (a seeded subset of ``limit`` records when given, ``random`` or
    ``balanced`` over the records' ``intent``; order kept otherwise)."""
    records = _read_jsonl(Path(path))
    if not records:
        raise ValueError(f"{path} holds no records")
    if limit is not None and limit < len(records):
        if sampling == "balanced":
            indices = balanced_indices([r.get("intent") for r in records], limit, seed)
        else:
            indices = sorted(random.Random(seed).sample(range(len(records)), limit))
        records = [records[i] for i in indices]
    return records


def load_chat_dataset(path: Path, limit: int | None = None, seed: int = 42, sampling: str = "random"):
    """``chat_records`` as a prompt/completion ``datasets.Dataset``."""
    from datasets import Dataset

    return Dataset.from_list([to_prompt_completion(r) for r in chat_records(path, limit, seed, sampling)])


def head_dataset(records: list[dict], tokenizer, labels: list[str], source: str, max_length: int):
    """Chat records as a ``datasets.Dataset`` of ``input_ids`` (``head.head_input_ids``, its last ``max_length``
    tokens: the head reads the last one) and ``labels`` (the index of the answer's label in ``labels``) for
    ``head: classifier``."""
    from datasets import Dataset

    from intent_assets.model.head import head_examples, head_input_ids

    texts, names = head_examples(records, source)
    index = {label: i for i, label in enumerate(labels)}
    return Dataset.from_dict({"input_ids": [head_input_ids(tokenizer, t)[-max_length:] for t in texts],
                              "labels": [index[name] for name in names]})


# --------------------------------------------------------------------------------------------------------------
# shared prompt prefix


def _common_prefix_length(input_ids, attention_mask) -> int:
    import torch

    same = (input_ids == input_ids[:1]).all(dim=0)
    if attention_mask is not None:
        same &= attention_mask.bool().all(dim=0)
    run = torch.cumprod(same.to(torch.int32), dim=0)
    return int(run.sum().item())


def enable_shared_prefix(backbone, min_prefix: int = 16, prefix_gradients: bool = True) -> None:
    """Patch a decoder backbone (e.g. ``LlamaModel``) so that a batch whose rows share a prefix computes that
    prefix once (batch 1) and the rest of every row against it through the KV cache.

    The result is the same hidden states (hence loss and gradients) as the plain forward, with the prefix's share
    of the compute divided by the batch size. Calls that bring their own cache or embeddings (generation) go
    through unchanged.

    ``prefix_gradients=False`` computes the shared prefix without autograd (``torch.no_grad``): the forward pass, hence
    the loss, is unchanged, but the backward pass stops at the prefix's keys and values, so the adapter learns from
    the rows' own tokens only and the ~700-token prefix costs a forward pass instead of a forward and a backward.
    """
    if getattr(backbone, "_shared_prefix_enabled", False):
        backbone._shared_prefix_gradients = prefix_gradients
        return
    import torch
    from transformers.cache_utils import DynamicCache
    from transformers.modeling_outputs import BaseModelOutputWithPast

    original_forward = backbone.forward

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, use_cache=None, **kwargs):
        plain = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                     past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs)
        if (input_ids is None or inputs_embeds is not None or past_key_values is not None
                or input_ids.dim() != 2 or input_ids.shape[0] < 2
                or (attention_mask is not None and attention_mask.dim() != 2)
                or kwargs.get("output_attentions") or kwargs.get("output_hidden_states")
                or (self.training and getattr(self, "gradient_checkpointing", False))):
            return self._shared_prefix_original(**plain)
        batch, length = input_ids.shape
        prefix = min(_common_prefix_length(input_ids, attention_mask), length - 1)
        if prefix < min_prefix:
            return self._shared_prefix_original(**plain)
        extra = {k: v for k, v in kwargs.items() if k not in ("cache_position",)}
        cache = DynamicCache(config=self.config)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._shared_prefix_gradients):
            head = self._shared_prefix_original(
                input_ids=input_ids[:1, :prefix],
                attention_mask=None if attention_mask is None else attention_mask[:1, :prefix],
                position_ids=None if position_ids is None else position_ids[:1, :prefix],
                past_key_values=cache, use_cache=True, **extra)
        cache = head.past_key_values
        cache.batch_repeat_interleave(batch)
        tail = self._shared_prefix_original(
            input_ids=input_ids[:, prefix:],
            attention_mask=attention_mask,
            position_ids=None if position_ids is None else position_ids[:, prefix:],
            past_key_values=cache, use_cache=True, **extra)
        hidden = _cat_expanded(head.last_hidden_state, tail.last_hidden_state, batch)
        return BaseModelOutputWithPast(last_hidden_state=hidden, past_key_values=cache if use_cache else None)

    backbone.forward = types.MethodType(forward, backbone)
    backbone._shared_prefix_enabled = True
    backbone._shared_prefix_original = original_forward
    backbone._shared_prefix_gradients = prefix_gradients


def keep_adapter_inputs_bf16(model) -> int:
    """Stop PEFT from casting each LoRA layer's input to the adapter's fp32 dtype (under bf16 autocast).

    PEFT keeps LoRA weights in fp32 over a bf16 base and casts every input to fp32 before the adapter; autocast then
    casts it straight back to bf16 for the matmul: two copies of the activations per adapted layer and an fp32
    dropout, for the same bf16 product. Training and evaluation run under autocast (accelerate wraps the forward),
    which casts the fp32 weights once per step instead. Returns the number of layers changed.
    """
    changed = 0
    for module in model.modules():
        if getattr(module, "cast_input_dtype_enabled", None) is True and hasattr(module, "lora_A"):
            module.cast_input_dtype_enabled = False
            changed += 1
    return changed


def disable_shared_prefix(backbone) -> None:
    """Undo ``enable_shared_prefix``."""
    if getattr(backbone, "_shared_prefix_enabled", False):
        backbone.forward = backbone._shared_prefix_original
        del backbone._shared_prefix_original
        backbone._shared_prefix_enabled = False


def _cat_expanded(head, tail, batch: int):
    import torch

    return torch.cat([head.expand(batch, -1, -1), tail], dim=1)


def _find_backbone(model):
    """The decoder stack under a (PEFT-wrapped) causal LM: the module whose forward returns hidden states."""
    base = model
    if hasattr(base, "get_base_model"):
        base = base.get_base_model()
    prefix = getattr(base, "base_model_prefix", "model")
    backbone = getattr(base, prefix, None)
    if backbone is None or backbone is base:
        raise RuntimeError(f"cannot find the decoder backbone of {type(base).__name__}")
    return backbone


# --------------------------------------------------------------------------------------------------------------
# TRL's LM head without Triton


class _TorchLogProbHead:
    """Pure-PyTorch stand-in for TRL's Triton ``ChunkedLogProbFunction`` (same call, same outputs).

    TRL 1.15's ``SFTTrainer`` always scores tokens through a fused LM head whose kernel is written in Triton, which
    the CPU build of PyTorch lacks (``'NoneType' object has no attribute 'apply'``). The head only ever sees the
    positions whose label is not -100 (here: the short JSON answer), so materializing their logits is cheap.
    """

    @staticmethod
    def apply(hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping=None, logit_scale=1.0,
              outputs=("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")):
        import torch

        with torch.autocast(hidden.device.type, enabled=False):
            logits = torch.nn.functional.linear(hidden.float(), weight.float(),
                                                None if bias is None else bias.float())
            logits = logits * logit_scale
            if final_logit_softcapping is not None:
                logits = final_logit_softcapping * torch.tanh(logits / final_logit_softcapping)
            logits = logits / temperature
            log_softmax = torch.log_softmax(logits, dim=-1)
            log_probs = log_softmax.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            entropy = log_sum_sq = mean_logits = is_top1 = None
            with torch.no_grad():
                if "entropy" in outputs:
                    entropy = -(log_softmax.exp() * log_softmax).sum(-1)
                if "log_sum_sq_probs" in outputs:
                    log_sum_sq = torch.logsumexp(2 * log_softmax, dim=-1)
                if "mean_logits" in outputs:
                    mean_logits = logits.mean(-1)
                if "is_top1" in outputs:
                    is_top1 = logits.argmax(-1) == targets
        return log_probs, entropy, log_sum_sq, mean_logits, is_top1


def ensure_trl_lm_head() -> bool:
    """Give TRL's fused LM head a PyTorch kernel when its Triton one cannot load (CPU). True when patched."""
    import trl.trainer.utils as trl_utils

    if getattr(trl_utils, "_ChunkedLogProbFunction", None) is None:
        trl_utils._ChunkedLogProbFunction = _TorchLogProbHead
        return True
    return trl_utils._ChunkedLogProbFunction is _TorchLogProbHead


# --------------------------------------------------------------------------------------------------------------
# models


def _lora_config(config: LoraTrainingConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout, use_rslora=config.use_rslora, bias="none",
        # SEQ_CLS: PEFT trains the classification head ("score") in full beside the adapter, and saves it with it
        task_type="SEQ_CLS" if config.head == "classifier" else "CAUSAL_LM",
        target_modules=config.target_modules,
    )


def _load_tokenizer(base_model_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def _load_head_model(base_model_dir: Path, config: LoraTrainingConfig, labels: list[str], *, device: str, bf16: bool):
    """The base model with a fresh classification head over ``labels`` (``head: classifier``): LoRA-wrapped, or
    every weight trainable (``method: full``). Trainable weights are fp32 (AdamW updates of bf16 weights would round
    away), frozen ones bf16 where ``bf16``; bf16 autocast computes the steps."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from intent_assets.model.head import head_config

    tokenizer = _load_tokenizer(base_model_dir)
    full = config.method == "full"
    # no long shared prefix here: sdpa is the faster kernel for ~40-token rows on CPU too
    attention = "sdpa" if config.attn_implementation == "auto" else config.attn_implementation
    model = AutoModelForSequenceClassification.from_pretrained(
        base_model_dir, **head_config(labels, tokenizer.pad_token_id),
        dtype=torch.bfloat16 if bf16 and not full else torch.float32, attn_implementation=attention)
    model.config.use_cache = False
    if full:
        model.requires_grad_(True)
        return model, tokenizer, "float32 weights, bfloat16 autocast" if bf16 else "float32"
    from peft import get_peft_model

    model = get_peft_model(model, _lora_config(config))
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    return model, tokenizer, "bfloat16" if bf16 else "float32"


def load_model_for_training(backend: str, base_model_dir: Path, config: LoraTrainingConfig, *, device: str,
                            bf16: bool, labels: list[str] | None = None):
    """Load the base model for ``backend`` and wrap it with fresh LoRA weights (``head: classifier``: with a fresh
    classification head over ``labels``).

    Returns ``(peft_model, tokenizer, dtype_label)``. Raises ``TrainingBackendUnavailable`` with what to install
    when the backend cannot run here.
    """
    import torch

    base_model_dir = Path(base_model_dir)
    if config.head == "classifier":
        if not labels:
            raise ValueError("head 'classifier' needs the labels it classifies into")
        return _load_head_model(base_model_dir, config, labels, device=device, bf16=bf16)
    if config.method == "full":
        if backend != "peft":
            raise ValueError(f"method 'full' trains the base's own weights: backend 'peft' only, not {backend!r}")
        from transformers import AutoModelForCausalLM

        # fp32 master weights (AdamW updates of bf16 weights would round away); bf16 autocast computes the steps
        model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32,
                                                     attn_implementation=resolve_attention(config, device))
        model.config.use_cache = False
        model.requires_grad_(True)
        return model, _load_tokenizer(base_model_dir), "float32 weights, bfloat16 autocast" if bf16 else "float32"
    if backend == "peft":
        from peft import get_peft_model
        from transformers import AutoModelForCausalLM

        dtype = torch.bfloat16 if bf16 else torch.float32
        model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=dtype,
                                                     attn_implementation=resolve_attention(config, device))
        model.config.use_cache = False
        # autocast_adapter_dtype (default) keeps the LoRA weights in fp32 over a bf16 base.
        model = get_peft_model(model, _lora_config(config))
        return model, _load_tokenizer(base_model_dir), "bfloat16" if bf16 else "float32"

    if backend == "qlora":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise TrainingBackendUnavailable(
                "backend 'qlora' needs bitsandbytes: pip install bitsandbytes==0.50.2 "
                "(the project's [gpu] extra)") from exc
        from peft import get_peft_model, prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        compute = torch.bfloat16 if bf16 else torch.float32
        quantization = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute, bnb_4bit_quant_storage=torch.uint8)
        model = AutoModelForCausalLM.from_pretrained(
            base_model_dir, quantization_config=quantization, dtype=compute,
            device_map={"": 0 if device.startswith("cuda") else "cpu"})
        model.config.use_cache = False
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
        model = get_peft_model(model, _lora_config(config))
        return model, _load_tokenizer(base_model_dir), f"nf4+{'bfloat16' if bf16 else 'float32'}"

    if backend == "unsloth":
        try:
            from unsloth import FastLanguageModel
        except ImportError as exc:
            raise TrainingBackendUnavailable(
                "backend 'unsloth' needs the unsloth package: pip install unsloth==2026.10.9 with its deps "
                "(unsloth_zoo, tyro, torchao, cut_cross_entropy, hf_transfer, msgspec, json5, diffusers; "
                "trl<=1.15.0, datasets<5); or use backend='peft'") from exc
        except Exception as exc:  # unsloth raises assorted errors when it cannot run (no GPU, versions)
            raise TrainingBackendUnavailable(f"backend 'unsloth' is installed but unusable here: {exc}") from exc
        dtype = torch.bfloat16 if bf16 else torch.float32
        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=str(base_model_dir), max_seq_length=config.max_seq_length, dtype=dtype, load_in_4bit=False)
        targets = LINEAR_MODULES if config.target_modules == "all-linear" else config.target_modules
        model = FastLanguageModel.get_peft_model(
            model, r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=targets,
            bias="none", use_gradient_checkpointing="unsloth" if config.gradient_checkpointing else False,
            random_state=config.seed)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
        tokenizer.padding_side = "right"
        return model, tokenizer, "bfloat16" if bf16 else "float32"

    raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")


# --------------------------------------------------------------------------------------------------------------
# trainer


def _early_stopping_callback(patience: int, threshold: float, min_epochs: float, anneal_share: float = 0.0,
                             log: Callable[[str], None] = print):
    """transformers' ``EarlyStoppingCallback``, except that an evaluation before ``min_epochs`` never counts toward
    the patience (the best validation loss so far is still tracked, and the best adapter kept), and that, with
    ``anneal_share``, a run whose patience runs out first anneals: the learning rate (the trainer's schedule times
    ``anneal_factor``) decays linearly to 0 over that share of the steps done, and the run stops at the end of it.

    On a large training set a 256-message validation loss is noisy, and an evaluation every 100 steps comes many
    times per epoch: with patience 1 one noisy evaluation stopped blended Banking77 (9,797 examples) after 300
    steps, half of one pass over the data (BENCHMARKS.md, "Multi-intent messages").
    """
    from transformers import EarlyStoppingCallback

    class EpochFloorEarlyStopping(EarlyStoppingCallback):
        def __init__(self, early_stopping_patience: int = 1, early_stopping_threshold: float = 0.0,
                     min_epochs: float = 0.0, anneal_share: float = 0.0):
            super().__init__(early_stopping_patience, early_stopping_threshold)
            self.min_epochs = min_epochs
            self.anneal_share = anneal_share
            self.anneal_start: int | None = None  # optimizer steps where the decay began and where it ends
            self.anneal_end: int | None = None

        def check_metric_value(self, args, state, control, metric_value):
            super().check_metric_value(args, state, control, metric_value)
            if (state.epoch or 0.0) < self.min_epochs - 1e-6:
                self.early_stopping_patience_counter = 0

        def anneal_factor(self, step: int) -> float:
            """What the learning rate of optimizer step ``step`` is multiplied by: 1 until the decay begins."""
            if self.anneal_start is None or self.anneal_end is None:
                return 1.0
            return max(0.0, (self.anneal_end - step) / (self.anneal_end - self.anneal_start))

        def on_evaluate(self, args, state, control, metrics, **kwargs):
            if self.anneal_start is not None:  # annealing: every evaluation still picks the best adapter
                if state.global_step >= self.anneal_end:
                    control.should_training_stop = True
                return
            super().on_evaluate(args, state, control, metrics, **kwargs)
            if control.should_training_stop and self.anneal_share > 0 and state.global_step < state.max_steps:
                interval = int(args.eval_steps) if args.eval_strategy == "steps" and args.eval_steps else \
                    max(1, round(state.global_step / max(state.epoch or 1.0, 1e-6)))  # epoch: steps per epoch
                length = interval * max(1, math.ceil(self.anneal_share * state.global_step / interval))
                self.anneal_start, self.anneal_end = state.global_step, state.global_step + length
                control.should_training_stop = False
                log(f"validation loss stopped improving at step {state.global_step}: the learning rate decays to 0 "
                    f"over {length} steps, then training stops")

        def state(self) -> dict:  # a resumed run rebuilds the callback from these (Trainer._load_callback_state)
            saved = super().state()
            saved["args"].update(min_epochs=self.min_epochs, anneal_share=self.anneal_share)
            saved["attributes"].update(anneal_start=self.anneal_start, anneal_end=self.anneal_end)
            return saved

    return EpochFloorEarlyStopping(patience, threshold, min_epochs, anneal_share)


def _make_trainer_class(head: bool = False):
    from transformers import Trainer
    from trl import SFTTrainer

    class IntentSFTTrainer(Trainer if head else SFTTrainer):
        """SFTTrainer (``head``: transformers' Trainer) that counts the tokens it trains on (prompt included) and
        anneals the learning rate when the early-stopping callback says so."""

        tokens_seen = 0
        computed_tokens = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training:
                mask = inputs.get("attention_mask")
                ids = inputs["input_ids"]
                seen = int(mask.sum().item()) if mask is not None else ids.numel()
                self.tokens_seen += seen
                if getattr(self, "_share_prefix", False) and ids.shape[0] > 1:
                    prefix = min(_common_prefix_length(ids, mask), ids.shape[1] - 1)
                    self.computed_tokens += seen - prefix * (ids.shape[0] - 1)
                else:
                    self.computed_tokens += seen
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

        def create_scheduler(self, num_training_steps, optimizer=None):
            """The configured schedule, times the early-stopping callback's ``anneal_factor`` (1 until it anneals).
            The factor is looked up on every step, so a callback restored from a checkpoint takes over."""
            scheduler = super().create_scheduler(num_training_steps, optimizer)
            lambdas = getattr(scheduler, "lr_lambdas", None)
            if lambdas is not None and not getattr(scheduler, "_annealed", False):
                scheduler.lr_lambdas = [lambda step, f=f: f(step) * self._anneal_factor(step) for f in lambdas]
                scheduler._annealed = True
            return scheduler

        def _anneal_factor(self, step: int) -> float:
            for callback in self.callback_handler.callbacks:
                if hasattr(callback, "anneal_factor"):
                    return callback.anneal_factor(step)
            return 1.0

    return IntentSFTTrainer


def _progress_callback(log: Callable[[str], None]):
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def __init__(self):
            self.early_stopping = False
            self.started = None
            self.first_step = 0
            self.step_seconds = 0.0
            self.steps_timed = 0
            self.durations: list[float] = []
            self._step_started = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()
            self.first_step = state.global_step

        def on_step_begin(self, args, state, control, **kwargs):
            self._step_started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if self._step_started is not None:
                seconds = time.perf_counter() - self._step_started
                self.step_seconds += seconds
                self.steps_timed += 1
                self.durations.append(round(seconds, 3))
                self._step_started = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            step, total = state.global_step, state.max_steps
            if "loss" in logs:
                done = max(step - self.first_step, 1)
                elapsed = time.perf_counter() - (self.started or time.perf_counter())
                eta = int(round(elapsed / done * max(total - step, 0)))
                log(f"step {step}/{total} loss {logs['loss']:.4f} eta {eta}s"
                    + (" (at most: early stopping may end sooner)" if self.early_stopping else ""))
            if "eval_loss" in logs:
                log(f"eval at step {step}/{total}: validation loss {logs['eval_loss']:.4f}")

    return Progress()


def _checkpoint_callback(on_checkpoint: Callable[[Path], None], run_file: Path):
    """Calls ``on_checkpoint(checkpoint_dir)`` after each checkpoint is saved, with a copy of ``run_file`` (the run's
    fingerprint) inside it so that the checkpoint says on its own which run it belongs to.

    ``Trainer._save_checkpoint`` writes the model, optimizer, scheduler, RNG and ``trainer_state.json`` and rotates
    older checkpoints away (``save_total_limit``) before ``on_save`` runs: the directory is complete by then.
    """
    from transformers import TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    class CheckpointSaved(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if not (checkpoint / "trainer_state.json").is_file():
                return
            if run_file.is_file():
                shutil.copyfile(run_file, checkpoint / RUN_FILE)
            on_checkpoint(checkpoint)

    return CheckpointSaved()


def _checkpoint_step(checkpoint: str | Path) -> int:
    return int(json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))["global_step"])


def _last_checkpoint(checkpoints_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not checkpoints_dir.is_dir():
        return None
    last = get_last_checkpoint(str(checkpoints_dir))
    if last is None:
        return None
    if not (Path(last) / "trainer_state.json").is_file():
        return None
    return last


# Settings that shape the weights or the optimizer state: checkpoints written under other values cannot be resumed.
_RESUME_FIELDS = ("backend", "method", "r", "alpha", "dropout", "target_modules", "learning_rate", "lr_scheduler",
                  "warmup_ratio", "weight_decay", "effective_batch_size", "per_device_batch_size",
                  "max_train_examples", "max_seq_length", "seed", "bf16", "train_sampling", "prefix_gradients",
                  "use_rslora", "group_by_length", "anneal_on_plateau", "head")
RUN_FILE = "run.json"


def run_fingerprint(base_model_dir: Path, train_jsonl: Path, config: LoraTrainingConfig) -> dict:
    """What checkpoints must share to be resumed: the base model, the training file and the shaping settings."""
    import hashlib

    from intent_assets.model.base_model import sha256_file

    base = Path(base_model_dir)
    digest = hashlib.sha256()
    for path in sorted(base.glob("*.json")) + sorted(base.glob("*.safetensors")) + sorted(base.glob("*.bin")):
        digest.update(path.name.encode())
        digest.update(str(path.stat().st_size).encode())
        if path.suffix == ".json":
            digest.update(path.read_bytes())
    return {
        "base_model": digest.hexdigest(),
        "train_sha256": sha256_file(Path(train_jsonl)),
        "config": {name: getattr(config, name) for name in _RESUME_FIELDS},
    }


def common_trainer_args(config, *, bf16: bool, device: str) -> dict:
    """The ``TrainingArguments`` that SFT (``build_trainer``) and DPO (``preference.train_dpo``) share: batch and
    accumulation, schedule (epochs, steps, learning rate, scheduler, warmup), precision, CPU/GPU, seeds, logging
    and data loading. ``config`` is a ``LoraTrainingConfig`` or a ``preference.DpoConfig`` (same field names)."""
    use_cpu = not device.startswith("cuda")
    return dict(
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_train_epochs=config.num_epochs,
        max_steps=config.max_steps if config.max_steps is not None else -1,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # transformers 5: a value below 1 is a share of the steps
        logging_strategy="steps",
        bf16=bf16,
        fp16=False,
        use_cpu=use_cpu,
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=not use_cpu,
        dataloader_num_workers=0,
        max_length=config.max_seq_length,
    )


def build_trainer(base_model_dir: Path, train_jsonl: Path, validation_jsonl: Path | None, output_dir: Path,
                  config: LoraTrainingConfig, *, log: Callable[[str], None] = print,
                  on_checkpoint: Callable[[Path], None] | None = None):
    """Everything ``train_lora`` runs, set up but not started: returns ``(trainer, info)``.

    ``trainer.train_dataset`` holds the tokenized examples with their ``labels`` (-100 outside the answer; with
    ``head: classifier``, the label's index in the head's output).
    """
    import torch
    from transformers import DataCollatorWithPadding, PrinterCallback, TrainingArguments
    from trl import SFTConfig

    output_dir = Path(output_dir)
    device = resolve_device(config.device)
    bf16 = resolve_bf16(config.bf16, device)
    ensure_trl_lm_head()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    if config.backend == "qlora" and not device.startswith("cuda"):
        log("backend qlora on CPU: bitsandbytes' CPU fallback is slow (use peft on CPU)")

    head = config.head == "classifier"
    labels = None
    if head:  # the label space: every label of the training and validation files, whatever subset trains
        from intent_assets.model.head import head_examples

        labels = sorted({label for path in (train_jsonl, validation_jsonl) if path is not None
                         for label in head_examples(_read_jsonl(Path(path)), str(path))[1]})
        train = chat_records(train_jsonl, config.max_train_examples, config.seed, config.train_sampling)
        evaluation = (chat_records(validation_jsonl, config.max_eval_examples, config.seed)
                      if validation_jsonl is not None else None)
    else:
        train = load_chat_dataset(train_jsonl, config.max_train_examples, config.seed, config.train_sampling)
        evaluation = None
        if validation_jsonl is not None:
            evaluation = load_chat_dataset(validation_jsonl, config.max_eval_examples, config.seed)

    model, tokenizer, dtype_label = load_model_for_training(
        config.backend, base_model_dir, config, device=device, bf16=bf16, labels=labels)
    if head:
        train = head_dataset(train, tokenizer, labels, str(train_jsonl), config.max_seq_length)
        if evaluation is not None:
            evaluation = head_dataset(evaluation, tokenizer, labels, str(validation_jsonl), config.max_seq_length)
    share_prefix = config.share_prompt_prefix and config.backend in ("peft", "qlora") and not head
    if share_prefix:
        enable_shared_prefix(_find_backbone(model), prefix_gradients=config.prefix_gradients)
    if bf16 and config.backend == "peft" and config.method == "lora":
        keep_adapter_inputs_bf16(model)

    early = bool(config.early_stopping_patience) and evaluation is not None
    eval_kwargs: dict[str, Any] = {"eval_strategy": "no"}
    if evaluation is not None:
        if config.eval_strategy == "epoch":
            eval_kwargs = {"eval_strategy": "epoch", "save_strategy": "epoch"}
        else:
            eval_steps = config.resolved_eval_steps
            eval_kwargs = {"eval_strategy": "steps", "eval_steps": eval_steps}
        eval_kwargs.update(load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False,
                           per_device_eval_batch_size=config.per_device_batch_size)
    save_kwargs = {"save_strategy": "steps", "save_steps": config.checkpoint_steps}
    if eval_kwargs.get("save_strategy") == "epoch":
        save_kwargs = {}
    if evaluation is not None and config.eval_strategy == "steps" and not early:
        # load_best_model_at_end needs checkpoints on evaluation steps: without early stopping, evaluate at the
        # checkpoints when eval_steps does not divide checkpoint_steps.
        if config.checkpoint_steps % eval_kwargs["eval_steps"] != 0:
            log(f"evaluating every {config.checkpoint_steps} steps (at the checkpoints) instead of every "
                f"{eval_kwargs['eval_steps']}: the best adapter is restored from a checkpoint")
            eval_kwargs["eval_steps"] = config.checkpoint_steps
    if not share_prefix and not head and not config.gradient_checkpointing and not device.startswith("cuda"):
        log("share_prompt_prefix and gradient_checkpointing are both off: activations of long prompts take a lot "
            "of memory (batch 8 x 1,550 tokens needed > 22 GB on CPU)")

    shared = common_trainer_args(config, bf16=bf16, device=device)
    if head:  # transformers' Trainer: no completion to mask, nothing to pack (rows were cut in head_dataset)
        shared.pop("max_length")
        arguments_class, sft_only = TrainingArguments, {}
    else:  # TRL's: the loss on the answer only
        arguments_class, sft_only = SFTConfig, dict(completion_only_loss=True, packing=False)
    args = arguments_class(
        output_dir=str(output_dir / CHECKPOINTS_DIR),
        **shared,
        **sft_only,
        weight_decay=config.weight_decay,
        logging_steps=config.logging_steps,
        save_total_limit=config.save_total_limit,
        gradient_checkpointing=config.gradient_checkpointing,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        save_only_model=False,
        # a resumed run gets the early-stopping state back (patience counter, an anneal under way)
        restore_callback_states_from_checkpoint=True,
        **save_kwargs,
        **eval_kwargs,
    )
    callbacks = [_progress_callback(log)]
    callbacks[0].early_stopping = early
    early_callback = None
    if early:
        early_callback = _early_stopping_callback(config.early_stopping_patience, config.early_stopping_threshold,
                                                  config.early_stopping_min_epochs, config.anneal_on_plateau, log)
        callbacks.append(early_callback)
    if on_checkpoint is not None:
        callbacks.append(_checkpoint_callback(on_checkpoint, output_dir / CHECKPOINTS_DIR / RUN_FILE))

    trainer_class = _make_trainer_class(head)
    bars = datasets_progress_bars(False)
    try:
        # head: rows right-padded to a multiple of 16 (few distinct shapes: oneDNN reuses its kernels)
        collator = {"data_collator": DataCollatorWithPadding(tokenizer, pad_to_multiple_of=16)} if head else {}
        trainer = trainer_class(model=model, args=args, train_dataset=train, eval_dataset=evaluation,
                                processing_class=tokenizer, callbacks=callbacks, **collator)
    finally:
        datasets_progress_bars(bars)
    trainer.remove_callback(PrinterCallback)  # prints every log dict to stdout; Progress reports through `log`
    trainer._share_prefix = share_prefix
    dropped = len(train) - len(trainer.train_dataset)
    if dropped:
        log(f"{dropped} training examples dropped: their answer lies beyond max_seq_length={config.max_seq_length}")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    info = {
        "device": device if device != "cuda" else f"cuda:{torch.cuda.current_device()}",
        "dtype": dtype_label,
        "bf16": bf16,
        "share_prefix": share_prefix,
        "train_examples": len(trainer.train_dataset),
        "dropped_too_long": dropped,
        "eval_examples": 0 if trainer.eval_dataset is None else len(trainer.eval_dataset),
        "trainable_params": int(trainable),
        "total_params": int(total),
        "progress": callbacks[0],
        "early_stopping": early_callback,
    }
    return trainer, info


def datasets_progress_bars(enabled: bool) -> bool:
    """Turn the datasets library's progress bars on or off; returns whether they were on."""
    from datasets.utils import logging as datasets_logging

    before = datasets_logging.is_progress_bar_enabled()
    if enabled:
        datasets_logging.enable_progress_bar()
    else:
        datasets_logging.disable_progress_bar()
    return before


def _atomic_save_adapter(model, tokenizer, adapter_dir: Path) -> None:
    from intent_assets.model.head import HEAD_LABELS_FILE, is_head_module

    with atomic_dir(adapter_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        # a classification head's LoRA adapter: its labels (a full model's config.json holds them already)
        if is_head_module(model) and (tmp / "adapter_config.json").is_file():
            id2label = model.config.id2label
            labels = [id2label[i] for i in range(len(id2label))]
            (tmp / HEAD_LABELS_FILE).write_text(json.dumps({"labels": labels}, indent=1) + "\n", encoding="utf-8")


def train_lora(base_model_dir: Path, train_jsonl: Path, validation_jsonl: Path | None, output_dir: Path,
               config: LoraTrainingConfig | None = None, *, log: Callable[[str], None] = print,
               on_checkpoint: Callable[[Path], None] | None = None) -> TrainingResult:
    """Fine-tune a LoRA adapter on ``train_jsonl`` (early stopping on ``validation_jsonl``'s loss).

    Resumes from the last checkpoint in ``output_dir/checkpoints`` when there is one and it belongs to this run
    (``checkpoints/run.json``, else the copy inside the last checkpoint, matches ``run_fingerprint``). Writes the
    adapter to ``output_dir/adapter`` and ``output_dir/training_summary.json``; returns a ``TrainingResult``.

    ``on_checkpoint(checkpoint_dir)``, when given, is called as soon as each checkpoint is complete on disk (with
    the run's ``run.json`` copied into it), while training goes on: e.g. to upload it before the machine is
    preempted. What it raises stops the training.
    """
    config = config or LoraTrainingConfig()
    started = time.perf_counter()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = output_dir / CHECKPOINTS_DIR
    fingerprint = json.loads(json.dumps(run_fingerprint(base_model_dir, train_jsonl, config)))
    previous = None
    last = _last_checkpoint(checkpoints)
    # the run's file, else the copy a checkpoint carries (one fetched alone from an artifact store)
    for candidate in [checkpoints / RUN_FILE] + ([Path(last) / RUN_FILE] if last else []):
        try:
            previous = json.loads(candidate.read_text(encoding="utf-8"))
            break
        except (OSError, ValueError):
            continue
    if checkpoints.exists() and previous != fingerprint:
        if _last_checkpoint(checkpoints):
            log(f"checkpoints in {checkpoints} come from another base model, training file or configuration: "
                "starting over")
        shutil.rmtree(checkpoints)
    checkpoints.mkdir(parents=True, exist_ok=True)
    (checkpoints / RUN_FILE).write_text(json.dumps(fingerprint, indent=2) + "\n", encoding="utf-8")
    trainer, info = build_trainer(base_model_dir, train_jsonl, validation_jsonl, output_dir, config, log=log,
                                  on_checkpoint=on_checkpoint)
    resume = _last_checkpoint(checkpoints)
    what = "every weight (full fine-tuning)" if config.method == "full" else f"LoRA r={config.r}"
    log(f"training {what} ({config.backend}, {info['device']}, {info['dtype']}"
        f"{', shared prompt prefix' if info['share_prefix'] else ''}) on {info['train_examples']} examples"
        f" ({info['eval_examples']} for validation), batch {config.per_device_batch_size} x "
        f"{config.gradient_accumulation_steps} accumulation"
        + (f"; resuming from {resume}" if resume else ""))
    if resume and config.max_steps is not None and _checkpoint_step(resume) >= config.max_steps:
        # a run that ended (its last checkpoint saved) before its adapter was: Trainer.train would still take one
        # more step when max_steps is not on an epoch boundary; load the weights (the best ones when kept) instead
        from transformers import TrainerState

        log(f"{resume} already holds all {config.max_steps} steps: nothing left to train")
        trainer._load_from_checkpoint(resume)
        trainer.state = TrainerState.load_from_json(str(Path(resume) / "trainer_state.json"))
        best = trainer.state.best_model_checkpoint
        if trainer.args.load_best_model_at_end and best and (Path(best) / "trainer_state.json").is_file():
            trainer._load_best_model()
    else:
        trainer.train(resume_from_checkpoint=resume)
    state = trainer.state

    adapter_dir = output_dir / ADAPTER_DIR
    _atomic_save_adapter(trainer.model, trainer.processing_class, adapter_dir)

    train_history = [(int(e["step"]), float(e["loss"])) for e in state.log_history if "loss" in e]
    eval_history = [(int(e["step"]), float(e["eval_loss"])) for e in state.log_history if "eval_loss" in e]
    best = min((loss for _, loss in eval_history), default=None)
    progress = info["progress"]
    step_seconds = progress.step_seconds
    # a resumed run replaced the early-stopping callback with one rebuilt from the checkpoint: read that one
    early = next((c for c in trainer.callback_handler.callbacks if hasattr(c, "anneal_factor")), info["early_stopping"])
    annealed_from = getattr(early, "anneal_start", None)
    stopped_early = bool(early is not None and config.early_stopping_patience
                         and (early.early_stopping_patience_counter >= config.early_stopping_patience
                              or annealed_from is not None)
                         and state.global_step < state.max_steps)
    result = TrainingResult(
        adapter_dir=str(adapter_dir),
        backend=config.backend,
        device=info["device"],
        dtype=info["dtype"],
        train_examples=info["train_examples"],
        eval_examples=info["eval_examples"],
        steps=int(state.global_step),
        epochs_completed=round(float(state.epoch or 0.0), 4),
        train_loss_history=train_history,
        eval_loss_history=eval_history,
        best_eval_loss=best,
        tokens_per_second=round(trainer.tokens_seen / step_seconds, 2) if step_seconds else 0.0,
        trainable_params=info["trainable_params"],
        total_params=info["total_params"],
        wall_seconds=round(time.perf_counter() - started, 3),
        resumed_from=resume,
        stopped_early=stopped_early,
        seconds_per_step=round(step_seconds / progress.steps_timed, 3) if progress.steps_timed else 0.0,
        tokens_processed=int(trainer.tokens_seen),
        computed_tokens_per_second=round(trainer.computed_tokens / step_seconds, 2) if step_seconds else 0.0,
        extra={"bf16": info["bf16"], "share_prompt_prefix": info["share_prefix"],
               "dropped_too_long": info["dropped_too_long"],
               "steps_this_run": progress.steps_timed, "step_seconds": progress.durations,
               "best_checkpoint": state.best_model_checkpoint,
               "max_steps": int(state.max_steps),
               "annealed_from_step": annealed_from,
               "gradient_accumulation_steps": config.gradient_accumulation_steps},
    )
    summary = {"result": result.to_dict(), "config": config.model_dump(mode="json"),
               "base_model_dir": str(base_model_dir), "train_jsonl": str(train_jsonl),
               "validation_jsonl": None if validation_jsonl is None else str(validation_jsonl)}
    tmp = output_dir / f".{SUMMARY_FILE}.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    tmp.replace(output_dir / SUMMARY_FILE)
    log(f"done: {result.steps} steps, best validation loss {best if best is None else round(best, 4)}, "
        f"{result.tokens_per_second:.0f} tokens/s, adapter in {adapter_dir}")
    return result

