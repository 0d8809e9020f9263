"""The ``redacted_corpus`` stage: PII redaction of every message, then exact and near-duplicate removal
(no Dagster import).

Only redacted text leaves this module. Conversation ids are pseudonymised too (a customer export may use an
email address or a phone number as a conversation id).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter

import numpy as np
import pandas as pd

from intent_assets.data.near_duplicates import DuplicateIndex
from intent_assets.privacy import pii

REDACTED_COLUMNS = [
    "record_id", "conversation_key", "turn", "timestamp", "speaker", "text", "intent", "channel", "split", "split_source",
    "pii_types", "pii_count", "day",
]
_PLACEHOLDER = re.compile(r"\{\{[A-Z_]+\}\}")
_NON_WORD = re.compile(r"[^\w{}]+")


def conversation_key(conversation_id: str) -> str:
    return hashlib.sha256(("conversation\x1f" + conversation_id).encode()).hexdigest()[:16]


# messages from which redaction_processes' auto setting uses every core: at 500k two workers halved redaction
# (BENCHMARKS.md, bench/scale.py); smaller frames, the shipped sample's 30k included, stay in one process
PARALLEL_REDACTION_FROM = 100_000


def redaction_processes(messages: int, setting: int = 0) -> int:
    """Worker processes to redact ``messages``: ``setting`` when set, else every core from
    ``PARALLEL_REDACTION_FROM`` messages on and one below."""
    if setting:
        return setting
    return (os.cpu_count() or 1) if messages >= PARALLEL_REDACTION_FROM else 1


def redact_frame(frame: pd.DataFrame, processes: int = 1, executor=None) -> tuple[pd.DataFrame, Counter]:
    """Redact ``text`` of every row; returns the redacted frame and PII counts by entity type. ``processes`` and
    ``executor``: worker processes for a large frame (``pii.redact_many``)."""
    redactions = pii.redact_many(frame["text"].tolist(), processes=processes, executor=executor)
    by_type: Counter = Counter()
    for r in redactions:
        by_type.update(s.entity_type for s in r.spans)
    out = pd.DataFrame(
        {
            "record_id": frame["record_id"].to_numpy(),
            "conversation_key": [conversation_key(c) for c in frame["conversation_id"]],
            "turn": frame["turn"].to_numpy(),
            "timestamp": frame["timestamp"].to_numpy(),
            "speaker": frame["speaker"].to_numpy(),
            "text": [r.text for r in redactions],
            "intent": frame["intent"].to_numpy(),
            # the label set (older raw tables have none)
            **({"intents": frame["intents"].to_numpy()} if "intents" in frame else {}),
            "channel": frame["channel"].to_numpy(),
            # the split the input gives (empty when none; older raw tables have no such column)
            "split": frame["split"].to_numpy() if "split" in frame else "",
            "split_source": frame["split_source"].to_numpy() if "split_source" in frame else "",
            "pii_types": [",".join(sorted({s.entity_type for s in r.spans})) for r in redactions],
            "pii_count": np.array([len(r.spans) for r in redactions], dtype="int64"),
            # the daily partition (older raw tables have none)
            **({"day": frame["day"].to_numpy()} if "day" in frame else {}),
        }
    )
    return out, by_type


def normalize(text: str) -> str:
    """Key for duplicate detection: lower case, punctuation and repeated whitespace removed, placeholders kept."""
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def deduplicate(frame: pd.DataFrame, near_threshold: float = 0.9, index: DuplicateIndex | None = None,
                source: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Remove duplicated customer messages; agent turns are kept as they are (templated, never training data).

    * exact: same normalized text as an earlier customer message (whatever its label);
    * near: cosine similarity of character 3–5-gram TF-IDF vectors >= ``near_threshold`` with an earlier kept
      customer message of the same intent, found through MinHash LSH (``intent_assets.data.near_duplicates``: no
      all-pairs matrix).

    "Earlier" includes what ``index`` already holds (the kept messages of earlier partitions), and the kept messages
    of this frame join it under ``source`` (default: each row's ``day``, its partition, where the frame has one);
    without an index the frame is deduplicated on its own.

    When the input gives splits (column ``split``), duplicates are looked for within a split only, and rows of a
    given test split are never removed: an official test set stays whole, so figures on it compare with published
    ones (a text in both an official train and test split stays in both, as in the benchmark). Rows without a
    given split form one group, deduplicated as a whole before the hash split assigns them.

    Returns (kept rows, removed rows with ``record_id``, ``duplicate_of``, ``kind``, ``label_conflict``).
    """
    index = index if index is not None else DuplicateIndex()
    is_customer = (frame["speaker"] == "customer").to_numpy()
    scopes = frame["split"].fillna("").astype(str).to_numpy() if "split" in frame else np.full(len(frame), "")
    candidate = is_customer & (scopes != "test")  # a given test split is never deduplicated
    ids = frame["record_id"].to_numpy()
    found = index.deduplicate(ids, [normalize(t) for t in frame["text"]], scopes, frame["intent"].to_numpy(),
                              candidate, near_threshold=near_threshold,
                              source=source if source is not None else frame["day"].to_numpy() if "day" in frame else "")
    keep = np.ones(len(frame), dtype=bool)
    keep[[r["i"] for r in found]] = False
    removed = pd.DataFrame([{"record_id": ids[r.pop("i")], **r} for r in sorted(found, key=lambda r: r["i"])],
                           columns=["record_id", "duplicate_of", "kind", "label_conflict"])
    return frame[keep].reset_index(drop=True), removed
