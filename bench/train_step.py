"""Where a training step's time goes, and what each fix buys: examples/s of the embedded default's recipe.

    python bench/train_step.py --root data --steps 4 --variants seed dropout0 nocast noprefixgrad seed

Each variant trains ``--steps`` optimizer steps (the first one untimed: warm-up) of the embedded default's shape
(micro-batch = effective batch 16, LoRA r=64 on every linear layer, bf16 autocast, shared prompt prefix) through
``intent_assets.model.training.build_trainer`` and ``Trainer.train``, on the same seeded training examples, and reports
the median seconds per step, examples/s, the ratio to the first variant, and the loss of the first batch with
dropout off (the forward pass: it must agree within bf16 rounding). Variants accumulate in the order given:

- ``seed``: the code path before this benchmark: PEFT casts each LoRA input to fp32, dropout 0.1, gradients
  through the shared prefix (``keep_adapter_inputs_bf16`` switched off);
- ``dropout0``: LoRA dropout 0 (no Bernoulli mask on every adapted layer's input);
- ``nocast``: LoRA inputs stay bf16 under autocast (``keep_adapter_inputs_bf16``, what training now does);
- ``noprefixgrad``: ``prefix_gradients=False`` (the prefix is a forward pass only);
- ``eager``: eager attention instead of PyTorch's SDPA (whose CPU flash-attention backward is slow here);
- ``bylength``: micro-batches of messages of about the same length (less padding);
- ``r16``: LoRA r=16, alpha 32 (a cheaper adapter: a recipe change, not the same loss);
- ``micro32``/``micro64``: micro-batch (and effective batch) 32 / 64, the prefix shared by more rows;
- ``tuned``: starts afresh (like ``seed``) with every fix above but ``r16`` and the micro-batches.

A variant named twice is measured twice (e.g. the first again at the end, to see drift on a shared machine).
``--profile`` prints the top operators of one step of each variant (``torch.profiler``).
"""

import argparse
import statistics
import tempfile
from pathlib import Path

import pandas as pd

from bench._output import emit
from intent_assets.model import training
from intent_assets.model.base_model import SMOLLM2_DIR_NAME
from intent_assets.model.instructions import write_jsonl

STEPS = {
    "seed": dict(dropout=0.1, cast=True, prefix_gradients=True, micro=16, attention="sdpa", r=64, alpha=16,
                 group_by_length=False),
    "dropout0": dict(dropout=0.0),
    "nocast": dict(cast=False),
    "noprefixgrad": dict(prefix_gradients=False),
    "eager": dict(attention="eager"),
    "bylength": dict(group_by_length=True),
    "r16": dict(r=16, alpha=32),
    "micro32": dict(micro=32),
    "micro64": dict(micro=64),
}
# the tuned recipe's step in one name (starts afresh like ``seed``)
STEPS["tuned"] = {**STEPS["seed"], **STEPS["dropout0"], **STEPS["nocast"], **STEPS["noprefixgrad"], **STEPS["eager"],
                  **STEPS["bylength"]}


def first_batch_loss(trainer) -> float:
    import torch

    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(16)])  # the same 16 in every variant
    model = trainer.model
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=trainer.args.bf16):
        outputs = model(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")})
    model.train()
    logits = outputs.logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    return float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                   ignore_index=-100))


def run_variant(settings: dict, base: Path, train: pd.DataFrame, steps: int, profile: bool) -> dict:
    import torch

    original = training.keep_adapter_inputs_bf16
    if settings["cast"]:
        training.keep_adapter_inputs_bf16 = lambda model: 0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            paths = write_jsonl(train, Path(tmp) / "data")
            config = training.LoraTrainingConfig(
                max_steps=steps, effective_batch_size=settings["micro"], per_device_batch_size=settings["micro"],
                learning_rate=3e-3, dropout=settings["dropout"], r=settings["r"], alpha=settings["alpha"], prefix_gradients=settings["prefix_gradients"],
                group_by_length=settings["group_by_length"], attn_implementation=settings["attention"],
                checkpoint_steps=10_000, early_stopping_patience=0, seed=0)
            torch.manual_seed(0)
            trainer, info = training.build_trainer(base, paths["train"], None, Path(tmp) / "run", config,
                                                   log=lambda _: None)
            loss = first_batch_loss(trainer)
            trainer.train()
            durations = info["progress"].durations[1:]
            table = None
            if profile:
                from torch.profiler import ProfilerActivity
                from torch.profiler import profile as torch_profile

                batch = next(iter(trainer.get_train_dataloader()))
                with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                    trainer.training_step(trainer.model, batch)
                table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    finally:
        training.keep_adapter_inputs_bf16 = original
    seconds = statistics.median(durations)
    return {"seconds_per_step": round(seconds, 3), "step_seconds": durations,
            "examples_per_s": round(settings["micro"] / seconds, 3), "first_batch_loss": round(loss, 4),
            "profile": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("data"))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--variants", nargs="+", default=["seed", "dropout0", "nocast", "noprefixgrad", "seed"])
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", default=None, help="Also write the JSON result to this file.")
    args = parser.parse_args()

    data = pd.read_parquet(args.root / "redacted" / "instruction_dataset.parquet")
    train = data[(data["split"] == "train") & ~data["synthetic"]].sample(n=args.steps * 64, random_state=0)
    base = args.root / "artifacts" / "base_model" / SMOLLM2_DIR_NAME
    settings: dict = {}
    rows = []
    for name in args.variants:
        settings = dict(STEPS[name]) if name in ("seed", "tuned") else {**settings, **STEPS[name]}
        result = run_variant(settings, base, train, args.steps, args.profile)
        rows.append({"variant": name, **{k: v for k, v in settings.items()}, **result})
        first = rows[0]["examples_per_s"]
        print(f"| {name} | {result['seconds_per_step']:.2f} | {result['examples_per_s']:.2f} | "
              f"{result['examples_per_s'] / first:.2f}x | {result['first_batch_loss']:.4f} |", flush=True)
        if result["profile"]:
            print(result["profile"], flush=True)
    emit({"benchmark": "train_step", "steps": args.steps,
          "results": [{k: v for k, v in r.items() if k != "profile"} for r in rows]}, args.json)


if __name__ == "__main__":
    main()
