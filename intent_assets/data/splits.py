"""The ``dataset_splits`` stage: train / validation / test assignment (no Dagster import).

Two sources, chosen by :func:`resolve_splits`:

* **the input's own split** (a ``split`` column, CLINC150's split keys, file names such as Banking77's
  ``train.csv`` / ``test.csv``, or fold files such as NLU++'s ``fold0.json`` ... : see ``intent_assets.data.chat_logs``), honoured whenever it names a test split, so that
  figures can stand next to published ones. When it gives train and test but no validation, validation is carved
  out of the given train rows with the hash below (never out of test).
* **the frozen hash split** otherwise: a conversation's split is a pure function of its key and a salt: the hash
  is mapped to [0, 1) and compared with the cumulative fractions. So the test split never changes when rows
  arrive, and no conversation is in two splits. Within each intent the assignment is an independent uniform
  draw, i.e. stratified in expectation; the stage reports the per-intent counts so an analyst can see the
  realised proportions.
"""

from __future__ import annotations

import hashlib

import pandas as pd

SPLITS = ("train", "validation", "test")
# how an input may write a split (after stripping and lower-casing); anything else is not a split
SPLIT_ALIASES = {"train": "train", "validation": "validation", "val": "validation", "dev": "validation", "test": "test"}
# where a given split came from (column ``split_source`` of raw_chat_logs and redacted_corpus)
INPUT_COLUMN, FILE_NAMES, FOLD_FILES, HASH = "input column", "file names", "fold files", "hash"
SPLIT_SOURCES = (INPUT_COLUMN, FILE_NAMES, FOLD_FILES)
DEFAULT_VALIDATION_SHARE = 0.1


def normalize_split(value) -> str | None:
    """``train`` / ``validation`` / ``test`` for a split as an input writes it (case and surrounding spaces
    ignored; ``val`` and ``dev`` mean validation), None for anything else."""
    if not isinstance(value, str):
        return None
    return SPLIT_ALIASES.get(value.strip().lower())


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


def resolve_splits(
    frame: pd.DataFrame,
    fractions=(0.8, 0.1, 0.1),
    salt: str = "intent-assets-v1",
    validation_share: float = DEFAULT_VALIDATION_SHARE,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Splits of labelled rows (``conversation_key``, optional ``split`` / ``split_source`` as given by the input).

    Returns (rows with ``split``, rows set aside with ``field``/``reason``, info: ``split_source``,
    ``validation_source``, ``note``).

    * No row has a given split, or none is ``test``: the hash split with ``fractions`` for every row (given train /
      validation marks are then ignored: without an official test set nothing is comparable to published figures,
      and a lone ``train.csv`` keeps the split it always had).
    * Otherwise the given splits are kept; rows without one are set aside (field ``split``), since hashing them
      would mix unofficial rows into the official test set; without a given validation split, ``validation_share``
      of the given train rows (by the hash of their conversation) become validation.
    """
    if not 0.0 <= validation_share < 1.0:
        raise ValueError(f"validation_share must be in [0, 1), got {validation_share}")
    given = frame["split"].fillna("").astype(str) if "split" in frame else pd.Series("", index=frame.index)
    sources = frame["split_source"].fillna("").astype(str) if "split_source" in frame else pd.Series("", index=frame.index)
    bad = sorted({v for v in given if v and v not in SPLITS})
    if bad:
        raise ValueError(f"split column holds {bad}: expected one of {SPLITS} (raw_chat_logs normalizes and quarantines)")
    has_given = given != ""
    empty = frame.iloc[:0].assign(field=pd.Series(dtype=str), reason=pd.Series(dtype=str))
    if not (given == "test").any():
        note = ""
        if has_given.any():
            note = f"input gives {sorted(set(given[has_given]))} but no test split: the hash split applies to every row"
        return assign_splits(frame, fractions, salt), empty, {"split_source": HASH, "validation_source": HASH, "note": note}

    out = frame[has_given].copy()
    out["split"] = given[has_given]
    validation_source = " + ".join(sorted(set(sources[has_given & (given == "validation")]))) or None
    if validation_source is None:
        train = out["split"] == "train"
        carved = [split_of(k, (1.0 - validation_share, validation_share, 0.0), salt) for k in out.loc[train, "conversation_key"]]
        out.loc[train, "split"] = carved
        validation_source = f"{HASH} ({validation_share:.0%} of the given train rows)"
    aside = frame[~has_given].copy()
    aside["field"] = "split"
    aside["reason"] = "no split given for this row, while the input gives splits (with a test split) for other rows"
    split_source = " + ".join(sorted(set(sources[has_given]) - {""})) or INPUT_COLUMN
    return out, aside, {"split_source": split_source, "validation_source": validation_source, "note": ""}


def split_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows per intent and split (columns train / validation / test)."""
    table = frame.groupby(["intent", "split"]).size().unstack(fill_value=0)
    return table.reindex(columns=list(SPLITS), fill_value=0)
