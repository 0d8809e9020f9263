import pytest

from intent_assets.assets.lora_adapter import LoraAdapterConfig
from intent_assets.resources import LOCAL_TRAINING_BUDGET, TrainerBackend


def test_seed_recipe_is_one_config_away():
    recipe = LoraAdapterConfig(recipe="seed").training_config()
    assert (recipe.r, recipe.alpha, recipe.dropout, recipe.learning_rate) == (64, 16, 0.1, 2e-4)
    assert (recipe.effective_batch_size, recipe.per_device_batch_size, recipe.num_epochs) == (128, 8, 3)
    assert (recipe.train_sampling, recipe.prefix_gradients) == ("random", True)
    assert recipe.anneal_on_plateau == 0.0  # stops at once when the patience runs out


def test_tuned_recipe_is_the_default():
    from intent_assets.model.training import TUNED_RECIPE

    recipe = LoraAdapterConfig().training_config()
    fixed = {k: v for k, v in TUNED_RECIPE.items() if k != "head"}  # head: auto resolves (below)
    assert {k: getattr(recipe, k) for k in fixed} == fixed
    assert recipe.alpha / recipe.r >= 1 and recipe.dropout == 0.0  # not the seed's 0.25 update scale
    assert recipe.anneal_on_plateau == 1.0  # the anneal as long as the run so far; 0.25 scored lower on both full sets
    # a field set in the run config wins over the recipe, under either recipe
    assert LoraAdapterConfig(alpha=32, train_sampling="random").training_config().alpha == 32
    assert LoraAdapterConfig(recipe="seed", dropout=0.0).training_config().dropout == 0.0
    assert LoraAdapterConfig(train_sampling="random").training_config().train_sampling == "random"
    # LoRA unless full fine-tuning is asked for
    assert recipe.method == "lora" and LoraAdapterConfig(recipe="seed").training_config().method == "lora"
    assert LoraAdapterConfig(method="full").training_config().method == "full"
    # the classification head wherever it can route the data (head: auto), the generative router one field away
    assert TUNED_RECIPE["head"] == "auto" and recipe.head == "classifier"
    assert LoraAdapterConfig(head="generative").training_config().head == "generative"
    assert LoraAdapterConfig(recipe="seed").training_config().head == "generative"


def test_head_auto_falls_back_to_the_generative_router_where_a_head_cannot_route():
    from intent_assets.resources import FULL_TRAINING_BUDGET

    full = TrainerBackend(**FULL_TRAINING_BUDGET)
    single = LoraAdapterConfig().training_config(full.budget(), full.defaults(), single_label=True)
    # the head's own schedule wins over the full environment's "8 epochs until early stopping"
    assert (single.head, single.num_epochs, single.early_stopping_patience) == ("classifier", 3, 0)
    label_sets = LoraAdapterConfig().training_config(full.budget(), full.defaults(), single_label=False)
    assert (label_sets.head, label_sets.num_epochs, label_sets.early_stopping_patience) == ("generative", 8, 1)
    assert LoraAdapterConfig(dpo_from_corrections=True).training_config(single_label=True).head == "generative"
    assert LoraAdapterConfig(backend="unsloth").training_config(single_label=True).head == "generative"
    # a schedule field set in the run config wins over the head's
    chosen = LoraAdapterConfig(head="classifier", num_epochs=5, early_stopping_patience=2).training_config(
        full.budget(), full.defaults())
    assert (chosen.num_epochs, chosen.early_stopping_patience) == (5, 2)


def test_environment_fills_only_unset_fields_and_caps_only_lower():
    trainer = TrainerBackend(max_train_examples=100, max_effective_batch_size=16, learning_rate=2e-3, per_device_batch_size=16)
    recipe = LoraAdapterConfig().training_config(trainer.budget(), trainer.defaults())
    assert (recipe.learning_rate, recipe.per_device_batch_size, recipe.effective_batch_size) == (2e-3, 16, 16)
    assert recipe.max_train_examples == 100
    chosen = LoraAdapterConfig(learning_rate=5e-4, per_device_batch_size=4, max_train_examples=50)
    recipe = chosen.training_config(trainer.budget(), trainer.defaults())
    assert (recipe.learning_rate, recipe.per_device_batch_size, recipe.max_train_examples) == (5e-4, 4, 50)


def test_local_environment_sets_a_short_schedule():
    trainer = TrainerBackend(**LOCAL_TRAINING_BUDGET)
    recipe = LoraAdapterConfig().training_config(trainer.budget(), trainer.defaults())
    assert recipe.learning_rate > 2e-4 and recipe.effective_batch_size % recipe.per_device_batch_size == 0


def test_invalid_recipe_is_refused_before_any_work():
    with pytest.raises(Exception, match="multiple of per_device_batch_size"):
        LoraAdapterConfig(effective_batch_size=100, per_device_batch_size=8)
    with pytest.raises(Exception, match="backend 'peft' only"):
        LoraAdapterConfig(head="classifier", backend="unsloth")
    with pytest.raises(Exception, match="not with head 'classifier'"):
        LoraAdapterConfig(head="classifier", dpo_from_corrections=True)


# ---------------------------------------------------------------------------------------------------------------
# DPO from corrections (dpo_from_corrections)


def test_dpo_settings_leave_the_sft_recipe_alone_and_are_validated():
    plain = LoraAdapterConfig(head="generative").training_config()  # DPO turns head auto generative, nothing else
    assert LoraAdapterConfig(dpo_from_corrections=True, dpo_beta=0.5, dpo_r=4).training_config() == plain
    settings = LoraAdapterConfig(dpo_beta=0.5, dpo_max_pairs=10, seed=7).dpo_config()
    assert (settings.beta, settings.max_pairs, settings.seed) == (0.5, 10, 7)
    with pytest.raises(Exception, match="DPO effective_batch_size"):
        LoraAdapterConfig(dpo_effective_batch_size=6, dpo_per_device_batch_size=4)
    with pytest.raises(Exception, match="beta"):
        LoraAdapterConfig(dpo_beta=0)


INTENTS = ["card_arrival", "lost_or_stolen_card", "top_up_failed", "exchange_rate"]
SYSTEM = "Classify the message into one intent: " + ", ".join(INTENTS) + '. Answer {"intent": "<name>"}.'
EXAMPLES = [("when will my card arrive", "card_arrival"), ("i lost my card", "lost_or_stolen_card"),
            ("my top up failed", "top_up_failed"), ("what exchange rate do you use", "exchange_rate"),
            ("my new card has not come yet", "card_arrival"), ("someone stole my card", "lost_or_stolen_card"),
            ("the top-up did not work", "top_up_failed"), ("is the rate fair", "exchange_rate")]
# DPO trains over a generative router: the SFT run it reuses is one
TINY_SFT = {"head": "generative", "max_steps": 2, "max_eval_examples": 2, "effective_batch_size": 4,
            "per_device_batch_size": 4, "checkpoint_steps": 2, "r": 8, "dropout": 0.0}
TINY_DPO = {"dpo_max_steps": 2, "dpo_effective_batch_size": 2, "dpo_per_device_batch_size": 2, "dpo_r": 4}


def _materialize(base_model_dir, data_root, config: dict, corrections):
    import json

    import dagster as dg
    import pandas as pd

    from intent_assets.assets.lora_adapter import lora_adapter
    from intent_assets.resources import ArtifactStore

    splits = ["train"] * 6 + ["validation", "test"]
    rows = pd.DataFrame({"record_id": [f"r{i}" for i in range(8)], "split": splits,
                         "intent": [i for _, i in EXAMPLES], "text": [t for t, _ in EXAMPLES], "synthetic": False})
    rows["messages"] = [json.dumps([{"role": "system", "content": SYSTEM}, {"role": "user", "content": t},
                                    {"role": "assistant", "content": json.dumps({"intent": i})}]) for t, i in EXAMPLES]

    @dg.asset(name="base_model")
    def fake_base_model() -> dict:
        return {"path": str(base_model_dir)}

    @dg.asset(name="instruction_dataset")
    def fake_instruction_dataset() -> pd.DataFrame:
        return rows

    @dg.asset(name="agent_corrections")
    def fake_agent_corrections() -> pd.DataFrame:
        return corrections

    result = dg.materialize(
        [fake_base_model, fake_instruction_dataset, fake_agent_corrections, lora_adapter],
        resources={"artifacts": ArtifactStore(base_dir=str(data_root)), "trainer": TrainerBackend(device="cpu")},
        run_config={"ops": {"lora_adapter": {"config": config}}})
    assert result.success
    mat = result.asset_materializations_for_node("lora_adapter")[0]
    return result.output_for_node("lora_adapter"), {k: v.value for k, v in mat.metadata.items()}


@pytest.mark.slow
def test_lora_adapter_with_and_without_dpo_from_corrections(base_model_dir, tmp_path):
    import pandas as pd
    import torch

    from intent_assets.model.quantization import merge_adapter

    torch.set_num_threads(1)
    corrections = pd.DataFrame({
        "text": ["i lost my card", "my top up failed", "is the rate fair", "when will my card arrive", "the card came"],
        "predicted_intent": ["card_arrival", "exchange_rate", "top_up_failed", "top_up_failed", "card_arrival"],
        "corrected_intent": ["lost_or_stolen_card", "top_up_failed", "exchange_rate", "card_arrival", "card_arrival"],
    })
    # flag off: the SFT adapter on the base model, whatever the corrections hold
    off, off_meta = _materialize(base_model_dir, tmp_path, TINY_SFT, corrections)
    assert off["base_model_dir"] == str(base_model_dir) and off["adapter_dir"].endswith("/adapter")
    assert not any(k.startswith("dpo_") for k in off_meta) and off_meta["optimizer_steps"] == 2
    assert off_meta["annealed_from_step"] == "no"  # two steps: the patience never runs out, nothing anneals

    # flag on: DPO over the same SFT run (reused from its checkpoints), a new run key, the merged SFT model as base
    on, meta = _materialize(base_model_dir, tmp_path, {**TINY_SFT, "dpo_from_corrections": True, **TINY_DPO}, corrections)
    assert on["run_key"] != off["run_key"] and meta["sft_run_key"] == off["run_key"]
    assert on["sft_adapter_dir"] == off["adapter_dir"]
    assert on["base_model_dir"].endswith("merged_sft") and on["adapter_dir"] != off["adapter_dir"]
    # "the card came" was right; "is the rate fair" is a test message: DPO never sees it
    assert meta["dpo_applied"] is True and meta["dpo_pairs_used"] == 3 == on["dpo_pairs"]
    assert meta["dpo_pairs"]["test_split"] == 1 and meta["dpo_pairs"]["pairs_in"] == 4
    assert meta["dpo_steps"] == 2 and len(meta["dpo_history"]["loss"]) == 2
    assert meta["dpo_final_reward_accuracy"] is not None and meta["dpo_wall_seconds"] > 0
    assert {"predicted": "card_arrival", "corrected": "lost_or_stolen_card", "pairs": 1} in meta["dpo_top_corrections"]
    text = repr(meta)
    assert "i lost my card" not in text and "my top up failed" not in text  # intents and counts only

    # awq_model's contract: the output adapter merges into the output base model
    merged = merge_adapter(on["base_model_dir"], on["adapter_dir"], tmp_path / "merged")
    assert (merged / "config.json").is_file()

    # the same inputs again: the same run key, the DPO adapter reused; no wrong predictions: the SFT output
    again, again_meta = _materialize(base_model_dir, tmp_path, {**TINY_SFT, "dpo_from_corrections": True, **TINY_DPO}, corrections)
    assert again["run_key"] == on["run_key"] and again_meta["dpo_reused"] is True
    right = corrections[corrections["predicted_intent"] == corrections["corrected_intent"]]
    none, none_meta = _materialize(base_model_dir, tmp_path, {**TINY_SFT, "dpo_from_corrections": True, **TINY_DPO}, right)
    assert none_meta["dpo_applied"] is False and none_meta["dpo_pairs"]["pairs_in"] == 0
    assert [none[k] for k in ("run_key", "adapter_dir", "base_model_dir")] == [off[k] for k in ("run_key", "adapter_dir", "base_model_dir")]
