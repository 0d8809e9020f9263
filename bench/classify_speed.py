"""Classification fast path against plain ``generate`` of the JSON answer: same model, same texts, same run.

Fast path (``ConstrainedClassifier``): the system prompt's KV cache is computed once and reused, a request only
prefills its own user turn, decoding is constrained by a prefix tree of the labels and stops when the label is
unique. Baseline (``generate_unconstrained``): ``model.generate`` of the whole answer, greedy, no shared cache.

Reports, for each: p50/p95 latency of one request at a time, throughput for batches of 64, and the ratios; the
mean/max decode steps per label on every shipped taxonomy (tokens until the label is unique, and model calls: a
forced chain after a choice costs no call); and the agreement between both systems' labels.

    python bench/classify_speed.py                         # the current champion (newest awq_model, else base)
    python bench/classify_speed.py --model DIR --requests 32 --batches 2
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from intent_assets.data.taxonomy import load_taxonomy
from intent_assets.model.classifier import ConstrainedClassifier, LabelTrie, PromptLayout, generate_unconstrained
from intent_assets.model.instructions import system_prompt
from intent_assets.paths import DEFAULT_CHAT_LOGS, TAXONOMY_DIR
from intent_assets.serving.champion import current_model_dir, load_model, serving_spec


def label_steps(trie: LabelTrie, label: str) -> tuple[int, int]:
    """(tokens until the label is unique, model calls to get there) along ``label``'s path."""
    node, tokens, calls = 0, 0, 0
    path = trie.paths[label]
    while trie.unique_label(node) is None:
        node = trie.child(node, path[tokens])
        tokens += 1
        calls += 1
        for _tok, nxt in trie.forced_chain(node):
            node, tokens = nxt, tokens + 1
    return tokens, calls


def taxonomy_steps(tokenizer) -> dict:
    out = {}
    for path in sorted(TAXONOMY_DIR.glob("*.json")):
        taxonomy = load_taxonomy(path)
        prompt = system_prompt(taxonomy)
        layout = PromptLayout.from_chat_template(tokenizer, prompt)
        trie = LabelTrie.from_tokenizer(tokenizer, taxonomy.names, lead_text=layout.lead_text)
        steps = [label_steps(trie, label) for label in taxonomy.names]
        answer_tokens = [len(trie.forced_ids) + len(p) for p in trie.paths.values()]
        out[taxonomy.name] = {
            "labels": len(taxonomy.names),
            "prompt_tokens": len(tokenizer(prompt)["input_ids"]),
            "tokens_until_unique_mean": statistics.mean(s[0] for s in steps),
            "tokens_until_unique_max": max(s[0] for s in steps),
            "model_calls_mean": statistics.mean(s[1] for s in steps),
            "model_calls_max": max(s[1] for s in steps),
            "json_answer_tokens_mean": statistics.mean(answer_tokens) + 1,  # + end-of-turn token generate needs
        }
    return out


def load_texts(path: str, n: int) -> list[str]:
    if path.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as fh:
            texts = [row["text"] for row in csv.DictReader(fh)]
    else:
        with open(path, encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
        texts = [r["text"] for r in rows if r.get("speaker", "customer") == "customer" and r.get("text")]
    if len(texts) < n:
        texts = (texts * (n // max(1, len(texts)) + 1))
    step = max(1, len(texts) // n)
    return texts[::step][:n]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def time_single(fns, texts: list[str]) -> list[list[float]]:
    """Per-request latencies of each system, one request at a time, the systems alternating request by request
    (so that load from other processes on a shared machine hits every system alike)."""
    for fn in fns:
        fn(texts[:1])  # warm-up
    lat = [[] for _ in fns]
    for t in texts:
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn([t])
            lat[k].append(time.perf_counter() - t0)
    return lat


def time_batches(fns, texts: list[str], batch: int) -> tuple[list[float], list[list]]:
    """Throughput (requests/s) of each system over ``texts`` in batches of ``batch``, alternating batch by batch."""
    for fn in fns:
        fn(texts[:4])  # warm-up (also builds the prefix cache for the fast path)
    wall, preds = [0.0] * len(fns), [[] for _ in fns]
    for s in range(0, len(texts), batch):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            preds[k].extend(fn(texts[s:s + batch]))
            wall[k] += time.perf_counter() - t0
    return [len(texts) / w for w in wall], preds


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory (default: intent_assets.serving.champion.current_model_dir())")
    ap.add_argument("--taxonomy", help="taxonomy JSON when the model directory has no serving info")
    ap.add_argument("--data", default=None, help="texts: a CSV with a text column or chat-log JSONL "
                    "(default ../shared/data/banking77/test.csv, else the shipped sample)")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--requests", type=int, default=32, help="single requests timed one at a time")
    ap.add_argument("--batches", type=int, default=2, help="batches of --batch-size timed for throughput")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=24, help="cap of the generate baseline")
    ap.add_argument("--min-new-tokens", type=int, default=0, help="floor of the generate baseline: for a model that "
                    "does not stop after its answer (zero-shot), the JSON answer's length (~16 on Banking77)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model_dir = Path(args.model) if args.model else current_model_dir()
    spec = serving_spec(model_dir, taxonomy_path=args.taxonomy)
    data = args.data or next((p for p in ("../shared/data/banking77/test.csv",) if os.path.isfile(p)), str(DEFAULT_CHAT_LOGS))
    n = max(args.requests, args.batches * args.batch_size)
    texts = load_texts(data, n)
    model, tokenizer = load_model(model_dir, dtype=args.dtype, device="cpu")
    clf = ConstrainedClassifier(model, tokenizer, spec.labels, spec.system_prompt)

    def fast(batch):
        return clf.classify(batch, batch_size=len(batch))

    def plain(batch):
        return generate_unconstrained(model, tokenizer, spec.system_prompt, batch, batch_size=len(batch),
                                      max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens)

    singles = texts[:args.requests]
    batch_texts = texts[:args.batches * args.batch_size]
    result: dict = {
        "command": "python bench/classify_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": str(model_dir), "dtype": args.dtype, "data": data, "labels": len(spec.labels),
        "prompt_tokens": len(clf.layout.prefix_ids), "mode": clf.mode,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f} at start",
    }
    lat_fast, lat_plain = time_single([fast, plain], singles)
    (tput_fast, tput_plain), (preds_fast, preds_plain) = time_batches([fast, plain], batch_texts, args.batch_size)
    result["load_at_end"] = round(os.getloadavg()[0], 2)
    for name, lat, tput, preds in (("fast_path", lat_fast, tput_fast, preds_fast),
                                   ("plain_generate", lat_plain, tput_plain, preds_plain)):
        result[name] = {
            "p50_ms": 1000 * pct(lat, 0.5), "p95_ms": 1000 * pct(lat, 0.95),
            "throughput_per_s": tput, "decode_steps_mean": statistics.mean(p.decode_steps for p in preds),
            "valid_label_rate": sum(p.label in spec.labels for p in preds) / len(preds),
        }
    result["ratios"] = {
        "latency_p50": result["plain_generate"]["p50_ms"] / result["fast_path"]["p50_ms"],
        "latency_p95": result["plain_generate"]["p95_ms"] / result["fast_path"]["p95_ms"],
        "throughput": result["fast_path"]["throughput_per_s"] / result["plain_generate"]["throughput_per_s"],
    }
    result["label_agreement"] = sum(a.label == b.label for a, b in zip(preds_fast, preds_plain)) / len(preds_fast)
    result["taxonomies"] = taxonomy_steps(tokenizer)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text, encoding="utf-8")
    return result


if __name__ == "__main__":
    sys.exit(main() and 0)
