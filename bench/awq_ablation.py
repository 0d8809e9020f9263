"""What 4-bit AWQ costs in accuracy: the merged bf16 model against AWQ variants of it, same test messages, same run.

    python bench/awq_ablation.py --root data --variants 64:16:128 32:16:128 32:64:128

``--root``: a data folder after a whole-graph run (e.g. `make run`: ``data``); the merged model of its newest
``awq_model`` run is re-quantized once per variant ``group_size:calibration_samples:calibration_tokens`` into a
temporary folder (the project's artifacts are not touched). Prints accuracy and macro-F1 per model and the ratio
to the merged bf16 model.
"""

import argparse
import json
import tempfile
from pathlib import Path

import pandas as pd

from intent_assets.data.taxonomy import Taxonomy
from intent_assets.model.classifier import ConstrainedClassifier
from intent_assets.model.instructions import dataset_system_prompt
from intent_assets.model.metrics import classification_report
from intent_assets.model.quantization import QuantizationSettings, quantize_awq
from intent_assets.resources import InferenceEngine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("data"))
    parser.add_argument("--variants", nargs="+", default=["64:16:128"],
                        help="group_size:samples:tokens[:ignore], ignore a comma-separated list of modules kept 16-bit "
                             "(names or re:<regex>), e.g. 32:16:128:re:.*layers\\.(0|29)\\..*")
    parser.add_argument("--merged", type=Path, default=None, help="The merged 16-bit model (default: the newest awq_model's).")
    parser.add_argument("--test-examples", type=int, default=300)
    args = parser.parse_args()

    taxonomy = Taxonomy.from_dict(json.loads((args.root / "redacted" / "intent_taxonomy.json").read_text()))
    data = pd.read_parquet(args.root / "redacted" / "instruction_dataset.parquet")
    real = data[~data["synthetic"]]
    test = real[real["split"] == "test"]
    test = test.sample(n=min(args.test_examples, len(test)), random_state=0)
    prompts = [json.loads(m)[:2] for m in real[real["split"] == "train"]["messages"]]
    merged = args.merged or max((args.root / "artifacts" / "awq_model").glob("*/merged"), key=lambda p: p.stat().st_mtime)
    engine = InferenceEngine()

    def score(model_dir: Path, quantized: bool) -> dict:
        model, tokenizer = engine.load(str(model_dir), quantized=quantized)
        classifier = ConstrainedClassifier(model, tokenizer, taxonomy.names, dataset_system_prompt(data["messages"]))
        predictions = [p.label for p in classifier.classify(test["text"].tolist(), batch_size=engine.batch_size)]
        return classification_report(test["intent"].tolist(), predictions, taxonomy.names)

    reference = score(merged, quantized=False)
    print(f"{len(test)} test examples; merged model {merged}")
    print("| model | accuracy | macro-F1 | accuracy / merged bf16 | size MB | quantization s |")
    print("|---|---|---|---|---|---|")
    print(f"| merged bf16 | {reference['accuracy']:.3f} | {reference['macro_f1']:.3f} | 1.00x | | |")
    for variant in args.variants:
        group_size, samples, tokens, *rest = variant.split(":", 3)
        group_size, samples, tokens = int(group_size), int(samples), int(tokens)
        ignore = ["lm_head", *(rest[0].split(",") if rest else [])]
        settings = QuantizationSettings(group_size=group_size, num_calibration_samples=samples, max_calibration_tokens=tokens,
                                        ignore=ignore)
        with tempfile.TemporaryDirectory() as tmp:
            result = quantize_awq(merged, prompts, Path(tmp) / "q", settings)
            r = score(Path(tmp) / "q", quantized=True)
        kept = f", 16-bit: {', '.join(ignore[1:])}" if len(ignore) > 1 else ""
        print(f"| AWQ W4A16 group {group_size}, {samples} x {tokens} calibration tokens{kept} | {r['accuracy']:.3f} | "
              f"{r['macro_f1']:.3f} | {r['accuracy'] / reference['accuracy']:.2f}x | "
              f"{result.size_bytes_after / 1e6:.1f} | {result.wall_seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
