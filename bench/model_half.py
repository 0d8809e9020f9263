"""The fine-tuned 4-bit model next to its baselines, all measured in one materialization of the whole graph.

    python bench/model_half.py --root /tmp/bench_demo                       # the embedded default (as `make run`)
    python bench/model_half.py --root /tmp/bench_b77 --data ../shared/data/banking77 --no-budget   # full Banking77
    python bench/model_half.py --root /tmp/bench_b77 --data ../shared/data/banking77 --no-budget \
        --lora num_epochs=1 learning_rate=3e-3 effective_batch_size=32 per_device_batch_size=32 \
        checkpoint_steps=40 max_eval_examples=256               # full Banking77, one pass (CPU: about an hour)
    python bench/model_half.py --root /tmp/bench_head --lora head=classifier     # the classification head
    python bench/model_half.py --root /tmp/bench_nlupp --data ../shared/data/nlupp/data/banking \
        --taxonomy ../shared/data/nlupp/data/ontology.json --no-budget     # NLU++ banking: folds 0-13 / 14-15, label sets
    python bench/model_half.py --root /tmp/bench_blend --data ../shared/data/banking77 --no-budget \
        --blend-share 0.3                                      # blended Banking77: list answers, test blends from test
    python bench/model_half.py --report data/artifacts/eval_report/<run key>/report.json   # table of a past run

Writes nothing into the project: every asset lands under ``--root``. Prints a Markdown table for BENCHMARKS.md:
accuracy and macro-F1 of every system on the same test examples, each as a ratio to the best classical baseline,
plus latency, throughput and wall times.
"""

import argparse
import json
import platform
import time
from pathlib import Path

import dagster as dg

from intent_assets.assets.common import days_of_run_config
from intent_assets.definitions import ASSETS, CHECKS
from intent_assets.resources import full_resources, local_resources


def _value(text: str):
    """A ``--lora`` value: JSON (numbers, true, lists), else the word itself (``head=classifier``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="Data folder for this run (assets, artifacts).")
    parser.add_argument("--report", type=Path, help="Only print the table of an existing report.json (e.g. from `make run`).")
    parser.add_argument("--data", help="raw_chat_logs.path (default: the shipped sample).")
    parser.add_argument("--taxonomy", help="intent_taxonomy.path (default: the shipped banking77 taxonomy).")
    parser.add_argument("--no-budget", action="store_true", help="The full-data switch (the resources of "
                        "INTENT_ASSETS_ENV=full): every training message, epochs until early stopping, no CPU caps.")
    parser.add_argument("--max-test-examples", type=int, help="Evaluate on a seeded subset of the test split.")
    parser.add_argument("--no-zero-shot", action="store_true", help="eval_report.include_zero_shot=false: skip the "
                        "base model zero-shot (it does not depend on training: the same base model and test split give "
                        "the same figure as any earlier run).")
    parser.add_argument("--epochs", type=float, help="lora_adapter.num_epochs.")
    parser.add_argument("--blend-share", type=float, help="instruction_dataset.blend_share: blended multi-intent "
                        "messages per split, from that split's own messages.")
    parser.add_argument("--answer-format", choices=["auto", "intent", "intents"], help="instruction_dataset."
                        "answer_format: intents trains list answers also without blends or label sets.")
    parser.add_argument("--list-order", choices=["auto", "stated", "taxonomy"], help="instruction_dataset.list_order: "
                        "the order of the labels in a list answer.")
    parser.add_argument("--lora", nargs="+", default=[], metavar="KEY=VALUE",
                        help="Other lora_adapter run config, e.g. learning_rate=3e-3 effective_batch_size=32.")
    args = parser.parse_args()
    if args.report:
        print_table(json.loads(args.report.read_text()))
        return
    if not args.root:
        parser.error("--root or --report is required")

    ops: dict = {}
    if args.data:
        ops["raw_chat_logs"] = {"config": {"path": str(Path(args.data).resolve())}}
    if args.taxonomy:
        ops["intent_taxonomy"] = {"config": {"path": str(Path(args.taxonomy).resolve())}}
    report = {"max_test_examples": args.max_test_examples, "include_zero_shot": False if args.no_zero_shot else None}
    if any(v is not None for v in report.values()):
        ops["eval_report"] = {"config": {k: v for k, v in report.items() if v is not None}}
    instructions = {"blend_share": args.blend_share, "list_order": args.list_order, "answer_format": args.answer_format}
    if any(v is not None for v in instructions.values()):
        ops["instruction_dataset"] = {"config": {k: v for k, v in instructions.items() if v is not None}}
    lora = {k: _value(v) for k, v in (item.split("=", 1) for item in args.lora)}
    if args.epochs:
        lora["num_epochs"] = args.epochs
    if lora:
        ops["lora_adapter"] = {"config": lora}
    # --no-budget: the full-data switch (INTENT_ASSETS_ENV=full): no CPU caps, the tuned recipe's epochs until
    # early stopping
    resources = full_resources(args.root) if args.no_budget else local_resources(args.root)

    start = time.perf_counter()
    result = dg.materialize([*ASSETS, *CHECKS], resources=resources, run_config={"ops": ops},
                            tags=days_of_run_config({"ops": ops}))  # every day that holds records, in one run
    wall = time.perf_counter() - start
    assert result.success

    meta = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        meta[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    report = json.loads(Path(meta["eval_report"]["report_json"]).read_text())
    adapter = meta["lora_adapter"]
    print(f"machine: {platform.machine()} {platform.processor() or ''}, Python {platform.python_version()}")
    print(f"data: {args.data or 'shipped sample'}; budget: {'none' if args.no_budget else 'embedded default'}")
    print(f"test examples: {report['n']}; training: {adapter['train_examples']} examples, {adapter['optimizer_steps']} steps, "
          f"{adapter['epochs_completed']} epochs, backend {adapter['backend']} on {adapter['device']} ({adapter['dtype']}), "
          f"{adapter['wall_seconds']:.0f} s; best validation loss {adapter['best_validation_loss']}")
    print(f"AWQ: {meta['awq_model']['size_mb_before']} MB -> {meta['awq_model']['size_mb_after']} MB, {meta['awq_model']['wall_seconds']} s")
    print(f"whole graph wall time: {wall:.0f} s\n")
    print_table(report)


def print_table(report: dict) -> None:
    """Every system of one eval report, with accuracy as a ratio to the best classical baseline of the same run."""
    systems = report["systems"]
    baseline = max(("TF-IDF + linear SVM", "MiniLM-L6 + logistic regression"), key=lambda n: systems.get(n, {}).get("metrics", {}).get("accuracy", -1))
    base_acc = systems[baseline]["metrics"]["accuracy"]
    print(f"{report['n']} test examples")
    print(f"| system | accuracy | macro-F1 | accuracy / {baseline} | p50 ms | p95 ms | requests/s |")
    print("|---|---|---|---|---|---|---|")
    for name, s in systems.items():
        m, lat = s["metrics"], s["latency"]
        print(f"| {name} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | {m['accuracy'] / base_acc:.2f}x "
              f"| {lat['p50_ms']:.1f} | {lat['p95_ms']:.1f} | {lat['throughput_per_s']:.1f} |")
    multi = report.get("multi_intent")
    if multi:  # label sets: exact set and micro-F1 as ratios to the best one-vs-rest baseline of the same run
        sets = multi["systems"]
        best = max((n for n in sets if "one-vs-rest" in n), key=lambda n: sets[n]["exact_set_accuracy"])
        print(f"\n{multi['n']} test messages scored as label sets")
        print(f"| system | exact set | micro-F1 | macro-F1 | count right | exact set / {best} | by intents in the message |")
        print("|---|---|---|---|---|---|---|")
        for name, m in sets.items():
            by = ", ".join(f"{k}: {v['exact_set_accuracy']:.3f} (n={v['messages']})" for k, v in m["by_intent_count"].items())
            ratio = m["exact_set_accuracy"] / sets[best]["exact_set_accuracy"] if sets[best]["exact_set_accuracy"] else float("nan")
            print(f"| {name} | {m['exact_set_accuracy']:.3f} | {m.get('micro_f1', 0):.3f} | {m.get('macro_f1', 0):.3f} "
                  f"| {m['count_accuracy']:.3f} | {ratio:.2f}x | {by} |")


if __name__ == "__main__":
    main()
