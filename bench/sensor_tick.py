"""How long one ``agent_corrections_sensor`` tick takes with a large backlog of correction files.

    python bench/sensor_tick.py --files 20000 --baseline-files 100

Writes the files into a temporary inbox (one correction each), then evaluates three ticks in a row (each one
continuing from the previous cursor) with ``build_sensor_context`` on a test instance; the baseline is the same
with a small backlog, in the same run. Dagster gives a tick 60 s.
"""

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import dagster as dg

from intent_assets.resources import RetrainPolicy, local_resources
from intent_assets.sensors import agent_corrections_sensor


def ticks(files: int, n_ticks: int = 3) -> list[tuple[int, float]]:
    root = Path(tempfile.mkdtemp(prefix="sensor-tick-"))
    inbox = root / "raw" / "corrections_inbox"
    inbox.mkdir(parents=True)
    for i in range(files):
        (inbox / f"f{i:07d}.jsonl").write_text(json.dumps({"message_id": str(i)}) + "\n")
    resources = {**local_resources(root), "retrain_policy": RetrainPolicy()}
    resources = {k: resources[k] for k in ("corrections", "artifacts", "retrain_policy")}
    out, cursor = [], None
    with dg.instance_for_test() as instance:
        for _ in range(n_ticks):
            started = time.perf_counter()
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
                result = agent_corrections_sensor(context)
            out.append((len(result.run_requests or []), time.perf_counter() - started))
            cursor = result.cursor
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--baseline-files", type=int, default=100)
    args = parser.parse_args()
    base, big = ticks(args.baseline_files), ticks(args.files)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; max_batches_per_tick {RetrainPolicy().max_batches_per_tick}")
    print("| backlog (files) | tick | run requests | seconds | vs small backlog | share of the 60 s limit |")
    print("|---|---|---|---|---|---|")
    for t, ((n_b, s_b), (n, s)) in enumerate(zip(base, big), start=1):
        print(f"| {args.files} | {t} | {n} | {s:.2f} | {s / s_b:.1f}x | {s / 60:.1%} |")
        print(f"| {args.baseline_files} (baseline) | {t} | {n_b} | {s_b:.2f} | 1.0x | {s_b / 60:.1%} |")


if __name__ == "__main__":
    main()
