"""Where the project keeps shipped data and where runs write their outputs (no Dagster import)."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
SHIPPED_DATA_DIR = PACKAGE_DIR / "data"
SAMPLE_DIR = SHIPPED_DATA_DIR / "sample"
TAXONOMY_DIR = SHIPPED_DATA_DIR / "taxonomy"

DEFAULT_CHAT_LOGS = SAMPLE_DIR / "banking77_chat_logs.jsonl"
DEFAULT_TAXONOMY = TAXONOMY_DIR / "banking77.json"


def data_dir() -> Path:
    """Root of everything a run writes: ``$INTENT_ASSETS_DATA_DIR`` or ``<project>/data``."""
    return Path(os.environ.get("INTENT_ASSETS_DATA_DIR", PROJECT_DIR / "data")).resolve()
