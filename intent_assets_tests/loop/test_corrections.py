"""Corrections: sources (folder, S3 prefix, real PostgreSQL), validation and redaction, the batch store, the ledger,
and folding corrections into training examples."""

import json
import os

import pandas as pd
import pytest

from intent_assets.loop.corrections import (
    CREATE_TABLE_SQL, Batch, BatchStore, CorrectionsError, FolderSource, PostgresSource, apply_corrections, build_ledger,
    preference_pairs, validate_batch,
)
from intent_assets_tests.postgres_server import postgres_bin_dir, postgres_server

INTENTS = {"card_arrival", "lost_or_stolen_card", "top_up_failed"}


def correction(i: int, corrected="card_arrival", predicted="lost_or_stolen_card", text=None, ts=None, message=None, **extra):
    return {"message_id": message or f"m{i}", "conversation_id": f"c{i}", "text": text if text is not None else f"where is my card number {i}",
            "predicted_intent": predicted, "corrected_intent": corrected, "agent_id": "agent-7",
            "timestamp": ts or f"2026-11-2{i % 5}T10:00:{i % 60:02d}Z", **extra}


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_validation_quarantines_with_field_and_reason_and_redacts():
    raw = pd.DataFrame([
        {"source_row": "r1", **correction(1, text="my name is Zebulon Quixwell, email zq.canary7731@example.org, card?")},
        {"source_row": "r2", **correction(2, text="   ")},
        {"source_row": "r3", **correction(3, corrected="not_an_intent")},
        {"source_row": "r4", **correction(4, ts="yesterday")},
        {"source_row": "r5", **{k: v for k, v in correction(5).items() if k != "agent_id"}},
        {"source_row": "r6", "_error": "line 6 is not a JSON object"},
    ])
    accepted, quarantined, by_type = validate_batch(raw, "b1", INTENTS)
    assert len(accepted) + len(quarantined) == len(raw)  # counts reconcile
    assert accepted["source_row"].tolist() == ["r1"]
    text = accepted["text"].iloc[0]
    assert "Quixwell" not in text and "canary7731" not in text and by_type["EMAIL"] == 1
    reasons = dict(zip(quarantined["source_row"], zip(quarantined["field"], quarantined["reason"])))
    assert reasons["r2"] == ("text", "empty text")
    assert reasons["r3"] == ("corrected_intent", "unknown intent (not in the taxonomy)")
    assert reasons["r4"][0] == "timestamp"
    assert reasons["r5"] == ("agent_id", "missing value")
    assert reasons["r6"][0] == "record"
    # ids are pseudonymised: nothing of the raw ids is stored
    assert "m1" not in accepted.to_csv() and "agent-7" not in accepted.to_csv()
    assert "Quixwell" not in quarantined.to_csv()


def test_ledger_latest_wins_counts_conflicts_and_duplicate_source_rows():
    raw = pd.DataFrame([
        {"source_row": "r1", **correction(1, message="same", corrected="card_arrival", ts="2026-11-20T10:00:00Z")},
        {"source_row": "r2", **correction(2, message="same", corrected="top_up_failed", ts="2026-11-21T10:00:00Z")},
        {"source_row": "r3", **correction(3)},
    ])
    accepted, _, _ = validate_batch(raw, "b1", INTENTS)
    again, _, _ = validate_batch(raw.iloc[[2]], "b2", INTENTS)  # the same source row in an overlapping batch
    ledger = build_ledger(pd.concat([accepted, again], ignore_index=True))
    assert len(ledger.corrections) == 2
    same = ledger.corrections[ledger.corrections["source_row"] == "r2"]
    assert same["corrected_intent"].tolist() == ["top_up_failed"]  # the later one wins
    assert (ledger.conflicting_messages, ledger.superseded, ledger.duplicate_source_rows) == (1, 1, 1)


def test_apply_corrections_relabels_adds_and_never_touches_test_split():
    examples = pd.DataFrame({
        "record_id": ["a", "b", "c"], "split": ["train", "validation", "test"],
        "intent": ["lost_or_stolen_card", "card_arrival", "lost_or_stolen_card"],
        "text": ["Where is my card?", "card not here yet", "I lost my card"], "synthetic": False,
    })
    ledger = pd.DataFrame({
        "text": ["where is my card", "card not here yet!", "i lost my card", "top up did not work"],
        "corrected_intent": ["card_arrival", "card_arrival", "card_arrival", "top_up_failed"],
        "predicted_intent": ["lost_or_stolen_card", "card_arrival", "lost_or_stolen_card", "card_arrival"],
        "message_key": ["k1", "k2", "k3", "k4"],
    })
    applied = apply_corrections(examples, ledger)
    out = applied.examples.set_index("record_id")
    assert out.loc["a", "intent"] == "card_arrival" and out.loc["a", "corrected"]
    assert out.loc["c", "intent"] == "lost_or_stolen_card"  # frozen test split
    assert out.loc["cor-k4", "split"] == "train" and out.loc["cor-k4", "intent"] == "top_up_failed"
    assert (applied.relabelled, applied.confirmed, applied.added, applied.ignored_test_split) == (1, 1, 1, 1)
    assert len(preference_pairs(ledger)) == 3


def test_a_correction_may_carry_a_list_of_intents():
    """Multi-intent messages: an agent corrects to a set (a JSON list, in a CSV or a database as text); the set
    relabels the training example whole, an empty list says the message carries none, and no DPO pair is made of
    a set."""
    raw = pd.DataFrame([
        {"source_row": "r1", **correction(1, corrected=["card_arrival", "top_up_failed"], text="card? and top up failed")},
        {"source_row": "r2", **correction(2, corrected='["lost_or_stolen_card"]', predicted='["card_arrival", "top_up_failed"]')},
        {"source_row": "r3", **correction(3, corrected="[]", text="thanks, bye")},
        {"source_row": "r4", **correction(4, corrected=["card_arrival", "nope"])},
        {"source_row": "r5", **correction(5, corrected='["card_arrival",')},
    ])
    accepted, quarantined, _ = validate_batch(raw, "b1", INTENTS)
    assert len(accepted) + len(quarantined) == len(raw)
    assert dict(zip(quarantined["source_row"], quarantined["field"])) == {"r4": "corrected_intent", "r5": "corrected_intent"}
    assert [json.loads(x) for x in accepted["corrected_intents"]] == [["card_arrival", "top_up_failed"], ["lost_or_stolen_card"], []]
    assert list(accepted["corrected_intent"]) == ["card_arrival", "lost_or_stolen_card", ""]
    ledger = build_ledger(accepted).corrections
    examples = pd.DataFrame({"record_id": ["a"], "split": ["train"], "intent": ["card_arrival"],
                             "intents": [["card_arrival"]], "text": ["Card? And top up failed"], "synthetic": False})
    applied = apply_corrections(examples, ledger)
    out = applied.examples.set_index("record_id")
    assert out.loc["a", "intents"] == ["card_arrival", "top_up_failed"] and applied.relabelled == 1
    added = out[out.index.str.startswith("cor-")]
    assert sorted(map(tuple, added["intents"])) == [(), ("lost_or_stolen_card",)]
    assert len(preference_pairs(ledger)) == 0  # r2 predicted a list, r1 and r3 corrected to sets other than one


def test_batch_store_replaces_a_batch_atomically(tmp_path):
    store = BatchStore(tmp_path / "batches")
    raw = pd.DataFrame([{"source_row": "r1", **correction(1)}])
    accepted, quarantined, _ = validate_batch(raw, "file:a.jsonl:1", INTENTS)
    batch = Batch("file:a.jsonl:1", "1")
    for _ in range(2):
        store.write(batch, accepted, quarantined, {"rows_in": 1})
    assert store.has(batch.batch_id) and len(store.batches()) == 1
    assert len(store.load()[0]) == 1 and store.high_water_mark() == "1"
    assert not [p for p in (tmp_path / "batches").iterdir() if p.name.startswith(".")]


def test_folder_source_orders_batches_and_reads_jsonl_and_csv(tmp_path):
    inbox = tmp_path / "inbox"
    write_jsonl(inbox / "a.jsonl", [correction(1), correction(2)])
    os.utime(inbox / "a.jsonl", ns=(1_000_000_000, 1_000_000_000))
    pd.DataFrame([correction(3)]).to_csv(inbox / "b.csv", index=False)
    os.utime(inbox / "b.csv", ns=(2_000_000_000, 2_000_000_000))
    (inbox / "notes.txt").write_text("ignored")
    source = FolderSource(str(inbox))
    batches = source.batches_after(None, 10)
    assert [b.batch_id.split(":")[1] for b in batches] == ["a.jsonl", "b.csv"]
    assert source.batches_after(batches[0].position, 10) == batches[1:]
    assert source.batches_after(None, 1) == batches[:1]
    rows = source.read(batches[0].batch_id)
    assert rows["source_row"].tolist() == ["file:a.jsonl:1", "file:a.jsonl:2"]
    assert source.read(batches[1].batch_id)["source_row"].tolist() == ["file:b.csv:2"]
    (inbox / "a.jsonl").unlink()
    with pytest.raises(CorrectionsError, match="a.jsonl"):
        source.read(batches[0].batch_id)


def test_folder_source_on_an_s3_prefix(s3_client):
    s3_client.create_bucket(Bucket="raw-corrections")
    s3_client.put_object(Bucket="raw-corrections", Key="corrections/x.jsonl", Body=json.dumps(correction(1)).encode() + b"\n")
    s3_client.put_object(Bucket="raw-corrections", Key="other/y.jsonl", Body=b"{}\n")
    source = FolderSource("s3://raw-corrections/corrections", s3_client)
    (batch,) = source.batches_after(None, 10)
    assert batch.batch_id.startswith("file:x.jsonl:")
    assert source.read(batch.batch_id)["message_id"].tolist() == ["m1"]


needs_postgres = pytest.mark.skipif(
    postgres_bin_dir() is None and not os.environ.get("INTENT_ASSETS_REQUIRE_POSTGRES"),
    reason="PostgreSQL server binaries not installed (apt-get install postgresql; CI installs them)",
)


@pytest.fixture(scope="module")
def pg_dsn():
    bin_dir = postgres_bin_dir()
    assert bin_dir is not None, "PostgreSQL binaries are required here (INTENT_ASSETS_REQUIRE_POSTGRES)"
    with postgres_server(bin_dir) as pg:
        yield f"host={pg['host']} port={pg['port']} user={pg['user']} password={pg['password']} dbname={pg['db']}"


def insert_rows(dsn: str, rows: list[dict], table: str = "intent_corrections") -> None:
    import psycopg2

    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(CREATE_TABLE_SQL.format(table=table))
        for r in rows:
            cur.execute(f"INSERT INTO {table} (message_id, conversation_id, text, predicted_intent, corrected_intent, "
                        "agent_id, timestamp) VALUES (%(message_id)s, %(conversation_id)s, %(text)s, %(predicted_intent)s, "
                        "%(corrected_intent)s, %(agent_id)s, %(timestamp)s)", r)


@needs_postgres
def test_postgres_source_batches_by_id_range(pg_dsn):
    insert_rows(pg_dsn, [correction(i) for i in range(1, 6)], table="pg_source_test")
    source = PostgresSource(pg_dsn, "pg_source_test", batch_size=2)
    batches = source.batches_after(None, 10)
    assert [b.batch_id for b in batches] == ["pg:pg_source_test:0-2", "pg:pg_source_test:2-4", "pg:pg_source_test:4-5"]
    assert source.batches_after(batches[1].position, 10) == batches[2:]
    rows = source.read(batches[1].batch_id)
    assert rows["source_row"].tolist() == ["pg:pg_source_test:3", "pg:pg_source_test:4"]
    assert rows["message_id"].tolist() == ["m3", "m4"]
    accepted, quarantined, _ = validate_batch(rows, batches[1].batch_id, INTENTS)
    assert len(accepted) == 2 and quarantined.empty
    with pytest.raises(CorrectionsError):
        PostgresSource(pg_dsn, "x; DROP TABLE y")
