"""Support agents' corrections of predicted intents: sources, batches, validation, redaction and the ledger
(no Dagster import).

A correction says "the model answered ``predicted_intent`` for this message; the right intent is
``corrected_intent``". For a multi-intent message ``corrected_intent`` may be a list (JSON, or in a CSV or a
database text column a JSON list such as ``["card", "lost_stolen"]``; ``[]``: the message carries none): the ledger
keeps the set as ``corrected_intents`` (JSON text) and its first label as ``corrected_intent``. Corrections arrive in batches from a source (files dropped into a folder or an S3 prefix,
or rows of a table in the support system's PostgreSQL). Each batch has a deterministic id and a sortable
``position``: a sensor keeps the high-water mark of positions as its cursor and asks for one run per batch with the
batch id as ``run_key``.

Exactly once, by construction:
- a batch is stored under its id, atomically (written to a temporary folder, then renamed): re-running a batch
  replaces it with the same content;
- every stored row carries ``source_row``, the identity of the record in the source (table row id, or file and
  line): the ledger keeps one row per ``source_row``, so overlapping batches cannot count a correction twice;
- then per message the latest correction wins, and conflicts (one message, different corrected intents) are
  counted.

Only redacted text and pseudonymous keys are stored: the message, conversation and agent ids are hashed, the text
passes the same PII redaction as the chat logs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from intent_assets.data.chat_logs import DEFAULT_MAX_TEXT_CHARS, parse_labels
from intent_assets.data.corpus import conversation_key, normalize
from intent_assets.paths import atomic_dir
from intent_assets.privacy import pii

CORRECTION_FIELDS = ["message_id", "conversation_id", "text", "predicted_intent", "corrected_intent", "agent_id", "timestamp"]
LEDGER_COLUMNS = [
    "source_row", "batch_id", "message_key", "conversation_key", "agent_key", "timestamp", "text", "predicted_intent",
    "corrected_intent", "corrected_intents", "pii_types", "pii_count",
]
QUARANTINE_COLUMNS = ["source_row", "batch_id", "record", "field", "reason"]
SUPPORTED_SUFFIXES = (".jsonl", ".csv")


class CorrectionsError(ValueError):
    """A source or a batch that cannot be read at all (not a single bad record: those are quarantined)."""


@dataclass(frozen=True)
class Batch:
    """One batch of a source: ``batch_id`` is deterministic (the sensor's run_key); ``position`` sorts batches in
    arrival order (the sensor's high-water mark)."""

    batch_id: str
    position: str


def _key(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}\x1f{value}".encode()).hexdigest()[:16]


def message_key(message_id: str) -> str:
    return _key("message", message_id)


def agent_key(agent_id: str) -> str:
    return _key("agent", agent_id)


# ------------------------------------------------------------------------------------------------------ sources
class FolderSource:
    """Correction files (``*.jsonl``, ``*.csv``) in a local folder or under an S3 prefix (``s3://bucket/prefix``).

    A file is a batch; its id names the file and its fingerprint (size and modification time, or the S3 ETag), so
    a file rewritten under the same name is a new batch. Files are ordered by modification time, then name.
    """

    def __init__(self, location: str, s3_client=None):
        self.location = location
        self.s3 = s3_client

    def _s3_parts(self) -> tuple[str, str]:
        bucket, _, prefix = self.location[len("s3://"):].partition("/")
        return bucket, prefix.rstrip("/") + "/" if prefix else ""

    def _files(self) -> list[tuple[int, str, str]]:
        """(modification time in ns, name relative to the location, fingerprint) of every correction file."""
        found = []
        if self.location.startswith("s3://"):
            if self.s3 is None:
                raise CorrectionsError(f"corrections location {self.location}: an S3 location needs an S3 client")
            bucket, prefix = self._s3_parts()
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(prefix):]
                    if name.endswith(SUPPORTED_SUFFIXES):
                        mtime = int(obj["LastModified"].timestamp() * 1e9)
                        found.append((mtime, name, obj["ETag"].strip('"')[:12]))
        else:
            root = Path(self.location)
            if not root.exists():
                return []
            for path in root.rglob("*"):
                if path.is_file() and path.name.endswith(SUPPORTED_SUFFIXES) and not path.name.startswith("."):
                    st = path.stat()
                    found.append((st.st_mtime_ns, path.relative_to(root).as_posix(), f"{st.st_size}-{st.st_mtime_ns}"))
        return sorted(found)

    def batches_after(self, position: str | None, limit: int) -> list[Batch]:
        out = []
        for mtime, name, fingerprint in self._files():
            batch = Batch(f"file:{name}:{fingerprint}", f"{mtime:020d}|{name}")
            if position is None or batch.position > position:
                out.append(batch)
                if len(out) >= limit:
                    break
        return out

    def read(self, batch_id: str) -> pd.DataFrame:
        """The batch's raw records as strings, with ``source_row`` = ``file:<name>:<line or row>``."""
        if not batch_id.startswith("file:"):
            raise CorrectionsError(f"batch {batch_id}: not a file batch")
        name = batch_id[len("file:"):].rsplit(":", 1)[0]
        if self.location.startswith("s3://"):
            bucket, prefix = self._s3_parts()
            data = self.s3.get_object(Bucket=bucket, Key=prefix + name)["Body"].read()
        else:
            path = Path(self.location) / name
            if not path.exists():
                raise CorrectionsError(f"batch {batch_id}: file {path} is gone")
            data = path.read_bytes()
        text = data.decode("utf-8", errors="replace")
        rows: list[dict] = []
        if name.endswith(".jsonl"):
            for i, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    if not isinstance(record, dict):
                        raise ValueError("not a JSON object")
                except ValueError as exc:
                    record = {"_error": f"line {i} is not a JSON object: {exc}"}
                rows.append({"source_row": f"file:{name}:{i}", **record})
        else:
            for i, record in enumerate(csv.DictReader(io.StringIO(text)), start=2):  # line 1 is the header
                rows.append({"source_row": f"file:{name}:{i}", **record})
        return pd.DataFrame(rows)


class PostgresSource:
    """Rows of a corrections table in PostgreSQL with a ``bigserial`` primary key ``id`` and the correction fields.

    A batch is an id range ``(lo, hi]`` of at most ``batch_size`` rows, fixed when the sensor sees it. Rows are
    append-only: a batch re-read later returns the same rows.
    """

    def __init__(self, dsn: str, table: str = "intent_corrections", batch_size: int = 1000):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?", table):
            raise CorrectionsError(f"corrections table name {table!r} is not a plain (schema.)identifier")
        self.dsn, self.table, self.batch_size = dsn, table, batch_size

    def _connect(self):
        import psycopg2

        return psycopg2.connect(self.dsn, connect_timeout=10)

    def max_id(self) -> int:
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute(f"SELECT coalesce(max(id), 0) FROM {self.table}")
            return int(cur.fetchone()[0])

    def batches_after(self, position: str | None, limit: int) -> list[Batch]:
        lo, top = int(position or 0), self.max_id()
        out = []
        while lo < top and len(out) < limit:
            hi = min(lo + self.batch_size, top)
            out.append(Batch(f"pg:{self.table}:{lo}-{hi}", f"{hi:020d}"))
            lo = hi
        return out

    def read(self, batch_id: str) -> pd.DataFrame:
        m = re.fullmatch(r"pg:(.+):(\d+)-(\d+)", batch_id)
        if not m or m.group(1) != self.table:
            raise CorrectionsError(f"batch {batch_id}: not a batch of table {self.table}")
        lo, hi = int(m.group(2)), int(m.group(3))
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute(f"SELECT id, {', '.join(CORRECTION_FIELDS)} FROM {self.table} WHERE id > %s AND id <= %s ORDER BY id",
                        (lo, hi))
            rows = cur.fetchall()
        frame = pd.DataFrame(rows, columns=["id", *CORRECTION_FIELDS])
        frame.insert(0, "source_row", [f"pg:{self.table}:{i}" for i in frame.pop("id")])
        if "timestamp" in frame and len(frame):
            frame["timestamp"] = frame["timestamp"].map(lambda v: v.isoformat() if hasattr(v, "isoformat") else v)
        return frame


CREATE_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS {table} (
    id bigserial PRIMARY KEY,
    message_id text, conversation_id text, text text, predicted_intent text, corrected_intent text,
    agent_id text, timestamp timestamptz
)"""


# --------------------------------------------------------------------------------------------------- validation
def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and pd.isna(value)) or (isinstance(value, str) and not value.strip())


def _check_record(rec: dict, intents: set[str], max_text_chars: int):
    """(the first problem as (field, reason) or None, corrected labels, predicted labels, timestamp) of one record."""
    if rec.get("_error") and not _blank(rec.get("_error")):
        return ("record", str(rec["_error"])), [], [], None
    for field in CORRECTION_FIELDS:
        value = rec.get(field)
        if field not in rec or (_blank(value) and not isinstance(value, (list, tuple))):
            return (field, "empty text" if field == "text" else "missing value"), [], [], None
    parsed = {}
    for field in ("corrected_intent", "predicted_intent"):  # a label, or a list of them
        try:
            parsed[field] = parse_labels(rec[field]) or []
        except ValueError as exc:
            return (field, str(exc)), [], [], None
    corrected_set, predicted = parsed["corrected_intent"], parsed["predicted_intent"]
    if len(str(rec["text"])) > max_text_chars:
        return ("text", f"text longer than {max_text_chars} characters"), [], [], None
    if any(x not in intents for x in corrected_set):
        return ("corrected_intent", "unknown intent (not in the taxonomy)"), [], [], None
    stamp = pd.to_datetime(str(rec["timestamp"]), utc=True, errors="coerce", format="ISO8601")
    if pd.isna(stamp):
        return ("timestamp", "not an ISO 8601 timestamp"), [], [], None
    return None, corrected_set, predicted, stamp


def validate_batch(raw: pd.DataFrame, batch_id: str, intents: set[str], max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
                   ) -> tuple[pd.DataFrame, pd.DataFrame, Counter]:
    """(accepted rows, redacted and pseudonymised; quarantined rows with field and reason; PII counts by type).

    Every input row is in exactly one of the two outputs. The quarantine names the record (its source row) and the
    field, never its text.
    """
    ok, quarantined = [], []
    for rec in raw.to_dict("records"):
        row = rec.get("source_row")
        problem, corrected_set, predicted, stamp = _check_record(rec, intents, max_text_chars)
        if problem:
            quarantined.append({"source_row": row, "batch_id": batch_id, "record": f"message {message_key(str(rec.get('message_id')))}",
                                "field": problem[0], "reason": problem[1]})
            continue
        ok.append({"source_row": row, "batch_id": batch_id, "message_key": message_key(str(rec["message_id"]).strip()),
                   "conversation_key": conversation_key(str(rec["conversation_id"]).strip()),
                   "agent_key": agent_key(str(rec["agent_id"]).strip()), "timestamp": stamp, "text": str(rec["text"]),
                   "predicted_intent": predicted[0] if len(predicted) == 1 else json.dumps(predicted),
                   "corrected_intent": corrected_set[0] if corrected_set else "",
                   "corrected_intents": json.dumps(corrected_set)})
    redactions = pii.redact_many([r["text"] for r in ok])
    by_type: Counter = Counter()
    for r, red in zip(ok, redactions):
        r["text"] = red.text
        r["pii_types"] = ",".join(sorted({s.entity_type for s in red.spans}))
        r["pii_count"] = len(red.spans)
        by_type.update(s.entity_type for s in red.spans)
    accepted = pd.DataFrame(ok, columns=LEDGER_COLUMNS)
    accepted["timestamp"] = pd.to_datetime(accepted["timestamp"], utc=True)
    accepted["pii_count"] = accepted["pii_count"].astype("int64")
    return accepted, pd.DataFrame(quarantined, columns=QUARANTINE_COLUMNS), by_type


# -------------------------------------------------------------------------------------------------------- store
class BatchStore:
    """Validated batches on disk: ``<root>/<safe id>/{accepted,quarantined}.parquet`` and ``batch.json``."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @staticmethod
    def dirname(batch_id: str) -> str:
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", batch_id)[:60]
        return f"{readable}-{_key('batch', batch_id)}"

    def path(self, batch_id: str) -> Path:
        return self.root / self.dirname(batch_id)

    def has(self, batch_id: str) -> bool:
        return (self.path(batch_id) / "batch.json").exists()

    def write(self, batch: Batch, accepted: pd.DataFrame, quarantined: pd.DataFrame, info: dict) -> Path:
        """Atomic: a reader sees the whole batch or none of it; writing it again replaces it."""
        final = self.path(batch.batch_id)
        with atomic_dir(final) as tmp:
            accepted.to_parquet(tmp / "accepted.parquet", index=False)
            quarantined.to_parquet(tmp / "quarantined.parquet", index=False)
            (tmp / "batch.json").write_text(json.dumps({"batch_id": batch.batch_id, "position": batch.position, **info}, indent=1))
        return final

    def batches(self) -> list[dict]:
        out = []
        for meta in sorted(self.root.glob("*/batch.json")) if self.root.exists() else []:
            if not meta.parent.name.startswith("."):
                out.append(json.loads(meta.read_text()))
        return sorted(out, key=lambda b: b["position"])

    def high_water_mark(self) -> str | None:
        positions = [b["position"] for b in self.batches()]
        return max(positions) if positions else None

    def load(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(every accepted row, every quarantined row) of every stored batch, in batch order."""
        accepted, quarantined = [], []
        for b in self.batches():
            d = self.path(b["batch_id"])
            accepted.append(pd.read_parquet(d / "accepted.parquet"))
            quarantined.append(pd.read_parquet(d / "quarantined.parquet"))
        acc = pd.concat(accepted, ignore_index=True) if accepted else pd.DataFrame(columns=LEDGER_COLUMNS)
        qua = pd.concat(quarantined, ignore_index=True) if quarantined else pd.DataFrame(columns=QUARANTINE_COLUMNS)
        return acc, qua


# ------------------------------------------------------------------------------------------------------- ledger
@dataclass
class Ledger:
    corrections: pd.DataFrame  # one row per message: its latest correction
    rows_stored: int           # accepted rows of every stored batch
    duplicate_source_rows: int  # the same source record in two batches (counted once)
    superseded: int            # older corrections of a message replaced by a later one
    conflicting_messages: int  # messages corrected to more than one intent


def build_ledger(accepted: pd.DataFrame) -> Ledger:
    """One row per message: the latest correction wins (ties: the later batch and source row)."""
    rows = len(accepted)
    if "corrected_intents" not in accepted:  # batches stored before corrections could carry a list
        accepted = accepted.assign(corrected_intents=[json.dumps([i] if i else []) for i in accepted["corrected_intent"]])
    frame = accepted.drop_duplicates(subset=["source_row"], keep="last")
    duplicates = rows - len(frame)
    frame = frame.assign(_order=range(len(frame))).sort_values(["timestamp", "_order"], kind="stable")
    intents_per_message = frame.groupby("message_key")["corrected_intents"].nunique()
    latest = frame.drop_duplicates(subset=["message_key"], keep="last").drop(columns="_order")
    latest = latest.sort_values("timestamp", kind="stable").reset_index(drop=True)
    return Ledger(latest[LEDGER_COLUMNS], rows, duplicates, len(frame) - len(latest), int((intents_per_message > 1).sum()))


# ------------------------------------------------------------------------------------------- training examples
@dataclass
class Applied:
    examples: pd.DataFrame
    relabelled: int         # existing train/validation examples whose intent the agents changed
    confirmed: int          # existing examples whose label the correction repeats
    added: int              # new training examples
    ignored_test_split: int  # corrections of test-split messages: the frozen test split never changes


def apply_corrections(examples: pd.DataFrame, ledger: pd.DataFrame) -> Applied:
    """Fold the ledger into training examples (``record_id, split, intent, text, ...``).

    A correction whose (redacted, normalised) text matches an existing train or validation example relabels it; one
    that matches a test example is ignored (the frozen test split is the yardstick and must not move); any other
    becomes a new training example with ``record_id`` ``cor-<message key>``.
    """
    if ledger.empty:
        return Applied(examples.assign(corrected=False), 0, 0, 0, 0)
    out = examples.copy()
    out["corrected"] = False
    keys = out["text"].map(normalize)
    sets = ledger["corrected_intents"] if "corrected_intents" in ledger else [json.dumps([i]) for i in ledger["corrected_intent"]]
    latest = {normalize(t): json.loads(i) for t, i in zip(ledger["text"], sets)}
    test_keys = set(keys[out["split"] == "test"])
    match = keys.isin(latest.keys()) & (out["split"] != "test")
    new_sets = [latest[k] for k in keys[match]]
    before = list(out.loc[match, "intents"]) if "intents" in out else [[i] for i in out.loc[match, "intent"]]
    relabelled = sum(list(old) != new for old, new in zip(before, new_sets))
    out.loc[match, "intent"] = [s[0] if s else "" for s in new_sets]
    if "intents" in out:
        out.loc[match, "intents"] = pd.Series(new_sets, index=out.index[match], dtype=object)
    out.loc[match, "corrected"] = True
    known = set(keys)
    fresh = ledger.assign(_set=[latest[normalize(t)] for t in ledger["text"]])
    fresh = fresh[[normalize(t) not in known for t in fresh["text"]]].drop_duplicates(subset=["text"], keep="last")
    added = pd.DataFrame({"record_id": ["cor-" + k for k in fresh["message_key"]], "split": "train",
                          "intent": [s[0] if s else "" for s in fresh["_set"]], "text": fresh["text"].to_numpy(),
                          "corrected": True})
    if "intents" in out:
        added["intents"] = pd.Series(list(fresh["_set"]), dtype=object)
    for col in out.columns.difference(added.columns):
        added[col] = False if out[col].dtype == bool else None
    ignored = sum(normalize(t) in test_keys for t in ledger["text"])
    return Applied(pd.concat([out, added[out.columns]], ignore_index=True), relabelled, int(match.sum()) - relabelled,
                   len(added), ignored)


def corrected_answer(ledger: pd.DataFrame) -> pd.Series:
    """Each correction in the form ``predicted_intent`` is stored in: the one label, or the set as JSON text."""
    if "corrected_intents" not in ledger:
        return ledger["corrected_intent"]
    sets = [json.loads(x) for x in ledger["corrected_intents"]]
    return pd.Series([s[0] if len(s) == 1 else json.dumps(s) for s in sets], index=ledger.index, dtype=object)


def preference_pairs(ledger: pd.DataFrame) -> pd.DataFrame:
    """DPO pairs from corrections where the model was wrong: chosen = the corrected intent, rejected = the predicted."""
    # one label each side: a list correction (or prediction) is no single chosen/rejected answer
    single = ledger[~ledger["predicted_intent"].astype(str).str.startswith("[")]
    if "corrected_intents" in single:
        single = single[[len(json.loads(x)) == 1 for x in single["corrected_intents"]]]
    wrong = single[single["predicted_intent"] != single["corrected_intent"]]
    return pd.DataFrame({"text": wrong["text"].to_numpy(), "chosen": wrong["corrected_intent"].to_numpy(),
                         "rejected": wrong["predicted_intent"].to_numpy()})
