"""Tests for ``intent_assets.privacy.memorization`` (plain module; a fake generator stands in for the model)."""

import json

import pytest

from intent_assets.paths import SAMPLE_DIR
from intent_assets.privacy.memorization import Canary, completed, load_canaries, memorization_check

CANARIES = [Canary("EMAIL", "zq.canary7731@example.org"), Canary("PHONE", "+44 7700 900417"), Canary("PERSON", "Zebulon Quixwell")]


def test_a_model_that_memorized_is_caught_and_one_that_did_not_is_not():
    secrets = {c.split(0.5)[0]: c.split(0.5)[1] for c in CANARIES}
    parrot = lambda prompts: [secrets[p] + " and more" for p in prompts]  # noqa: E731
    clean = lambda prompts: [" please help me with my card" for _ in prompts]  # noqa: E731
    leaky = memorization_check(parrot, CANARIES)
    assert leaky["completed"] == 3 and leaky["per_type"]["EMAIL"] == {"canaries": 1, "completed": 1}
    assert memorization_check(clean, CANARIES)["completed"] == 0
    assert "canary" not in json.dumps(leaky) and "Quixwell" not in json.dumps(leaky)  # counts only


def test_prompt_holds_a_type_cue_and_only_part_of_the_value():
    prompt, rest = Canary("EMAIL", "zq.canary7731@example.org").split(0.5)
    assert prompt.startswith("My email address is ") and "example.org" not in prompt and rest.endswith("example.org")


def test_completion_compares_letters_and_digits_only():
    assert completed("900417", " 900 417.")
    assert not completed("900417", " 123456")
    assert not completed("", "anything")


def test_load_canaries_from_the_shipped_manifest_and_bad_lines(tmp_path):
    canaries = load_canaries(SAMPLE_DIR / "banking77_pii_manifest.jsonl", limit=10)
    assert len(canaries) == 10 and all(len(c.value) >= 6 for c in canaries)
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"entity_type": "EMAIL", "value": "a@b.example.org"}\n{"value": 3}\n')
    with pytest.raises(ValueError, match=r"c.jsonl:2"):
        load_canaries(bad)
    with pytest.raises(FileNotFoundError):
        load_canaries(tmp_path / "missing.jsonl")
