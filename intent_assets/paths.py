"""Where the project keeps shipped data and where runs write their outputs (no Dagster import)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
SHIPPED_DATA_DIR = PACKAGE_DIR / "data"
SAMPLE_DIR = SHIPPED_DATA_DIR / "sample"
TAXONOMY_DIR = SHIPPED_DATA_DIR / "taxonomy"

DEFAULT_CHAT_LOGS = SAMPLE_DIR / "banking77_chat_logs.jsonl"
DEFAULT_TAXONOMY = TAXONOMY_DIR / "banking77.json"


def project_path(value: str | os.PathLike) -> Path:
    """``value`` as given when absolute, else relative to the project folder (how run config names shipped files)."""
    path = Path(value)
    return path if path.is_absolute() else PROJECT_DIR / path


def data_dir() -> Path:
    """Root of everything a run writes: ``$INTENT_ASSETS_DATA_DIR`` or ``<project>/data``."""
    return Path(os.environ.get("INTENT_ASSETS_DATA_DIR", PROJECT_DIR / "data")).resolve()


@contextlib.contextmanager
def atomic_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary sibling folder of ``out_dir``; on success it replaces ``out_dir`` (a reader sees
    the old folder or the complete new one, never half of one); on failure it is deleted and ``out_dir`` kept."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stamp = f"{os.getpid()}-{time.time_ns()}"
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{stamp}"
    tmp.mkdir()
    try:
        yield tmp
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{stamp}"
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of one file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
