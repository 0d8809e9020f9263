"""The ``redacted_corpus`` stage: PII redaction of every message, then exact and near-duplicate removal
(no Dagster import).

Only redacted text leaves this module. Conversation ids are pseudonymised too (a customer export may use an
email address or a phone number as a conversation id).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer

from intent_assets import pii

REDACTED_COLUMNS = [
    "record_id", "conversation_key", "turn", "timestamp", "speaker", "text", "intent", "channel", "split", "split_source",
    "pii_types", "pii_count",
]
_PLACEHOLDER = re.compile(r"\{\{[A-Z_]+\}\}")
_NON_WORD = re.compile(r"[^\w{}]+")


def conversation_key(conversation_id: str) -> str:
    return hashlib.sha256(("conversation\x1f" + conversation_id).encode()).hexdigest()[:16]


def redact_frame(frame: pd.DataFrame) -> tuple[pd.DataFrame, Counter]:
    """Redact ``text`` of every row; returns the redacted frame and PII counts by entity type."""
    redactions = pii.redact_many(frame["text"].tolist())
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
            "channel": frame["channel"].to_numpy(),
            # the split the input gives (empty when none; older raw tables have no such column)
            "split": frame["split"].to_numpy() if "split" in frame else "",
            "split_source": frame["split_source"].to_numpy() if "split_source" in frame else "",
            "pii_types": [",".join(sorted({s.entity_type for s in r.spans})) for r in redactions],
            "pii_count": np.array([len(r.spans) for r in redactions], dtype="int64"),
        }
    )
    return out, by_type


def normalize(text: str) -> str:
    """Key for duplicate detection: lower case, punctuation and repeated whitespace removed, placeholders kept."""
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def deduplicate(frame: pd.DataFrame, near_threshold: float = 0.9) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Remove duplicated customer messages; agent turns are kept as they are (templated, never training data).

    * exact: same normalized text as an earlier customer message (whatever its label);
    * near: cosine similarity of character 3–5-gram TF-IDF vectors >= ``near_threshold`` with an earlier kept
      customer message of the same intent.

    When the input gives splits (column ``split``), duplicates are looked for within a split only, and rows of a
    given test split are never removed: an official test set stays whole, so figures on it compare with published
    ones (a text in both an official train and test split stays in both, as in the benchmark). Rows without a
    given split form one group, deduplicated as a whole before the hash split assigns them.

    Returns (kept rows, removed rows with ``record_id``, ``duplicate_of``, ``kind``, ``label_conflict``).
    """
    removed: list[dict] = []
    is_customer = (frame["speaker"] == "customer").to_numpy()
    scopes = frame["split"].fillna("").astype(str).to_numpy() if "split" in frame else np.full(len(frame), "")
    candidate = is_customer & (scopes != "test")  # a given test split is never deduplicated
    keys = [normalize(t) for t in frame["text"]]
    first_by_key: dict[tuple[str, str], int] = {}
    keep = np.ones(len(frame), dtype=bool)
    ids, intents = frame["record_id"].to_numpy(), frame["intent"].to_numpy()
    for i, key in enumerate(keys):
        if not candidate[i]:
            continue
        j = first_by_key.setdefault((scopes[i], key), i)
        if j != i:
            keep[i] = False
            removed.append({"record_id": ids[i], "duplicate_of": ids[j], "kind": "exact", "label_conflict": intents[i] != intents[j]})

    candidates = np.flatnonzero(keep & candidate)
    if near_threshold < 1.0 and len(candidates) > 1:
        vectors = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True).fit_transform(
            [keys[i] for i in candidates]
        )
        by_intent: dict[tuple[str, str], list[int]] = {}
        for pos, i in enumerate(candidates):
            by_intent.setdefault((scopes[i], intents[i]), []).append(pos)
        for positions in by_intent.values():
            if len(positions) < 2:
                continue
            sims = (vectors[positions] @ vectors[positions].T).toarray()
            kept_pos: list[int] = []
            for a, pos in enumerate(positions):
                hits = [b for b in kept_pos if sims[a, b] >= near_threshold]
                if hits:
                    i, j = candidates[pos], candidates[positions[hits[0]]]
                    keep[i] = False
                    removed.append({"record_id": ids[i], "duplicate_of": ids[j], "kind": "near", "label_conflict": False})
                else:
                    kept_pos.append(a)
    removed_frame = pd.DataFrame(removed, columns=["record_id", "duplicate_of", "kind", "label_conflict"])
    return frame[keep].reset_index(drop=True), removed_frame
