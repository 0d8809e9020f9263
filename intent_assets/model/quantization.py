"""Merge a LoRA adapter into the base model and quantize the result to 4-bit AWQ (W4A16) with llm-compressor.

Plain functions (no Dagster import); the ``awq_model`` asset calls them. The output is a Hugging Face model folder
in the *compressed-tensors* format (``config.json`` → ``quantization_config.quant_method == "compressed-tensors"``,
int4 weights packed into int32, one scale per group of ``group_size`` input channels), which vLLM loads directly.

Steps and their functions:

1. :func:`merge_adapter` — ``PeftModel.from_pretrained`` + ``merge_and_unload`` (merged in float32, then cast to the
   requested dtype), saved with the tokenizer and its chat template.
2. :func:`quantize_awq` — llm-compressor ``oneshot`` with the recipe ``[AWQModifier, QuantizationModifier]``
   (llm-compressor 0.14 API: AWQ is a *transform* that only rescales channels; the QuantizationModifier that follows
   holds the scheme and does the quantization). The scheme is given through ``config_groups`` (int4, symmetric,
   ``strategy="group"``, ``group_size=64``) rather than the ``"W4A16"`` preset, because the preset's group size 128
   does not divide SmolLM2's hidden size 576. Saved with ``save_compressed=True``, atomically (temporary folder +
   rename), with a ``manifest.json`` (files, sizes, sha256) next to the weights.
3. :func:`load_quantized_for_inference` — loads the saved folder with transformers on the CPU, decompressed to
   dense weights (see its docstring for why).

CPU-only machines: llm-compressor's AWQ pins its cached activations (``IntermediatesCache.pin_memory``) before each
grid search so that host→GPU copies can be asynchronous. Pinning needs an accelerator; without one torch raises
"Cannot access accelerator device". :func:`pin_memory_disabled_without_accelerator` turns that pinning into a no-op
for the duration of the quantization only when no accelerator is available (on a GPU machine it changes nothing);
pinning is purely an optimisation for host→device copies, so skipping it on a CPU does not change the result.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from intent_assets.deploy.s3_artifacts import directory_manifest
from intent_assets.paths import atomic_dir

MANIFEST_NAME = "manifest.json"
COMPRESSED_TENSORS_METHOD = "compressed-tensors"
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")

#: One calibration sample: either a prompt string already rendered with the chat template, or a list of chat
#: messages (``{"role": ..., "content": ...}``) that :func:`quantize_awq` renders with the tokenizer's template.
CalibrationSample = str | Sequence[Mapping[str, str]]


# --------------------------------------------------------------------------------------------------------------
# Settings and result
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantizationSettings:
    """AWQ settings.

    The defaults keep a demo run on a 2-core CPU to a few minutes (see the timings in the module README/report):
    calibration cost grows linearly with ``num_calibration_samples × max_calibration_tokens``.

    - ``num_calibration_samples``: how many calibration prompts to use (a seeded random subset when more are given).
    - ``max_calibration_tokens``: each prompt is truncated to this many tokens.
    - ``truncation_side``: ``"left"`` (default) keeps the *last* ``max_calibration_tokens`` tokens of each prompt —
      the user message and the assistant header, i.e. the part that differs between prompts. This matters here:
      the instruction records start with a ~1,500-token system prompt (the whole banking77 taxonomy) that is the
      same in every record, so keeping the beginning (``"right"``) would calibrate on N copies of the same
      128 tokens. Raise ``max_calibration_tokens`` to cover whole prompts if the run time allows.
    - ``bits``/``group_size``/``symmetric``: int weights, one scale per ``group_size`` input channels. ``group_size``
      must divide every quantized layer's input size; for SmolLM2-135M (hidden 576, MLP 1536) 32, 64 or 192 work,
      128 does not. ``-1`` would mean one scale per output channel (no groups).
    - ``ignore``: modules left unquantized (``lm_head`` is tied to the embeddings in SmolLM2 and is kept dense).
    - ``dtype``: dtype the model is loaded and calibrated in (bf16 is ~2.5x faster than fp32 on AMX CPUs); also the
      dtype of the saved scales and of the unquantized tensors (embeddings, norms).
    - ``duo_scaling``/``n_grid``: AWQ's grid search over scaling ratios (llm-compressor defaults).
    - ``seed``: picks the calibration subset and seeds torch.
    """

    num_calibration_samples: int = 16
    max_calibration_tokens: int = 128
    truncation_side: str = "left"
    bits: int = 4
    group_size: int = 64
    symmetric: bool = True
    ignore: tuple[str, ...] = ("lm_head",)
    dtype: str = "bfloat16"
    duo_scaling: bool = True
    n_grid: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        # accept a list for ``ignore`` (e.g. from a Dagster config) but store a tuple so the dataclass stays hashable
        object.__setattr__(self, "ignore", tuple(self.ignore))
        self.validate()

    def validate(self, hidden_size: int | None = None, intermediate_size: int | None = None) -> None:
        """Raise ``ValueError`` with a clear message for settings llm-compressor would reject (or silently misuse).

        With ``hidden_size``/``intermediate_size`` (from the model's config) it also checks that ``group_size``
        divides the input size of every quantized linear layer.
        """
        if self.num_calibration_samples < 1:
            raise ValueError(f"num_calibration_samples must be >= 1, got {self.num_calibration_samples}")
        if self.max_calibration_tokens < 1:
            raise ValueError(f"max_calibration_tokens must be >= 1, got {self.max_calibration_tokens}")
        if self.truncation_side not in ("left", "right"):
            raise ValueError(f"truncation_side must be 'left' or 'right', got {self.truncation_side!r}")
        if self.bits not in (2, 3, 4, 8):
            raise ValueError(f"bits must be one of 2, 3, 4, 8 (int weights), got {self.bits}")
        if self.group_size != -1 and self.group_size < 1:
            raise ValueError(f"group_size must be a positive integer (or -1 for per-channel), got {self.group_size}")
        if self.dtype not in ("bfloat16", "float16", "float32"):
            raise ValueError(f"dtype must be bfloat16, float16 or float32, got {self.dtype!r}")
        if self.n_grid < 2:
            raise ValueError(f"n_grid must be >= 2, got {self.n_grid}")
        if self.group_size == -1:
            return
        for name, size in (("hidden_size", hidden_size), ("intermediate_size", intermediate_size)):
            if size is not None and size % self.group_size != 0:
                divisors = [g for g in (16, 32, 64, 96, 128, 192, 256) if size % g == 0]
                raise ValueError(
                    f"group_size={self.group_size} does not divide the model's {name} ({size}): every quantized "
                    f"linear layer's input size must be a multiple of the group size. "
                    f"Use one of {divisors} (or -1 for one scale per output channel)."
                )

    @property
    def scheme_description(self) -> str:
        sym = "symmetric" if self.symmetric else "asymmetric"
        groups = "per-channel" if self.group_size == -1 else f"group size {self.group_size}"
        return (
            f"AWQ W{self.bits}A16: int{self.bits} {sym} weights, {groups}, activations {self.dtype}; "
            f"ignore={list(self.ignore)}; compressed-tensors (pack-quantized)"
        )

    def weights_args(self) -> dict[str, Any]:
        """The compressed-tensors ``QuantizationArgs`` for the weights, as a dict."""
        args: dict[str, Any] = {
            "num_bits": self.bits,
            "type": "int",
            "symmetric": self.symmetric,
            "dynamic": False,
        }
        if self.group_size == -1:
            args["strategy"] = "channel"
        else:
            args["strategy"] = "group"
            args["group_size"] = self.group_size
        return args


@dataclass(frozen=True)
class QuantizationResult:
    """What :func:`quantize_awq` produced.

    Sizes count the weight files only (``*.safetensors``), so before/after compare like with like;
    ``manifest_total_bytes`` counts every file in the output folder (tokenizer, config, ...).
    """

    out_dir: Path
    size_bytes_before: int
    size_bytes_after: int
    calibration_samples: int
    calibration_tokens: int
    distinct_calibration_samples: int
    wall_seconds: float
    scheme: str
    quantization_config: dict[str, Any] = field(repr=False)
    manifest_path: Path = field(repr=False)
    manifest_total_bytes: int = 0

    @property
    def compression_ratio(self) -> float:
        return self.size_bytes_after / self.size_bytes_before if self.size_bytes_before else float("nan")

    def to_metadata(self) -> dict[str, Any]:
        """JSON-friendly summary (for Dagster output metadata)."""
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        data["manifest_path"] = str(self.manifest_path)
        data["compression_ratio"] = round(self.compression_ratio, 4)
        data["wall_seconds"] = round(self.wall_seconds, 2)
        return data


# --------------------------------------------------------------------------------------------------------------
# Merge
# --------------------------------------------------------------------------------------------------------------


def _torch_dtype(name: str):
    import torch

    dtypes = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    if name not in dtypes:
        raise ValueError(f"dtype must be one of {sorted(dtypes)}, got {name!r}")
    return dtypes[name]


def _load_tokenizer(*candidates: Path):
    """The first candidate folder that holds a tokenizer (the adapter folder usually does: training may set the pad
    token there). Raises if none has a chat template: the served model needs it."""
    from transformers import AutoTokenizer

    for directory in candidates:
        if any((Path(directory) / name).is_file() for name in _TOKENIZER_FILES):
            tokenizer = AutoTokenizer.from_pretrained(directory)
            if tokenizer.chat_template:
                return tokenizer
    raise ValueError(f"No tokenizer with a chat template found in {[str(c) for c in candidates]}")


def is_full_model(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a whole fine-tuned model (``method: full``) rather than a LoRA adapter."""
    directory = Path(directory)
    return (directory / "config.json").is_file() and not (directory / "adapter_config.json").is_file()


def merge_adapter(
    base_dir: str | os.PathLike,
    adapter_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    dtype: str = "bfloat16",
) -> Path:
    """Merge the LoRA adapter in ``adapter_dir`` into the base model in ``base_dir`` and save a plain HF model.

    The merge is done in float32 (``W + B·A·scale`` without bf16 rounding of the delta), then the merged model is
    cast to ``dtype`` and saved (safetensors) with the tokenizer and its chat template (from ``adapter_dir`` if it
    has one, else from ``base_dir``). Written atomically. Returns ``out_dir``. A fully fine-tuned model in
    ``adapter_dir`` (``lora_adapter``'s ``method: full``: a model, no adapter) is saved the same way, unmerged. A
    classification head's adapter (``head: classifier``) gives a sequence-classification model with its labels in
    ``config.json`` (``id2label``).
    """
    import torch

    from intent_assets.model.head import head_config, head_labels, is_head_model, model_class

    base_dir, adapter_dir, out_dir = Path(base_dir), Path(adapter_dir), Path(out_dir)
    torch_dtype = _torch_dtype(dtype)
    tokenizer = _load_tokenizer(adapter_dir, base_dir)
    auto_class = model_class(adapter_dir)

    if is_full_model(adapter_dir):
        merged = auto_class.from_pretrained(adapter_dir, dtype=torch.float32)
    else:
        from peft import PeftModel

        head = head_config(head_labels(adapter_dir), tokenizer.pad_token_id) if is_head_model(adapter_dir) else {}
        base = auto_class.from_pretrained(base_dir, dtype=torch.float32, **head)
        merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged = merged.to(torch_dtype)
    merged.config.dtype = torch_dtype
    with atomic_dir(out_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return out_dir


# --------------------------------------------------------------------------------------------------------------
# Calibration data
# --------------------------------------------------------------------------------------------------------------


def render_calibration_text(sample: CalibrationSample, tokenizer) -> str:
    """A calibration sample as the text the model will see at inference time.

    - ``str``: taken as already rendered with the chat template (e.g. ``"<|im_start|>system\\n...<|im_end|>\\n
      <|im_start|>user\\n...<|im_end|>\\n<|im_start|>assistant\\n"``) and used verbatim.
    - a list of ``{"role", "content"}`` messages (system + user of a redacted training record, no assistant answer):
      rendered with the tokenizer's chat template and ``add_generation_prompt=True``, i.e. exactly the prompt the
      served model receives.
    """
    if isinstance(sample, str):
        return sample
    messages = [dict(m) for m in sample]
    if not messages or not all("role" in m and "content" in m for m in messages):
        raise ValueError(f"A calibration sample must be a string or a list of role/content messages, got {sample!r}")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def select_calibration_texts(
    samples: Sequence[CalibrationSample], tokenizer, settings: QuantizationSettings
) -> list[str]:
    """Render the samples, drop empty ones, and keep ``num_calibration_samples`` of them (a seeded random subset,
    in input order, when there are more)."""
    texts = [render_calibration_text(s, tokenizer) for s in samples]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("No (non-empty) calibration samples given")
    if len(texts) > settings.num_calibration_samples:
        keep = sorted(random.Random(settings.seed).sample(range(len(texts)), settings.num_calibration_samples))
        texts = [texts[i] for i in keep]
    return texts


def tokenize_calibration(texts: Sequence[str], tokenizer, settings: QuantizationSettings) -> list[list[int]]:
    """Token ids of each text, truncated to ``settings.max_calibration_tokens`` on ``settings.truncation_side``.

    ``add_special_tokens=False``: the chat template already contains the special tokens. Truncation is done here
    (not by setting ``tokenizer.truncation_side``, which would be saved with the tokenizer)."""
    limit = settings.max_calibration_tokens
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [seq[-limit:] if settings.truncation_side == "left" else seq[:limit] for seq in ids]


def _calibration_dataset(token_ids: Sequence[Sequence[int]]):
    """A pre-tokenized ``datasets.Dataset`` (``input_ids``/``attention_mask``), which ``oneshot`` uses as is."""
    from datasets import Dataset

    return Dataset.from_dict(
        {"input_ids": [list(s) for s in token_ids], "attention_mask": [[1] * len(s) for s in token_ids]}
    )


# --------------------------------------------------------------------------------------------------------------
# Quantize
# --------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def pin_memory_disabled_without_accelerator() -> Iterator[bool]:
    """Within the block, make llm-compressor's ``IntermediatesCache.pin_memory`` a no-op if torch sees no accelerator.

    Why: AWQ pins the cached layer inputs before each grid search (``AWQModifier._apply_smoothing`` →
    ``IntermediatesCache.pin_memory`` → ``Tensor.pin_memory()``) to speed up host→GPU copies; on a machine without
    an accelerator ``Tensor.pin_memory()`` raises ``RuntimeError: Cannot access accelerator device ...``. Pinning is
    only an optimisation of host→device transfers, so skipping it on a CPU-only machine changes no result.

    Scoped and reversible: the original method is restored on exit (also on error). Yields whether it patched.
    """
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    if torch.accelerator.is_available():
        yield False
        return
    original = IntermediatesCache.__dict__["pin_memory"]

    def pin_memory(self, batch_index, input_names=None):  # noqa: ARG001 - same signature as the original
        return None

    IntermediatesCache.pin_memory = pin_memory
    try:
        yield True
    finally:
        IntermediatesCache.pin_memory = original


@contextlib.contextmanager
def layer_progress(model, log: Callable[[str], None] | None) -> Iterator[None]:
    """Logs ``AWQ: layer i/n, elapsed, ETA`` the first time each decoder layer of ``model`` runs (the sequential
    pipeline calibrates and smooths one layer after the other), through forward pre-hooks removed on exit."""
    from intent_assets.progress import Progress

    layers = getattr(getattr(model, "model", None), "layers", None)
    if log is None or layers is None or not len(layers):
        yield
        return
    progress = Progress(log, "AWQ", len(layers), unit="layer", every=0.1)
    seen: set[int] = set()

    def hook(index: int):
        def pre_forward(module, args):  # noqa: ARG001 - forward pre-hook signature
            if index not in seen:
                seen.add(index)
                if len(seen) > 1:
                    progress.update(len(seen) - 1)  # the layers before this one are done
        return pre_forward

    handles = [layer.register_forward_pre_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        yield
        progress.update(len(layers))
    finally:
        for handle in handles:
            handle.remove()


def build_recipe(settings: QuantizationSettings) -> list:
    """The llm-compressor 0.14 recipe: AWQ smoothing, then int weight quantization via ``config_groups``."""
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier

    return [
        AWQModifier(duo_scaling=settings.duo_scaling, n_grid=settings.n_grid),
        QuantizationModifier(
            ignore=list(settings.ignore),
            config_groups={
                "group_0": {
                    "targets": ["Linear"],
                    "weights": settings.weights_args(),
                    "input_activations": None,
                    "output_activations": None,
                }
            },
        ),
    ]


def weight_bytes(model_dir: str | os.PathLike) -> int:
    """Bytes of the weight files (``*.safetensors``/``*.bin``) in a model folder."""
    files = [p for p in Path(model_dir).iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES)]
    return sum(p.stat().st_size for p in files)


def check_quantized_config(model_dir: str | os.PathLike, bits: int | None = 4, group_size: int | None = None) -> dict:
    """Check that ``config.json`` declares a compressed-tensors quantization with ``bits``-bit weights (and the given
    group size) for every config group; return the ``quantization_config``. Raises ``ValueError`` otherwise."""
    config_path = Path(model_dir) / "config.json"
    config = json.loads(config_path.read_text())
    qconfig = config.get("quantization_config")
    if not isinstance(qconfig, dict):
        raise ValueError(f"{config_path} has no quantization_config")
    if qconfig.get("quant_method") != COMPRESSED_TENSORS_METHOD:
        raise ValueError(
            f"{config_path}: quant_method is {qconfig.get('quant_method')!r}, not {COMPRESSED_TENSORS_METHOD!r}"
        )
    groups = qconfig.get("config_groups") or {}
    if not groups:
        raise ValueError(f"{config_path}: quantization_config has no config_groups")
    for name, group in groups.items():
        weights = group.get("weights") or {}
        if bits is not None and weights.get("num_bits") != bits:
            raise ValueError(
                f"{config_path}: config group {name} has {weights.get('num_bits')}-bit weights, not {bits}"
            )
        if group_size is not None and weights.get("group_size") != group_size:
            raise ValueError(
                f"{config_path}: config group {name} has group_size {weights.get('group_size')}, not {group_size}"
            )
    return qconfig


def write_manifest(model_dir: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``manifest.json`` in ``model_dir``: every other file's relative path, size and sha256, plus ``extra``."""
    model_dir = Path(model_dir)
    manifest = {**directory_manifest(model_dir, exclude=(MANIFEST_NAME,)), **(dict(extra) if extra else {})}
    manifest_path = model_dir / MANIFEST_NAME
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return manifest_path


def quantize_awq(
    model_dir: str | os.PathLike,
    calibration_texts: Sequence[CalibrationSample],
    out_dir: str | os.PathLike,
    settings: QuantizationSettings | None = None,
    *,
    log: Callable[[str], None] | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> QuantizationResult:
    """Quantize the (merged) model in ``model_dir`` to int4 AWQ and save it in compressed-tensors format to ``out_dir``.

    ``calibration_texts``: prompts as the served model will see them — each either a string already rendered with
    the chat template, or a list of chat messages (system + user, no assistant turn) that is rendered here with
    ``add_generation_prompt=True`` (see :func:`render_calibration_text`). At most ``settings.num_calibration_samples``
    are used (seeded subset), each truncated to ``settings.max_calibration_tokens`` tokens.

    Written atomically (temporary sibling folder, renamed at the end) with the tokenizer, ``extra_files`` (name ->
    text, e.g. the serving info) and ``manifest.json``. With ``log``, progress (decoder layer i/n, ETA) is logged as llm-compressor's sequential pipeline reaches each
    layer.
    """
    import torch
    from transformers import AutoConfig

    from intent_assets.model.head import is_head_config, model_class

    settings = settings or QuantizationSettings()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    config = AutoConfig.from_pretrained(model_dir)
    settings.validate(getattr(config, "hidden_size", None), getattr(config, "intermediate_size", None))
    if is_head_config(config) and "score" not in settings.ignore:  # a classification head stays 16-bit, like lm_head
        settings = replace(settings, ignore=(*settings.ignore, "score"))

    tokenizer = _load_tokenizer(model_dir)
    texts = select_calibration_texts(calibration_texts, tokenizer, settings)
    token_ids = tokenize_calibration(texts, tokenizer, settings)
    distinct = len({tuple(s) for s in token_ids})
    if distinct < len(token_ids):
        warnings.warn(
            f"Only {distinct} of {len(token_ids)} calibration samples differ after truncation to "
            f"{settings.max_calibration_tokens} tokens ({settings.truncation_side} side)",
            stacklevel=2,
        )
    dataset = _calibration_dataset(token_ids)
    n_tokens = sum(len(s) for s in token_ids)

    from llmcompressor import oneshot

    start = time.perf_counter()
    torch.manual_seed(settings.seed)
    model = model_class(model_dir).from_pretrained(model_dir, dtype=_torch_dtype(settings.dtype))
    with pin_memory_disabled_without_accelerator(), layer_progress(model, log):
        oneshot(
            model=model,
            tokenizer=tokenizer,
            recipe=build_recipe(settings),
            dataset=dataset,
            num_calibration_samples=len(texts),
            max_seq_length=settings.max_calibration_tokens,
            shuffle_calibration_samples=False,
            batch_size=1,
            pipeline="sequential",
        )
    with atomic_dir(out_dir) as tmp:
        with warnings.catch_warnings():
            # llm-compressor leaves its (CPU) offload wrappers on the model; saving is fine, transformers still warns
            warnings.filterwarnings("ignore", message="Attempting to save a model with offloaded modules")
            model.save_pretrained(tmp, save_compressed=True)
        tokenizer.save_pretrained(tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        expected_group = None if settings.group_size == -1 else settings.group_size
        qconfig = check_quantized_config(tmp, bits=settings.bits, group_size=expected_group)
        manifest_path = write_manifest(
            tmp,
            extra={
                "source_model": str(model_dir),
                "scheme": settings.scheme_description,
                "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()},
                "calibration_samples": len(texts),
                "calibration_tokens": n_tokens,
                "distinct_calibration_samples": distinct,
            },
        )
        manifest_total = json.loads(manifest_path.read_text())["total_bytes"]
    wall = time.perf_counter() - start
    del model

    return QuantizationResult(
        out_dir=out_dir,
        size_bytes_before=weight_bytes(model_dir),
        size_bytes_after=weight_bytes(out_dir),
        calibration_samples=len(texts),
        calibration_tokens=n_tokens,
        distinct_calibration_samples=distinct,
        wall_seconds=wall,
        scheme=settings.scheme_description,
        quantization_config=qconfig,
        manifest_path=out_dir / MANIFEST_NAME,
        manifest_total_bytes=manifest_total,
    )


# --------------------------------------------------------------------------------------------------------------
# Load for inference
# --------------------------------------------------------------------------------------------------------------


def load_quantized_for_inference(out_dir: str | os.PathLike, device: str = "cpu", dtype: str | None = None):
    """Load a compressed-tensors model saved by :func:`quantize_awq` with transformers, ready for ``generate``.

    Returns ``(model, tokenizer)``; the model is in eval mode on ``device``.

    How (transformers 5.17 + compressed-tensors 0.19, CPU): ``from_pretrained`` with
    ``quantization_config=CompressedTensorsConfig(dequantize=True)`` unpacks the int4 ``weight_packed`` tensors and
    multiplies by ``weight_scale`` at load time, leaving plain ``nn.Linear`` layers whose dense weights hold exactly
    the quantized values (≤ 16 distinct values per group of 64), so the forward pass is an ordinary dense matmul in
    ``dtype`` and gives the same outputs as the 4-bit model (no int4 kernel is used on the CPU; memory is that of
    the dense model). Without ``dequantize=True`` transformers keeps the packed weights and decompresses them in a
    hook on the first forward pass — same numbers, but a lazy, stateful first call. ``dtype``: default the dtype
    saved in ``config.json`` (that of the calibration, bf16 by default); ``"float32"`` for bit-stable comparisons.
    A classification head's router loads as a sequence classifier (``head.model_class``).
    """
    from transformers import CompressedTensorsConfig

    from intent_assets.model.head import model_class

    out_dir = Path(out_dir)
    check_quantized_config(out_dir, bits=None)
    tokenizer = _load_tokenizer(out_dir)
    kwargs: dict[str, Any] = {"quantization_config": CompressedTensorsConfig(dequantize=True)}
    if dtype is not None:
        kwargs["dtype"] = _torch_dtype(dtype)
    with warnings.catch_warnings():
        # "You passed `quantization_config` ... the model already has a `quantization_config` attribute": expected,
        # we only override the loading attribute ``dequantize``.
        warnings.filterwarnings("ignore", message=".*already has a `quantization_config` attribute.*")
        model = model_class(out_dir).from_pretrained(out_dir, **kwargs)
    model.to(device)
    model.eval()
    return model, tokenizer
