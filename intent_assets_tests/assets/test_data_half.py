"""The data half of the graph materialized in-process, on a tiny configuration and on the shipped sample."""

import json
import re

import dagster as dg
import pandas as pd
import pytest

from intent_assets.assets.common import days_of_run_config, partition_range_tags
from intent_assets.data.chat_logs import record_id
from intent_assets.data.multi_intent import REWRITE_SYSTEM
from intent_assets.definitions import CORRECTION_ASSETS, DATA_ASSETS, DATA_CHECKS
from intent_assets.paths import DEFAULT_CHAT_LOGS, SAMPLE_DIR
from intent_assets.resources import LocalTableIOManager, ParaphraseLLM, local_resources
from intent_assets_tests.assets.materializations import output_meta
from intent_assets_tests.openai_server import CannedOpenAIServer, make_paraphrase_responder


def materialize(root, run_config=None, llm=None):
    resources = local_resources(root)
    if llm is not None:
        resources["paraphrase_llm"] = llm
    result = dg.materialize([*DATA_ASSETS, *CORRECTION_ASSETS, *DATA_CHECKS], resources=resources, run_config=run_config or {},
                            tags=days_of_run_config(run_config))
    assert result.success
    return result


def meta(result, asset):
    mats = result.asset_materializations_for_node(asset)
    return {k: v.value for m in mats for k, v in m.metadata.items()}


def test_tiny_run_with_paraphrases_from_a_loopback_server(data_root):
    """Whole data half on 400 records; paraphrases from the canned-response OpenAI-compatible server on 127.0.0.1."""
    chats = pd.read_json(DEFAULT_CHAT_LOGS, lines=True)
    labelled = chats[chats["intent"] != ""]
    # canned paraphrases: real utterances of the same intents from beyond the tiny slice (PII-free ones)
    tail = labelled.iloc[2000:]
    canned = {i: list(g["text"].head(3)) for i, g in tail.groupby("intent")}
    config = {"ops": {"raw_chat_logs": {"config": {"limit": 400}}, "synthetic_augments": {"config": {"min_examples": 4, "max_share": 0.5}}}}
    with CannedOpenAIServer(make_paraphrase_responder(canned), api_key="test-key") as server:
        llm = ParaphraseLLM(api_key="test-key", base_url=server.base_url, model="canned-model")
        result = materialize(data_root, config, llm)
        first_requests = len(server.requests)
        # re-materializing asks nothing of the server: responses are cached by prompt hash
        materialize(data_root, config, llm)
        assert len(server.requests) == first_requests

    raw = output_meta(result, "raw_chat_logs")
    assert raw["run_rows_in"] == 400 == raw["run_rows_out"] + raw["run_rows_quarantined"]
    augments = pd.read_parquet(data_root / "redacted" / "synthetic_augments.parquet")
    assert first_requests > 0 and len(augments) > 0
    assert set(augments["reason"]) >= {"accepted", "duplicate_of_existing", "contains_pii"}
    assert not augments.loc[augments["accepted"], "text"].str.contains("@").any()
    splits = pd.read_parquet(data_root / "redacted" / "dataset_splits.parquet")
    train_counts = splits[splits["split"] == "train"]["intent"].value_counts()
    accepted = augments[augments["accepted"]]["intent"].value_counts()
    for intent, n in accepted.items():
        assert n <= int(0.5 * train_counts[intent])
    records = pd.read_parquet(data_root / "redacted" / "instruction_dataset.parquet")
    assert records["synthetic"].sum() == accepted.sum()
    assert set(records.loc[records["synthetic"], "split"]) == {"train"}
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"redacted_corpus_has_no_pii": True, "raw_chat_logs_schema": True,
                      "quarantine_share_within_limit": True, "synthetic_share_within_cap": True}


def test_without_credentials_augments_are_empty_and_say_why(data_root, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = materialize(data_root, {"ops": {"raw_chat_logs": {"config": {"limit": 200}}}})
    info = output_meta(result, "synthetic_augments")
    assert info["rows_accepted"] == 0 and "no API key" in info["skipped"]
    assert len(pd.read_parquet(data_root / "redacted" / "instruction_dataset.parquet")) > 0


def test_a_plain_labelled_file_runs_through_by_config_only(data_root):
    result = materialize(data_root, {"ops": {"raw_chat_logs": {"config": {"path": str(SAMPLE_DIR / "plain_labelled.csv")}}}})
    assert output_meta(result, "raw_chat_logs")["input_kind"] == "labelled"
    assert output_meta(result, "instruction_dataset")["rows_total"] > 0


def test_bad_input_is_quarantined_and_unknown_labels_kept_out(data_root, tmp_path):
    path = tmp_path / "logs.jsonl"
    good = {"timestamp": "2025-01-01T00:00:00Z", "speaker": "customer", "channel": "chat"}
    rows = [
        {**good, "conversation_id": f"c{i}", "turn": 0, "text": t, "intent": "card_arrival"}
        for i, t in enumerate(["where is my new card", "my card has not arrived yet", "card still not delivered, waiting 2 weeks"])
    ]
    rows += [
        {**good, "conversation_id": "u1", "turn": 0, "text": "please beam me up", "intent": "teleport"},
        {**good, "conversation_id": "e1", "turn": 0, "text": "", "intent": "card_arrival"},
        {**good, "conversation_id": "c0", "turn": 0, "text": "where is my new card", "intent": "card_arrival"},
        {**good, "conversation_id": "l1", "turn": 0, "text": "x" * 100_000, "intent": "card_arrival"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")
    result = materialize(data_root, {"ops": {"raw_chat_logs": {"config": {"path": str(path)}}}})
    raw = output_meta(result, "raw_chat_logs")
    assert (raw["run_rows_in"], raw["run_rows_out"], raw["run_rows_quarantined"]) == (8, 4, 4)
    quarantined = LocalTableIOManager(base_dir=str(data_root / "raw")).load_table("quarantined_records")
    assert sorted(quarantined["field"]) == sorted(["<line>", "conversation_id,turn", "text", "text"])
    labels = pd.read_parquet(data_root / "redacted" / "quarantined_labels.parquet")
    assert list(labels["intent"]) == ["teleport"] and "not in taxonomy" in labels.loc[0, "reason"]
    splits = output_meta(result, "dataset_splits")
    assert splits["rows_quarantined"] == 1 and splits["rows_out"] == 3


@pytest.fixture(scope="module")
def shipped_sample_run(tmp_path_factory, tokenizer_dir):
    import shutil

    root = tmp_path_factory.mktemp("sample") / "data"
    shutil.copytree(tokenizer_dir, root / "artifacts" / "base_model" / "tokenizer")
    return root, materialize(root)


def _leaked_values(texts: str, manifest: pd.DataFrame, clean_vocabulary: set[str]) -> list[str]:
    leaks = []
    words = {w.lower() for w in re.findall(r"[A-Za-z][A-Za-z'\-]+", texts)}
    for value, kind in zip(manifest["value"], manifest["entity_type"]):
        if value in texts:
            leaks.append(f"{kind}")
        if kind == "PERSON":
            for token in re.findall(r"[A-Za-z][A-Za-z'\-]+", value):
                if token.lower() not in clean_vocabulary and token.lower() in words:
                    leaks.append(f"{kind} token")
    return leaks


def test_shipped_sample_no_inserted_pii_reaches_instruction_dataset(shipped_sample_run):
    root, _ = shipped_sample_run
    manifest = pd.read_json(SAMPLE_DIR / "banking77_pii_manifest.jsonl", lines=True)
    chats = pd.read_json(DEFAULT_CHAT_LOGS, lines=True)
    # words of the messages outside the inserted spans are not PII even when they equal a name ("Will", "Mark")
    spans = manifest.groupby(["conversation_id", "turn"])[["start", "end"]].apply(lambda g: sorted(zip(g["start"], g["end"])))
    clean = set()
    for conv, turn, text in zip(chats["conversation_id"], chats["turn"], chats["text"]):
        for start, end in reversed(spans.get((conv, turn), [])):
            text = text[:start] + " " + text[end:]
        clean.update(w.lower() for w in re.findall(r"[A-Za-z][A-Za-z'\-]+", text))
    files = sorted((root / "artifacts" / "instruction_dataset").glob("*.jsonl"))
    assert len(files) == 3
    texts = "\n".join(json.loads(line)["messages"][1]["content"] for f in files for line in f.read_text().splitlines())
    assert len(manifest) > 1000
    leaks = _leaked_values(texts, manifest, clean)
    assert leaks == [], f"{len(leaks)} inserted PII values reached instruction_dataset: {pd.Series(leaks).value_counts().to_dict()}"


def test_shipped_sample_counts_reconcile(shipped_sample_run):
    _, result = shipped_sample_run
    raw = output_meta(result, "raw_chat_logs")
    assert raw["run_rows_in"] == raw["run_rows_out"] + raw["run_rows_quarantined"]
    # every day's own materialization carries that day's counts, and they reconcile day by day
    days = [{k: v.value for k, v in m.metadata.items()} for m in result.asset_materializations_for_node("raw_chat_logs")
            if m.asset_key == dg.AssetKey("raw_chat_logs")]
    assert len(days) == raw["days"] == 363 and all(d["reconciles"] for d in days)
    assert sum(d["rows_in"] for d in days) == raw["run_rows_in"] and sum(d["dagster/row_count"] for d in days) == raw["run_rows_out"]
    corpus = output_meta(result, "redacted_corpus")
    assert corpus["run_reconciles"] and corpus["pii_spans_total"] > 1000
    splits = output_meta(result, "dataset_splits")
    assert splits["reconciles"] and splits["intents_present"] == 77
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"redacted_corpus_has_no_pii": True, "raw_chat_logs_schema": True,
                      "quarantine_share_within_limit": True, "synthetic_share_within_cap": True}


# --------------------------------------------------------------------- another data set: one path, its own splits
def _csv(path, rows):
    pd.DataFrame(rows, columns=["text", "category"]).to_csv(path, index=False)


def test_a_labelled_folder_with_train_and_test_files_switches_by_one_path(data_root, tmp_path, monkeypatch):
    """Banking77's layout (train.csv, test.csv, no split column) with labels no shipped taxonomy knows: the
    taxonomy is derived, the files' names are the splits, validation comes out of train, test stays whole."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    folder = tmp_path / "weather_bot"
    folder.mkdir()
    topics = {"rain_forecast": "will it rain", "snow_forecast": "is snow coming", "wind_speed": "how windy is it"}
    places = ["in the park", "at the beach", "near the school", "on the hill", "by the river", "in town",
              "at the lake", "over the bridge", "in the valley", "on the coast"]
    _csv(folder / "train.csv", [(f"{q} {p} tomorrow", label) for label, q in topics.items() for p in places])
    test_rows = [(f"{q} {p} tonight", label) for label, q in topics.items() for p in places[:3]]
    test_rows += [test_rows[0], ("will it rain in the park tomorrow", "rain_forecast")]  # a duplicate, a train text
    _csv(folder / "test.csv", test_rows)
    _csv(folder / "more.csv", [("windy on the pier?", "wind_speed")])  # no split: set aside, never hashed into test

    result = materialize(data_root, {"ops": {"raw_chat_logs": {"config": {"path": str(folder)}}}})
    taxonomy = output_meta(result, "intent_taxonomy")
    assert (taxonomy["taxonomy_source"], taxonomy["descriptions"], taxonomy["mode"]) == ("derived", "derived", "auto")
    assert taxonomy["name"] == "weather_bot" and taxonomy["version"].startswith("derived-") and taxonomy["intents"] == 3
    info = output_meta(result, "dataset_splits")
    assert (info["split_source"], info["validation_source"]) == ("file names", "hash (10% of the given train rows)")
    assert info["reconciles"] and info["rows_quarantined"] == 1
    assert info["rows_test"] == len(test_rows) == 11  # the official test set, duplicates included
    splits = pd.read_parquet(data_root / "redacted" / "dataset_splits.parquet")
    assert set(splits.loc[splits["split"] == "validation", "text"]) <= {t for t, _ in pd.read_csv(folder / "train.csv").values}
    assert info["rows_validation"] > 0 and info["rows_train"] + info["rows_validation"] == 30
    aside = pd.read_parquet(data_root / "redacted" / "quarantined_labels.parquet")
    assert list(aside["text"]) == ["windy on the pier?"] and list(aside["field"]) == ["split"]
    prompt = json.loads(pd.read_parquet(data_root / "redacted" / "instruction_dataset.parquet")["messages"].iloc[0])[0]["content"]
    # the default compact prompt names the derived taxonomy and lists no intent (the labels travel with the model)
    assert f"weather_bot v{taxonomy['version']} " in prompt and "- rain_forecast" not in prompt


def test_clinc150_layout_uses_its_split_keys_and_the_shipped_taxonomy(data_root, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    questions = {"translate": "how do you say {} in french", "weather": "what is the weather like in {}",
                 "timer": "set a timer for {} minutes"}
    words = ["cat", "dog", "house", "paris", "rome", "oslo", "five", "ten", "twelve", "madrid", "tree", "lima"]
    pairs = lambda ws: [[q.format(w), label] for label, q in questions.items() for w in ws]  # noqa: E731
    path = tmp_path / "data_full.json"
    path.write_text(json.dumps({
        "train": pairs(words[:8]), "val": pairs(words[8:10]), "test": pairs(words[10:]),
        "oos_train": [["sing me a song about boats", "oos"]], "oos_val": [["who won the game", "oos"]],
        "oos_test": [["book me a haircut", "oos"], ["what is love", "oos"]],
        "unlabelled_extras": [["stray line", "timer"]],
    }))
    result = materialize(data_root, {"ops": {"raw_chat_logs": {"config": {"path": str(path)}}}})
    raw = output_meta(result, "raw_chat_logs")
    assert (raw["run_rows_in"], raw["run_rows_quarantined"]) == (41, 1)
    quarantined = LocalTableIOManager(base_dir=str(data_root / "raw")).load_table("quarantined_records")
    assert list(quarantined["field"]) == ["split"] and list(quarantined["split"]) == ["unlabelled_extras"]
    taxonomy = output_meta(result, "intent_taxonomy")
    assert (taxonomy["name"], taxonomy["taxonomy_source"], taxonomy["descriptions"]) == ("clinc150", "file", "given")
    info = output_meta(result, "dataset_splits")
    assert (info["split_source"], info["validation_source"]) == ("input column", "input column")
    assert (info["rows_train"], info["rows_validation"], info["rows_test"]) == (25, 7, 8)
    splits = pd.read_parquet(data_root / "redacted" / "dataset_splits.parquet")
    assert sorted(splits.loc[splits["intent"] == "oos", "split"]) == ["test", "test", "train", "validation"]


# ------------------------------------------------------------------------------ daily partitions, one day at a time
DAILY_KEYS = ["raw_chat_logs", "quarantined_records", "redacted_corpus", "pii_audit_log"]


def _materialize_days(root, folder, first, last=None, instance=None):
    resources = local_resources(root)
    return dg.materialize([*DATA_ASSETS, *CORRECTION_ASSETS, *DATA_CHECKS], selection=DAILY_KEYS, resources=resources, instance=instance,
                          run_config={"ops": {"raw_chat_logs": {"config": {"path": str(folder)}}}},
                          tags=partition_range_tags(first, last or first))


def test_a_new_day_is_processed_alone_and_deduplicated_against_every_earlier_day(data_root, tmp_path):
    chats = pd.read_json(DEFAULT_CHAT_LOGS, lines=True, dtype=False, convert_dates=False)
    day1 = chats[chats["timestamp"].str.startswith("2025-01-01")]
    day2 = chats[chats["timestamp"].str.startswith("2025-01-02")]
    repeated = day1[(day1["speaker"] == "customer") & (day1["intent"] != "")].head(3)
    # the same customer words on the next day, in new conversations: an exact and a near repeat of history
    again = repeated.assign(conversation_id=["again-1", "again-2", "again-3"], timestamp="2025-01-02T12:00:00Z")
    again.loc[again.index[2], "text"] = again["text"].iloc[2] + "!!"
    folder = tmp_path / "landing"
    folder.mkdir()
    day1.to_json(folder / "2025-01-01.jsonl", orient="records", lines=True)
    pd.concat([day2, again]).to_json(folder / "2025-01-02.jsonl", orient="records", lines=True)

    with dg.instance_for_test() as instance:
        first = _materialize_days(data_root, folder, "2025-01-01", instance=instance)
        assert first.success
        second = _materialize_days(data_root, folder, "2025-01-02", instance=instance)
        assert second.success
        raw = output_meta(second, "raw_chat_logs")
        assert raw["rows_in"] == len(day2) + 3 == raw["rows_out"] + raw["rows_quarantined"]  # day 2 only
        corpus = output_meta(second, "redacted_corpus")
        assert corpus["rows_in"] == len(day2) + 3 and corpus["reconciles"]
        assert corpus["dedup_index_messages_before"] == output_meta(first, "redacted_corpus")["dedup_index_messages_after"]
        raw_io, redacted_io = (LocalTableIOManager(base_dir=str(data_root / d)) for d in ("raw", "redacted"))
        stored = redacted_io.load_table("redacted_corpus", ["2025-01-02"])
        ids = {record_id(c, t) for c, t in zip(again["conversation_id"], again["turn"])}
        assert not ids & set(stored["record_id"]), "the repeats of day 1 were removed from day 2"
        assert corpus["duplicates_removed"] >= 3
        by_day = {r.data["day"]: r.data for r in second.asset_materializations_for_node("redacted_corpus")[0]
                  .metadata["by_day"].value.records}
        assert set(by_day) == {"2025-01-02"} and by_day["2025-01-02"]["rows_in"] == corpus["rows_in"]

        # day 1 again (a re-run after a fix): its own entries leave the index first, so it keeps what it kept
        rerun = _materialize_days(data_root, folder, "2025-01-01", instance=instance)
        assert output_meta(rerun, "redacted_corpus")["rows_out"] == output_meta(first, "redacted_corpus")["rows_out"]
        assert output_meta(rerun, "redacted_corpus")["dedup_index_entries_replaced"] > 0
        # each day is its own object; the audit log and the raw table reconcile per day and in total
        assert sorted(p.name for p in (data_root / "raw" / "raw_chat_logs").iterdir()) == ["2025-01-01.parquet", "2025-01-02.parquet"]
        assert len(redacted_io.load_table("pii_audit_log")) == len(raw_io.load_table("raw_chat_logs")) == len(day1) + len(day2) + 3
        checks = {c.check_name: c.passed for c in second.get_asset_check_evaluations()}
        assert checks == {"redacted_corpus_has_no_pii": True, "raw_chat_logs_schema": True, "quarantine_share_within_limit": True}


def test_nlupp_fold_files_load_through_the_path_switch_and_train_on_label_sets(data_root, tmp_path):
    """NLU++'s layout through raw_chat_logs' path (its ontology as the taxonomy): label sets are stored per message,
    the last two folds are the test split, and the instruction dataset answers every record with its whole label
    set (an empty list for a message that carries none), blends included."""
    folds = tmp_path / "nlupp" / "data" / "banking"
    folds.mkdir(parents=True)
    texts = [["I lost my card yesterday and want to freeze it", "how much is the fee for an international transfer",
              "hello", "my card is not working at the shop", "I need to send 50 to my brother"],
             ["my wallet was stolen with the card inside, block it", "what do you charge to send money to Spain",
              "good morning", "the card got declined at the supermarket", "pay my landlord the rent today"],
             ["someone took my debit card, please cancel it", "is there a cost for paying a supplier abroad",
              "hi there", "why does my card keep failing", "move money to my savings account"],
             ["card missing since the trip, can you stop it", "fees on a transfer to a bank in Canada?",
              "hey", "my plastic is refused everywhere", "can I wire cash to my mum"]]
    sets = [["card", "lost_stolen"], ["fees_interests", "international", "transfer_payment_deposit"], None, ["card"],
            ["transfer_payment_deposit"]]
    for k in range(4):
        (folds / f"fold{k}.json").write_text(json.dumps(
            [{"text": t, **({"intents": s} if s else {})} for t, s in zip(texts[k], sets)]))
    ontology = tmp_path / "nlupp" / "data" / "ontology.json"
    names = sorted({n for s in sets if s for n in s})
    ontology.write_text(json.dumps({"intents": {n: {"description": n.replace("_", " "), "domain": ["banking"]}
                                                for n in names}}))
    config = {"ops": {"raw_chat_logs": {"config": {"path": str(folds)}},
                      "intent_taxonomy": {"config": {"path": str(ontology)}}}}
    resources = local_resources(data_root)
    data = dg.materialize([*DATA_ASSETS, *CORRECTION_ASSETS, *DATA_CHECKS], resources=resources, run_config=config,
                          tags=days_of_run_config(config),
                          selection=[*DAILY_KEYS, "intent_taxonomy"])
    assert data.success
    raw = output_meta(data, "raw_chat_logs")
    assert raw["messages_with_several_intents"] == 8 and raw["messages_labelled_with_no_intent"] == 4
    stored = LocalTableIOManager(base_dir=str(data_root / "raw")).load_table("raw_chat_logs")
    assert [list(v) for v in stored["intents"][:5]] == [s or [] for s in sets]
    assert stored.groupby("split")["conversation_id"].apply(lambda c: sorted(set(c.str[:5]))).to_dict() == {
        "test": ["fold2", "fold3"], "train": ["fold0", "fold1"]}
    redacted = LocalTableIOManager(base_dir=str(data_root / "redacted")).load_table("redacted_corpus")
    assert "intents" in redacted and output_meta(data, "intent_taxonomy")["intents"] == len(names)

    rest = dg.AssetSelection.all() - dg.AssetSelection.assets(*DAILY_KEYS, "intent_taxonomy")
    replies = []

    def rewrite(body: dict) -> str:  # the paraphrase endpoint: rewrites blends (one with PII, one too short)
        system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
        if system != REWRITE_SYSTEM:
            return "Reasoning only, no JSON."  # paraphrase requests of synthetic_augments: nothing usable
        replies.append(user)
        if len(replies) == 1:
            return json.dumps({"message": f"{user} Write to jane.doe@example.com"})
        return json.dumps({"message": "Hi." if len(replies) == 2 else f"Hi, {user[0].lower()}{user[1:]} Thanks!"})

    with CannedOpenAIServer(rewrite, api_key="test-key") as server:
        llm = ParaphraseLLM(api_key="test-key", base_url=server.base_url, model="canned-model")
        data = dg.materialize([*DATA_ASSETS, *CORRECTION_ASSETS, *DATA_CHECKS], resources={**resources, "paraphrase_llm": llm},
                              selection=rest, run_config={"ops": {"instruction_dataset": {"config": {"blend_share": 0.5,
                                                                                        "blend_rewrite_share": 1.0}}}})
    assert data.success
    splits = output_meta(data, "dataset_splits")
    assert (splits["rows_with_several_intents"], splits["rows_labelled_with_no_intent"], splits["rows_out"]) == (8, 4, 20)
    assert splits["intents_per_row"] == {"0": 4, "1": 8, "2": 4, "3": 4} and splits["reconciles"]
    meta = output_meta(data, "instruction_dataset")
    assert meta["answer_format"] == "intents"
    assert meta["blended_rows"]["test"] == 5 and meta["blended_rows"]["train"] == round(0.5 * splits["rows_train"])
    records = pd.read_parquet(data_root / "redacted" / "instruction_dataset.parquet")
    answers = {t: json.loads(json.loads(m)[-1]["content"]) for t, m in zip(records["text"], records["messages"])}
    assert answers["hello"] == {"intents": []} and answers["my plastic is refused everywhere"] == {"intents": ["card"]}
    assert answers["is there a cost for paying a supplier abroad"] == {"intents": sets[1]}
    blends = records[records["record_id"].str.startswith("blend-")]
    assert blends["synthetic"].all() and all(len(json.loads(json.loads(m)[-1]["content"])["intents"]) >= 2 for m in blends["messages"])
    # every training blend went to the endpoint; each rewrite judged, a rejected one kept rule-built
    rewrites = meta["blend_rewrites"]
    assert rewrites["attempted"] == len(replies) == meta["blended_rows"]["train"] >= 3
    assert rewrites["by_reason"]["contains_pii"] == 1 and rewrites["by_reason"]["length"] == 1
    assert rewrites["by_reason"]["accepted"] == len(replies) - 2
    assert (blends["text"].str.endswith("Thanks!")).sum() == len(replies) - 2
    assert set(blends.loc[blends["text"].str.endswith("Thanks!"), "split"]) == {"train"}
    assert not records["text"].str.contains("@").any() and "Hi." not in set(records["text"])
    # test blends are built from the test folds' messages only
    train_texts = [t for fold in texts[:2] for t in fold]
    for text in blends.loc[blends["split"] == "test", "text"]:
        assert not any(t.lower() in text.lower() for t in train_texts), text
