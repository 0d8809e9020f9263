"""bench/gpu_path.py (issue 17) keeps working without a GPU: its ``--cpu-subset`` mode runs every phase's code path
(random-weight models of both shapes, LoRA training through ``build_trainer`` against the plain HF step, the
classification fast path against plain ``generate``, the gpu-marked tests) on tiny shapes, and the JSON it writes
holds every section with numbers. Also: the SmolLM2 shape it builds is the shipped base model's, and the GGUF it
cuts down for the device machine still loads.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_path.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_path", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def cpu_subset(tmp_path_factory, tokenizer_dir) -> dict:
    out = tmp_path_factory.mktemp("gpu_path") / "gpu_path.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("OUT", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu-subset", "--tokenizer", str(tokenizer_dir),
                           "--out", str(out), "--budget", "600"], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=660)  # ~35 s on an idle 2-core machine; the budget only stops a hang
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text(encoding="utf-8"))


def test_cpu_subset_runs_every_phase_with_numbers(cpu_subset):
    gp = _module()
    result = cpu_subset
    assert result["mode"] == "cpu-subset" and result["smoke_check_only"] is True
    assert "random weights" in result["weights"] and result["anchors"]["unsloth_speedup_over_hf"] == 2.0
    assert result["anchors"]["a10g_ms_per_request"] == 150.0
    phases = result["phases"]
    assert list(phases) == list(gp.PHASES)
    for name, phase in phases.items():  # every phase runs on CPU: an error here is a real one
        assert phase["status"] == "ok", f"{name}: {phase.get('error')}\n{phase.get('traceback', '')}"

    setup = phases["setup"]
    assert setup["records"] >= 4 and setup["labels"] == 77 and setup["record_tokens_mean"] > 500
    assert set(setup["shapes"]) == {"smollm2_135m", "llama3_8b"}
    for shape in setup["shapes"].values():
        assert shape["params"] > 0 and shape["dims"]["num_hidden_layers"] == 2

    for shape in gp.TRAIN_SHAPES:
        variants = phases[f"train_{shape}"]["variants"]
        assert set(variants) == set(gp.VARIANTS)
        for name in ("hf_bf16", "peft"):
            row = variants[name]
            assert row["status"] == "ok", row
            for key in ("tokens_per_s", "seconds_per_step", "tokens_per_step", "speedup_vs_hf_bf16"):
                assert _positive(row[key]), (shape, name, key, row[key])
            assert row["losses_finite"] and row["steps_timed"] >= 1
        assert variants["peft"]["share_prefix"] is True and variants["hf_bf16"]["share_prefix"] is False
        # the same batches: the same real tokens per step
        assert variants["peft"]["tokens_per_step"] == variants["hf_bf16"]["tokens_per_step"]
        for name in ("qlora", "unsloth"):  # run where they import, else skipped with the reason
            row = variants[name]
            if row["status"] == "ok":
                assert _positive(row["tokens_per_s"]) and _positive(row["speedup_vs_hf_bf16"])
            else:
                assert row["status"] == "skipped" and "import" in row["reason"], row

    classify = phases["classify_llama3_8b"]
    for system in ("fast_path", "plain_generate"):
        for key in ("p50_ms", "p95_ms", "throughput_per_s"):
            assert _positive(classify[system][key]), (system, key)
    assert classify["fast_path"]["valid_label_rate"] == 1.0  # constrained decoding, whatever the weights
    assert all(_positive(v) for v in classify["ratios"].values())
    assert classify["prompt_tokens"] > 500 and classify["plain_generate_new_tokens"] >= 5

    tests = phases["gpu_tests"]
    assert "intent_assets_tests/model/test_training.py" in tests["files"]
    assert tests["collected"] >= 3 and tests["failed"] == 0 and tests["error"] == 0
    assert tests["skipped"] + tests["passed"] == tests["collected"]


def _header(path: Path) -> dict:
    import gguf

    reader = gguf.GGUFReader(str(path))
    f = reader.fields
    return {
        "num_hidden_layers": int(f["llama.block_count"].contents()),
        "hidden_size": int(f["llama.embedding_length"].contents()),
        "intermediate_size": int(f["llama.feed_forward_length"].contents()),
        "num_attention_heads": int(f["llama.attention.head_count"].contents()),
        "num_key_value_heads": int(f["llama.attention.head_count_kv"].contents()),
        "max_position_embeddings": int(f["llama.context_length"].contents()),
        "rms_norm_eps": float(f["llama.attention.layer_norm_rms_epsilon"].contents()),
        "rope_theta": float(f["llama.rope.freq_base"].contents()),
        "vocab_size": len(f["tokenizer.ggml.tokens"].data),
        "tie_word_embeddings": not any(t.name == "output.weight" for t in reader.tensors),
        "_tensors": {t.name: t.tensor_type.name for t in reader.tensors},
    }


def test_smollm2_shape_is_the_shipped_model_and_the_cut_gguf_keeps_it(tmp_path):
    """SHAPES["smollm2_135m"] is the shipped GGUF's config; --prepare-carry's 2-layer copy keeps every dimension but
    the depth, and only the first two blocks."""
    from intent_assets.model.base_model import GGUF_FILE, gguf_dir

    gp = _module()
    shipped = _header(gguf_dir() / GGUF_FILE)
    tensors = shipped.pop("_tensors")
    assert shipped == pytest.approx(gp.SHAPES["smollm2_135m"], rel=1e-6)
    cut = tmp_path / GGUF_FILE
    info = gp.truncate_gguf(gguf_dir() / GGUF_FILE, cut, layers=2)
    assert info["token_embd"] == "Q4_1" and info["bytes"] < 26 * 2**20
    small = _header(cut)
    small_tensors = small.pop("_tensors")
    assert small == pytest.approx(dict(gp.SHAPES["smollm2_135m"], num_hidden_layers=2), rel=1e-6)
    assert set(small_tensors) == {n for n in tensors if not n.startswith("blk.") or n.split(".")[1] in ("0", "1")}
    assert small_tensors["token_embd.weight"] == "Q4_1"
