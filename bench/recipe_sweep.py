"""Which fine-tuning recipe earns its place: test accuracy per recipe, same data, same test messages, same run.

    python bench/recipe_sweep.py --root data --test-examples 400 \\
        --recipe seed '{"dropout": 0.1, "r": 64, "alpha": 16, "learning_rate": 3e-3, "max_steps": 80}' \\
        --recipe alpha2r '{"alpha": 128, "learning_rate": 1e-3}'

``--root``: a data folder after the data half (``instruction_dataset`` and ``base_model`` materialized). Each
``--recipe NAME JSON`` gives ``intent_assets.model.training.LoraTrainingConfig`` fields over the common ones (``--common``,
default: the embedded default's shape: effective batch = micro-batch 16, validation on 128, no early stopping);
recipes accumulate nothing, each starts from the common fields. The pseudo-field ``prompt_style`` (``compact`` or
``taxonomy``, ``intent_assets.model.instructions.PROMPT_STYLES``) rebuilds the records with that system prompt first.
Each recipe trains a LoRA adapter on the training split, is merged into the base model (bf16) and classifies the
same seeded ``--test-examples`` test messages with constrained decoding and the system prompt it trained with. ``--eval-every N`` also scores the checkpoints every N
steps (a learning curve from one run). Prints accuracy, macro-F1, the ratio to the first recipe, validation loss,
training seconds and s/step; ``--json`` writes every figure.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench._data import instruction_data, taxonomy
from bench._output import emit
from intent_assets.model.base_model import SMOLLM2_DIR_NAME
from intent_assets.model.classifier import ConstrainedClassifier
from intent_assets.model.instructions import build_records, system_prompt, write_jsonl
from intent_assets.model.metrics import classification_report
from intent_assets.model.quantization import merge_adapter
from intent_assets.model.training import LoraTrainingConfig, train_lora
from intent_assets.resources import InferenceEngine

COMMON = {"effective_batch_size": 16, "per_device_batch_size": 16, "max_eval_examples": 128,
          "early_stopping_patience": 0, "num_epochs": 1}


def score(base: Path, adapter: Path, work: Path, labels, prompt, test, engine) -> dict:
    merged = work / "merged"
    merge_adapter(base, adapter, merged)
    model, tokenizer = engine.load(str(merged))
    classifier = ConstrainedClassifier(model, tokenizer, labels, prompt)
    predictions = [p.label for p in classifier.classify(test["text"].tolist(), batch_size=engine.batch_size)]
    report = classification_report(test["intent"].tolist(), predictions, labels)
    return {"accuracy": round(report["accuracy"], 4), "macro_f1": round(report["macro_f1"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("data"))
    parser.add_argument("--recipe", nargs=2, action="append", metavar=("NAME", "JSON"), required=True)
    parser.add_argument("--common", default=json.dumps(COMMON))
    parser.add_argument("--test-examples", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    data, labels, dataset_prompt, _, test = instruction_data(args.root, args.test_examples)
    tax = taxonomy(args.root)
    base = args.root / "artifacts" / "base_model" / SMOLLM2_DIR_NAME
    engine = InferenceEngine()
    common = json.loads(args.common)
    print(f"{len(test)} test messages, {len(labels)} intents; common fields {common}")
    print("| recipe | step | accuracy | macro-F1 | accuracy / first | best validation loss | training s | s / step |")
    print("|---|---|---|---|---|---|---|---|")
    rows, first = [], None
    for name, overrides in args.recipe:
        fields = {**common, **json.loads(overrides)}
        style = fields.pop("prompt_style", None)
        records = build_records(data, tax, style=style) if style else data
        prompt = system_prompt(tax, style=style) if style else dataset_prompt
        if args.eval_every:
            fields["checkpoint_steps"] = args.eval_every
            fields["save_total_limit"] = 1000
        config = LoraTrainingConfig(**fields)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            paths = write_jsonl(records[records["split"].isin(["train", "validation"])], work / "data")
            started = time.perf_counter()
            result = train_lora(base, paths["train"], paths["validation"], work / "run", config, log=lambda _: None)
            seconds = time.perf_counter() - started
            points = []
            if args.eval_every:
                for checkpoint in sorted((work / "run" / "checkpoints").glob("checkpoint-*"),
                                         key=lambda p: int(p.name.split("-")[1])):
                    step = int(checkpoint.name.split("-")[1])
                    if step != result.steps:
                        points.append((step, score(base, checkpoint, work / f"m{step}", labels, prompt, test, engine)))
            points.append((result.steps, score(base, Path(result.adapter_dir), work / "final", labels, prompt, test,
                                               engine)))
        per_step = statistics.median(result.extra["step_seconds"]) if result.extra["step_seconds"] else 0.0
        for step, figures in points:
            first = first or figures["accuracy"]
            rows.append({"recipe": name, "fields": fields, "prompt_style": style or "dataset", "step": step, **figures,
                         "best_validation_loss": result.best_eval_loss, "training_seconds": round(seconds, 1),
                         "seconds_per_step": round(per_step, 2), "train_examples": result.train_examples})
            print(f"| {name} | {step} | {figures['accuracy']:.3f} | {figures['macro_f1']:.3f} | "
                  f"{figures['accuracy'] / first:.2f}x | {result.best_eval_loss or float('nan'):.3f} | {seconds:.0f} | "
                  f"{per_step:.2f} |", flush=True)
    emit({"benchmark": "recipe_sweep", "test_examples": len(test), "results": rows}, args.json)


if __name__ == "__main__":
    main()
