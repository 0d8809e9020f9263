"""Duplicate search that scales: exact keys in a hash table, near-duplicates by MinHash LSH (no Dagster import).

The first version compared every customer message with every earlier kept message of its intent: one dense
similarity matrix per intent (n^2 memory: ~34 GB for 65k messages) scanned in a Python loop. Here the same decision
is made on a few candidates only:

* candidates: each message's set of character 3-5-grams (the analyzer of the TF-IDF below) gets a MinHash of
  ``NUM_PERM`` permutations (``rensa``, Rust); an LSH index per (split scope, intent) over the kept messages returns
  the kept messages that share a band with it (``BANDS`` bands of ``NUM_PERM / BANDS`` = 8 rows: a pair with
  Jaccard 0.7 is a candidate with probability 0.85, 0.8: 0.997). Bands of 4 rows found every pair of Jaccard 0.5
  but proposed 8x the candidates, 3x the time on three days of bench/scale.py's generated logs, for 0.16% more of
  the sample's near-duplicates (bench/dedup_agreement.py; both in BENCHMARKS.md);
* decision, as before: cosine of sublinear-TF x IDF vectors of character 3-5-grams >= ``near_threshold`` with an
  earlier kept message of the same intent and scope, the earliest such one named as ``duplicate_of``. The IDF comes
  from the document frequencies of every message indexed so far plus the batch (n-grams hashed into 2^20 columns),
  so one batch alone decides as the dense method did, and a later batch weighs n-grams by all history.

A ``DuplicateIndex`` persists (``save``/``load``: a Parquet table of the customer messages seen so far, normalized
and already redacted, the n-gram document frequencies and the LSH tables), so a message repeated on another day is
still caught; every entry carries the ``source`` (a partition key) that added it, and ``drop_source`` forgets one
source before it is deduplicated again. ``rensa`` rather than ``datasketch``: the same MinHash LSH, in Rust, with
bulk MinHash construction and its own serialization of the LSH tables (BENCHMARKS.md has both measured).
"""

from __future__ import annotations

import json
import pickle
from array import array
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import rensa
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.preprocessing import normalize as l2_normalize

NUM_PERM = 256
BANDS = 32
SEED = 42
N_FEATURES = 2**20
# candidate pairs whose cosines one sparse product computes: all at once, a batch of a week of 50k-message days
# peaked at 6.9 GB; 100k at a time, 3.3 GB and faster (BENCHMARKS.md, issue 16)
PAIR_CHUNK = 100_000
# messages whose n-grams (Python strings) and MinHashes (~9 KB each in rensa 0.5) are held at once: a week's batch
# held them all, ~2 x 1.8 GB for 200k unique messages, the largest share of the 8.75 GB peak at 5M (issue 16)
GRAM_CHUNK = 20_000
_INDEX_FILE = "messages.parquet"
_DF_FILE = "document_frequencies.npz"
_META_FILE = "index.json"
_LSH_FILE = "lsh_tables.pickle"
_COLUMNS = ("record_id", "key", "scope", "intent", "source", "near_duplicate")


def _given(tokens: list[str]) -> list[str]:
    return tokens


# one analysis per text (character 3-5-grams within word boundaries, lower-cased), used for both the MinHash and
# the hashed term frequencies
_ANALYZER = HashingVectorizer(analyzer="char_wb", ngram_range=(3, 5)).build_analyzer()
_HASHER = HashingVectorizer(analyzer=_given, alternate_sign=False, norm=None, n_features=N_FEATURES)


def _ngrams(keys: list[str]) -> list[list[str]]:
    return [_ANALYZER(k) for k in keys]


def _term_frequencies(grams: list[list[str]]):
    return _HASHER.transform(grams)


def _term_frequencies_of(keys: list[str]):
    """The hashed n-gram counts of ``keys``, analysed ``GRAM_CHUNK`` at a time: a message's n-grams as Python strings
    take ~100 times its length."""
    if not keys:
        return sp.csr_matrix((0, N_FEATURES), dtype=np.float64)
    return sp.vstack([_term_frequencies(_ngrams(keys[start:start + GRAM_CHUNK]))
                      for start in range(0, len(keys), GRAM_CHUNK)]).tocsr()


@dataclass
class DuplicateIndex:
    """The kept customer messages seen so far (normalized text, scope, intent, record id, source) with their
    exact-key table, MinHash LSH per (scope, intent) and n-gram document frequencies."""

    record_id: list = field(default_factory=list)
    key: list = field(default_factory=list)
    scope: list = field(default_factory=list)
    intent: list = field(default_factory=list)
    source: list = field(default_factory=list)
    near_duplicate: list = field(default_factory=list)  # True: removed as a near-duplicate (exact table only)
    document_frequency: np.ndarray = field(default_factory=lambda: np.zeros(N_FEATURES, dtype=np.int64))
    documents: int = 0
    _exact: dict = field(default_factory=dict, repr=False)
    _lsh: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.record_id)

    # ------------------------------------------------------------------ building

    def _add(self, record_id, key: str, scope: str, intent: str, source: str, near_duplicate: bool = False,
             minhash=None) -> int:
        """A customer message to remember: for exact repeats always, for near-duplicates when it was kept."""
        pos = len(self.record_id)
        for name, value in zip(_COLUMNS, (record_id, key, scope, intent, source, near_duplicate)):
            getattr(self, name).append(value)
        self._exact.setdefault((scope, key), pos)
        if minhash is not None:
            if (scope, intent) not in self._lsh:
                self._lsh[(scope, intent)] = _new_lsh()
            self._lsh[(scope, intent)].insert(pos, minhash)
        return pos

    def _rebuild(self) -> None:
        self._exact, self._lsh = {}, {}
        rows = list(zip(*(getattr(self, name) for name in _COLUMNS)))
        for name in _COLUMNS:
            setattr(self, name, [])
        for start in range(0, len(rows), GRAM_CHUNK):  # n-grams and MinHashes of one chunk at a time in memory
            chunk = rows[start:start + GRAM_CHUNK]
            for row, mh in zip(chunk, _minhashes(_ngrams([row[1] for row in chunk]))):
                self._add(*row, minhash=None if row[-1] else mh)

    def drop_source(self, source: str | Collection[str]) -> int:
        """Forget what ``source`` (one, or several) added (before deduplicating it again); returns the number of
        entries dropped."""
        sources = {source} if isinstance(source, str) else set(source)
        drop = [i for i, s in enumerate(self.source) if s in sources]
        if not drop:
            return 0
        counted = [self.key[i] for i in drop if not self.near_duplicate[i]]
        if counted:
            self.document_frequency -= _binary_column_sums(_term_frequencies_of(counted))
            self.documents -= len(counted)
        keep = np.ones(len(self), dtype=bool)
        keep[drop] = False
        for name in _COLUMNS:
            setattr(self, name, [v for v, k in zip(getattr(self, name), keep) if k])
        self._rebuild()
        return len(drop)

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({name: getattr(self, name) for name in _COLUMNS}).to_parquet(directory / _INDEX_FILE, index=False)
        nonzero = np.flatnonzero(self.document_frequency)
        np.savez_compressed(directory / _DF_FILE, columns=nonzero, counts=self.document_frequency[nonzero])
        with open(directory / _LSH_FILE, "wb") as f:  # rensa's own serialization: no MinHash recomputed on load
            pickle.dump({"messages": len(self), "tables": self._lsh}, f, protocol=pickle.HIGHEST_PROTOCOL)
        (directory / _META_FILE).write_text(json.dumps({
            "documents": int(self.documents), "messages": len(self), "num_perm": NUM_PERM, "bands": BANDS,
            "seed": SEED, "n_features": N_FEATURES, "analyzer": "char_wb 3-5",
        }, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> "DuplicateIndex":
        """The index saved in ``directory``, or an empty one when there is none yet."""
        directory = Path(directory)
        if not (directory / _META_FILE).exists():
            return cls()
        meta = json.loads((directory / _META_FILE).read_text())
        if (meta["num_perm"], meta["bands"], meta["seed"], meta["n_features"]) != (NUM_PERM, BANDS, SEED, N_FEATURES):
            raise ValueError(f"duplicate index {directory}: built with other MinHash settings ({meta}); delete it "
                             "to rebuild from all partitions")
        table = pd.read_parquet(directory / _INDEX_FILE)
        saved = np.load(directory / _DF_FILE)
        df = np.zeros(N_FEATURES, dtype=np.int64)
        df[saved["columns"]] = saved["counts"]
        index = cls(**{name: table[name].tolist() for name in _COLUMNS}, document_frequency=df,
                    documents=int(meta["documents"]))
        with open(directory / _LSH_FILE, "rb") as f:  # written by ``save`` above, next to the table it indexes
            tables = pickle.load(f)
        if tables["messages"] != len(index):
            raise ValueError(f"duplicate index {directory}: LSH tables for {tables['messages']} messages, "
                             f"table of {len(index)}; delete it to rebuild from all partitions")
        index._lsh = tables["tables"]
        index._exact = {}
        for pos, (scope, key) in enumerate(zip(index.scope, index.key)):
            index._exact.setdefault((scope, key), pos)  # as _add does, without re-inserting into the loaded LSH
        return index

    # ------------------------------------------------------------------ deduplication

    def deduplicate(self, record_ids, keys: list[str], scopes, intents, candidate, near_threshold: float = 0.9,
                    source: str | Sequence[str] = "") -> list[dict]:
        """Decide, in order, which of a batch's messages duplicate an earlier kept one (of the batch or of the
        index) and add the kept candidates to the index under ``source`` (one for the batch, or one per message:
        a range of daily partitions in one batch). ``candidate[i]`` False: never removed, never indexed.
        Returns the removed rows as dicts (batch position ``i``, ``duplicate_of`` record id, ``kind``,
        ``label_conflict``)."""
        removed: list[dict] = []
        first: dict = {}  # (scope, key) -> batch position of its first occurrence
        unique = []
        for i, key in enumerate(keys):
            if not candidate[i]:
                continue
            j = self._exact.get((scopes[i], key))
            if j is not None:
                removed.append({"i": i, "duplicate_of": self.record_id[j], "kind": "exact",
                                "label_conflict": self.intent[j] != intents[i]})
                continue
            j = first.setdefault((scopes[i], key), i)
            if j != i:
                removed.append({"i": i, "duplicate_of": record_ids[j], "kind": "exact",
                                "label_conflict": intents[j] != intents[i]})
            else:
                unique.append(i)
        if not unique:
            return removed

        tf = _term_frequencies_of([keys[i] for i in unique])
        frequencies = _binary_column_sums(tf)
        kept = np.ones(len(unique), dtype=bool)
        base = len(self)  # the batch's unique messages take the index positions base, base + 1, ... in order
        groups = [(scopes[i], intents[i]) for i in unique]
        # the IDF of the dense method when the index is empty: every unique message of the batch (and history)
        idf = np.log((1 + self.documents + len(unique)) / (1 + self.document_frequency + frequencies)) + 1.0
        vectors = _weight(tf, idf) if near_threshold < 1.0 else None
        del tf
        for start in range(0, len(unique), GRAM_CHUNK):  # n-grams and MinHashes of one chunk at a time in memory
            rows = range(start, min(start + GRAM_CHUNK, len(unique)))
            minhashes = [None] * len(rows)
            if near_threshold < 1.0:
                minhashes = _minhashes(_ngrams([keys[unique[row]] for row in rows]))
                similar = self._similar_pairs(vectors, rows, minhashes, groups, base, idf, near_threshold)
                for row in rows:  # in order: the earliest kept similar message, history first
                    match = next((other for other in similar.get(row, ()) if other < 0 or kept[other]), None)
                    if match is not None:
                        kept[row] = False
                        other_id = self.record_id[-1 - match] if match < 0 else record_ids[unique[match]]
                        removed.append({"i": unique[row], "duplicate_of": other_id, "kind": "near",
                                        "label_conflict": False})
            for row, mh in zip(rows, minhashes):  # kept ones join the LSH tables: later chunks find them there
                i = unique[row]
                self._add(record_ids[i], keys[i], scopes[i], intents[i],
                          source if isinstance(source, str) else source[i], near_duplicate=not kept[row],
                          minhash=mh if kept[row] else None)
        # the index's document frequencies count what it keeps (so drop_source can take a source's share back out)
        # (the weighted vectors have the term frequencies' nonzeros: sublinear TF and IDF are both >= 1)
        self.document_frequency += frequencies if kept.all() else _binary_column_sums(vectors[np.flatnonzero(kept)])
        self.documents += int(kept.sum())
        return removed

    def _similar_pairs(self, vectors, chunk: range, minhashes: list, groups: list, base: int, idf: np.ndarray,
                       threshold: float) -> dict:
        """For each batch row of ``chunk`` (one chunk, ``minhashes`` its MinHashes), the messages of its group with
        cosine >= ``threshold`` that come before it, earliest first: index entries from before the batch as
        ``-1 - position``, earlier batch rows as their row number (earlier chunks' kept rows are in the LSH tables
        already, at ``base + row``; the chunk's own rows come from a table of the chunk). The candidate pairs'
        cosines are computed in sparse products of ``PAIR_CHUNK`` pairs at a time (all at once, a week of
        50k-message days took 7 GB)."""
        chunk_lsh: dict = {}
        for row, mh in zip(chunk, minhashes):
            if groups[row] not in chunk_lsh:
                chunk_lsh[groups[row]] = _new_lsh()
            chunk_lsh[groups[row]].insert(row, mh)
        pairs_row, pairs_other = array("q"), array("q")  # 8 bytes a candidate, not a Python int's 36
        for row, mh in zip(chunk, minhashes):
            history = self._lsh.get(groups[row])
            for position in history.query(mh) if history is not None else ():
                pairs_row.append(row)
                pairs_other.append(-1 - position if position < base else position - base)
            for other in chunk_lsh[groups[row]].query(mh):
                if other < row:
                    pairs_row.append(row)
                    pairs_other.append(other)
        if not pairs_row:
            return {}
        rows, others = np.frombuffer(pairs_row, dtype=np.int64), np.frombuffer(pairs_other, dtype=np.int64)
        # one matrix for both sides: the batch rows involved, then the history hits vectorized with today's IDF
        batch_rows = np.unique(np.concatenate([rows, others[others >= 0]]))
        positions = np.unique(-1 - others[others < 0])
        matrix = vectors[batch_rows]
        if len(positions):
            history_vectors = _weight(_term_frequencies_of([self.key[p] for p in positions]), idf)
            matrix = sp.vstack([matrix, history_vectors]).tocsr()
        rows_at = np.searchsorted(batch_rows, rows)
        other_rows = np.where(others >= 0, np.searchsorted(batch_rows, others),
                              len(batch_rows) + np.searchsorted(positions, -1 - others))
        sims = np.empty(len(rows))
        for start in range(0, len(rows), PAIR_CHUNK):
            part = slice(start, start + PAIR_CHUNK)
            sims[part] = np.asarray(matrix[rows_at[part]].multiply(matrix[other_rows[part]]).sum(axis=1)).ravel()
        similar: dict = {}
        # per row: history (earliest position first), then earlier batch rows in order
        order = np.lexsort((np.where(others < 0, -1 - others, others), others >= 0, rows))
        for k in order[sims[order] >= threshold]:
            similar.setdefault(int(rows[k]), []).append(int(others[k]))
        return similar


def _new_lsh():
    """An empty LSH table with the index's settings (the threshold argument is informative: the bands decide)."""
    return rensa.RMinHashLSH(0.7, NUM_PERM, BANDS)


def _minhashes(grams: list[list[str]]) -> list:
    return rensa.RMinHash.from_token_sets([set(g) for g in grams], NUM_PERM, SEED)


def _binary_column_sums(matrix) -> np.ndarray:
    return np.bincount(matrix.indices, minlength=N_FEATURES).astype(np.int64)


def _weight(tf, idf: np.ndarray):
    tf = tf.astype(np.float64)
    tf.data = 1.0 + np.log(tf.data)  # sublinear TF, as TfidfVectorizer(sublinear_tf=True)
    return l2_normalize(tf.multiply(idf).tocsr())
