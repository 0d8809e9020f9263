"""Does the MinHash LSH duplicate search remove what the dense per-intent matrix removed?

    PYTHONPATH=. python bench/dedup_agreement.py                       # the shipped sample
    PYTHONPATH=. python bench/dedup_agreement.py --data ../shared/data/banking77 --days 7

Redacts the chat logs once, then deduplicates them three ways: the first version's dense search
(``bench/_dense_dedup.py``, the baseline), ``corpus.deduplicate`` on the whole frame in one batch, and the same
split by the day each message was written (``--days`` groups of days), one batch per group through one persisted
``DuplicateIndex`` (saved and loaded between batches, as partitions would). Prints agreement on removed messages
(precision and recall against the dense method, the symmetric difference as a share of everything it removed),
wall times as ratios, and a few messages each method removed alone, so a difference can be explained.
"""

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench._dense_dedup import deduplicate_dense
from intent_assets.data.chat_logs import load_chat_logs
from intent_assets.data.corpus import deduplicate, normalize, redact_frame
from intent_assets.data.near_duplicates import DuplicateIndex
from intent_assets.paths import DEFAULT_CHAT_LOGS


def agreement(name: str, removed: pd.DataFrame, reference: pd.DataFrame, seconds: float, base_seconds: float) -> dict:
    got, want = set(removed["record_id"]), set(reference["record_id"])
    both = len(got & want)
    return {"method": name, "removed": len(got), "exact": int((removed["kind"] == "exact").sum()),
            "near": int((removed["kind"] == "near").sum()), "precision": both / max(1, len(got)),
            "recall": both / max(1, len(want)), "differ": len(got ^ want), "differ_share": len(got ^ want) / max(1, len(want)),
            "seconds": seconds, "time_ratio": seconds / base_seconds if base_seconds else float("nan")}


def by_days(frame: pd.DataFrame, days: int) -> list[tuple[str, pd.DataFrame]]:
    day = pd.to_datetime(frame["timestamp"], utc=True).dt.floor("D")
    group = ((day - day.min()).dt.days // days).astype(int)
    return [(f"days-{g:04d}", part) for g, part in frame.groupby(group, sort=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_CHAT_LOGS), help="Chat logs (default: the shipped sample).")
    parser.add_argument("--threshold", type=float, default=0.9, help="near_duplicate_threshold (cosine).")
    parser.add_argument("--days", type=int, default=1, help="Days per batch of the partitioned run.")
    parser.add_argument("--examples", type=int, default=5, help="Differences to print per side.")
    args = parser.parse_args()

    loaded = load_chat_logs(args.data)
    redacted, _ = redact_frame(loaded.valid)
    print(f"{len(redacted)} messages ({int((redacted['speaker'] == 'customer').sum())} customer) from {args.data}")

    start = time.perf_counter()
    _, dense = deduplicate_dense(redacted, near_threshold=args.threshold)
    dense_s = time.perf_counter() - start
    rows = [agreement("dense matrix per intent (first version, baseline)", dense, dense, dense_s, dense_s)]

    start = time.perf_counter()
    _, one_batch = deduplicate(redacted, near_threshold=args.threshold)
    rows.append(agreement("MinHash LSH, one batch", one_batch, dense, time.perf_counter() - start, dense_s))

    parts = by_days(redacted.sort_values("timestamp", kind="stable"), args.days)
    removed_parts = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for source, part in parts:
            index = DuplicateIndex.load(Path(tmp))
            _, removed = deduplicate(part.reset_index(drop=True), near_threshold=args.threshold, index=index,
                                     source=source)
            index.save(Path(tmp))
            removed_parts.append(removed)
    partitioned = pd.concat(removed_parts, ignore_index=True)
    rows.append(agreement(f"MinHash LSH, {len(parts)} batches of {args.days} day(s), index saved and loaded between",
                          partitioned, dense, time.perf_counter() - start, dense_s))

    print("\n| method | removed | exact | near | precision | recall | differ (share of baseline's) | s | time ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['removed']} | {r['exact']} | {r['near']} | {r['precision']:.3f} | "
              f"{r['recall']:.3f} | {r['differ']} ({r['differ_share']:.2%}) | {r['seconds']:.2f} | {r['time_ratio']:.2f}x |")

    texts = dict(zip(redacted["record_id"], redacted["text"].map(normalize)))
    for label, mine, other in (("removed by the dense method only", dense, one_batch),
                               ("removed by MinHash LSH only (one batch)", one_batch, dense)):
        extra = mine[~mine["record_id"].isin(set(other["record_id"]))].head(args.examples)
        print(f"\n{label}: {len(mine[~mine['record_id'].isin(set(other['record_id']))])}")
        for r in extra.itertuples():
            print(f"  [{r.kind}] {texts[r.record_id]!r}  ~  {texts.get(r.duplicate_of, '?')!r}")


if __name__ == "__main__":
    main()
