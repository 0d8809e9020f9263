"""Learning rate of the embedded default's short schedule: accuracy after the same few optimizer steps, per rate.

    python bench/lr_sweep.py --root data --rates 2e-4 1e-3 3e-3 --steps 40

``--root``: a data folder after a whole-graph run (e.g. `make run`: ``data``). For each learning rate it trains a
LoRA adapter with the embedded default's recipe (the ``trainer`` resource of ``local_resources``) for ``--steps``
optimizer steps on the same training examples, merges it into the base model and classifies the same
``--test-examples`` test messages (bf16, constrained decoding, the dataset's own system prompt). Prints accuracy,
macro-F1, final validation loss and seconds per step, each accuracy also as a ratio to the first rate (the seed's
2e-4 by default). Everything is written into a temporary folder.
"""

import argparse
import json
import tempfile
from pathlib import Path

import pandas as pd

from intent_assets.assets.lora_adapter import LoraAdapterConfig
from intent_assets.data.taxonomy import Taxonomy
from intent_assets.model.base_model import SMOLLM2_DIR_NAME
from intent_assets.model.classifier import ConstrainedClassifier
from intent_assets.model.instructions import dataset_system_prompt, write_jsonl
from intent_assets.model.metrics import classification_report
from intent_assets.model.quantization import merge_adapter
from intent_assets.model.training import train_lora
from intent_assets.resources import LOCAL_TRAINING_BUDGET, InferenceEngine, TrainerBackend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("data"))
    parser.add_argument("--rates", type=float, nargs="+", default=[2e-4, 1e-3, 3e-3])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--test-examples", type=int, default=300)
    args = parser.parse_args()

    data = pd.read_parquet(args.root / "redacted" / "instruction_dataset.parquet")
    labels = Taxonomy.from_dict(json.loads((args.root / "redacted" / "intent_taxonomy.json").read_text())).names
    prompt = dataset_system_prompt(data["messages"])
    real = data[~data["synthetic"]]
    test = real[real["split"] == "test"].sample(n=min(args.test_examples, int((real["split"] == "test").sum())), random_state=0)
    base = args.root / "artifacts" / "base_model" / SMOLLM2_DIR_NAME
    trainer = TrainerBackend(**LOCAL_TRAINING_BUDGET)
    engine = InferenceEngine()
    print(f"{args.steps} optimizer steps per rate, {len(test)} test examples, {len(labels)} intents; "
          f"recipe of the embedded default ({trainer.budget()}, {trainer.defaults()})")
    print("| learning rate | accuracy (merged bf16) | macro-F1 | accuracy / first rate | validation loss | s / step |")
    print("|---|---|---|---|---|---|")
    first = None
    for rate in args.rates:
        recipe = LoraAdapterConfig(learning_rate=rate, max_steps=args.steps, checkpoint_steps=args.steps)
        config = recipe.training_config(trainer.budget(), trainer.defaults())
        with tempfile.TemporaryDirectory() as tmp:
            paths = write_jsonl(data[data["split"].isin(["train", "validation"])], Path(tmp) / "data")
            result = train_lora(base, paths["train"], paths["validation"], Path(tmp) / "run", config, log=lambda _: None)
            merge_adapter(base, result.adapter_dir, Path(tmp) / "merged")
            model, tokenizer = engine.load(str(Path(tmp) / "merged"))
            classifier = ConstrainedClassifier(model, tokenizer, labels, prompt)
            predictions = [p.label for p in classifier.classify(test["text"].tolist(), batch_size=engine.batch_size)]
        report = classification_report(test["intent"].tolist(), predictions, labels)
        first = first or report["accuracy"]
        print(f"| {rate:g} | {report['accuracy']:.3f} | {report['macro_f1']:.3f} | {report['accuracy'] / first:.2f}x | "
              f"{result.best_eval_loss:.3f} | {result.seconds_per_step:.1f} |", flush=True)


if __name__ == "__main__":
    main()
