"""The ``dataset_splits`` stage: stable, stratified train / validation / test assignment (no Dagster import).

A conversation's split is a pure function of its key and a salt: the hash is mapped to [0, 1) and compared with
the cumulative fractions. So the test split never changes when rows arrive, and no conversation is in two splits.
Within each intent the assignment is an independent uniform draw, i.e. stratified in expectation; the stage
reports the per-intent counts so an analyst can see the realised proportions.
"""

from __future__ import annotations

import hashlib

import pandas as pd

SPLITS = ("train", "validation", "test")


def split_of(key: str, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), salt: str = "intent-assets-v1") -> str:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    digest = hashlib.sha256(f"{salt}\x1f{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "validation"
    return "test"


def assign_splits(frame: pd.DataFrame, fractions=(0.8, 0.1, 0.1), salt: str = "intent-assets-v1") -> pd.DataFrame:
    out = frame.copy()
    out["split"] = [split_of(k, tuple(fractions), salt) for k in out["conversation_key"]]
    return out


def split_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows per intent and split (columns train / validation / test)."""
    table = frame.groupby(["intent", "split"]).size().unstack(fill_value=0)
    return table.reindex(columns=list(SPLITS), fill_value=0)
