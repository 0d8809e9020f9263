"""Tests for the shipped sample data, its builder and the taxonomy files.

Tests that need the original public data sets (to rebuild the sample or to compare label
sets) look in ``BANKING77_DIR`` / ``CLINC150_DIR`` (defaults under /work/shared/data) and
are skipped when those folders are missing; everything else uses only files in the repo.
"""

from __future__ import annotations

import csv
import filecmp
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

import pytest

from intent_assets.data import sample_data as sd

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "intent_assets" / "data" / "sample"
TAXONOMY = REPO / "intent_assets" / "data" / "taxonomy"
CHAT_LOGS = SAMPLE / sd.CHAT_LOG_FILE
MANIFEST = SAMPLE / sd.MANIFEST_FILE
PLAIN = SAMPLE / sd.PLAIN_LABELLED_FILE

BANKING77_DIR = Path(os.environ.get("BANKING77_DIR", "/work/shared/data/banking77"))
CLINC150_DIR = Path(os.environ.get("CLINC150_DIR", "/work/shared/data/clinc150"))
BANKING77_TRAIN_ROWS = 10003

needs_banking77 = pytest.mark.skipif(
    not (BANKING77_DIR / "train.csv").is_file(), reason=f"Banking77 source not found at {BANKING77_DIR}"
)
needs_clinc150 = pytest.mark.skipif(
    not (CLINC150_DIR / "data_full.json").is_file(), reason=f"CLINC150 source not found at {CLINC150_DIR}"
)


@pytest.fixture(scope="module")
def messages() -> list[dict]:
    return sd.read_jsonl(CHAT_LOGS)


@pytest.fixture(scope="module")
def manifest() -> list[dict]:
    return sd.read_jsonl(MANIFEST)


def _load_taxonomy(name: str) -> dict:
    with open(TAXONOMY / f"{name}.json", encoding="utf-8") as fh:
        return json.load(fh)


# ---------------------------------------------------------------- shipped chat logs


def test_chat_log_schema(messages):
    assert messages, "sample chat log is empty"
    for m in messages:
        assert tuple(m) == sd.MESSAGE_FIELDS, m
        assert isinstance(m["conversation_id"], str) and m["conversation_id"].startswith("b77-")
        assert isinstance(m["turn"], int) and not isinstance(m["turn"], bool) and m["turn"] >= 0
        assert isinstance(m["timestamp"], str)
        ts = datetime.strptime(m["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        assert ts.year == 2025
        assert m["speaker"] in ("customer", "agent")
        assert isinstance(m["text"], str) and m["text"].strip()
        assert isinstance(m["intent"], str)
        assert m["channel"] in sd.CHANNELS
        if m["speaker"] == "agent":
            assert m["intent"] == ""


def test_conversation_structure(messages):
    convs: dict[str, list[dict]] = defaultdict(list)
    for m in messages:
        convs[m["conversation_id"]].append(m)
    for cid, turns in convs.items():
        assert [t["turn"] for t in turns] == list(range(len(turns))), cid
        stamps = [t["timestamp"] for t in turns]  # ISO strings in one format sort as times
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), cid
        assert len({t["channel"] for t in turns}) == 1, cid
        labelled = [t for t in turns if t["intent"]]
        assert len(labelled) == 1 and labelled[0]["speaker"] == "customer", cid
    # the labelled customer turn count is exactly the Banking77 training set
    assert len(convs) == BANKING77_TRAIN_ROWS


def test_labelled_turns_use_taxonomy_and_cover_all_intents(messages):
    names = [i["name"] for i in _load_taxonomy("banking77")["intents"]]
    labelled = [m for m in messages if m["intent"]]
    assert len(labelled) == BANKING77_TRAIN_ROWS
    assert all(m["speaker"] == "customer" for m in labelled)
    assert {m["intent"] for m in labelled} <= set(names)
    assert {m["intent"] for m in labelled} == set(names)  # all 77 present


@needs_banking77
def test_labelled_turns_keep_original_utterances(messages):
    train = sd.read_banking77_csv(BANKING77_DIR / "train.csv")
    by_intent: dict[str, list[str]] = defaultdict(list)
    for text, cat in train:
        by_intent[cat].append(text)
    labelled = [m for m in messages if m["intent"]]
    assert Counter(m["intent"] for m in labelled) == Counter(cat for _, cat in train)
    # every labelled turn contains an original utterance of its intent, intact
    unmatched = [m for m in labelled if not any(u in m["text"] for u in by_intent[m["intent"]])]
    assert not unmatched, unmatched[:3]
    exact = Counter(m["text"] for m in labelled if m["text"] in set(by_intent[m["intent"]]))
    assert sum(exact.values()) > 0.6 * len(labelled)  # most turns carry no PII


# ---------------------------------------------------------------- PII manifest


def test_manifest_offsets_are_exact(messages, manifest):
    assert manifest
    by_key = {(m["conversation_id"], m["turn"]): m for m in messages}
    for e in manifest:
        assert tuple(e) == sd.MANIFEST_FIELDS, e
        assert e["entity_type"] in sd.ENTITY_TYPES
        msg = by_key[(e["conversation_id"], e["turn"])]
        assert msg["text"][e["start"] : e["end"]] == e["value"], e
        assert e["value"] and e["value"] == e["value"].strip()


def test_manifest_spans_do_not_overlap(manifest):
    spans = defaultdict(list)
    for e in manifest:
        spans[(e["conversation_id"], e["turn"])].append((e["start"], e["end"]))
    for key, ss in spans.items():
        ss.sort()
        assert all(a[1] <= b[0] for a, b in zip(ss, ss[1:])), key


def test_pii_mix(messages, manifest):
    counts = Counter(e["entity_type"] for e in manifest)
    assert set(counts) == set(sd.ENTITY_TYPES)
    customer = {(m["conversation_id"], m["turn"]) for m in messages if m["speaker"] == "customer"}
    with_pii = {(e["conversation_id"], e["turn"]) for e in manifest} & customer
    assert 0.25 <= len(with_pii) / len(customer) <= 0.35  # "about 30%"
    agent = {(m["conversation_id"], m["turn"]) for m in messages if m["speaker"] == "agent"}
    agent_pii = [e for e in manifest if (e["conversation_id"], e["turn"]) in agent]
    assert agent_pii and all(e["entity_type"] == "PERSON" for e in agent_pii)
    for e in manifest:
        if e["entity_type"] == "CREDIT_CARD":
            assert sd.luhn_valid(e["value"]), e
        if e["entity_type"] == "EMAIL":
            assert "@" in e["value"]
    # some names are written in lower case, as in real chat
    assert any(e["value"].islower() for e in manifest if e["entity_type"] == "PERSON")


def test_redacting_manifest_spans_removes_every_value(messages, manifest):
    """With every manifest span masked, no value and no name token is left anywhere."""
    spans = defaultdict(list)
    for e in manifest:
        spans[(e["conversation_id"], e["turn"])].append(e)
    redacted = []
    for m in messages:
        text = m["text"]
        for e in sorted(spans[(m["conversation_id"], m["turn"])], key=lambda e: -e["start"]):
            text = text[: e["start"]] + f"[{e['entity_type']}]" + text[e["end"] :]
        redacted.append(text)
    blob = "\n".join(redacted).lower()
    needles = set()
    for e in manifest:
        needles.add(e["value"].lower())
        if e["entity_type"] == "PERSON":
            parts = e["value"].split()
            needles.update({parts[0].lower(), parts[-1].lower()})
    assert not [n for n in needles if n in blob]


# ---------------------------------------------------------------- plain labelled file


def test_plain_labelled_csv():
    with open(PLAIN, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["text", "label"]
        rows = list(reader)
    assert 30 <= len(rows) <= 50
    names = {i["name"] for i in _load_taxonomy("banking77")["intents"]}
    assert {r["label"] for r in rows} <= names
    assert len({r["label"] for r in rows}) >= 3
    assert all(r["text"].strip() for r in rows)


# ---------------------------------------------------------------- builder reproducibility


def _run_builder(out: Path, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "intent_assets.data.sample_data", "--source", str(BANKING77_DIR), "--out", str(out), *extra]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def _assert_same_files(a: Path, b: Path, names) -> None:
    for name in names:
        assert filecmp.cmp(a / name, b / name, shallow=False), name


@needs_banking77
def test_builder_is_byte_reproducible(tmp_path):
    stats1 = _run_builder(tmp_path / "a", "--per-intent", "3")
    stats2 = _run_builder(tmp_path / "b", "--per-intent", "3")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(
        [sd.CHAT_LOG_FILE, sd.MANIFEST_FILE, sd.PLAIN_LABELLED_FILE, sd.LICENSE_FILE]
    )
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    _assert_same_files(tmp_path / "a", tmp_path / "b", names)
    assert stats1 == stats2
    assert stats1["labelled_customer_turns"] == 77 * 3 == stats1["conversations"]
    assert stats1["intents"] == 77
    # a different seed gives different data
    _run_builder(tmp_path / "c", "--per-intent", "3", "--seed", "5")
    assert not filecmp.cmp(tmp_path / "a" / sd.CHAT_LOG_FILE, tmp_path / "c" / sd.CHAT_LOG_FILE, shallow=False)


@needs_banking77
def test_shipped_sample_matches_a_rebuild(tmp_path):
    """The committed files are exactly what the documented command produces."""
    stats = _run_builder(tmp_path / "full")
    _assert_same_files(
        SAMPLE, tmp_path / "full", [sd.CHAT_LOG_FILE, sd.MANIFEST_FILE, sd.PLAIN_LABELLED_FILE, sd.LICENSE_FILE]
    )
    assert stats["labelled_customer_turns"] == BANKING77_TRAIN_ROWS


# ---------------------------------------------------------------- taxonomies


@pytest.mark.parametrize("name", ["banking77", "clinc150"])
def test_taxonomy_format(name):
    tax = _load_taxonomy(name)
    assert set(tax) == {"name", "version", "source", "intents"}
    assert tax["name"] == name
    parts = tax["version"].split(".")
    assert len(parts) == 3 and all(p.isdigit() for p in parts)
    assert tax["source"]
    names = [i["name"] for i in tax["intents"]]
    assert len(names) == len(set(names))
    for intent in tax["intents"]:
        assert set(intent) == {"name", "description"}
        desc = intent["description"]
        assert desc and desc[0].isupper() and desc.endswith(".") and len(desc.split()) <= 12, intent


def test_banking77_taxonomy_size_and_shipped_labels(messages):
    names = [i["name"] for i in _load_taxonomy("banking77")["intents"]]
    assert len(names) == 77
    assert set(names) == {m["intent"] for m in messages if m["intent"]}


@needs_banking77
def test_banking77_taxonomy_matches_categories():
    names = [i["name"] for i in _load_taxonomy("banking77")["intents"]]
    assert names == sd.read_categories(BANKING77_DIR)  # same order
    for split in ("train.csv", "test.csv"):
        assert set(names) == {c for _, c in sd.read_banking77_csv(BANKING77_DIR / split)}


@needs_clinc150
def test_clinc150_taxonomy_matches_data_set():
    names = [i["name"] for i in _load_taxonomy("clinc150")["intents"]]
    assert len(names) == 151 and names[-1] == "oos"
    with open(CLINC150_DIR / "data_full.json", encoding="utf-8") as fh:
        data = json.load(fh)
    in_scope = {label for split in ("train", "val", "test") for _, label in data[split]}
    oos = {label for split in ("oos_train", "oos_val", "oos_test") for _, label in data[split]}
    assert len(in_scope) == 150 and oos == {"oos"}
    assert set(names) == in_scope | oos
