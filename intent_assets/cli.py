"""``intent-assets``: classify messages with the current champion, or serve it with vLLM (no Dagster import, but
for ``champion-uri``, which reads the registry through the environment's artifact store).

    echo "I lost my card" | intent-assets classify
    {"intent": "lost_or_stolen_card", "confidence": 0.93}

    intent-assets classify --server http://127.0.0.1:8000/v1 < messages.jsonl   # through a running vLLM server
    intent-assets serve --port 8000                                            # vLLM for the champion, 127.0.0.1
    INTENT_ASSETS_ENV=prod intent-assets champion-uri                           # s3://…/awq_model/<run key>/quantized/

``classify`` reads one message per line: plain text, or a JSON object with ``text`` (other fields, e.g. ``id``,
are copied to the output), or a JSON string. It writes one JSON line per input line, in order.

Without ``--model``, ``classify`` and ``serve`` use :func:`intent_assets.serving.champion.current_model_dir`: the registry's
champion. When there is none (nothing promoted yet, no model at all) or ``--model`` is not a model directory, they
print one line on stderr and exit with code 2; the base model is never served in the champion's place.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Iterable, Iterator

from intent_assets.serving.champion import NoModelError, check_model_dir, current_model_dir, load_classifier, serving_spec


def _parse(line: str) -> tuple[str, dict]:
    stripped = line.strip()
    if stripped[:1] in ("{", '"'):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            return line.rstrip("\n"), {}
        if isinstance(value, str):
            return value, {}
        if isinstance(value, dict) and isinstance(value.get("text"), str):
            return value["text"], {k: v for k, v in value.items() if k != "text"}
    return line.rstrip("\n"), {}


def _batches(lines: Iterable[str], size: int) -> Iterator[list[tuple[str, dict]]]:
    batch = []
    for line in lines:
        if not line.strip():
            continue
        batch.append(_parse(line))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _model_dir(args):
    """``--model`` if it is a model directory, else the current champion (NoModelError when neither)."""
    return check_model_dir(args.model, "--model ") if args.model else current_model_dir()


def classify_main(args) -> int:
    model_dir = _model_dir(args)
    spec = serving_spec(model_dir, taxonomy_path=args.taxonomy)
    if args.server:
        from intent_assets.serving.vllm_server import server_classifier

        clf = server_classifier(args.server, model_dir, spec.labels, spec.system_prompt, model=args.served_model)
    else:
        clf = load_classifier(model_dir, taxonomy_path=args.taxonomy, dtype=args.dtype)
    out = sys.stdout
    for batch in _batches(sys.stdin, args.batch_size):
        texts = [t for t, _ in batch]
        if spec.answers_with_lists:  # a model trained on label sets: every intent the message carries
            sets = clf.classify_sets(texts, max_intents=spec.max_intents, batch_size=args.batch_size,
                                     allow_empty=spec.allow_empty)
            rows = [{"intents": list(p.labels), "intent": p.labels[0] if p.labels else None,
                     "confidences": [round(c, 4) for c in p.confidences],
                     "confidence": round(min(p.confidences, default=1.0), 4)} for p in sets]
        else:
            rows = [{"intents": [p.label], "intent": p.label, "confidences": [round(p.confidence, 4)],
                     "confidence": round(p.confidence, 4)} for p in clf.classify(texts, batch_size=args.batch_size)]
        for (_, extra), row in zip(batch, rows):
            out.write(json.dumps({**extra, **row}) + "\n")
        out.flush()
    return 0


def serve_main(args) -> int:
    from intent_assets.serving.vllm_server import VLLMServer

    model_dir = _model_dir(args)
    server = VLLMServer(model_dir, host="127.0.0.1", port=args.port, max_model_len=args.max_model_len,
                        kv_cache_gb=args.kv_cache_gb, enforce_eager=not args.compile)
    print(f"starting vLLM for {model_dir} on {server.base_url} (log: {server.log_path})", file=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: (server.stop(), sys.exit(0)))
    try:
        server.start(timeout_s=args.timeout)
        spec = serving_spec(model_dir, taxonomy_path=args.taxonomy)
        print(json.dumps({"base_url": server.base_url, "model": server.served_name, "model_dir": str(model_dir),
                          "labels": len(spec.labels)}), flush=True)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


def champion_uri_main(args) -> int:
    """Print where the registry's champion model is kept (prod: its S3 prefix, the intent-router chart's
    ``model.uri``; elsewhere: its directory)."""
    import dagster as dg

    from intent_assets.assets.eval_report import registry_for
    from intent_assets.resources import resources_for

    with dg.build_resources({"artifacts": resources_for()["artifacts"]}) as resources:
        store = resources.artifacts
        registry = registry_for(store)
        champion = registry.alias(args.alias)
        if champion is None:
            print(f"the model registry ({store.uri(registry.root)}) has no {args.alias} yet: materialize "
                  "model_promotion (or run rollback_job) first", file=sys.stderr)
            return 1
        print(store.uri(champion["model_dir"]))
    return 0


def days_main(args) -> int:
    """Print the partition range (``first...last``) that holds the records at ``--path``: what
    ``dagster asset materialize --partition-range`` takes (``make run``)."""
    from intent_assets.data.chat_logs import data_days
    from intent_assets.paths import DEFAULT_CHAT_LOGS, project_path

    found = data_days(project_path(args.path) if args.path else DEFAULT_CHAT_LOGS)
    print(f"{found[0]}...{found[-1]}" if args.range else "\n".join(found))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="intent-assets", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("classify", help="classify stdin (lines or JSON lines) -> JSON lines on stdout")
    c.add_argument("--model", help="model directory (default: the current champion; none promoted: exit code 2)")
    c.add_argument("--taxonomy", help="taxonomy JSON, when the model directory carries no intent_assets.json")
    c.add_argument("--server", help="an OpenAI-compatible server (vLLM) URL, e.g. http://127.0.0.1:8000/v1; "
                   "default: in-process transformers")
    c.add_argument("--served-model", default="intent-router")
    c.add_argument("--batch-size", type=int, default=16)
    c.add_argument("--dtype", default="bfloat16")
    c.set_defaults(func=classify_main)
    s = sub.add_parser("serve", help="start vLLM (its own environment, .venv-vllm) for the champion on 127.0.0.1")
    s.add_argument("--model", help="model directory (default: the current champion; none promoted: exit code 2)")
    s.add_argument("--taxonomy")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--max-model-len", type=int, default=2048)
    s.add_argument("--kv-cache-gb", type=int, default=2)
    s.add_argument("--compile", action="store_true", help="torch.compile (slower start-up, faster serving)")
    s.add_argument("--timeout", type=float, default=600)
    s.set_defaults(func=serve_main)
    u = sub.add_parser("champion-uri", help="print where the champion model is stored (prod: the S3 prefix to serve)")
    u.add_argument("--alias", default="champion", choices=["champion", "challenger"])
    u.set_defaults(func=champion_uri_main)
    d = sub.add_parser("days", help="print the days (daily partitions) that hold records of a chat-log location")
    d.add_argument("--path", help="file or folder (default: raw_chat_logs' default, the shipped sample)")
    d.add_argument("--range", action="store_true", help="one line first...last (dagster's --partition-range)")
    d.set_defaults(func=days_main)
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except NoModelError as err:  # nothing to serve: one line, like argparse's usage errors (exit code 2)
        print(f"intent-assets: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
