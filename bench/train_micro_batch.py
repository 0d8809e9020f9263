"""Training speed against the micro-batch size, at the same effective batch, on the shipped instruction records.

    python bench/train_micro_batch.py --root data --steps 4 --micro 8 16

With ``share_prompt_prefix`` the 1,500-token system prompt (the taxonomy) is computed once per micro-batch, so a
micro-batch equal to the effective batch computes it once per optimizer step. ``--root``: a data folder after
`make run` (its instruction dataset and converted base model are read, nothing there is written). The first
``--micro`` value is the baseline; each line reports seconds per step and the speed-up over it.
"""

import argparse
import tempfile
from pathlib import Path

import pandas as pd

from intent_assets.model.base_model import SMOLLM2_DIR_NAME
from intent_assets.model.instructions import write_jsonl
from intent_assets.model.training import LoraTrainingConfig, train_lora


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("data"))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--effective", type=int, default=16)
    parser.add_argument("--micro", type=int, nargs="+", default=[8, 16])
    args = parser.parse_args()

    data = pd.read_parquet(args.root / "redacted" / "instruction_dataset.parquet")
    train = data[data["split"] == "train"].sample(n=args.steps * args.effective, random_state=0)
    base = args.root / "artifacts" / "base_model" / SMOLLM2_DIR_NAME
    baseline = None
    print(f"{len(train)} training examples, {args.steps} optimizer steps, effective batch {args.effective}")
    print("| micro-batch | s / step | tokens / s | speed-up |")
    print("|---|---|---|---|")
    for micro in args.micro:
        with tempfile.TemporaryDirectory() as tmp:
            paths = write_jsonl(train, Path(tmp) / "data")
            config = LoraTrainingConfig(max_steps=args.steps, effective_batch_size=args.effective, per_device_batch_size=micro,
                                        num_epochs=1, checkpoint_steps=args.steps, early_stopping_patience=0)
            result = train_lora(base, paths["train"], None, Path(tmp) / "run", config, log=lambda _: None)
        per_step = result.seconds_per_step
        baseline = baseline or per_step
        print(f"| {micro} | {per_step:.1f} | {result.tokens_per_second:.0f} | {baseline / per_step:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
