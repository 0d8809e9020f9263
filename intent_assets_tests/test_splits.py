import pandas as pd
import pytest

from intent_assets.splits import assign_splits, split_counts, split_of


def frame(n, intents=("a", "b", "c")):
    return pd.DataFrame({"conversation_key": [f"k{i}" for i in range(n)], "intent": [intents[i % len(intents)] for i in range(n)]})


def test_split_is_a_pure_function_of_the_key():
    first = assign_splits(frame(3000))
    grown = assign_splits(pd.concat([frame(5000).iloc[3000:], frame(3000)]))  # new rows, other order
    merged = grown.set_index("conversation_key").loc[first["conversation_key"], "split"]
    assert list(merged) == list(first["split"])


def test_proportions_are_close_to_the_fractions_within_each_intent():
    table = split_counts(assign_splits(frame(9000)))
    shares = table.div(table.sum(axis=1), axis=0)
    assert ((shares["train"] - 0.8).abs() < 0.03).all()
    assert ((shares["test"] - 0.1).abs() < 0.03).all()


def test_a_conversation_is_in_exactly_one_split():
    rows = pd.DataFrame({"conversation_key": ["k1", "k1", "k2"], "intent": ["a", "b", "a"]})
    out = assign_splits(rows)
    assert out.groupby("conversation_key")["split"].nunique().max() == 1


def test_salt_changes_assignment_and_bad_fractions_fail():
    keys = [f"k{i}" for i in range(200)]
    assert [split_of(k) for k in keys] != [split_of(k, salt="other") for k in keys]
    with pytest.raises(ValueError, match="summing to 1"):
        split_of("k", (0.5, 0.2, 0.2))
