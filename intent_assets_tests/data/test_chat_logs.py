import gzip
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from intent_assets.data.chat_logs import (CHAT_LOG_COLUMNS, CHAT_LOG_SCHEMA, ChatLogLoadError, load_chat_logs,
                                          record_id, folds_for_test)
from intent_assets.paths import DEFAULT_CHAT_LOGS, SAMPLE_DIR


def msg(cid="c1", turn=0, **kw):
    rec = {"conversation_id": cid, "turn": turn, "timestamp": "2025-03-01T10:00:00Z", "speaker": "customer",
           "text": "I am still waiting on my card?", "intent": "card_arrival", "channel": "chat"}
    rec.update(kw)
    return rec


def write_jsonl(path, records, extra_lines=()):
    with open(path, "wb") as fh:
        for r in records:
            fh.write((json.dumps(r) + "\n").encode())
        for line in extra_lines:
            fh.write(line)
    return path


def reasons_by_record(result):
    return {r.record: (r.field, r.reason) for r in result.quarantined.itertuples()}


def test_valid_chat_logs_are_typed_and_reconcile(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [msg(turn=0, speaker="agent", text="Hello!", intent=""), msg(turn=1)])
    result = load_chat_logs(path)
    assert result.rows_in == 2 and len(result.valid) == 2 and result.quarantined.empty
    columns = ["record_id", *CHAT_LOG_COLUMNS, "split_source", "day"]
    assert list(result.valid.columns) == [*columns[:7], "intents", *columns[7:]]
    assert list(result.valid["intents"]) == [None, ["card_arrival"]] and list(result.valid["intent"]) == ["", "card_arrival"]
    assert result.valid["turn"].dtype == "int64"
    assert str(result.valid["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert result.valid.loc[1, "record_id"] == record_id("c1", 1)
    assert result.input_kind == "chat_logs"


@pytest.mark.parametrize(
    "record, field, reason",
    [
        (msg(text=None), "text", "missing value"),
        (msg(text="   "), "text", "text is empty"),
        ({k: v for k, v in msg().items() if k != "text"}, "text", "missing value"),
        (msg(speaker="bot"), "speaker", "speaker must be 'customer' or 'agent'"),
        (msg(turn=-1), "turn", "turn must be a non-negative integer"),
        (msg(turn="two"), "turn", "turn must be a non-negative integer"),
        (msg(timestamp="yesterday-ish"), "timestamp", "timestamp is not an ISO 8601 date-time"),
        (msg(text="x" * 100_000), "text", "text longer than 10000 characters"),
        (msg(intent=7), "intent", "intent must be a label or a list of labels (in text, a JSON list)"),
        (msg(intent=["card", 7]), "intent", "intent must be a label or a list of labels (in text, a JSON list)"),
        (msg(intent='["card", '), "intent", "intent must be a label or a list of labels (in text, a JSON list)"),
    ],
)
def test_bad_records_are_quarantined_with_field_and_reason(tmp_path, record, field, reason):
    path = write_jsonl(tmp_path / "a.jsonl", [msg(cid="good"), {**record, "conversation_id": "bad"}])
    result = load_chat_logs(path)
    assert list(result.valid["conversation_id"]) == ["good"]
    assert len(result.quarantined) == 1
    row = result.quarantined.iloc[0]
    assert (row["field"], row["reason"]) == (field, reason)
    assert row["source"] == "a.jsonl:2"
    assert result.rows_in == len(result.valid) + len(result.quarantined)


def test_max_text_chars_is_configurable(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [msg(text="y" * 200)])
    assert len(load_chat_logs(path).valid) == 1
    assert load_chat_logs(path, max_text_chars=100).quarantined.iloc[0]["field"] == "text"


def test_malformed_lines_non_utf8_and_duplicates(tmp_path):
    path = write_jsonl(
        tmp_path / "a.jsonl",
        [msg(turn=0), msg(turn=0), msg(turn=1)],
        [b'{"conversation_id": "c9", "turn": 0, "speaker": "customer", "text": "caf\xe9"}\n', b'{"conversation_id": oops\n', b"[1, 2]\n"],
    )
    result = load_chat_logs(path)
    got = reasons_by_record(result)
    assert len(result.valid) == 2
    assert got["c1/0"] == ("conversation_id,turn", "duplicate record: this conversation turn was already seen")
    assert got["a.jsonl:4"][1].startswith("not valid UTF-8")
    assert got["a.jsonl:5"][1].startswith("malformed JSON")
    assert got["a.jsonl:6"][1] == "expected a JSON object, got list"
    assert result.rows_in == 6 == len(result.valid) + len(result.quarantined)


def test_plain_labelled_csv_with_non_utf8_cell(tmp_path):
    path = tmp_path / "export.csv"
    path.write_bytes(b"text,label\nwhere is my card,card_arrival\ncaf\xe9 card,card_arrival\n,card_arrival\nwhere is my card,card_arrival\n")
    result = load_chat_logs(path)
    assert result.input_kind == "labelled"
    assert len(result.valid) == 1 and result.valid.loc[0, "speaker"] == "customer"
    assert result.valid.loc[0, "intent"] == "card_arrival"
    reasons = sorted(result.quarantined["reason"])
    assert reasons == sorted(["text is not valid UTF-8", "text is empty", "duplicate record: this conversation turn was already seen"])
    # the undecodable byte is shown as U+FFFD in the quarantine, never as a broken string
    assert "\ufffd" in result.quarantined.set_index("reason").loc["text is not valid UTF-8", "text"]


@pytest.mark.parametrize("label_column", ["intent", "label", "category"])
def test_plain_labelled_column_names(tmp_path, label_column):
    path = tmp_path / "d.csv"
    pd.DataFrame({"text": ["a b", "c d"], label_column: ["x", "y"]}).to_csv(path, index=False)
    assert list(load_chat_logs(path).valid["intent"]) == ["x", "y"]


def test_conversation_ids_of_labelled_rows_do_not_depend_on_row_order(tmp_path):
    a, b = tmp_path / "d.csv", tmp_path / "e" / "d.csv"
    b.parent.mkdir()
    pd.DataFrame({"text": ["one", "two"], "label": ["x", "y"]}).to_csv(a, index=False)
    pd.DataFrame({"text": ["two", "one"], "label": ["y", "x"]}).to_csv(b, index=False)
    ids = lambda p: dict(zip(load_chat_logs(p).valid["text"], load_chat_logs(p).valid["conversation_id"]))  # noqa: E731
    assert ids(a) == ids(b)


def test_parquet_gzip_and_folder_inputs(tmp_path):
    pd.DataFrame([msg(cid="p1")]).to_parquet(tmp_path / "a.parquet")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as fh:
        fh.write(json.dumps(msg(cid="g1")) + "\n")
    result = load_chat_logs(tmp_path)
    assert sorted(result.valid["conversation_id"]) == ["g1", "p1"]
    assert len(result.files) == 2


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.parquet", b"not parquet at all", "malformed Parquet"),
        ("bad.csv", b'text,label\n"unterminated,x\n', "malformed CSV"),
        ("cols.csv", b"message,who\nhi,me\n", "no 'text' column"),
        ("nolabel.csv", b"text,who\nhi,me\n", "neither chat logs"),
        ("bad.json", b"{not json", "malformed JSON"),
        ("notes.txt", b"hello", "unsupported format"),
    ],
)
def test_unreadable_files_raise_an_error_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ChatLogLoadError, match=message) as info:
        load_chat_logs(path)
    assert name in str(info.value)


def test_missing_location_is_a_clear_error(tmp_path):
    with pytest.raises(ChatLogLoadError, match="no such file"):
        load_chat_logs(tmp_path / "nope.jsonl")


def test_limit_keeps_first_records(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [msg(turn=i) for i in range(5)])
    result = load_chat_logs(path, limit=3)
    assert result.rows_in == 3 and list(result.valid["turn"]) == [0, 1, 2]


def test_shipped_sample_and_plain_file_load_cleanly():
    sample = load_chat_logs(DEFAULT_CHAT_LOGS)
    assert sample.quarantined.empty and sample.input_kind == "chat_logs"
    assert (sample.valid["intent"] != "").sum() > 0
    plain = load_chat_logs(SAMPLE_DIR / "plain_labelled.csv")
    assert plain.input_kind == "labelled" and plain.quarantined.empty and len(plain.valid) > 0


# ------------------------------------------------------------------------------------------ splits in the input
def test_a_split_column_is_normalized_and_any_other_value_quarantined(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("text,label,split\na,x,Train\nb,x, VAL \nc,x,dev\nd,y,test\ne,y,holdout\nf,y,\n")
    result = load_chat_logs(path)
    assert result.rows_in == 6 == len(result.valid) + len(result.quarantined)
    assert dict(zip(result.valid["text"], result.valid["split"])) == {
        "a": "train", "b": "validation", "c": "validation", "d": "test", "f": ""}
    assert dict(zip(result.valid["text"], result.valid["split_source"]))["a"] == "input column"
    assert dict(zip(result.valid["text"], result.valid["split_source"]))["f"] == ""
    bad = result.quarantined.iloc[0]
    assert (bad["field"], bad["source"], bad["split"]) == ("split", "export.csv:6", "holdout")
    assert bad["reason"] == "split must be train, validation (or val, dev) or test"


def test_a_split_column_in_chat_logs(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [msg(cid="c1", split="test"), msg(cid="c2", split=7), msg(cid="c3")])
    result = load_chat_logs(path)
    assert dict(zip(result.valid["conversation_id"], result.valid["split"])) == {"c1": "test", "c3": ""}
    assert reasons_by_record(result)["c2/0"][0] == "split"


def test_file_names_give_the_split_when_there_is_no_split_column(tmp_path):
    # Banking77's layout: train.csv and test.csv, text + category, no split column
    (tmp_path / "train.csv").write_text("text,category\nwhere is my card,card_arrival\nI lost my card,lost_card\n")
    (tmp_path / "test.csv").write_text("text,category\nwhere is my card,card_arrival\n")
    (tmp_path / "extra.csv").write_text("text,category\nmore text,card_arrival\n")
    (tmp_path / "dev.jsonl").write_text(json.dumps(msg(cid="d1")) + "\n")
    result = load_chat_logs(tmp_path)
    got = {(t, s, src) for t, s, src in zip(result.valid["text"], result.valid["split"], result.valid["split_source"])}
    assert got == {("where is my card", "train", "file names"), ("I lost my card", "train", "file names"),
                   ("where is my card", "test", "file names"), ("more text", "", ""),
                   ("I am still waiting on my card?", "validation", "file names")}
    assert result.quarantined.empty  # the same text in train.csv and test.csv is two records


def test_a_split_column_wins_over_the_file_name(tmp_path):
    path = tmp_path / "test.csv"
    path.write_text("text,label,split\na,x,train\n")
    assert list(load_chat_logs(path).valid["split"]) == ["train"]


def test_clinc150_keys_give_the_split_and_the_same_text_in_two_splits_is_two_records(tmp_path):
    path = tmp_path / "data_full.json"
    path.write_text(json.dumps({
        "train": [["what is my balance", "balance"], ["where did you grow up", "how_old_are_you"]],
        "val": [["balance please", "balance"]],
        "test": [["where did you grow up", "where_are_you_from"]],
        "oos_train": [["fly me to mars", "oos"]], "oos_val": [["sing", "oos"]], "oos_test": [["dance", "oos"]],
        "extra": [["stray", "balance"]],
    }))
    result = load_chat_logs(path)
    got = sorted(zip(result.valid["text"], result.valid["intent"], result.valid["split"]))
    assert got == sorted([
        ("what is my balance", "balance", "train"), ("where did you grow up", "how_old_are_you", "train"),
        ("balance please", "balance", "validation"), ("where did you grow up", "where_are_you_from", "test"),
        ("fly me to mars", "oos", "train"), ("sing", "oos", "validation"), ("dance", "oos", "test")])
    assert set(result.valid["split_source"]) == {"input column"}
    bad = result.quarantined.iloc[0]
    assert len(result.quarantined) == 1 and (bad["field"], bad["source"]) == ("split", "data_full.json:extra[0]")
    assert result.rows_in == 8 == len(result.valid) + len(result.quarantined)


def test_conversation_ids_without_a_split_are_unchanged(tmp_path):
    """The hash split of a file without splits must not move: its conversation ids are as before."""
    path = tmp_path / "d.csv"
    pd.DataFrame({"text": ["one"], "label": ["x"]}).to_csv(path, index=False)
    import hashlib

    assert load_chat_logs(path).valid.loc[0, "conversation_id"] == "d-" + hashlib.sha256(b"one").hexdigest()[:12]


def test_a_text_repeated_in_a_given_split_is_kept_as_two_records(tmp_path):
    (tmp_path / "test.csv").write_text("text,category\nwhere is my card,card_arrival\nwhere is my card,card_arrival\n")
    result = load_chat_logs(tmp_path / "test.csv")
    assert result.quarantined.empty and list(result.valid["split"]) == ["test", "test"]
    assert result.valid["conversation_id"].nunique() == 2


def test_a_label_list_in_a_folder_is_skipped_and_named_alone_it_is_an_error(tmp_path):
    (tmp_path / "test.csv").write_text("text,category\nwhere is my card,card_arrival\n")
    (tmp_path / "categories.json").write_text(json.dumps(["card_arrival", "lost_card"]))
    result = load_chat_logs(tmp_path)
    assert len(result.valid) == 1 and [p.split("/")[-1] for p in result.skipped] == ["categories.json"]
    with pytest.raises(ChatLogLoadError, match="categories.json: a list of 2 label names"):
        load_chat_logs(tmp_path / "categories.json")


# ------------------------------------------------------------------------------------------------ daily partitions
def test_a_day_reads_only_its_files_and_records_and_every_record_has_a_day(tmp_path):
    from intent_assets.data.days import Calendar

    folder = tmp_path / "landing"
    folder.mkdir()
    write_jsonl(folder / "2025-03-01.jsonl", [msg("a", 0), msg("a", 1, timestamp=None)])
    write_jsonl(folder / "2025-03-02.jsonl", [msg("b", 0, timestamp="2025-03-02T08:00:00Z")], [b"{broken\n"])
    (folder / "2025-03-03.jsonl").write_bytes(b"\xff not even opened")  # another day: never read
    write_jsonl(folder / "history.jsonl", [msg("h", 0, timestamp="2025-03-02T09:00:00Z"), msg("h", 1, timestamp="")])
    calendar = Calendar(first="2025-01-01", last="2025-03-31")

    result = load_chat_logs(folder, days=["2025-03-02"], calendar=calendar)
    assert sorted(result.valid["record_id"]) == sorted([record_id("b", 0), record_id("h", 0)])
    assert set(result.valid["day"]) == {"2025-03-02"} and list(result.quarantined["day"]) == ["2025-03-02"]
    assert result.rows_in == 3 == len(result.valid) + len(result.quarantined)
    assert not any(f.endswith("2025-03-03.jsonl") for f in result.files)

    first = load_chat_logs(folder, days=["2025-01-01"], calendar=calendar)  # the undated record of history.jsonl
    assert list(first.valid["record_id"]) == [record_id("h", 1)] and list(first.valid["day"]) == ["2025-01-01"]


def test_a_timestamp_outside_the_calendar_is_quarantined_not_dropped(tmp_path):
    from intent_assets.data.days import OUTSIDE_CALENDAR, Calendar

    path = write_jsonl(tmp_path / "a.jsonl", [msg("a", 0), msg("a", 1, timestamp="2030-01-01T00:00:00Z")])
    result = load_chat_logs(path, calendar=Calendar(first="2025-01-01", last="2025-12-31"))
    assert result.rows_in == 2 and len(result.valid) == 1
    assert reasons_by_record(result) == {"a/1": ("timestamp", OUTSIDE_CALENDAR)}
    assert list(result.quarantined["day"]) == ["2025-12-31"]  # the nearest partition counts it


def test_data_days_lists_the_days_that_hold_records(tmp_path):
    from intent_assets.data.chat_logs import data_days
    from intent_assets.data.days import Calendar

    calendar = Calendar(first="2025-01-01", last="2025-12-31")
    assert data_days(SAMPLE_DIR / "plain_labelled.csv", calendar) == ["2025-01-01"]  # undated: the first day
    folder = tmp_path / "landing"
    folder.mkdir()
    write_jsonl(folder / "2025-03-01.jsonl", [msg("a", 0)])
    (folder / "2025-03-05.jsonl").write_bytes(b"\xff named: not opened")
    write_jsonl(folder / "history.jsonl", [msg("h", 0, timestamp="2025-02-10T09:00:00Z")])
    assert data_days(folder, calendar) == ["2025-02-10", "2025-03-01", "2025-03-05"]


def test_a_dated_file_owns_its_records_whatever_their_timestamps(tmp_path):
    """A day's export may hold a message stamped just before midnight of the day before: it is the file's day's,
    so the run of that earlier day (which does not open the file) cannot lose it."""
    from intent_assets.data.days import Calendar

    folder = tmp_path / "landing"
    folder.mkdir()
    write_jsonl(folder / "2025-03-02.jsonl", [msg("late", 0, timestamp="2025-03-01T23:59:00Z"), msg("b", 0)])
    calendar = Calendar(first="2025-01-01", last="2025-03-31")
    assert load_chat_logs(folder, days=["2025-03-01"], calendar=calendar).rows_in == 0
    day = load_chat_logs(folder, days=["2025-03-02"], calendar=calendar)
    assert day.rows_in == 2 == len(day.valid) and set(day.valid["day"]) == {"2025-03-02"}


def test_a_label_field_may_hold_a_list_of_intents_in_every_format(tmp_path):
    """A multi-intent message: a JSON list (JSONL, Parquet list column) or, in text, a JSON list; in the order
    written, a repeat once; [] is labelled with no intent, a missing label is unlabelled."""
    records = [msg(turn=0, intent=["card", "lost_stolen", "card"]), msg(turn=1, intent=[]), msg(turn=2, intent=None),
               msg(turn=3, intent="card"), msg(turn=4, intent=' ["fees_interests", "transfer_payment_deposit"] ')]
    want = [["card", "lost_stolen"], [], None, ["card"], ["fees_interests", "transfer_payment_deposit"]]
    jsonl = load_chat_logs(write_jsonl(tmp_path / "a.jsonl", records)).valid
    assert list(jsonl["intents"]) == want and list(jsonl["intent"]) == ["card", "", "", "card", "fees_interests"]

    csv = tmp_path / "export.csv"
    pd.DataFrame({"text": ["lost my card", "hi", "card please"],
                  "labels": ['["card", "lost_stolen"]', "[]", "card"]}).to_csv(csv, index=False)
    assert list(load_chat_logs(csv).valid["intents"]) == [["card", "lost_stolen"], [], ["card"]]

    parquet = tmp_path / "export.parquet"
    pd.DataFrame({"text": ["lost my card", "hi"], "intents": [["card", "lost_stolen"], []]}).to_parquet(parquet)
    valid = load_chat_logs(parquet).valid
    assert [list(v) for v in valid["intents"]] == [["card", "lost_stolen"], []]
    # what raw_chat_logs stores reads back valid (a Parquet list column comes back as arrays)
    stored = tmp_path / "stored.parquet"
    valid.to_parquet(stored)
    CHAT_LOG_SCHEMA.validate(pd.read_parquet(stored))


def test_nlupp_fold_files_are_read_with_their_intent_sets_and_the_last_two_folds_as_test(tmp_path):
    """NLU++'s layout: foldK.json, a JSON list of records, no ``intents`` key when a message carries none."""
    for k in range(4):
        (tmp_path / f"fold{k}.json").write_text(json.dumps([
            {"text": f"I lost my card {k}", "intents": ["card", "lost_stolen"],
             "slots": {"date": {"text": "May", "span": [0, 3], "value": "x"}}},
            {"text": f"hello there {k}"},
        ]))
    result = load_chat_logs(tmp_path)
    valid = result.valid
    assert result.input_kind == "labelled" and len(valid) == 8 and result.quarantined.empty
    assert list(valid["intents"][:2]) == [["card", "lost_stolen"], []]
    by_file = dict(zip(valid["conversation_id"].str.split("-").str[0], valid["split"]))
    assert by_file == {"fold0": "train", "fold1": "train", "fold2": "test", "fold3": "test"}
    assert set(valid["split_source"]) == {"fold files"}
    assert folds_for_test([tmp_path / f"fold{k}.json" for k in range(16)]) == {14, 15}
    assert folds_for_test([tmp_path / "fold0.json", tmp_path / "fold1.json"]) == set()  # all would be test: no split
    assert set(load_chat_logs(tmp_path, test_fold_count=1).valid["split"]) == {"train", "test"}
    assert (load_chat_logs(tmp_path, test_fold_count=1).valid["split"] == "test").sum() == 2


def test_the_shipped_nlupp_banking_folds_load_whole(tmp_path):
    folder = Path(os.environ.get("NLUPP_DIR", "/work/shared/data/nlupp")) / "data" / "banking"
    if not folder.exists():
        pytest.skip("NLU++ is not beside this checkout")
    result = load_chat_logs(folder)
    valid = result.valid
    assert result.rows_in == 1658 and len(valid) + len(result.quarantined) == 1658
    sizes = valid["intents"].map(len).value_counts().to_dict()
    assert sizes[0] >= 70 and sizes[2] >= 500 and max(sizes) == 6  # README: 73 / 432 / 512 / ... / 17 with six
    assert (valid["split"] == "test").sum() > 150
