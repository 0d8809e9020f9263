"""The data half at production volume: wall time, messages/s and peak RSS per stage, and how they grow.

    PYTHONPATH=. python bench/scale.py --sizes 50000 500000                  # both pipelines, 50k messages a day
    PYTHONPATH=. python bench/scale.py --sizes 5000000 --pipelines streaming
    PYTHONPATH=. python bench/scale.py --sizes 500000 5000000 --pipelines dagster --days-per-run 7   # the assets
    PYTHONPATH=. python bench/scale.py --sizes 20000 --days 5 --pipelines streaming first --json out.json

Generates realistic chat logs once per size under ``--work``: the shipped sample's labelled customer utterances
that carry no inserted PII are rendered by ``intent_assets.data.sample_data.render_conversations`` as a pool of
conversations with seeded Faker PII (greetings, follow-ups, extra customer turns); every day draws conversations
from the pool, each copy with a new id, that day's date, and the customer's own wording of the utterance (an
opener, a closer, sometimes a typo or a dropped word: ``vary``), so most messages are distinct and many are near-
or exact duplicates of earlier ones, as in real logs. One JSONL file per day, ``--per-day`` messages a day, so a
larger size is a longer history. then runs the data half's domain code on them, each pipeline in its own process:

* ``first``: today's single-frame code path (the baseline): every file into one frame (read and validate),
  redaction in one process, the dense per-intent near-duplicate search of the first version
  (``bench/_dense_dedup.py``), the audit pass (``pii_audit.audit_rows``: a second PII scan);
* ``streaming``: one day at a time, as a daily partition would run: read and validate the day, redact it
  (``--processes`` workers, one pool for the whole run), deduplicate it against all earlier days through one
  ``DuplicateIndex`` (MinHash LSH), audit it, write the day's tables.
* ``dagster``: the daily-partitioned assets themselves (``raw_chat_logs``, ``quarantined_records``,
  ``redacted_corpus``, ``pii_audit_log`` and their checks) through ``dg.materialize`` in process, ``--days-per-run``
  days per run as prod's multi-run backfill policy batches them, the dedup index persisted between runs; then the
  last day alone on that history (what the day-files sensor requests), with its own wall time and rows read.

Per stage: seconds, messages/s, peak RSS of the process while the stage ran (sampled every 50 ms); per pipeline and
size: total wall time and peak RSS; between consecutive sizes: the growth exponent of wall time
(log(t2/t1) / log(n2/n1)). ``--max-rss-gb`` stops a pipeline that would need more (the dense search at millions of
messages), and the table says so.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MESSAGE_FIELDS = ("conversation_id", "turn", "timestamp", "speaker", "text", "intent", "channel")
START = datetime(2026, 1, 1, tzinfo=timezone.utc)


# ---------------------------------------------------------------------------------------------- data


def utterances() -> list[tuple[str, str]]:
    """The shipped sample's labelled customer turns that carry no inserted PII: (text, intent)."""
    from intent_assets.data.sample_data import CHAT_LOG_FILE, MANIFEST_FILE, read_jsonl
    from intent_assets.paths import SAMPLE_DIR

    with_pii = {(m["conversation_id"], m["turn"]) for m in read_jsonl(SAMPLE_DIR / MANIFEST_FILE)}
    return sorted({(m["text"], m["intent"]) for m in read_jsonl(SAMPLE_DIR / CHAT_LOG_FILE)
                   if m["intent"] and (m["conversation_id"], m["turn"]) not in with_pii})


OPENERS = ("", "", "", "hi ", "hello, ", "hey there, ", "quick question: ", "ok so ", "good morning, ", "sorry, ",
           "hi team, ", "excuse me, ")
CLOSERS = ("", "", "", " thanks", " please", " thank you!", " asap please", "??", " any help appreciated",
           " cheers", " can you help", " thx")


def vary(text: str, rng: random.Random) -> str:
    """A customer's own wording of ``text``: an opener and a closer, and sometimes a typo (two letters swapped)
    or a dropped word, as people type. Many variants are near-duplicates of one another, some are exact repeats."""
    words = text.split()
    if len(words) > 4 and rng.random() < 0.3:
        del words[rng.randrange(len(words))]
    if rng.random() < 0.4:
        k = rng.randrange(len(words))
        w = words[k]
        if len(w) > 3:
            j = rng.randrange(len(w) - 1)
            words[k] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    return rng.choice(OPENERS) + " ".join(words) + rng.choice(CLOSERS)


POOL_CONVERSATIONS = 20_000  # rendered once with Faker (the slow part), then reworded and re-dated day by day


def conversation_pool(seed: int) -> list[tuple[list[dict], str]]:
    """``POOL_CONVERSATIONS`` conversations rendered by the sample builder, each with its labelled utterance."""
    from intent_assets.data.sample_data import all_template_text, render_conversations

    rows = utterances()
    rng = random.Random(seed)
    picks = [rows[rng.randrange(len(rows))] for _ in range(POOL_CONVERSATIONS)]
    rendered, _ = render_conversations(picks, seed, "\n".join([t for t, _ in rows] + [all_template_text()]))
    by_intent: dict[str, set] = {}
    for text, intent in picks:
        by_intent.setdefault(intent, set()).add(text)
    conversations: dict[str, list[dict]] = {}
    for m in rendered:
        conversations.setdefault(m["conversation_id"], []).append(m)
    pool = []
    for messages in conversations.values():
        labelled = next(m for m in messages if m["intent"])
        # the builder keeps the utterance intact inside the labelled turn (PII may come before or after it)
        utterance = max((u for u in by_intent[labelled["intent"]] if u in labelled["text"]), key=len)
        pool.append((messages, utterance))
    return pool


def generate(folder: Path, messages: int, days: int, seed: int = 7) -> dict:
    """Write ``messages`` chat messages over ``days`` day files into ``folder`` (kept between runs): conversations of
    a rendered pool, each copy with a new id, its day's date, and its customer's own wording of the utterance."""
    stamp = folder.parent / f"{folder.name}.json"  # beside the folder: the folder holds day files only
    want = {"messages": messages, "days": days, "seed": seed}
    if stamp.exists() and {k: v for k, v in json.loads(stamp.read_text()).items() if k in want} == want:
        return json.loads(stamp.read_text())
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.jsonl"):
        old.unlink()
    pool = conversation_pool(seed)
    per_day = math.ceil(messages / days)
    written = 0
    for day in range(days):
        date = START + timedelta(days=day)
        rng = random.Random(seed * 100_003 + day)
        day_written, conversation = 0, 0
        with open(folder / f"{date:%Y-%m-%d}.jsonl", "w", encoding="utf-8") as f:
            while day_written < per_day and written + day_written < messages:
                turns, utterance = pool[rng.randrange(len(pool))]
                worded = vary(utterance, rng)
                for m in turns:
                    ts = datetime.fromisoformat(m["timestamp"].replace("Z", "+00:00"))
                    seconds = (ts - ts.replace(hour=0, minute=0, second=0)).total_seconds()  # the time of day
                    record = {**m, "conversation_id": f"d{day:04d}-{conversation:06d}",
                              "timestamp": (date + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                              "text": m["text"].replace(utterance, worded) if m["intent"] else m["text"]}
                    f.write(json.dumps({k: record[k] for k in MESSAGE_FIELDS}, ensure_ascii=False) + "\n")
                day_written += len(turns)
                conversation += 1
        written += day_written
    info = {**want, "written": written, "distinct_utterances": len(utterances()),
            "pool_conversations": len(pool), "generate_s": round(time.perf_counter() - started, 1)}
    stamp.write_text(json.dumps(info))
    return info


# ---------------------------------------------------------------------------------------------- measuring


class Stages:
    """Seconds and peak RSS (this process, sampled every 50 ms) of each named stage; stages may repeat."""

    def __init__(self):
        self.rows: dict[str, dict] = {}
        self._process = psutil.Process()
        self._peak = 0
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while not self._stop.wait(0.05):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def run(self, name: str, messages: int, fn, *args, **kwargs):
        self._peak = self._process.memory_info().rss
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        seconds = time.perf_counter() - start
        self._peak = max(self._peak, self._process.memory_info().rss)
        row = self.rows.setdefault(name, {"seconds": 0.0, "messages": 0, "peak_rss_gb": 0.0})
        row["seconds"] += seconds
        row["messages"] += messages
        row["peak_rss_gb"] = max(row["peak_rss_gb"], self._peak / 2**30)
        return result


def _salt() -> bytes:
    return b"bench-scale-salt"


def run_first(folder: Path, out: Path, processes: int) -> dict:
    """Today's single-frame path: everything in one frame, one process, the dense near-duplicate search."""
    from bench._dense_dedup import deduplicate_dense
    from intent_assets.data.chat_logs import load_chat_logs
    from intent_assets.data.corpus import redact_frame
    from intent_assets.privacy import pii_audit

    stages = Stages()
    loaded = stages.run("read + validate", 0, load_chat_logs, folder)
    n = len(loaded.valid) + len(loaded.quarantined)
    stages.rows["read + validate"]["messages"] = n
    redacted, _ = stages.run("redact", n, redact_frame, loaded.valid)
    kept, removed = stages.run("deduplicate", len(redacted), deduplicate_dense, redacted)
    stages.run("audit (second PII scan)", n, pii_audit.audit_rows, loaded.valid, _salt())
    stages.run("write", len(kept), kept.to_parquet, out / "redacted_corpus.parquet")
    return {"messages": n, "kept": len(kept), "duplicates": len(removed), "quarantined": len(loaded.quarantined),
            "stages": stages.rows}


def run_streaming(folder: Path, out: Path, processes: int) -> dict:
    """One day at a time against one persisted duplicate index, as daily partitions run."""
    from intent_assets.data.chat_logs import load_chat_logs
    from intent_assets.data.corpus import deduplicate, redact_frame
    from intent_assets.data.near_duplicates import DuplicateIndex
    from intent_assets.privacy import pii_audit

    stages = Stages()
    index = DuplicateIndex()
    totals = {"messages": 0, "kept": 0, "duplicates": 0, "quarantined": 0}
    pool = (ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
            if processes > 1 else None)
    try:
        for path in sorted(folder.glob("*.jsonl")):
            loaded = stages.run("read + validate", 0, load_chat_logs, path)
            n = len(loaded.valid) + len(loaded.quarantined)
            stages.rows["read + validate"]["messages"] += n
            redacted, _ = stages.run("redact", n, redact_frame, loaded.valid, executor=pool)
            kept, removed = stages.run("deduplicate", len(redacted), deduplicate, redacted, index=index,
                                       source=path.stem)
            stages.run("audit (second PII scan)", n, pii_audit.audit_rows, loaded.valid, _salt())
            stages.run("write", len(kept), kept.to_parquet, out / f"redacted_corpus-{path.stem}.parquet")
            totals = {"messages": totals["messages"] + n, "kept": totals["kept"] + len(kept),
                      "duplicates": totals["duplicates"] + len(removed),
                      "quarantined": totals["quarantined"] + len(loaded.quarantined)}
        stages.run("save duplicate index", 0, index.save, out / "duplicate_index")
    finally:
        if pool is not None:
            pool.shutdown()
    return {**totals, "stages": stages.rows, "index_messages": len(index)}


def _step_seconds(instance, run_id: str) -> dict[str, float]:
    """Seconds of each step of a Dagster run, from its STEP_START / STEP_SUCCESS events."""
    started, seconds = {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type_value == "STEP_START":
            started[event.step_key] = entry.timestamp
        elif event.event_type_value == "STEP_SUCCESS":
            seconds[event.step_key] = entry.timestamp - started[event.step_key]
    return seconds


def run_dagster(folder: Path, out: Path, processes: int, days_per_run: int = 7) -> dict:
    """The real thing: the daily-partitioned assets (raw_chat_logs, quarantined_records, redacted_corpus,
    pii_audit_log and their checks) materialized in process, ``days_per_run`` days per run as prod's multi-run
    backfill policy batches them (0: every day in one run, the local single-run policy); then one more day (the
    next day's file, as the sensor would land it) on that history, alone."""
    import dagster as dg

    from intent_assets.assets.common import partition_range_tags
    from intent_assets.data.chat_logs import data_days
    from intent_assets.definitions import CORRECTION_ASSETS, DATA_ASSETS, DATA_CHECKS
    from intent_assets.resources import local_resources

    shutil.rmtree(out, ignore_errors=True)  # a fresh data folder: no index of an earlier measurement
    selection = ["raw_chat_logs", "quarantined_records", "redacted_corpus", "pii_audit_log"]
    days = data_days(folder)
    history, new_day = (days[:-1], days[-1]) if len(days) > 1 else (days, None)
    config = {"ops": {"raw_chat_logs": {"config": {"path": str(folder)}},
                      "redacted_corpus": {"config": {"redaction_processes": processes}}}}
    stages = Stages()

    def materialize(first, last):
        return dg.materialize([*DATA_ASSETS, *CORRECTION_ASSETS, *DATA_CHECKS], selection=selection, instance=instance,
                              resources=local_resources(out), run_config=config, tags=partition_range_tags(first, last))

    def meta(result, key):
        mats = [m for m in result.asset_materializations_for_node(key) if m.asset_key == dg.AssetKey(key)]
        return {k: v.value for k, v in mats[0].metadata.items()}

    per_run = days_per_run or len(history)
    totals = {"messages": 0, "kept": 0, "duplicates": 0, "quarantined": 0, "days": len(history), "runs": 0}
    history_stage = f"history: {per_run} days per run"
    with dg.instance_for_test() as instance:
        for start in range(0, len(history), per_run):
            chunk = history[start:start + per_run]
            result = stages.run(history_stage, 0, materialize, chunk[0], chunk[-1])
            assert result.success
            raw, corpus = meta(result, "raw_chat_logs"), meta(result, "redacted_corpus")
            stages.rows[history_stage]["messages"] += raw["run_rows_in"]
            for step, seconds in _step_seconds(instance, result.run_id).items():
                row = stages.rows.setdefault(f"  step {step}", {"seconds": 0.0, "messages": 0, "peak_rss_gb": 0.0})
                row["seconds"] += seconds
                row["messages"] += raw["run_rows_in"]
            totals = {**totals, "messages": totals["messages"] + raw["run_rows_in"], "runs": totals["runs"] + 1,
                      "kept": totals["kept"] + corpus["run_rows_out"],
                      "duplicates": totals["duplicates"] + corpus["run_duplicates_removed"],
                      "quarantined": totals["quarantined"] + raw["run_rows_quarantined"]}
        if new_day is not None:
            added = stages.run("one more day on that history", 0, materialize, new_day, new_day)
            assert added.success
            day_raw, day_corpus = meta(added, "raw_chat_logs"), meta(added, "redacted_corpus")
            stages.rows["one more day on that history"]["messages"] = day_raw["run_rows_in"]
            totals.update({"new_day_rows_read": day_raw["run_rows_in"], "new_day_duplicates": day_corpus["run_duplicates_removed"],
                           "new_day_index_before": day_corpus["dedup_index_messages_before"]})
    return {**totals, "stages": stages.rows}


PIPELINES = {"first": run_first, "streaming": run_streaming, "dagster": run_dagster}


def child(args) -> None:
    import bench._dense_dedup  # noqa: F401
    import intent_assets.data.corpus
    import intent_assets.data.near_duplicates
    import intent_assets.privacy.pii_audit
    if args.child == "dagster":
        import intent_assets.definitions  # noqa: F401

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()  # imports done: the pipeline's own time
    extra = {"days_per_run": args.days_per_run} if args.child == "dagster" else {}
    result = PIPELINES[args.child](Path(args.folder), out, args.processes, **extra)
    result["wall_s"] = time.perf_counter() - start
    result["peak_rss_gb"] = max(r["peak_rss_gb"] for r in result["stages"].values())
    print("RESULT " + json.dumps(result))


def measure(pipeline: str, folder: Path, out: Path, processes: int, max_rss_gb: float, days_per_run: int = 7) -> dict:
    """Run one pipeline in a child process; stop it when its resident memory passes ``max_rss_gb``."""
    cmd = [sys.executable, __file__, "--child", pipeline, "--folder", str(folder), "--out", str(out),
           "--processes", str(processes), "--days-per-run", str(days_per_run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    watched, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            rss = sum(p.memory_info().rss for p in [watched, *watched.children(recursive=True)])
        except psutil.Error:
            rss = 0
        peak = max(peak, rss)
        if rss > max_rss_gb * 2**30:
            proc.kill()
            proc.wait()
            return {"stopped": f"resident memory passed {max_rss_gb} GB (--max-rss-gb)", "peak_rss_gb": peak / 2**30}
        time.sleep(0.2)
    lines = [line for line in proc.stdout.read().splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        return {"stopped": f"exit code {proc.returncode}", "peak_rss_gb": peak / 2**30}
    result = json.loads(lines[-1][len("RESULT "):])
    result["peak_rss_gb_with_workers"] = peak / 2**30
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 500_000])
    parser.add_argument("--days", type=int, help="Day files the messages are spread over (default: --per-day).")
    parser.add_argument("--per-day", type=int, default=50_000, help="Messages per day file when --days is not given.")
    parser.add_argument("--generate-only", action="store_true", help="Write the data sets and stop.")
    parser.add_argument("--pipelines", nargs="+", choices=sorted(PIPELINES), default=["first", "streaming"])
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="Redaction workers (streaming).")
    parser.add_argument("--max-rss-gb", type=float, default=20.0)
    parser.add_argument("--days-per-run", type=int, default=7,
                        help="dagster pipeline: days per run, as prod's backfill policy (0: all in one run).")
    parser.add_argument("--work", type=Path, default=Path("/tmp/intent_assets_scale"))
    parser.add_argument("--json", help="Also write the results here.")
    parser.add_argument("--child", choices=sorted(PIPELINES), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    results = []
    for size in args.sizes:
        days = args.days or max(1, math.ceil(size / args.per_day))
        folder = args.work / f"logs-{size}-{days}d"
        info = generate(folder, size, days)
        print(f"# {info['written']} messages over {days} days in {folder} (generated in {info['generate_s']} s)",
              flush=True)
        if args.generate_only:
            continue
        for pipeline in args.pipelines:
            result = measure(pipeline, folder, args.work / f"out-{pipeline}-{size}", args.processes, args.max_rss_gb,
                             args.days_per_run)
            result.update({"pipeline": pipeline, "size": info["written"]})
            results.append(result)
            print(json.dumps(result), flush=True)
    print_tables(results)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": f"{os.cpu_count()} CPUs", "results": results}, indent=1))


def print_tables(results: list[dict]) -> None:
    print("\n| pipeline | messages | stage | s | messages/s | peak RSS GB |")
    print("|---|---:|---|---:|---:|---:|")
    for r in results:
        if "stopped" in r:
            print(f"| {r['pipeline']} | {r['size']} | stopped: {r['stopped']} | | | {r['peak_rss_gb']:.2f} |")
            continue
        for name, s in r["stages"].items():
            rate = s["messages"] / s["seconds"] if s["seconds"] and s["messages"] else float("nan")
            print(f"| {r['pipeline']} | {r['size']} | {name} | {s['seconds']:.1f} | {rate:,.0f} | {s['peak_rss_gb']:.2f} |")
        print(f"| {r['pipeline']} | {r['size']} | **whole** | **{r['wall_s']:.1f}** | {r['size'] / r['wall_s']:,.0f} | "
              f"{r['peak_rss_gb_with_workers']:.2f} (with workers) |")
    print("\n| pipeline | from | to | wall time ratio | growth exponent |")
    print("|---|---:|---:|---:|---:|")
    for pipeline in sorted({r["pipeline"] for r in results}):
        done = [r for r in results if r["pipeline"] == pipeline and "stopped" not in r]
        for a, b in zip(done, done[1:]):
            exponent = math.log(b["wall_s"] / a["wall_s"]) / math.log(b["size"] / a["size"])
            print(f"| {pipeline} | {a['size']} | {b['size']} | {b['wall_s'] / a['wall_s']:.2f}x | {exponent:.2f} |")


if __name__ == "__main__":
    main()
