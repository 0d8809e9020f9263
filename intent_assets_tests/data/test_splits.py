import pandas as pd
import pytest

from intent_assets.data.splits import assign_splits, split_counts, split_of


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


# ----------------------------------------------------------------------------------- splits given by the input
from intent_assets.data.splits import normalize_split, resolve_splits  # noqa: E402


def given(splits, source="file names"):
    rows = frame(len(splits))
    return rows.assign(split=list(splits), split_source=[source if s else "" for s in splits])


@pytest.mark.parametrize("value, split", [("train", "train"), (" Train ", "train"), ("VAL", "validation"),
                                          ("dev", "validation"), ("validation", "validation"), ("test", "test"),
                                          ("holdout", None), ("", None), (None, None), (3, None)])
def test_split_names_an_input_may_use(value, split):
    assert normalize_split(value) == split


def test_without_a_given_split_the_hash_split_is_unchanged():
    rows = frame(500)
    out, aside, info = resolve_splits(rows.assign(split="", split_source=""))
    assert list(out["split"]) == list(assign_splits(rows)["split"]) and aside.empty
    assert info["split_source"] == "hash"
    # tables written before splits were read have no split column at all
    assert list(resolve_splits(rows)[0]["split"]) == list(assign_splits(rows)["split"])


def test_given_train_and_test_are_kept_and_validation_comes_out_of_train_only():
    rows = given(["train"] * 2000 + ["test"] * 300)
    out, aside, info = resolve_splits(rows, validation_share=0.1)
    assert aside.empty and len(out) == len(rows)
    assert list(out["split"].iloc[2000:]) == ["test"] * 300  # the official test set, whole and alone
    assert (out["split"].iloc[:2000] != "test").all()
    assert abs((out["split"].iloc[:2000] == "validation").mean() - 0.1) < 0.03
    assert info == {"split_source": "file names", "validation_source": "hash (10% of the given train rows)", "note": ""}
    # the carve-out is stable: the same rows, reordered, get the same splits
    again = resolve_splits(rows.iloc[::-1])[0].set_index("conversation_key")["split"]
    assert list(again.loc[out["conversation_key"]]) == list(out["split"])


def test_a_given_validation_split_is_kept_as_given():
    out, _, info = resolve_splits(given(["train"] * 50 + ["validation"] * 5 + ["test"] * 5, "input column"))
    assert out["split"].value_counts().to_dict() == {"train": 50, "validation": 5, "test": 5}
    assert info["split_source"] == info["validation_source"] == "input column"


def test_rows_without_a_split_beside_an_official_test_set_are_set_aside_with_a_reason():
    out, aside, _ = resolve_splits(given(["train", "test", "", "train"]))
    assert list(out["conversation_key"]) == ["k0", "k1", "k3"]
    assert list(aside["conversation_key"]) == ["k2"] and list(aside["field"]) == ["split"]
    assert "no split given" in aside["reason"].iloc[0]


def test_a_given_split_without_test_falls_back_to_the_hash_split():
    rows = given(["train"] * 300)  # e.g. Banking77's train.csv alone
    out, aside, info = resolve_splits(rows)
    assert list(out["split"]) == list(assign_splits(frame(300))["split"]) and aside.empty
    assert info["split_source"] == "hash" and "no test split" in info["note"]


def test_a_bad_validation_share_fails():
    with pytest.raises(ValueError, match="validation_share"):
        resolve_splits(given(["train", "test"]), validation_share=1.0)
