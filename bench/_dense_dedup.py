"""The first version of ``corpus.deduplicate`` (until 2026-12-05), kept only as the reference that
``bench/dedup_agreement.py`` and ``bench/scale.py`` measure the MinHash LSH search against: one dense TF-IDF
similarity matrix per intent (n^2 memory), scanned in a Python loop."""

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer

from intent_assets.data.corpus import normalize


def deduplicate_dense(frame: pd.DataFrame, near_threshold: float = 0.9) -> tuple[pd.DataFrame, pd.DataFrame]:
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
