"""Blended multi-intent messages and set-valued scores, on hand-computed cases."""

import json
import random

import pandas as pd
import pytest

from intent_assets.data.multi_intent import blend, join_parts, judge_rewrite, multilabel_scores, parse_rewrite, rewrite_blends

ROWS = [("Where is my card?", "card_arrival"), ("I was charged twice.", "duplicate_charge"),
        ("How do I close my account", "close_account"), ("My card still has not arrived", "card_arrival"),
        ("What is the exchange rate?", "exchange_rate")]


def test_blends_join_utterances_of_different_intents_in_stated_order_reproducibly():
    blends = blend(ROWS, 50, seed=3)
    assert blends == blend(ROWS, 50, seed=3) and blends != blend(ROWS, 50, seed=4)
    texts = {t: i for t, i in ROWS}
    for text, intents in blends:
        assert 2 <= len(intents) <= 3 and len(set(intents)) == len(intents)
        # every part is there, in the order of its intent in the list
        positions = []
        for intent in intents:
            found = [text.lower().find(_core(t)) for t, i in texts.items() if i == intent and _core(t) in text.lower()]
            assert found, (text, intent)
            positions.append(min(found))
        assert positions == sorted(positions), (text, intents)
    assert {len(i) for _, i in blends} == {2, 3}
    assert len({t for t, _ in blends}) > 30  # varied joiners, not one template


def _core(text: str) -> str:
    return text.lower().rstrip("?.").removeprefix("i ").strip()


def test_joined_parts_read_as_one_message():
    rng = random.Random(0)
    joined = {join_parts(["Where is my card?", "I was charged twice."], rng) for _ in range(200)}
    assert "Where is my card? Also, I was charged twice." in joined  # a question stays a question
    assert "Where is my card and I was charged twice." in joined     # "I" keeps its capital
    assert not any("?." in j or ". ." in j or ",," in j for j in joined)


def test_blend_needs_enough_intents():
    with pytest.raises(ValueError, match="at least 2 intents"):
        blend([("hi", "a"), ("hello", "a")], 1)
    assert blend([("hi", "a")], 0) == []


def test_scores_on_a_hand_computed_case():
    gold = [{"a"}, {"a", "b"}, {"b", "c"}, set()]
    pred = [{"a"}, {"a"}, {"b", "c", "d"}, set()]
    s = multilabel_scores(gold, pred, labels=["a", "b", "c", "d"])
    assert s["exact_set_accuracy"] == pytest.approx(2 / 4)   # messages 1 and 4
    assert s["count_accuracy"] == pytest.approx(2 / 4)       # |pred| == |gold| for messages 1 and 4
    # micro over labels: tp = a, a, b, c = 4; fp = d = 1; fn = b = 1
    assert s["micro_precision"] == pytest.approx(4 / 5) and s["micro_recall"] == pytest.approx(4 / 5)
    assert s["micro_f1"] == pytest.approx(0.8)
    # macro: a (p 1, r 1, f 1), b (p 1, r 1/2, f 2/3), c (1, 1, 1), d (p 0, r 0, f 0)
    assert s["macro_f1"] == pytest.approx((1 + 2 / 3 + 1 + 0) / 4)
    assert s["by_intent_count"] == {0: {"messages": 1, "exact_set_accuracy": 1.0},
                                    1: {"messages": 1, "exact_set_accuracy": 1.0},
                                    2: {"messages": 2, "exact_set_accuracy": 0.0}}
    assert s["gold_intent_counts"] == {0: 1, 1: 1, 2: 2}


def test_order_does_not_matter_and_bad_input_is_named():
    assert multilabel_scores([["a", "b"]], [["b", "a"]])["exact_set_accuracy"] == 1.0
    with pytest.raises(ValueError, match="2 gold label sets but 1"):
        multilabel_scores([["a"], ["b"]], [["a"]])
    with pytest.raises(ValueError, match=r"outside the given label space: \['z'\]"):
        multilabel_scores([["a"]], [["z"]], labels=["a"])


def test_blends_of_each_split_come_from_that_split_only():
    import pandas as pd

    from intent_assets.data.multi_intent import blend_splits

    rows = [(split, f"{split} utterance {k} about {intent}", intent)
            for split in ("train", "validation", "test") for k in range(10) for intent in ("a_x", "b_y", "c_z")]
    frame = pd.DataFrame(rows, columns=["split", "text", "intent"]).assign(intents=lambda f: [[i] for i in f["intent"]])
    frame.at[0, "intents"] = ["a_x", "b_y"]  # a message that already carries two is not a blend's part
    out = blend_splits(frame, 0.2, seed=1)
    assert out.equals(blend_splits(frame, 0.2, seed=1)) and not out.equals(blend_splits(frame, 0.2, seed=2))
    assert out["split"].value_counts().to_dict() == {"train": 6, "validation": 6, "test": 6}
    assert out["synthetic"].all() and out["record_id"].str.startswith("blend-").all()
    for split, text, intents in zip(out["split"], out["text"], out["intents"]):
        assert text.startswith(split) and 2 <= len(intents) <= 3 and len(set(intents)) == len(intents)
        assert not any(other in text for other in {"train", "validation", "test"} - {split})
    assert frame.loc[0, "text"] not in " ".join(out["text"])
    assert blend_splits(frame, 0.0).empty
    with pytest.raises(ValueError, match="blend share"):
        blend_splits(frame, 1.5)


# ------------------------------------------------------------------------------------------------ rewritten blends
def test_a_rewrite_is_judged_before_it_replaces_a_blend():
    original = "My card has not arrived yet and I also want to top up with cash"
    assert parse_rewrite('Sure! {"message": "Hi, my card never came, and can I top up in cash?"}') == (
        "Hi, my card never came, and can I top up in cash?")
    assert parse_rewrite("no json here") is None and parse_rewrite('{"message": "  "}') is None
    assert judge_rewrite(original, None) == "unparseable"
    assert judge_rewrite(original, original.upper()) == "unchanged"
    assert judge_rewrite(original, "Card?") == "length"
    assert judge_rewrite(original, "Please tell me the exchange rate for euros today, thank you.") == "requests_dropped"
    assert judge_rewrite(original, f"Hi, {original.lower()}. Email me at jane.doe@example.com") == "contains_pii"
    assert judge_rewrite(original, "Hi, my card has not arrived yet, and I want to top up with cash too.") == "accepted"


def test_training_blends_are_rewritten_cached_and_accounted_for(tmp_path):
    from intent_assets.data.augment import ResponseCache

    blends = pd.DataFrame({"record_id": [f"blend-{i}" for i in range(8)], "split": ["train"] * 6 + ["test"] * 2,
                           "text": [f"My card number {i} is blocked and I also want to close my account" for i in range(8)]})
    calls = []

    def chat(messages):
        calls.append(messages[-1]["content"])
        if len(calls) == 1:
            raise RuntimeError("endpoint down")
        return json.dumps({"message": "Hello, " + messages[-1]["content"].lower() + " please."})

    cache = ResponseCache(tmp_path)
    out, attempts = rewrite_blends(blends, 0.5, chat, "m", 0.9, cache, seed=1, find_pii=lambda text: [])
    assert len(attempts) == 3 and len(calls) == 3  # half of the 6 training blends; in = accepted + rejected
    assert attempts["reason"].value_counts().to_dict() == {"accepted": 2, "request_failed": 1}
    assert attempts.loc[attempts["reason"] == "request_failed", "error"].tolist() == ["RuntimeError: endpoint down"]
    changed = out["text"] != blends["text"]
    assert changed.sum() == 2 and set(out.loc[changed, "split"]) == {"train"}  # test blends stay rule-built
    again, attempts2 = rewrite_blends(blends, 0.5, chat, "m", 0.9, cache, seed=1, find_pii=lambda text: [])
    assert len(calls) == 4 and attempts2["from_cache"].sum() == 2  # only the failed request is asked again
    assert (again["text"] != blends["text"]).sum() == 3
    assert rewrite_blends(blends, 0.0, chat, "m", 0.9, cache)[1].empty
    # an unparseable reply is not cached (asked again next time); a chat built for another temperature is refused
    prose = lambda messages: "Sure, here you go."  # noqa: E731
    fresh = ResponseCache(tmp_path / "fresh")
    assert set(rewrite_blends(blends, 0.5, prose, "m", 0.9, fresh, seed=1)[1]["reason"]) == {"unparseable"}
    assert len(list((tmp_path / "fresh").glob("*.json"))) == 0
    prose.model, prose.temperature = "m", 0.2
    with pytest.raises(ValueError, match="temperature"):
        rewrite_blends(blends, 0.5, prose, "m", 0.9, fresh)
