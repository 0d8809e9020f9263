import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """The base model's tokenizer converted once per test session (the conversion takes ~10 s)."""
    from intent_assets.base_model import load_tokenizer

    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer"
    load_tokenizer(path)
    return path


@pytest.fixture
def data_root(tmp_path, tokenizer_dir) -> Path:
    """A fresh data folder for one materialization, with the converted tokenizer pre-seeded."""
    root = tmp_path / "data"
    shutil.copytree(tokenizer_dir, root / "artifacts" / "base_model" / "tokenizer")
    return root
