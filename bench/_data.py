"""Shared by the bench scripts that read a data folder after a whole-graph (or data-half) run."""

import json
from pathlib import Path

import pandas as pd

from intent_assets.data.taxonomy import Taxonomy
from intent_assets.model.instructions import dataset_system_prompt


def taxonomy(root: Path) -> Taxonomy:
    """The taxonomy the run folder ``root`` trained with (``intent_taxonomy``'s output)."""
    return Taxonomy.from_dict(json.loads((Path(root) / "redacted" / "intent_taxonomy.json").read_text()))


def instruction_data(root: Path, test_examples: int, seed: int = 0):
    """``(data, labels, prompt, real, test)`` of the folder ``root``: the instruction dataset, the taxonomy's labels,
    the one system prompt of its records, the real (not synthetic) records, and a seeded sample of at most
    ``test_examples`` real test records."""
    data = pd.read_parquet(Path(root) / "redacted" / "instruction_dataset.parquet")
    labels = taxonomy(root).names
    prompt = dataset_system_prompt(data["messages"])
    real = data[~data["synthetic"]]
    test = real[real["split"] == "test"]
    test = test.sample(n=min(test_examples, len(test)), random_state=seed)
    return data, labels, prompt, real, test
