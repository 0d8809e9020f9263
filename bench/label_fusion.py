"""Does the fine-tuned router know something the classical baseline does not? Exact label scores and a fusion.

    python bench/label_fusion.py --root /tmp/bench_b77            # a folder after bench/model_half.py

Reads a finished whole-graph run folder (``instruction_dataset``, ``base_model`` and ``lora_adapter``), merges its
adapter into the base model (bf16) and, on the same test messages (``--test-examples``, seeded; all by default):

- **greedy**: the served decoding (``ConstrainedClassifier.classify``: greedy over the label prefix tree);
- **exact**: every label's whole answer path scored (sum of its tokens' log-probabilities given the prompt), argmax
  over the taxonomy (rank classification; same model, no decoding shortcut);
- **MiniLM-L6 + logistic regression** trained on the run's training split, as ``eval_report`` trains it;
- **fusion**: ``log p_LLM(label) + w * log p_LR(label)`` (``p_LLM``: the exact scores normalized over the labels),
  ``w`` chosen on the validation split (``--val-examples``) from a fixed grid, then applied once to test.

A fusion above both of its parts says the fine-tuned model carries information the baseline lacks; a fusion at the
baseline's level says it does not. Prints a Markdown table and every figure as JSON (``--json`` also writes it).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench._data import instruction_data
from bench._output import emit
from intent_assets.model.base_model import SMOLLM2_DIR_NAME
from intent_assets.model.baselines import minilm_baseline
from intent_assets.model.classifier import ConstrainedClassifier
from intent_assets.model.metrics import classification_report
from intent_assets.model.quantization import merge_adapter
from intent_assets.resources import InferenceEngine

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


def exact_label_scores(clf: ConstrainedClassifier, texts) -> np.ndarray:
    """[N, L] sum of log-probabilities (full vocabulary) of each label's answer path after each prompt: one cached
    forward of the prompt, then every label's path as one right-padded batch over the repeated cache."""
    from transformers import DynamicCache

    paths = [clf.trie.paths[label] for label in clf.labels]
    L, T = len(paths), max(len(p) for p in paths)
    ids = torch.full((L, T), clf.pad_id, dtype=torch.long)
    valid = torch.zeros((L, T), dtype=torch.bool)
    for i, p in enumerate(paths):
        ids[i, :len(p)] = torch.tensor(p)
        valid[i, :len(p)] = True
    out = np.zeros((len(texts), L), dtype=np.float64)
    with torch.inference_mode():
        for n, text in enumerate(texts):
            prompt = torch.tensor([clf.prompt_ids(text)])
            P = prompt.shape[1]
            cache = DynamicCache(config=clf.model.config)
            first = clf.model(input_ids=prompt, use_cache=True, past_key_values=cache).logits[0, -1].float()
            cache.batch_repeat_interleave(L)
            mask = torch.cat([torch.ones((L, P), dtype=torch.long), valid.long()], dim=1)
            pos = torch.arange(P, P + T).unsqueeze(0).expand(L, T)
            logits = clf.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                               use_cache=True).logits.float()
            logp = torch.log_softmax(logits, dim=-1)  # position k predicts token k + 1
            total = torch.log_softmax(first, dim=-1)[ids[:, 0]]
            if T > 1:
                nxt = logp[:, :-1, :].gather(2, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
                total = total + (nxt * valid[:, 1:]).sum(dim=1)
            out[n] = total.numpy()
    return out


def lr_log_probs(baseline, texts, labels) -> np.ndarray:
    proba = baseline.classifier.predict_proba(baseline.embed(texts))
    cols = {str(c): i for i, c in enumerate(baseline.classes_)}
    out = np.full((len(texts), len(labels)), np.log(1e-9))
    for j, label in enumerate(labels):
        if label in cols:
            out[:, j] = np.log(np.clip(proba[:, cols[label]], 1e-9, 1.0))
    return out


def normalized(scores: np.ndarray) -> np.ndarray:
    return scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)


def metrics(gold, labels, predictions) -> dict:
    report = classification_report(gold, predictions, labels)
    return {"accuracy": round(report["accuracy"], 4), "macro_f1": round(report["macro_f1"], 4)}


def best(labels, scores: np.ndarray) -> list[str]:
    return [labels[i] for i in scores.argmax(axis=1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--test-examples", type=int, default=100_000)
    parser.add_argument("--val-examples", type=int, default=1_000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    _, labels, prompt, real, test = instruction_data(args.root, args.test_examples)
    val = real[real["split"] == "validation"]
    val = val.sample(n=min(args.val_examples, len(val)), random_state=0)
    train = real[real["split"] == "train"]
    adapters = sorted((args.root / "artifacts" / "lora_adapter").glob("*/adapter"))
    if not adapters:
        raise SystemExit(f"no trained adapter under {args.root / 'artifacts' / 'lora_adapter'}")
    base = args.root / "artifacts" / "base_model" / SMOLLM2_DIR_NAME
    engine = InferenceEngine()
    figures: dict = {"root": str(args.root), "adapter": str(adapters[-1]), "test": len(test), "validation": len(val)}
    with tempfile.TemporaryDirectory() as tmp:
        merged = merge_adapter(base, adapters[-1], Path(tmp) / "merged")
        model, tokenizer = engine.load(str(merged))
        clf = ConstrainedClassifier(model, tokenizer, labels, prompt)
        started = time.perf_counter()
        greedy = [p.label for p in clf.classify(test["text"].tolist(), batch_size=engine.batch_size)]
        figures["greedy_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        exact_test = exact_label_scores(clf, test["text"].tolist())
        exact_val = exact_label_scores(clf, val["text"].tolist())
        figures["exact_s"] = round(time.perf_counter() - started, 1)
    baseline = minilm_baseline(train["text"], train["intent"])
    lr_test = lr_log_probs(baseline, test["text"].tolist(), labels)
    lr_val = lr_log_probs(baseline, val["text"].tolist(), labels)
    gold, gold_val = test["intent"].tolist(), val["intent"].tolist()
    llm_test, llm_val = normalized(exact_test), normalized(exact_val)
    on_val = {w: metrics(gold_val, labels, best(labels, llm_val + w * lr_val))["accuracy"] for w in WEIGHTS}
    best_w = max(WEIGHTS, key=lambda w: (on_val[w], -abs(w - 1.0)))
    rows = {
        "MiniLM-L6 + logistic regression": metrics(gold, labels, best(labels, lr_test)),
        "fine-tuned 16-bit, greedy over the label tree (as served)": metrics(gold, labels, greedy),
        "fine-tuned 16-bit, exact label scores": metrics(gold, labels, best(labels, llm_test)),
        "fusion, w = 1 (product of the two)": metrics(gold, labels, best(labels, llm_test + lr_test)),
        f"fusion, w = {best_w} (chosen on validation)": metrics(gold, labels,
                                                               best(labels, llm_test + best_w * lr_test)),
    }
    figures.update(rows=rows, validation_accuracy_per_w=on_val, chosen_w=best_w)
    first = rows["MiniLM-L6 + logistic regression"]["accuracy"]
    lines = [f"{len(test)} test messages, {len(val)} validation messages, {len(labels)} intents",
             "| system | accuracy | macro-F1 | accuracy / MiniLM |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | {m['accuracy'] / first:.2f}x |"
              for name, m in rows.items()]
    lines.append(f"validation accuracy per w: {on_val}; greedy {figures['greedy_s']} s, exact {figures['exact_s']} s")
    print("\n".join(lines))
    emit(figures, args.json)


if __name__ == "__main__":
    main()
