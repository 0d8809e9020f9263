import pytest

from intent_assets.assets.lora_adapter import LoraAdapterConfig
from intent_assets.resources import LOCAL_TRAINING_BUDGET, TrainerBackend


def test_seed_recipe_without_environment():
    recipe = LoraAdapterConfig().training_config()
    assert (recipe.r, recipe.alpha, recipe.dropout, recipe.learning_rate) == (64, 16, 0.1, 2e-4)
    assert (recipe.effective_batch_size, recipe.per_device_batch_size, recipe.num_epochs) == (128, 8, 3)


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
