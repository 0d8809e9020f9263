"""Out-of-scope routing on CLINC150 (data_full.json, official splits): in-scope accuracy and OOS recall, separately.

Systems, all trained on CLINC150's train split with ``oos`` as the 151st label (its 100 oos_train queries):
TF-IDF + linear SVM and MiniLM-L6 + logistic regression (the pipeline's baselines), and, with ``--llm``, a short
LoRA fine-tune of SmolLM2-135M-Instruct through ``intent_assets.model.training`` on a per-intent subset, evaluated with
the constrained fast path. Each system is also shown with a confidence threshold calibrated on the validation
split (``intent_assets.model.oos.calibrate_threshold``: best mean of in-scope accuracy and OOS recall): below it, a
request goes to a human (``oos``). The published BERT reference (Larson et al., 2019): 96.9 in-scope, 40.3 OOS recall.

    python bench/oos_clinc150.py --test-per-class 0                     # baselines on the full test split
    python bench/oos_clinc150.py --llm --train-per-intent 8 --max-steps 80 --test-in-scope 450 --test-oos 150
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
from _output import emit  # bench/_output.py (the script's folder is on sys.path)

from intent_assets.model.oos import apply_threshold, calibrate_threshold, oos_report

OOS = "oos"


def load(path: str) -> dict[str, list[tuple[str, str]]]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {
        "train": [tuple(x) for x in data["train"] + data["oos_train"]],
        "val": [tuple(x) for x in data["val"] + data["oos_val"]],
        "test": [tuple(x) for x in data["test"] + data["oos_test"]],
    }


def subsample(rows, in_scope: int | None, oos: int | None, seed: int):
    rng = random.Random(seed)
    ins = [r for r in rows if r[1] != OOS]
    out = [r for r in rows if r[1] == OOS]
    if in_scope:
        ins = rng.sample(ins, min(in_scope, len(ins)))
    if oos:
        out = rng.sample(out, min(oos, len(out)))
    return ins + out


def evaluate(name: str, gold, pred, conf, val_gold, val_pred, val_conf, results: dict, seconds: float):
    base = oos_report(gold, pred, OOS)
    calib = calibrate_threshold(val_gold, val_pred, val_conf, OOS)
    thr = oos_report(gold, apply_threshold(pred, conf, calib["threshold"], OOS), OOS)
    results[name] = {"label_only": base, "threshold": calib["threshold"], "with_threshold": thr,
                     "seconds": round(seconds, 1)}
    print(f"{name}: in-scope {base['in_scope_accuracy']:.3f} OOS recall {base['oos_recall']:.3f} | threshold "
          f"{calib['threshold']:.3f}: in-scope {thr['in_scope_accuracy']:.3f} OOS recall {thr['oos_recall']:.3f}",
          flush=True)


def sklearn_confidence(model, texts):
    pipe = getattr(model, "pipeline", None) or model
    if hasattr(pipe, "predict_proba"):
        proba = pipe.predict_proba(texts)
    else:
        scores = pipe.decision_function(texts)
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        proba = e / e.sum(axis=1, keepdims=True)
    classes = list(pipe.classes_)
    return [classes[i] for i in proba.argmax(axis=1)], proba.max(axis=1).tolist()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/clinc150/data_full.json")
    ap.add_argument("--test-in-scope", type=int, default=0, help="in-scope test queries (0: all 4,500)")
    ap.add_argument("--test-oos", type=int, default=0, help="OOS test queries (0: all 1,000)")
    ap.add_argument("--val-in-scope", type=int, default=0)
    ap.add_argument("--val-oos", type=int, default=0)
    ap.add_argument("--minilm", action="store_true")
    ap.add_argument("--llm", action="store_true", help="also a short LoRA fine-tune + the constrained fast path")
    ap.add_argument("--train-per-intent", type=int, default=8, help="LLM: training queries per intent (and oos)")
    ap.add_argument("--max-steps", type=int, default=80)
    ap.add_argument("--learning-rate", type=float, default=3e-3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--work", default="data/bench/oos_clinc150")
    ap.add_argument("--base-model", help="base model directory (default: the converted one under data/artifacts)")
    ap.add_argument("--threads", type=int, default=None, help="LLM training threads (1 on a shared machine)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    splits = load(args.data)
    test = subsample(splits["test"], args.test_in_scope, args.test_oos, args.seed)
    val = subsample(splits["val"], args.val_in_scope, args.val_oos, args.seed)
    tt, tg = [t for t, _ in test], [g for _, g in test]
    vt, vg = [t for t, _ in val], [g for _, g in val]
    result = {"command": "python bench/oos_clinc150.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": f"{platform.machine()} {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at start",
              "test": {"in_scope": sum(g != OOS for g in tg), "oos": sum(g == OOS for g in tg)},
              "validation": {"in_scope": sum(g != OOS for g in vg), "oos": sum(g == OOS for g in vg)},
              "systems": {}}
    train_texts, train_labels = [t for t, _ in splits["train"]], [g for _, g in splits["train"]]

    from intent_assets.model.baselines import minilm_baseline, tfidf_baseline

    t0 = time.perf_counter()
    tfidf = tfidf_baseline(train_texts, train_labels)
    p, c = sklearn_confidence(tfidf, tt)
    vp, vc = sklearn_confidence(tfidf, vt)
    evaluate("TF-IDF + linear SVM (train: 15,000 + 100 oos)", tg, p, c, vg, vp, vc, result["systems"],
             time.perf_counter() - t0)
    if args.minilm:
        t0 = time.perf_counter()
        mini = minilm_baseline(train_texts, train_labels)
        emb = mini.embed(tt)
        proba = mini.classifier.predict_proba(emb)
        classes = list(mini.classifier.classes_)
        vproba = mini.classifier.predict_proba(mini.embed(vt))
        evaluate("MiniLM-L6 + logistic regression (train: 15,000 + 100 oos)", tg,
                 [classes[i] for i in proba.argmax(1)], proba.max(1).tolist(), vg,
                 [classes[i] for i in vproba.argmax(1)], vproba.max(1).tolist(), result["systems"],
                 time.perf_counter() - t0)

    if args.llm:
        import pandas as pd

        from intent_assets.data.taxonomy import load_taxonomy
        from intent_assets.model.instructions import build_records, write_jsonl
        from intent_assets.model.quantization import merge_adapter
        from intent_assets.model.training import LoraTrainingConfig, train_lora
        from intent_assets.paths import TAXONOMY_DIR
        from intent_assets.serving.champion import load_classifier, write_serving_info

        taxonomy = load_taxonomy(TAXONOMY_DIR / "clinc150.json")
        rng = random.Random(args.seed)
        by_intent: dict[str, list[str]] = {}
        for t, g in splits["train"]:
            by_intent.setdefault(g, []).append(t)
        rows = [(t, g, "train") for g, ts in by_intent.items() for t in rng.sample(ts, min(args.train_per_intent, len(ts)))]
        rows += [(t, g, "validation") for t, g in subsample(splits["val"], 128, 32, args.seed + 1)]
        frame = pd.DataFrame({"record_id": [f"c{i}" for i in range(len(rows))], "text": [r[0] for r in rows],
                              "intent": [r[1] for r in rows], "split": [r[2] for r in rows], "synthetic": False})
        # the same training subset for the classical baselines: what the LLM is up against with as little data
        sub_texts = [r[0] for r in rows if r[2] == "train"]
        sub_labels = [r[1] for r in rows if r[2] == "train"]
        t0 = time.perf_counter()
        small = tfidf_baseline(sub_texts, sub_labels)
        p, c = sklearn_confidence(small, tt)
        vp, vc = sklearn_confidence(small, vt)
        evaluate(f"TF-IDF + linear SVM (train: {len(by_intent)} x {args.train_per_intent}, the LLM's subset)", tg, p, c,
                 vg, vp, vc, result["systems"], time.perf_counter() - t0)
        if args.minilm:
            t0 = time.perf_counter()
            mini_small = minilm_baseline(sub_texts, sub_labels)
            proba = mini_small.classifier.predict_proba(emb)
            classes = list(mini_small.classifier.classes_)
            vproba = mini_small.classifier.predict_proba(mini_small.embed(vt))
            evaluate(f"MiniLM-L6 + logistic regression (train: {len(by_intent)} x {args.train_per_intent}, the LLM's "
                     "subset)", tg, [classes[i] for i in proba.argmax(1)], proba.max(1).tolist(), vg,
                     [classes[i] for i in vproba.argmax(1)], vproba.max(1).tolist(), result["systems"],
                     time.perf_counter() - t0)
        work = Path(args.work)
        paths = write_jsonl(build_records(frame, taxonomy), work / "instructions")
        if args.base_model:
            base_dir = Path(args.base_model)
        else:  # the pipeline's converted base model, converted here from the shipped GGUF when missing
            from intent_assets.model.base_model import materialize_base_model

            base_dir = work / "base_model"
            materialize_base_model(base_dir)
        config = LoraTrainingConfig(max_steps=args.max_steps, learning_rate=args.learning_rate,
                                    effective_batch_size=args.batch_size, per_device_batch_size=args.batch_size,
                                    num_epochs=1, checkpoint_steps=args.max_steps, early_stopping_patience=0,
                                    num_threads=args.threads)
        t0 = time.perf_counter()
        trained = train_lora(base_dir, paths["train"], paths["validation"], work / "lora", config)
        train_s = time.perf_counter() - t0
        merged = merge_adapter(base_dir, work / "lora" / "adapter", work / "merged")
        prompt = json.loads(paths["train"].open().readline())["messages"][0]["content"]
        write_serving_info(merged, taxonomy.names, prompt)
        clf = load_classifier(merged)
        t0 = time.perf_counter()
        preds = clf.classify(tt, batch_size=64)
        vpreds = clf.classify(vt, batch_size=64)
        name = (f"SmolLM2-135M LoRA, {len(by_intent)} x {args.train_per_intent} examples, {args.max_steps} steps "
                f"(fast path, bf16)")
        evaluate(name, tg, [x.label for x in preds], [x.confidence for x in preds], vg, [x.label for x in vpreds],
                 [x.confidence for x in vpreds], result["systems"], time.perf_counter() - t0)
        result["systems"][name]["train_seconds"] = round(train_s, 1)
        result["systems"][name]["train_examples"] = int((frame["split"] == "train").sum())
        result["systems"][name]["training"] = {k: v for k, v in trained.to_dict().items()
                                               if k in ("steps", "best_eval_loss", "tokens_per_second", "wall_seconds", "train_examples")}
    return emit(result, args.json)


if __name__ == "__main__":
    sys.exit(main())
