"""LoRA training speed on this CPU: tokens/s and peak RSS per setting, against a naive padded fp32 step, same run.

Every variant trains the same LoRA (r=64, alpha 16, dropout 0.1, all linear layers, AdamW) on the same micro-batches
of real instruction records (system prompt with the taxonomy + user message + ``{"intent": ...}`` answer), one
fresh process per variant (so that peak RSS is the variant's own). tokens/s counts the records' real tokens (no
pads), the same for every variant, so ratios are time ratios.

- ``naive``: fp32, right-padded batch, logits at every position as a plain causal-LM forward computes them (the
  vocabulary is 49,152), loss on the answer tokens (so that every variant computes the same loss).
- ``bf16``: bf16 base weights + bf16 autocast (AMX / AVX512-BF16), LoRA weights fp32; otherwise as naive.
- ``packed``: fp32, padding-free: the batch's records concatenated into one row, position ids restarting per record
  (transformers builds a block-diagonal causal mask from them: no cross-contamination, checked below).
- ``completion``: fp32, padded, logits and loss only on the answer tokens (completion-only loss).
- ``bf16_packed_completion``: the three together.
- ``bf16_prefix_completion``: what ``intent_assets.model.training`` does: bf16, completion-only, and the system prompt the
  rows of a micro-batch share computed once (``share_prompt_prefix``).

    python bench/train_speed.py --batch-size 8 --steps 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

from _output import emit  # bench/_output.py (the script's folder is on sys.path)

VARIANTS = ["naive", "bf16", "packed", "completion", "bf16_packed_completion", "bf16_prefix_completion"]


def build_records(tokenizer, n: int, data: str | None):
    """(prompt_ids, answer_ids) of ``n`` Banking77 records as the pipeline renders them."""
    import csv

    from intent_assets.data.taxonomy import load_taxonomy
    from intent_assets.model.instructions import chat_record, system_prompt
    from intent_assets.paths import DEFAULT_TAXONOMY

    taxonomy = load_taxonomy(DEFAULT_TAXONOMY)
    prompt = system_prompt(taxonomy)
    path = data or "../shared/data/banking77/train.csv"
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    rows = rows[:: max(1, len(rows) // n)][:n]
    out = []
    for row in rows:
        msgs = chat_record(prompt, row["text"], row["category"])["messages"]
        p = tokenizer.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(msgs, tokenize=False)
        p_ids = tokenizer(p, add_special_tokens=False)["input_ids"]
        f_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        assert f_ids[:len(p_ids)] == p_ids
        out.append((p_ids, f_ids[len(p_ids):]))
    return out


def run_variant(variant: str, model_dir: str, batch_size: int, steps: int, data: str | None, threads: int,
                warmup: int = 1) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from intent_assets.model.training import _find_backbone, enable_shared_prefix

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    bf16 = variant.startswith("bf16")
    packed = "packed" in variant
    completion = "completion" in variant
    prefix = "prefix" in variant
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if bf16 else torch.float32)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=64, lora_alpha=16, lora_dropout=0.1, bias="none",
                                             task_type="CAUSAL_LM", target_modules="all-linear"))
    model.train()
    backbone = _find_backbone(model)
    if prefix:
        enable_shared_prefix(backbone)
    lm_head = model.get_base_model().lm_head
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    records = build_records(tokenizer, batch_size * (steps + warmup), data)
    batches = [records[i * batch_size:(i + 1) * batch_size] for i in range(steps + warmup)]

    def tensors(batch):
        seqs = [p + a for p, a in batch]
        labels = [[-100] * len(p) + a for p, a in batch]
        if packed:
            ids = torch.tensor([sum(seqs, [])])
            lab = torch.tensor([sum(labels, [])])
            pos = torch.tensor([[i for s in seqs for i in range(len(s))]])
            return ids, None, pos, lab
        L = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), L), pad)
        mask = torch.zeros((len(seqs), L), dtype=torch.long)
        lab = torch.full((len(seqs), L), -100)
        for i, (s, l) in enumerate(zip(seqs, labels)):
            ids[i, :len(s)], mask[i, :len(s)], lab[i, :len(s)] = torch.tensor(s), 1, torch.tensor(l)
        return ids, mask, None, lab

    def loss_of(batch):
        ids, mask, pos, lab = tensors(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            hidden = backbone(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state
            # next-token targets: position t predicts lab[t+1]
            targets = lab[:, 1:]
            hidden = hidden[:, :-1]
            if completion:
                sel = targets != -100
                logits = lm_head(hidden[sel])
                loss = torch.nn.functional.cross_entropy(logits.float(), targets[sel])
            else:  # naive: logits for every position (as a plain causal-LM forward computes them)
                logits = lm_head(hidden)
                loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten(),
                                                         ignore_index=-100)
        return loss

    model.eval()  # dropout off for the equivalence check
    with torch.no_grad():
        first_loss = float(loss_of(batches[0]))
    model.train()
    times, tokens, losses = [], 0, []
    for k, batch in enumerate(batches):
        t0 = time.perf_counter()
        loss = loss_of(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if k >= warmup:  # warm-up steps are not timed
            times.append(time.perf_counter() - t0)
            tokens += sum(len(p) + len(a) for p, a in batch)
            losses.append(float(loss))
    return {
        "variant": variant, "tokens_per_s": tokens / sum(times), "seconds_per_step": sum(times) / len(times),
        "tokens_per_step": tokens / len(times), "eval_loss_first_batch": first_loss,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def packing_check(model_dir: str, data: str | None) -> float:
    """Max |logit difference| on answer positions between padded rows and the same rows packed (fp32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    recs = build_records(tokenizer, 3, data)
    seqs = [p + a for p, a in recs]
    worst = 0.0
    with torch.no_grad():
        packed = model(input_ids=torch.tensor([sum(seqs, [])]),
                       position_ids=torch.tensor([[i for s in seqs for i in range(len(s))]]),
                       use_cache=False).logits[0]  # with a cache transformers does not detect packed rows
        start = 0
        for (p, a), s in zip(recs, seqs):
            alone = model(input_ids=torch.tensor([s])).logits[0]
            sl = slice(len(p) - 1, len(s) - 1)
            worst = max(worst, float((alone[sl] - packed[start:start + len(s)][sl]).abs().max()))
            start += len(s)
    return worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="base model directory (default: the converted base model)")
    ap.add_argument("--data", help="Banking77 train.csv (default ../shared/data/banking77/train.csv)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per variant (after one warm-up step)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per variant before the timed ones")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--variant", help=argparse.SUPPRESS)  # child process
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.model is None:
        from intent_assets.paths import data_dir

        args.model = str(next((data_dir() / "artifacts" / "base_model").glob("*/model.safetensors")).parent)
    if args.variant:
        print("RESULT " + json.dumps(run_variant(args.variant, args.model, args.batch_size, args.steps, args.data,
                                                 args.threads, args.warmup)))
        return 0
    import torch

    result = {"command": "python bench/train_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, "
                         f"{args.threads} threads, load {os.getloadavg()[0]:.2f} at start",
              "model": args.model, "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup}
    result["packing_max_abs_logit_diff"] = packing_check(args.model, args.data)
    rows = []
    for variant in args.variants.split(","):
        cmd = [sys.executable, __file__, "--variant", variant, "--model", args.model, "--batch-size",
               str(args.batch_size), "--steps", str(args.steps), "--threads", str(args.threads),
               "--warmup", str(args.warmup)]
        if args.data:
            cmd += ["--data", args.data]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
        line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            print(out.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{variant} failed")
        rows.append(json.loads(line[7:]))
        print(json.dumps(rows[-1]), flush=True)
    base = next(r for r in rows if r["variant"] == "naive")
    for r in rows:
        r["speedup_vs_naive"] = r["tokens_per_s"] / base["tokens_per_s"]
        r["loss_diff_vs_naive"] = r["eval_loss_first_batch"] - base["eval_loss_first_batch"]
    result["variants"] = rows
    return emit(result, args.json)


if __name__ == "__main__":
    sys.exit(main())
