"""Did DPO on agents' corrections help? SFT-only against SFT + DPO on the same held-out test messages.

    python bench/dpo_from_corrections.py --root data --sft-steps 20 --pool 400 --test-examples 400

``--root``: a data folder after a whole-graph run (``make run``: ``data``; the data half is enough): it reads
``redacted/instruction_dataset.parquet`` and ``redacted/intent_taxonomy.json``. The base model is
``--base-model`` (default ``<root>/artifacts/base_model/smollm2-135m-instruct``; converted there if missing).

1. SFT adapter: ``--sft-adapter DIR`` (e.g. a ``make run`` adapter), or a short one trained here with the embedded
   default's recipe (the ``trainer`` resource of ``local_resources``) capped to ``--sft-steps`` optimizer steps.
2. Corrections: the SFT model (merged, bf16, constrained decoding) classifies ``--pool`` validation messages (never
   seen in training); every wrong prediction becomes a correction (predicted → true intent), i.e. a preference
   pair, exactly what ``lora_adapter``'s ``dpo_from_corrections`` builds from ``agent_corrections``.
3. DPO (``intent_assets.loop.preference.train_dpo``, the asset's code path) on those pairs.
4. Both models classify the same ``--test-examples`` test messages (seeded sample), and the corrected pool messages
   themselves (in-sample: did DPO learn the corrections?).

Prints accuracy and macro-F1 with the ratio SFT+DPO / SFT-only, the DPO loss, reward margin and accuracy, and wall
times; writes ``results.json`` to ``--out`` (default: a temporary folder, removed).
"""

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from bench._data import instruction_data
from intent_assets.assets.lora_adapter import LoraAdapterConfig
from intent_assets.loop.preference import DpoConfig, select_pairs, train_dpo
from intent_assets.model import base_model as bm
from intent_assets.model.classifier import ConstrainedClassifier
from intent_assets.model.instructions import write_jsonl
from intent_assets.model.metrics import classification_report
from intent_assets.model.quantization import merge_adapter
from intent_assets.model.training import train_lora
from intent_assets.resources import LOCAL_TRAINING_BUDGET, InferenceEngine, TrainerBackend


def classify(model_dir: Path, texts: list[str], labels: list[str], prompt: str, engine: InferenceEngine):
    started = time.perf_counter()
    model, tokenizer = engine.load(str(model_dir))
    classifier = ConstrainedClassifier(model, tokenizer, labels, prompt)
    predictions = [p.label for p in classifier.classify(texts, batch_size=engine.batch_size)]
    del model, classifier
    return predictions, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("data"))
    parser.add_argument("--base-model", type=Path, default=None)
    parser.add_argument("--sft-adapter", type=Path, default=None, help="an existing SFT adapter (else one is trained)")
    parser.add_argument("--sft-steps", type=int, default=20)
    parser.add_argument("--pool", type=int, default=400, help="validation messages classified to collect corrections")
    parser.add_argument("--test-examples", type=int, default=400)
    parser.add_argument("--dpo-steps", type=int, default=None, help="cap on DPO optimizer steps (default: epochs)")
    parser.add_argument("--dpo-epochs", type=float, default=2)
    parser.add_argument("--dpo-lr", type=float, default=DpoConfig.model_fields["learning_rate"].default)
    parser.add_argument("--beta", type=float, default=DpoConfig.model_fields["beta"].default)
    parser.add_argument("--dpo-batch", type=int, default=8, help="pairs per DPO step, in one micro-batch (the "
                        "system prompt is then computed once per step)")
    parser.add_argument("--sft-weight", type=float, default=0.0, help="RPO: weight of the chosen answer's NLL")
    parser.add_argument("--dpo-r", type=int, default=DpoConfig.model_fields["r"].default)
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads (1 holds up best on a shared machine)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data, labels, prompt, real, test = instruction_data(args.root, args.test_examples)
    pool = real[real["split"] == "validation"]
    pool = pool.sample(n=min(args.pool, len(pool)), random_state=1)
    engine = InferenceEngine()
    tmp = tempfile.TemporaryDirectory() if args.out is None else None
    out = Path(tmp.name) if tmp else args.out
    out.mkdir(parents=True, exist_ok=True)
    base = args.base_model or args.root / "artifacts" / "base_model" / bm.SMOLLM2_DIR_NAME
    if not (base / "config.json").is_file():
        bm.materialize_base_model(base)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{args.threads}, load average {os.getloadavg()[0]:.1f}; {len(labels)} intents", flush=True)

    # 1. SFT adapter
    timings = {}
    if args.sft_adapter is None:
        trainer = TrainerBackend(**LOCAL_TRAINING_BUDGET)
        recipe = LoraAdapterConfig(max_steps=args.sft_steps, checkpoint_steps=args.sft_steps)
        config = recipe.training_config(trainer.budget(), trainer.defaults()).model_copy(update={"num_threads": args.threads})
        paths = write_jsonl(data[data["split"].isin(["train", "validation"])], out / "data")
        t = time.perf_counter()
        # no validation pass: the bench only needs the adapter (the steps are capped, early stopping is moot)
        sft = train_lora(base, paths["train"], None, out / "sft", config, log=lambda m: print(m, flush=True))
        timings["sft_train_s"] = round(time.perf_counter() - t, 1)
        sft_adapter = Path(sft.adapter_dir)
        sft_desc = (f"trained here: {sft.steps} steps x {config.effective_batch_size} examples, lr {config.learning_rate:g}, "
                    f"r={config.r}")
    else:
        sft_adapter = args.sft_adapter
        sft_desc = f"given: {sft_adapter}"
    sft_merged = merge_adapter(base, sft_adapter, out / "sft_merged")

    # 2. corrections: the SFT model's wrong predictions on unseen validation messages
    predicted, timings["pool_classify_s"] = classify(sft_merged, pool["text"].tolist(), labels, prompt, engine)
    ledger = pd.DataFrame({"text": pool["text"].to_numpy(), "predicted_intent": predicted,
                           "corrected_intent": pool["intent"].to_numpy()})
    wrong = ledger[ledger["predicted_intent"] != ledger["corrected_intent"]]
    pairs, counts = select_pairs(wrong.rename(columns={"corrected_intent": "chosen", "predicted_intent": "rejected"}),
                                 max_pairs=10_000, exclude_texts=test["text"])
    print(f"SFT ({sft_desc}): {len(wrong)} of {len(pool)} validation messages wrong -> {len(pairs)} preference pairs "
          f"({counts})", flush=True)

    # 3. DPO over the SFT model
    settings = DpoConfig(beta=args.beta, learning_rate=args.dpo_lr, r=args.dpo_r, num_epochs=args.dpo_epochs,
                         max_steps=args.dpo_steps, max_pairs=10_000, num_threads=args.threads,
                         effective_batch_size=args.dpo_batch, per_device_batch_size=args.dpo_batch,
                         sft_weight=args.sft_weight)
    t = time.perf_counter()
    dpo = train_dpo(base, sft_adapter, pairs, prompt, out / "dpo", settings, log=lambda m: print(m, flush=True))
    timings["dpo_train_s"] = round(time.perf_counter() - t, 1)
    dpo_merged = merge_adapter(dpo.merged_sft_dir, dpo.adapter_dir, out / "dpo_merged")

    # 4. the same test messages, and the corrected messages themselves
    results = {}
    for name, model_dir in (("SFT only", sft_merged), ("SFT + DPO", dpo_merged)):
        test_pred, seconds = classify(model_dir, test["text"].tolist(), labels, prompt, engine)
        pair_pred, _ = classify(model_dir, pairs["text"].tolist(), labels, prompt, engine)
        report = classification_report(test["intent"].tolist(), test_pred, labels)
        results[name] = {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
                         "corrected_messages_right": sum(p == c for p, c in zip(pair_pred, pairs["chosen"])),
                         "test_classify_s": round(seconds, 1)}
    sft_r, dpo_r = results["SFT only"], results["SFT + DPO"]
    print(f"\n{len(test)} test messages (seeded sample of the frozen test split), {len(pairs)} corrections from "
          f"{len(pool)} validation messages; DPO: {dpo.steps} steps ({dpo.epochs_completed} epochs) x "
          f"{settings.effective_batch_size} pairs, beta {settings.beta}, lr {settings.learning_rate:g}, LoRA r={settings.r}, "
          f"sft_weight {settings.sft_weight:g}")
    print("| system | test accuracy | test macro-F1 | corrected messages now right (in-sample) |")
    print("|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | {r['corrected_messages_right']} / {len(pairs)} |")
    print(f"| ratio SFT+DPO / SFT | {dpo_r['accuracy'] / max(sft_r['accuracy'], 1e-9):.3f}x | "
          f"{dpo_r['macro_f1'] / max(sft_r['macro_f1'], 1e-9):.3f}x | |")
    first = {k: v[0][1] for k, v in dpo.history.items() if v}
    print(f"DPO loss {first.get('loss', float('nan')):.3f} -> {dpo.last('loss'):.3f}, reward margin -> "
          f"{dpo.last('rewards/margins'):.3f}, reward accuracy -> {dpo.last('rewards/accuracies'):.2f}; "
          f"{dpo.seconds_per_step:.1f} s/step; timings {timings}; total {time.perf_counter() - started:.0f} s")
    (out / "results.json").write_text(json.dumps({
        "sft": sft_desc, "pool": len(pool), "pairs": len(pairs), "test_examples": len(test), "results": results,
        "dpo": {"steps": dpo.steps, "history": dpo.history, "seconds_per_step": dpo.seconds_per_step,
                "settings": settings.model_dump(mode="json")}, "timings": timings}, indent=1))
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
