"""Incremental corrections: a batch of 1% of the corpus re-validates and re-redacts only that batch.

    python bench/corrections_incremental.py --root /tmp/bench_incr              # the shipped sample (29,904 records)
    python bench/corrections_incremental.py --root /tmp/bench_incr --share 0.01 --limit 5000

Real Dagster materializations, in one run: (1) the baseline, ``raw_chat_logs`` + ``redacted_corpus`` over the whole
corpus (every record validated and redacted); (2) ``agent_corrections`` ingesting one batch of corrections, 1% of
the corpus in size (texts taken from the corpus, with another intent); (3) the same once more with a second batch,
with the first one already stored. Prints records redacted and wall time of each, and the ratios, for BENCHMARKS.md.
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import dagster as dg
import pandas as pd

from intent_assets.assets.common import days_of_run_config
from intent_assets.definitions import ASSETS
from intent_assets.resources import LocalTableIOManager, local_resources


def _meta(result, key: str) -> dict:
    mat = result.asset_materializations_for_node(key)[0]
    return {k: v.value for k, v in mat.metadata.items()}


def _drop_batch(inbox: Path, name: str, corpus: pd.DataFrame, names: list[str], n: int, seed: int) -> None:
    rows = corpus.sample(n=n, random_state=seed)
    inbox.mkdir(parents=True, exist_ok=True)
    with open(inbox / name, "w", encoding="utf-8") as fh:
        for i, (text, intent) in enumerate(zip(rows["text"], rows["intent"])):
            other = names[(names.index(intent) + 1) % len(names)] if intent in names else names[0]
            fh.write(json.dumps({"message_id": f"{name}-{i}", "conversation_id": f"{name}-c{i}", "text": text,
                                 "predicted_intent": intent, "corrected_intent": other, "agent_id": "bench",
                                 "timestamp": "2026-11-25T12:00:00Z"}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="Data folder for this run.")
    parser.add_argument("--share", type=float, default=0.01, help="Batch size as a share of the corpus.")
    parser.add_argument("--limit", type=int, help="raw_chat_logs.limit (default: the whole shipped sample).")
    args = parser.parse_args()
    resources = local_resources(args.root)
    ops = {"raw_chat_logs": {"config": {"limit": args.limit}}} if args.limit else {}
    with dg.instance_for_test() as instance:
        started = time.perf_counter()
        full = dg.materialize(ASSETS, selection=["raw_chat_logs", "quarantined_records", "intent_taxonomy", "redacted_corpus"], resources=resources,
                              run_config={"ops": ops}, instance=instance, tags=days_of_run_config({"ops": ops}))
        full_s = time.perf_counter() - started
        corpus_n = _meta(full, "raw_chat_logs")["dagster/row_count"]
        redacted = LocalTableIOManager(base_dir=str(args.root / "redacted")).load_table("redacted_corpus")
        customer = redacted[redacted["speaker"] == "customer"] if "speaker" in redacted else redacted
        names = [i["name"] for i in json.loads((args.root / "redacted" / "intent_taxonomy.json").read_text())["intents"]]
        batch_n = max(1, round(corpus_n * args.share))
        timings = []
        for k in (1, 2):
            _drop_batch(args.root / "raw" / "corrections_inbox", f"batch{k}.jsonl", customer, names, batch_n, seed=k)
            os.utime(args.root / "raw" / "corrections_inbox" / f"batch{k}.jsonl", ns=(k * 10**9,) * 2)
            started = time.perf_counter()
            result = dg.materialize(ASSETS, selection=["agent_corrections"], resources=resources, instance=instance)
            timings.append((time.perf_counter() - started, _meta(result, "agent_corrections")))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; corpus {corpus_n} records, batch {batch_n} "
          f"({args.share:.1%})")
    print("| run | records validated + redacted | share of corpus | wall s | wall vs full |")
    print("|---|---|---|---|---|")
    print(f"| full corpus (raw_chat_logs + redacted_corpus) | {corpus_n} | 100% | {full_s:.1f} | 1.00 |")
    for k, (seconds, meta) in enumerate(timings, start=1):
        n = meta["records_redacted_this_run"] + meta["quarantined_this_run"]
        print(f"| corrections batch {k} (agent_corrections; {meta['batches_stored']} stored) | {n} | "
              f"{n / corpus_n:.2%} | {seconds:.1f} | {seconds / full_s:.3f} |")


if __name__ == "__main__":
    main()
