"""Is the generative formulation or the base model the limit? A classification head on the same base model.

    python bench/cls_head.py --root /work/b77_a100 --epochs 3 --json cls_head.json

``--root``: a run folder after the whole graph (``instruction_dataset`` and ``base_model`` materialized), e.g. the
full-Banking77 run of BENCHMARKS.md. The served router answers by constrained decoding of the label's name. This
script trains the same base model (SmolLM2-135M-Instruct as the ``base_model`` asset converted it) with a linear
head over the last token instead (``AutoModelForSequenceClassification``, LoRA on every linear layer by PEFT, the
head trained in full), on the same training split, and scores the same test split. MiniLM-L6 + logistic regression
is fitted on the same training split in the same run, so the table is a same-run comparison. Input per message: the
user turn of the chat template and the assistant header, no system prompt (the head needs no instruction).
Schedule: linear warm-up over 3% of the steps, then cosine to 0 over ``--epochs``; bf16 autocast where the CPU has
it. After each epoch the validation and test accuracy are printed; the epoch to keep is the one best on validation.
Nothing here is served: this is a measurement that decides whether a classification head is worth building.
"""

import argparse
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench._data import instruction_data
from bench._output import emit
from intent_assets.model.base_model import SMOLLM2_DIR_NAME
from intent_assets.model.baselines import minilm_baseline
from intent_assets.model.metrics import classification_report
from intent_assets.model.training import resolve_bf16


def encode(tokenizer, texts: list[str]) -> list[list[int]]:
    prompts = [f"<|im_start|>user\n{t}<|im_end|>\n<|im_start|>assistant\n" for t in texts]
    return tokenizer(prompts, add_special_tokens=False)["input_ids"]


def collate(tokenizer, chunk: list[list[int]]) -> dict:
    """Right-padded to a multiple of 16 (few distinct shapes: oneDNN reuses its kernels); the head reads the last
    non-pad token."""
    return tokenizer.pad({"input_ids": chunk}, padding=True, pad_to_multiple_of=16, padding_side="right",
                         return_tensors="pt")


@torch.no_grad()
def predict(model, tokenizer, ids, bf16, batch_size=64) -> np.ndarray:
    model.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = np.empty(len(ids), dtype=np.int64)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(**collate(tokenizer, [ids[i] for i in rows])).logits
        out[rows] = logits.float().argmax(-1).numpy()
    model.train()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--method", choices=["lora", "full"], default="lora")
    parser.add_argument("--r", type=int, default=64)
    parser.add_argument("--alpha", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-train", type=int, default=None, help="at most this many training messages (seeded)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    _, labels, _, data, test = instruction_data(args.root, test_examples=sys.maxsize)  # real records, every test one
    index = {name: i for i, name in enumerate(labels)}
    train = data[data["split"] == "train"]
    if args.max_train:
        train = train.sample(n=min(args.max_train, len(train)), random_state=args.seed)
    validation = data[data["split"] == "validation"]
    print(f"{len(train)} training, {len(validation)} validation, {len(test)} test messages, {len(labels)} intents")

    started = time.perf_counter()
    minilm = minilm_baseline(train["text"].tolist(), train["intent"].tolist())
    minilm_report = classification_report(test["intent"].tolist(), minilm.predict(test["text"].tolist()), labels)
    print(f"MiniLM-L6 + LR: accuracy {minilm_report['accuracy']:.4f}, macro-F1 {minilm_report['macro_f1']:.4f} "
          f"({time.perf_counter() - started:.0f} s)", flush=True)

    base = args.root / "artifacts" / "base_model" / SMOLLM2_DIR_NAME
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    bf16 = resolve_bf16("auto", "cpu")
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(labels), torch_dtype=torch.bfloat16 if bf16 else torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    if args.method == "lora":
        config = LoraConfig(task_type="SEQ_CLS", r=args.r, lora_alpha=args.alpha, lora_dropout=0.0,
                            target_modules="all-linear")
        model = get_peft_model(model, config)
    trainable = [p for p in model.parameters() if p.requires_grad]
    for parameter in trainable:  # trainable weights in fp32 (as lora_adapter trains), frozen ones bf16
        parameter.data = parameter.data.float()
    print(f"method {args.method}, trainable parameters {sum(p.numel() for p in trainable):,}, bf16 {bf16}", flush=True)

    train_ids = encode(tokenizer, train["text"].tolist())
    train_y = [index[x] for x in train["intent"]]
    val_ids, test_ids = encode(tokenizer, validation["text"].tolist()), encode(tokenizer, test["text"].tolist())
    steps_per_epoch = math.ceil(len(train_ids) / args.batch_size)
    total = steps_per_epoch * args.epochs
    warmup = max(1, int(0.03 * total))
    optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) /
                                                                                     max(1, total - warmup))))
    model.train()
    rows, step, train_started = [], 0, time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = list(range(len(train_ids)))
        random.shuffle(order)
        losses = []
        for start in range(0, len(order), args.batch_size):
            chunk = order[start:start + args.batch_size]
            target = torch.tensor([train_y[i] for i in chunk])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(**collate(tokenizer, [train_ids[i] for i in chunk])).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
            if step % 100 == 0:
                print(f"step {step}/{total} loss {np.mean(losses[-100:]):.4f} "
                      f"{(time.perf_counter() - train_started) / step:.2f} s/step", flush=True)
        seconds = time.perf_counter() - train_started
        val_acc = float(np.mean(predict(model, tokenizer, val_ids, bf16) == np.array([index[x] for x in validation["intent"]])))
        test_pred = [labels[i] for i in predict(model, tokenizer, test_ids, bf16)]
        report = classification_report(test["intent"].tolist(), test_pred, labels)
        row = {"epoch": epoch, "step": step, "train_loss": round(float(np.mean(losses)), 4),
               "validation_accuracy": round(val_acc, 4), "accuracy": round(report["accuracy"], 4),
               "macro_f1": round(report["macro_f1"], 4), "training_seconds": round(seconds, 1),
               "accuracy_over_minilm": round(report["accuracy"] / minilm_report["accuracy"], 3)}
        rows.append(row)
        print(row, flush=True)
    best = max(rows, key=lambda r: r["validation_accuracy"])
    print("| system | accuracy | macro-F1 | accuracy / MiniLM |\n|---|---:|---:|---:|")
    print(f"| MiniLM-L6 + logistic regression | {minilm_report['accuracy']:.3f} | {minilm_report['macro_f1']:.3f} | 1.00x |")
    print(f"| SmolLM2-135M + classification head ({args.method}), epoch {best['epoch']} (best on validation) | "
          f"{best['accuracy']:.3f} | {best['macro_f1']:.3f} | {best['accuracy_over_minilm']:.2f}x |")
    emit({"benchmark": "cls_head", "args": {k: str(v) for k, v in vars(args).items()},
          "minilm": {"accuracy": round(minilm_report["accuracy"], 4), "macro_f1": round(minilm_report["macro_f1"], 4)},
          "epochs": rows, "best_on_validation": best}, args.json)


if __name__ == "__main__":
    main()
