"""DPO from corrections (intent_assets.loop.preference): pair selection, and a real DPO run of a few steps on the real
SmolLM2-135M over a tiny SFT adapter (short system prompt, so a step takes a few seconds on CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from intent_assets.loop.preference import DpoConfig, preference_records, select_pairs, train_dpo
from intent_assets.model.training import LoraTrainingConfig, train_lora

INTENTS = ["card_arrival", "lost_or_stolen_card", "top_up_failed", "exchange_rate"]
SYSTEM = "Classify the message into one intent: " + ", ".join(INTENTS) + '. Answer {"intent": "<name>"}.'
PAIRS = pd.DataFrame({
    "text": ["i lost my card", "my top up failed", "what exchange rate do you use", "when will my card arrive"],
    "chosen": ["lost_or_stolen_card", "top_up_failed", "exchange_rate", "card_arrival"],
    "rejected": ["card_arrival", "exchange_rate", "top_up_failed", "lost_or_stolen_card"],
})


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


@pytest.fixture(scope="module")
def sft(tmp_path_factory, base_model_dir) -> tuple[Path, Path]:
    """(base model dir: the session's conversion, a 2-step SFT adapter) on tiny chat records."""
    root = tmp_path_factory.mktemp("dpo")
    base = base_model_dir
    train = root / "train.jsonl"
    with open(train, "w", encoding="utf-8") as fh:
        for text, intent in zip(PAIRS["text"], PAIRS["chosen"]):
            fh.write(json.dumps({"record_id": text, "intent": intent, "synthetic": False, "messages": [
                {"role": "system", "content": SYSTEM}, {"role": "user", "content": text},
                {"role": "assistant", "content": json.dumps({"intent": intent})}]}) + "\n")
    config = LoraTrainingConfig(r=8, dropout=0.0, effective_batch_size=4, per_device_batch_size=4, max_steps=2,
                                checkpoint_steps=2, max_seq_length=128, warmup_ratio=0.0, lr_scheduler="constant",
                                early_stopping_patience=0)
    result = train_lora(base, train, None, root / "sft", config, log=lambda _: None)
    return base, Path(result.adapter_dir)


def tiny(**overrides) -> DpoConfig:
    values = dict(max_steps=3, effective_batch_size=4, per_device_batch_size=4, r=8, learning_rate=2e-3,
                  lr_scheduler="constant", max_seq_length=128)
    values.update(overrides)
    return DpoConfig(**values)


def test_config_validation():
    from pydantic import ValidationError

    assert DpoConfig().gradient_accumulation_steps == 2
    for kwargs, message in [(dict(effective_batch_size=6, per_device_batch_size=4), "multiple"),
                            (dict(beta=0), "beta"), (dict(max_pairs=0), "max_pairs"), (dict(betta=1), "betta"),
                            (dict(target_modules=[]), "target_modules")]:
        with pytest.raises(ValidationError, match=message):
            DpoConfig(**kwargs)


def test_select_pairs_drops_test_messages_duplicates_and_caps():
    pairs = pd.DataFrame({"text": ["a b", "A  b", "c", "d", "test msg", "e", " "],
                          "chosen": ["x", "y", "x", "x", "x", "x", "x"],
                          "rejected": ["z", "z", "x", "z", "z", "z", "z"]})
    chosen, counts = select_pairs(pairs, max_pairs=2, exclude_texts=["Test msg"])
    # "c" chose what it rejected, " " is empty; "a b" is superseded by "A  b"; the cap keeps the last two
    assert chosen["text"].tolist() == ["d", "e"]
    assert counts == {"pairs_in": 7, "invalid": 2, "test_split": 1, "duplicate_text": 1, "over_max_pairs": 1,
                      "pairs_used": 2}
    records = preference_records(chosen, "SYS")
    assert records[0]["prompt"] == [{"role": "system", "content": "SYS"}, {"role": "user", "content": "d"}]
    assert records[0]["chosen"] == [{"role": "assistant", "content": '{"intent": "x"}'}]
    assert records[0]["rejected"] == [{"role": "assistant", "content": '{"intent": "z"}'}]


def _margins(model, tokenizer, pairs: pd.DataFrame) -> list[float]:
    """log p(chosen answer) - log p(rejected answer) per pair, prompted like training."""
    out = []
    for record in preference_records(pairs, SYSTEM):
        prompt = tokenizer.apply_chat_template(record["prompt"], tokenize=False, add_generation_prompt=True)
        scores = []
        for side in ("chosen", "rejected"):
            ids = tokenizer(prompt + record[side][0]["content"], return_tensors="pt")["input_ids"]
            start = len(tokenizer(prompt)["input_ids"])
            with torch.no_grad():
                logits = model(input_ids=ids).logits.float()
            logp = torch.log_softmax(logits[0, start - 1:-1], -1).gather(-1, ids[0, start:, None]).sum()
            scores.append(float(logp))
        out.append(scores[0] - scores[1])
    return out


def test_dpo_updates_the_adapter_towards_the_chosen_answers(sft, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, adapter = sft
    logs: list[str] = []
    result = train_dpo(base, adapter, PAIRS, SYSTEM, tmp_path / "dpo", tiny(), log=logs.append)
    assert result.steps == 3 and result.pairs == 4 and not result.reused
    assert result.extra["share_prompt_prefix"] and not result.extra["gradient_checkpointing"]  # the fast path
    assert [s for s, _ in result.history["loss"]] == [1, 2, 3]
    # one batch holds every pair: the DPO loss on it falls step after step, the reward margin grows
    losses = [v for _, v in result.history["loss"]]
    assert losses[0] == pytest.approx(0.6931, abs=0.02)  # log 2: the fresh adapter starts as the reference
    assert losses[2] < losses[1] < losses[0]
    assert result.history["rewards/margins"][-1][1] > 0.1
    assert any("DPO done" in line for line in logs)

    # a fresh LoRA starts with B = 0: trained B weights are non-zero
    weights = load_file(str(Path(result.adapter_dir) / "adapter_model.safetensors"))
    b = [t for name, t in weights.items() if "lora_B" in name]
    assert b and all(t.abs().sum() > 0 for t in b)
    # the adapter loads over the merged SFT model and prefers the corrected answers more than that model does
    tokenizer = AutoTokenizer.from_pretrained(result.merged_sft_dir)
    reference = AutoModelForCausalLM.from_pretrained(result.merged_sft_dir, dtype=torch.float32)
    before = _margins(reference, tokenizer, PAIRS)
    policy = PeftModel.from_pretrained(reference, result.adapter_dir)
    after = _margins(policy, tokenizer, PAIRS)
    assert sum(after) > sum(before) + 0.5, (before, after)

    # the same inputs reuse the finished adapter; other settings train again
    again = train_dpo(base, adapter, PAIRS, SYSTEM, tmp_path / "dpo", tiny(), log=logs.append)
    assert again.reused and again.adapter_dir == result.adapter_dir and again.history == result.history
    summary = json.loads((tmp_path / "dpo" / "dpo_summary.json").read_text())
    other = train_dpo(base, adapter, PAIRS, SYSTEM, tmp_path / "dpo", tiny(max_steps=1, sft_weight=1.0),
                      log=logs.append)  # RPO: DPO + the chosen answer's NLL
    assert not other.reused and other.steps == 1
    assert other.history["loss"][0][1] > result.history["loss"][0][1] + 0.05  # the NLL term adds to log 2
    assert json.loads((tmp_path / "dpo" / "dpo_summary.json").read_text())["fingerprint"] != summary["fingerprint"]


def test_no_pairs_is_an_error(sft, tmp_path):
    base, adapter = sft
    with pytest.raises(ValueError, match="no preference pairs"):
        train_dpo(base, adapter, PAIRS.iloc[:0], SYSTEM, tmp_path / "dpo", tiny())
