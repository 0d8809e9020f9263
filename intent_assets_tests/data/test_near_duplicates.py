"""MinHash LSH duplicate search: the dense method's decisions on one batch, and history kept across batches."""

import pandas as pd
import pytest

from bench._dense_dedup import deduplicate_dense
from intent_assets.data.chat_logs import load_chat_logs
from intent_assets.data.corpus import deduplicate, redact_frame
from intent_assets.data.near_duplicates import DuplicateIndex
from intent_assets.paths import DEFAULT_CHAT_LOGS

DAY1 = ["my card has still not arrived", "how do I top up by bank transfer", "where can I see my PIN"]
DAY2 = ["My card has still not arrived yet", "my card has still not arrived", "I want to close my account"]


def corpus(texts, prefix, intents=None):
    return pd.DataFrame({"record_id": [f"{prefix}{i}" for i in range(len(texts))], "speaker": "customer",
                         "text": texts, "intent": intents or ["a"] * len(texts)})


def test_a_message_repeated_on_another_day_is_caught_through_the_saved_index(tmp_path):
    index = DuplicateIndex.load(tmp_path)  # nothing saved yet: an empty index
    assert len(index) == 0
    kept, removed = deduplicate(corpus(DAY1, "d1-"), near_threshold=0.8, index=index, source="2025-01-01")
    assert len(kept) == 3 and removed.empty
    index.save(tmp_path)

    index = DuplicateIndex.load(tmp_path)
    kept, removed = deduplicate(corpus(DAY2, "d2-"), near_threshold=0.8, index=index, source="2025-01-02")
    assert list(kept["record_id"]) == ["d2-2"]
    assert removed.to_dict("records") == [
        {"record_id": "d2-0", "duplicate_of": "d1-0", "kind": "near", "label_conflict": False},
        {"record_id": "d2-1", "duplicate_of": "d1-0", "kind": "exact", "label_conflict": False},
    ]
    # every distinct text is remembered (a near-duplicate for exact repeats only); the kept ones count for the IDF
    assert len(index) == 5 and index.near_duplicate == [False, False, False, True, False] and index.documents == 4


def test_dropping_a_source_lets_it_be_deduplicated_again_with_the_same_result(tmp_path):
    index = DuplicateIndex()
    deduplicate(corpus(DAY1, "d1-"), near_threshold=0.8, index=index, source="day1")
    first = deduplicate(corpus(DAY2, "d2-"), near_threshold=0.8, index=index, source="day2")[1]
    frequencies = index.document_frequency.copy()
    assert index.drop_source("day2") == 2 and len(index) == 3 and index.documents == 3
    again = deduplicate(corpus(DAY2, "d2-"), near_threshold=0.8, index=index, source="day2")[1]
    pd.testing.assert_frame_equal(first, again)
    assert (index.document_frequency == frequencies).all()
    assert index.drop_source("never-seen") == 0


def test_near_duplicates_need_the_same_intent_and_exact_ones_report_a_label_conflict():
    texts = ["my card has still not arrived", "my card has still not arrived yet", "My card has still not arrived!"]
    _, removed = deduplicate(corpus(texts, "r", intents=["a", "b", "c"]), near_threshold=0.8)
    assert removed.to_dict("records") == [
        {"record_id": "r2", "duplicate_of": "r0", "kind": "exact", "label_conflict": True}]


def test_an_index_built_with_other_settings_is_refused(tmp_path):
    index = DuplicateIndex()
    deduplicate(corpus(DAY1, "d1-"), index=index)
    index.save(tmp_path)
    meta = tmp_path / "index.json"
    meta.write_text(meta.read_text().replace('"bands": 32', '"bands": 16'))
    with pytest.raises(ValueError, match="other MinHash settings"):
        DuplicateIndex.load(tmp_path)


def test_agrees_with_the_dense_method_on_the_shipped_sample():
    """bench/dedup_agreement.py measures the whole sample (BENCHMARKS.md); here its first 6,000 messages."""
    frame, _ = redact_frame(load_chat_logs(DEFAULT_CHAT_LOGS, limit=6000).valid)
    _, dense = deduplicate_dense(frame)
    _, lsh = deduplicate(frame)
    want, got = set(dense["record_id"]), set(lsh["record_id"])
    assert (dense["kind"] == "near").sum() > 20  # the slice has near-duplicates to find
    assert len(want ^ got) <= 0.02 * len(want)


def test_chunks_of_the_batch_decide_as_one_chunk(monkeypatch):
    """n-grams and MinHashes are held GRAM_CHUNK messages at a time: the decisions, the message each removed one
    duplicates (history first, then earlier batch rows) and the index are those of a single chunk."""
    import intent_assets.data.near_duplicates as near_duplicates

    frame, _ = redact_frame(load_chat_logs(DEFAULT_CHAT_LOGS, limit=3000).valid)
    history, batch = frame.iloc[:1000], frame.iloc[1000:]
    results = []
    for chunk in (10**6, 97):
        monkeypatch.setattr(near_duplicates, "GRAM_CHUNK", chunk)
        index = DuplicateIndex()
        deduplicate(history, index=index, source="day1")
        kept, removed = deduplicate(batch, index=index, source="day2")
        results.append((kept, removed, index))
    (kept, removed, index), (kept_c, removed_c, index_c) = results
    assert (removed["kind"] == "near").sum() > 5 and removed["duplicate_of"].isin(batch["record_id"]).any()
    pd.testing.assert_frame_equal(kept, kept_c)
    pd.testing.assert_frame_equal(removed, removed_c)
    assert index.record_id == index_c.record_id and index.near_duplicate == index_c.near_duplicate
    assert (index.document_frequency == index_c.document_frequency).all() and index.documents == index_c.documents
    assert index.drop_source("day2") == index_c.drop_source("day2")
    assert (index.document_frequency == index_c.document_frequency).all()
