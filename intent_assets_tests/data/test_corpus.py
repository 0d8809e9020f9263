"""Deduplication of the redacted corpus, with and without splits given by the input."""

import pandas as pd

from intent_assets.data.corpus import PARALLEL_REDACTION_FROM, deduplicate, redaction_processes


def corpus(texts, intents=None, splits=None):
    n = len(texts)
    frame = pd.DataFrame({"record_id": [f"r{i}" for i in range(n)], "speaker": "customer", "text": texts,
                          "intent": intents or ["a"] * n})
    return frame if splits is None else frame.assign(split=splits)


def test_without_splits_duplicates_are_removed_across_the_whole_corpus():
    kept, removed = deduplicate(corpus(["Where is my card?", "where is my card", "my card has not arrived"]))
    assert list(kept["record_id"]) == ["r0", "r2"]
    assert removed.to_dict("records") == [{"record_id": "r1", "duplicate_of": "r0", "kind": "exact", "label_conflict": False}]


def test_with_splits_duplicates_are_removed_within_a_split_only_and_never_from_test():
    texts = ["where is my card", "where is my card",   # train, train: one removed
             "where is my card",                        # validation: another split, kept
             "where is my card", "Where is my card?",   # test, test: an official test set stays whole
             "where is my card!"]                       # no split given: its own group
    kept, removed = deduplicate(corpus(texts, splits=["train", "train", "validation", "test", "test", ""]))
    assert list(removed["record_id"]) == ["r1"]
    assert list(kept["record_id"]) == ["r0", "r2", "r3", "r4", "r5"]


def test_near_duplicates_are_looked_for_within_a_split_too_and_never_in_test():
    texts = ["my card has still not arrived", "my card has still not arrived yet"] * 2
    _, removed = deduplicate(corpus(texts, splits=["train", "train", "test", "test"]), near_threshold=0.8)
    assert list(removed["record_id"]) == ["r1"] and list(removed["kind"]) == ["near"]
    _, removed = deduplicate(corpus(texts), near_threshold=0.8)
    assert sorted(removed["record_id"]) == ["r1", "r2", "r3"]


def test_redaction_uses_workers_only_for_large_frames_unless_told(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert redaction_processes(30_000) == 1  # the shipped sample stays in one process
    assert redaction_processes(PARALLEL_REDACTION_FROM) == 2
    assert redaction_processes(30_000, setting=3) == 3
