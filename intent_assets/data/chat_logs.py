"""Loading and validating support chat logs (no Dagster import).

Two input shapes are accepted, in JSONL (optionally gzipped), CSV or Parquet, from a file or a folder of files:

* **chat logs**: one record per message with ``conversation_id``, ``turn``, ``timestamp``, ``speaker``
  (customer/agent), ``text``, ``intent`` (agent-assigned, may be empty) and ``channel``;
* **plain labelled intent data** (Banking77, CLINC150, NLU++, a customer's export): a ``text`` column and one of
  ``intent`` / ``label`` / ``category`` / ``intents`` / ``labels``. Each row becomes a one-turn customer
  conversation whose id is derived from the file name and the text, so the hash-based test split does not move
  when rows are reordered or appended.
  CLINC150's ``data_full.json`` (an object of ``[text, label]`` lists) is read the same way, and so is a JSON list
  of records (NLU++'s ``foldK.json``: ``{"text": ..., "intents": [...]}``, no ``intents`` key meaning no intent).

A label field may hold several intents (a multi-intent message): a list (JSON, Parquet), or in text a JSON list such
as ``["card", "lost_stolen"]``; an empty list is a labelled message that carries no intent. The valid rows have
``intents``, the label set in the order written (null: unlabelled), and ``intent``, its first label (empty when
none), which single-intent code reads.

Either shape may say which split a record belongs to (an official test set, the folds of a benchmark):

* a ``split`` column (``train``, ``validation`` or ``test``; ``val`` and ``dev`` mean validation; case and
  surrounding spaces ignored; empty means not given). Any other value quarantines the record (field ``split``);
* CLINC150's keys: ``train`` / ``val`` / ``test``, and ``oos_train`` / ``oos_val`` / ``oos_test`` into the same
  splits (their label is ``oos``); any other key quarantines its records (field ``split``);
* otherwise the file name: a file without a split column whose name (without its extensions) is ``train``,
  ``validation``, ``val``, ``dev`` or ``test`` (Banking77's ``train.csv`` and ``test.csv``) gives that split to
  all its records;
* or fold files (``fold0``, ``fold1``, ... as NLU++ ships them): the ``test_fold_count`` highest-numbered folds
  of the input are the test split, the others train (NLU++'s protocol: train on the other folds, test on a consecutive
  pair; with folds 0-15, train on 0-13 and test on 14-15).

The valid rows carry ``split`` (normalized, or empty) and ``split_source`` (``input column``, ``file names`` or
empty); ``intent_assets.data.splits`` decides what the graph does with them. A labelled row with a split from its
input has the split as written in its conversation id (``<file>-<split>-<text hash>``, ``-2``, ``-3``... for a
repeat within that split), so the same text in two official splits (CLINC150 has a few), or twice in one, is two
records, not a duplicate: an official test set reaches the graph whole.

Every record is validated with a pandera schema. A record that fails is never dropped: it goes to the quarantine
frame with the failing ``field``, a ``reason`` and its ``source`` (file and line), so that
``rows_in == len(valid) + len(quarantined)`` always holds. A file that cannot be read at all (unparseable CSV or
Parquet, no ``text`` column) raises :class:`ChatLogLoadError` naming the file.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa

from intent_assets.data.days import OUTSIDE_CALENDAR, Calendar, in_files
from intent_assets.data.splits import FILE_NAMES, FOLD_FILES, INPUT_COLUMN, SPLIT_SOURCES, SPLITS, normalize_split

CHAT_LOG_COLUMNS = ["conversation_id", "turn", "timestamp", "speaker", "text", "intent", "channel", "split"]
LABEL_COLUMNS = ("intent", "label", "category", "intents", "labels")
SPEAKERS = ("customer", "agent")
DEFAULT_MAX_TEXT_CHARS = 10_000
SUPPORTED_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".csv", ".csv.gz", ".parquet", ".json")
DEFAULT_TEST_FOLDS = 2
_FOLD = re.compile(r"^fold(\d+)$", re.IGNORECASE)
QUARANTINE_COLUMNS = ["source", "record", "field", "reason", *CHAT_LOG_COLUMNS, "day"]


class ChatLogLoadError(ValueError):
    """A file could not be read at all (as opposed to single bad records, which are quarantined)."""


class LabelListFile(ChatLogLoadError):
    """A JSON list of label names (Banking77's ``categories.json``) or an ontology (NLU++'s ``ontology.json``): no
    records. Skipped in a folder."""


@dataclass
class LoadResult:
    valid: pd.DataFrame
    quarantined: pd.DataFrame
    rows_in: int
    input_kind: str  # "chat_logs" or "labelled"
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # label lists found in a folder (no records)
    rows_in_by_day: dict[str, int] = field(default_factory=dict)  # records read, by their day, before validation

    @property
    def reasons(self) -> dict[str, int]:
        if self.quarantined.empty:
            return {}
        return {str(k): int(v) for k, v in self.quarantined["reason"].value_counts().items()}


def record_id(conversation_id: str, turn: int) -> str:
    """A stable id of one message, used to follow it through the graph."""
    return hashlib.sha256(f"{conversation_id}\x1f{turn}".encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------------- validation
def _is_text(value) -> bool:
    return isinstance(value, str)


def _valid_utf8(value) -> bool:
    # Bytes that were not UTF-8 survive decoding as lone surrogates (errors="surrogateescape").
    return not isinstance(value, str) or not any("\udc80" <= ch <= "\udcff" for ch in value)


def _not_blank(value) -> bool:
    return not isinstance(value, str) or value.strip() != ""


def _is_turn(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    if isinstance(value, float):
        return value.is_integer() and value >= 0
    return isinstance(value, str) and value.strip().isdigit()


def _is_timestamp(value) -> bool:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value == "":
        return True  # a missing timestamp is allowed (plain labelled data has none)
    try:
        return not pd.isna(pd.Timestamp(value))
    except (ValueError, TypeError, OverflowError):
        return False


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and pd.isna(value)) or (isinstance(value, str) and value == "")


def parse_labels(value) -> list[str] | None:
    """The intents a raw label field holds, in the order written: None when unlabelled (missing or empty text); a
    label string is one intent; a list (or a string written as a JSON list, ``'["a", "b"]'``) is several, or none
    when empty; a label listed twice counts once. Raises ValueError naming what is wrong."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"intent list is not valid JSON ({exc.msg})") from None
    if isinstance(value, (list, tuple, np.ndarray)):
        labels = [v.strip() if isinstance(v, str) else v for v in value]
        if not all(isinstance(v, str) and v for v in labels):
            raise ValueError("intent list must hold non-empty strings")
        return list(dict.fromkeys(labels))
    if _missing(value):
        return None
    if not isinstance(value, str):
        raise ValueError("intent must be a string or a list of strings")
    return [value.strip()] if value.strip() else None


def _is_labels(value) -> bool:
    try:
        parse_labels(value)
    except ValueError:
        return False
    return True


def _labels_utf8(value) -> bool:
    if isinstance(value, (list, tuple, np.ndarray)):
        return all(_valid_utf8(v) for v in value)
    return _valid_utf8(value)


def _is_split(value) -> bool:
    return _missing(value) or normalize_split(value) is not None


def raw_record_schema(max_text_chars: int = DEFAULT_MAX_TEXT_CHARS) -> pa.DataFrameSchema:
    """Element-wise pandera schema over the raw (object-typed) records, so every failure names a row."""

    def check(fn, error):
        return pa.Check(fn, element_wise=True, error=error)

    text_checks = [
        check(_is_text, "text must be a string"),
        check(_valid_utf8, "text is not valid UTF-8"),
        check(_not_blank, "text is empty"),
        check(lambda v: not isinstance(v, str) or len(v) <= max_text_chars, f"text longer than {max_text_chars} characters"),
    ]
    return pa.DataFrameSchema(
        {
            "conversation_id": pa.Column(object, [check(lambda v: isinstance(v, (str, int)) and str(v).strip() != "", "conversation_id must be a non-empty string"), check(_valid_utf8, "conversation_id is not valid UTF-8")]),
            "turn": pa.Column(object, check(_is_turn, "turn must be a non-negative integer")),
            "timestamp": pa.Column(object, check(_is_timestamp, "timestamp is not an ISO 8601 date-time"), nullable=True),
            "speaker": pa.Column(object, check(lambda v: isinstance(v, str) and v.strip().lower() in SPEAKERS, "speaker must be 'customer' or 'agent'")),
            "text": pa.Column(object, text_checks),
            "intent": pa.Column(object, [check(_is_labels, "intent must be a label or a list of labels (in text, a JSON list)"), check(_labels_utf8, "intent is not valid UTF-8")], nullable=True),
            "channel": pa.Column(object, [check(lambda v: isinstance(v, str), "channel must be a string"), check(_valid_utf8, "channel is not valid UTF-8")], nullable=True),
            "split": pa.Column(object, check(_is_split, "split must be train, validation (or val, dev) or test"), nullable=True),
        },
        strict=False,
        coerce=False,
    )


# Schema of what leaves the loader: typed, also used as the Dagster type of ``raw_chat_logs``.
CHAT_LOG_SCHEMA = pa.DataFrameSchema(
    {
        "record_id": pa.Column(str, unique=True),
        "conversation_id": pa.Column(str, pa.Check.str_length(min_value=1)),
        "turn": pa.Column(int, pa.Check.ge(0)),
        "timestamp": pa.Column(pd.DatetimeTZDtype(tz="UTC"), nullable=True),
        "speaker": pa.Column(str, pa.Check.isin(SPEAKERS)),
        "text": pa.Column(str, pa.Check.str_length(min_value=1)),
        "intent": pa.Column(str),
        # the label set (a multi-intent message has several; [] labelled with none; null unlabelled); optional
        "intents": pa.Column(object, pa.Check(lambda v: v is None or (isinstance(v, (list, tuple, np.ndarray)) and all(
            isinstance(x, str) and x for x in v)), element_wise=True, error="intents must be a list of labels"),
            nullable=True, required=False),
        "channel": pa.Column(str),
        # optional, so that tables written before splits were read still validate
        "split": pa.Column(str, pa.Check.isin(["", *SPLITS]), required=False),
        "split_source": pa.Column(str, pa.Check.isin(["", *SPLIT_SOURCES]), required=False),
        # the daily partition the record belongs to (``intent_assets.data.days``); optional like ``split``
        "day": pa.Column(str, pa.Check.str_matches(r"^\d{4}-\d{2}-\d{2}$"), required=False),
    },
    unique=["conversation_id", "turn"],
    strict=True,
    ordered=True,
    name="ChatLogs",
    description="One row per chat message, validated.",
)


# ------------------------------------------------------------------------------------------------------ reading
def list_input_files(location: str | Path) -> list[Path]:
    path = Path(location)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUPPORTED_SUFFIXES))
        if not files:
            raise ChatLogLoadError(f"{path}: folder holds no {', '.join(SUPPORTED_SUFFIXES)} files")
        return files
    if not path.is_file():
        raise ChatLogLoadError(f"{path}: no such file or folder")
    if not path.name.endswith(SUPPORTED_SUFFIXES):
        raise ChatLogLoadError(f"{path}: unsupported format (expected one of {', '.join(SUPPORTED_SUFFIXES)})")
    return [path]


def _open_text(path: Path):
    raw = gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")
    return raw


def _read_jsonl(path: Path) -> tuple[list[dict], list[dict]]:
    """Records and per-line rejects (bad UTF-8, malformed JSON, not an object)."""
    records, rejects = [], []
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            source = f"{path.name}:{lineno}"
            try:
                decoded = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                rejects.append({"source": source, "field": "<line>", "reason": f"not valid UTF-8 at byte {exc.start}"})
                continue
            try:
                obj = json.loads(decoded)
            except json.JSONDecodeError as exc:
                rejects.append({"source": source, "field": "<line>", "reason": f"malformed JSON: {exc.msg} at column {exc.colno}"})
                continue
            if not isinstance(obj, dict):
                rejects.append({"source": source, "field": "<line>", "reason": f"expected a JSON object, got {type(obj).__name__}"})
                continue
            obj["_source"] = source
            records.append(obj)
    return records, rejects


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        with _open_text(path) as fh:
            frame = pd.read_csv(fh, dtype=str, keep_default_na=False, encoding="utf-8", encoding_errors="surrogateescape")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeError) as exc:
        raise ChatLogLoadError(f"{path}: malformed CSV: {exc}") from exc
    # line numbers in the file: header is line 1 (exact for files without embedded newlines)
    frame["_source"] = [f"{path.name}:{i + 2}" for i in range(len(frame))]
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a broken file
        raise ChatLogLoadError(f"{path}: malformed Parquet: {exc}") from exc
    frame = frame.astype(object).where(frame.notna(), None)
    frame["_source"] = [f"{path.name}:row {i}" for i in range(len(frame))]
    return frame


def _read_json(path: Path) -> pd.DataFrame:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ChatLogLoadError(f"{path}: malformed JSON: {exc}") from exc
    if isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        return _json_records(data, path)
    if isinstance(data, list) and all(isinstance(v, str) for v in data):
        raise LabelListFile(f"{path}: a list of {len(data)} label names, not records (point at the data files)")
    if isinstance(data, dict) and isinstance(data.get("intents"), dict):
        raise LabelListFile(f"{path}: an ontology of {len(data['intents'])} intents (NLU++ layout), not records")
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ChatLogLoadError(f"{path}: expected an object of [text, label] lists (CLINC150 layout) or a list of "
                               "records (NLU++ layout)")
    rows = []
    for part, pairs in data.items():
        for i, pair in enumerate(pairs):
            ok = isinstance(pair, list) and len(pair) == 2
            rows.append({"text": pair[0] if ok else None, "label": pair[1] if ok else None,
                         "split": part.removeprefix("oos_"), "_part": part, "_source": f"{path.name}:{part}[{i}]"})
    frame = pd.DataFrame(rows, columns=["text", "label", "split", "_part", "_source"])
    frame["_split_source"] = INPUT_COLUMN
    return frame


def _json_records(records: list[dict], path: Path) -> pd.DataFrame:
    """A JSON list of records (NLU++'s ``foldK.json``). Where the records label with ``intents``, a record without
    the key carries no intent (NLU++ leaves it out rather than writing an empty list)."""
    frame = pd.DataFrame.from_records(records)
    if "intents" in frame:
        frame["intents"] = [[] if v is None or (isinstance(v, float) and pd.isna(v)) else v for v in frame["intents"]]
    frame["_source"] = [f"{path.name}[{i}]" for i in range(len(frame))]
    return frame


def fold_of(path: Path) -> int | None:
    """The fold number of a fold file (``fold14.json`` -> 14), None for any other name."""
    match = _FOLD.match(_stem(Path(path)))
    return int(match.group(1)) if match else None


def folds_for_test(paths, count: int = DEFAULT_TEST_FOLDS) -> set[int]:
    """The folds that are the test split: the ``count`` highest fold numbers among ``paths`` (none when there are
    not more folds than that)."""
    folds = sorted({f for f in map(fold_of, paths) if f is not None})
    return set(folds[-count:]) if count > 0 and len(folds) > count else set()


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _with_split(frame: pd.DataFrame, path: Path, folds: set[int] | None = None) -> pd.DataFrame:
    """Adds ``split`` and ``_split_source``: the file's own split column, else the file name when it is a split,
    else its fold (``folds``: the test folds, from :func:`folds_for_test`)."""
    if "_split_source" in frame:  # CLINC150 keys
        return frame
    if "split" in frame:
        frame["_split_source"] = [None if _missing(v) else INPUT_COLUMN for v in frame["split"]]
    elif normalize_split(_stem(path)) is not None:
        frame["split"], frame["_split_source"] = _stem(path), FILE_NAMES
    elif folds and fold_of(path) is not None:
        frame["split"], frame["_split_source"] = ("test" if fold_of(path) in folds else "train"), FOLD_FILES
    else:
        frame["split"], frame["_split_source"] = None, None
    return frame


def _labelled_to_chat_logs(frame: pd.DataFrame, path: Path, label_column: str) -> pd.DataFrame:
    stem = _stem(path)
    # the split as written, when the file's rows say it (a file-name split is in the stem already)
    parts = frame["_part"] if "_part" in frame else [
        str(v).strip().lower() if source == INPUT_COLUMN else "" for v, source in zip(frame["split"], frame["_split_source"])
    ]

    # a text repeated within one given split is kept as another record (an official test set stays whole; the
    # corpus deduplicates train and validation later); without a given split a repeat is a duplicate record
    given = frame["_split_source"].notna().to_numpy()
    repeat = pd.DataFrame({"part": list(parts), "text": frame["text"].astype(str).to_numpy()}).groupby(["part", "text"]).cumcount()

    def conv_id(text, part, n) -> str:
        digest = hashlib.sha256(str(text).encode("utf-8", "surrogateescape")).hexdigest()[:12]
        return (f"{stem}-{part}-{digest}" if part else f"{stem}-{digest}") + (f"-{n + 1}" if n else "")

    return pd.DataFrame(
        {
            "conversation_id": [conv_id(t, p, n if g else 0) for t, p, n, g in zip(frame["text"], parts, repeat, given)],
            "turn": 0,
            "timestamp": None,
            "speaker": "customer",
            "text": frame["text"],
            "intent": frame[label_column],
            "channel": "dataset",
            "split": frame["split"],
            "_split_source": frame["_split_source"],
            "_source": frame["_source"],
        }
    )


_INTERNAL = ["_split_source", "_source"]  # columns the readers add, never part of the output


def read_file(path: Path, folds: set[int] | None = None) -> tuple[pd.DataFrame, list[dict], str]:
    """Read one file into chat-log shaped raw records, plus line-level rejects and the input kind (``folds``: the
    test folds of the input, when it is fold files)."""
    name = path.name
    rejects: list[dict] = []
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        records, rejects = _read_jsonl(path)
        frame = pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=["_source"])
    elif name.endswith((".csv", ".csv.gz")):
        frame = _read_csv(path)
    elif name.endswith(".parquet"):
        frame = _read_parquet(path)
    else:
        frame = _read_json(path)

    columns = set(frame.columns) - {"_part", "_split_source"}
    if frame.empty and rejects:
        return pd.DataFrame(columns=[*CHAT_LOG_COLUMNS, *_INTERNAL]), rejects, "chat_logs"
    if "text" not in columns:
        raise ChatLogLoadError(f"{path}: no 'text' column (found: {sorted(columns - {'_source'})})")
    frame = _with_split(frame, path, folds)
    if {"conversation_id", "turn", "speaker"} <= columns:
        if "intent" not in columns and "intents" in columns:  # a label set per message
            frame["intent"] = frame["intents"]
        for optional in ("timestamp", "intent", "channel"):
            if optional not in columns:
                frame[optional] = None
        return frame[[*CHAT_LOG_COLUMNS, *_INTERNAL]], rejects, "chat_logs"
    label = next((c for c in LABEL_COLUMNS if c in columns), None)
    if label is None:
        raise ChatLogLoadError(
            f"{path}: neither chat logs (conversation_id, turn, speaker, text, ...) nor labelled data "
            f"(text + one of {', '.join(LABEL_COLUMNS)}); found columns {sorted(columns - {'_source'})}"
        )
    return _labelled_to_chat_logs(frame, path, label), rejects, "labelled"


# --------------------------------------------------------------------------------------------------- the loader
def _printable(value) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = str(value)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _quarantine_rows(frame: pd.DataFrame, reasons: dict) -> pd.DataFrame:
    rows = []
    for idx, (fld, reason) in reasons.items():
        rec = frame.loc[idx]
        rows.append(
            {
                "source": rec["_source"],
                "record": f"{_printable(rec['conversation_id'])}/{_printable(rec['turn'])}",
                "field": fld,
                "reason": reason,
                **{c: _printable(rec[c]) for c in CHAT_LOG_COLUMNS},
                "day": rec.get("_day"),
            }
        )
    return pd.DataFrame(rows, columns=QUARANTINE_COLUMNS)


def validate_records(frame: pd.DataFrame, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split raw records into (valid typed chat logs, quarantined rows with field and reason).

    With a ``_day`` column (the loader's partition day), both outputs carry it as ``day``, and rows flagged in
    ``_outside`` (a timestamp outside the calendar) are quarantined on field ``timestamp``."""
    frame = frame.reset_index(drop=True).astype({c: object for c in CHAT_LOG_COLUMNS})
    failures: dict[int, tuple[str, str]] = {}
    try:
        raw_record_schema(max_text_chars).validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        for row in cases.itertuples(index=False):
            if pd.isna(row.index):
                raise ChatLogLoadError(f"schema failure not tied to a record: {row.column}: {row.check}") from exc
            idx = int(row.index)
            reason = "missing value" if row.check == "not_nullable" else str(row.check)
            failures.setdefault(idx, (str(row.column), reason))
    if "_outside" in frame:
        for idx in frame.index[frame["_outside"].to_numpy(dtype=bool)]:
            failures.setdefault(int(idx), ("timestamp", OUTSIDE_CALENDAR))

    ok = frame.drop(index=list(failures))
    labels = ok["intent"].map(parse_labels)
    valid = pd.DataFrame(
        {
            "conversation_id": ok["conversation_id"].map(lambda v: str(v).strip()),
            "turn": ok["turn"].map(lambda v: int(float(v))).astype("int64"),
            "timestamp": pd.to_datetime(ok["timestamp"].map(lambda v: v if v not in ("", None) else None), utc=True, format="ISO8601"),
            "speaker": ok["speaker"].map(lambda v: v.strip().lower()),
            "text": ok["text"],
            "intent": labels.map(lambda v: v[0] if v else ""),
            "intents": labels,
            "channel": ok["channel"].map(lambda v: "unknown" if v is None or (isinstance(v, float) and pd.isna(v)) or v == "" else str(v)),
            "split": ok["split"].map(lambda v: normalize_split(v) or ""),
            "split_source": ok["_split_source"].map(lambda v: v if isinstance(v, str) else ""),
            "_source": ok["_source"],
            **({"day": ok["_day"].astype(str)} if "_day" in ok else {}),
        }
    )
    # the same (conversation_id, turn) twice: keep the first, quarantine the rest
    dup = valid.duplicated(subset=["conversation_id", "turn"], keep="first")
    for idx in valid.index[dup]:
        failures[idx] = ("conversation_id,turn", "duplicate record: this conversation turn was already seen")
    valid = valid[~dup]
    quarantined = _quarantine_rows(frame, {i: failures[i] for i in sorted(failures)})
    valid.insert(0, "record_id", [record_id(c, t) for c, t in zip(valid["conversation_id"], valid["turn"])])
    valid = valid.drop(columns=["_source"]).reset_index(drop=True)
    return CHAT_LOG_SCHEMA.validate(valid), quarantined


def load_chat_logs(location: str | Path, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS, limit: int | None = None,
                   days: Collection[str] | None = None, calendar: Calendar | None = None,
                   test_fold_count: int = DEFAULT_TEST_FOLDS) -> LoadResult:
    """Read every supported file at ``location``; validate; return valid rows and quarantined rows.

    Every row (valid or quarantined) carries its ``day`` (``intent_assets.data.days``). With ``days``, only the records
    of those days are read (a file whose name gives another day is not opened) and ``rows_in`` counts those.
    ``limit`` keeps the first N records (before validation), for tiny configurations. In a folder, a JSON list of
    label names (Banking77's ``categories.json``) is not data: it is skipped and listed in ``skipped``. Fold files:
    the ``test_fold_count`` highest-numbered folds are the test split.
    """
    calendar = calendar or Calendar()
    wanted = set(days) if days is not None else None
    frames, rejects, kinds, files, skipped = [], [], set(), [], []
    in_folder = Path(location).is_dir()
    every = list_input_files(location)
    folds = folds_for_test(every, test_fold_count)
    selected = in_files(every, calendar, wanted)
    for path in selected:
        try:
            frame, file_rejects, kind = read_file(path, folds)
        except LabelListFile:
            if not in_folder:
                raise
            skipped.append(str(path))
            continue
        file_day = calendar.file_day(path)
        frames.append(frame.assign(_file_day=file_day))
        rejects.extend({**r, "day": file_day or calendar.first} for r in file_rejects)
        kinds.add(kind)
        files.append(str(path))
    if not frames and selected:
        raise ChatLogLoadError(f"{location}: no records, only label lists ({', '.join(Path(s).name for s in skipped)})")
    if not frames:  # every file is another day's: none of the days asked for landed, an empty day
        frames = [pd.DataFrame(columns=[*CHAT_LOG_COLUMNS, *_INTERNAL, "_file_day"])]
    frame = pd.concat(frames, ignore_index=True)
    frame["_day"], frame["_outside"] = calendar.record_days(frame["timestamp"], frame["_file_day"])
    frame = frame.drop(columns="_file_day")
    if wanted is not None:
        frame = frame[frame["_day"].isin(wanted)].reset_index(drop=True)
        rejects = [r for r in rejects if r["day"] in wanted]
    if limit is not None:
        frame = frame.head(limit)
        rejects = rejects[: max(0, limit - len(frame))]
    by_day = Counter(frame["_day"]) + Counter(r["day"] for r in rejects)
    valid, quarantined = validate_records(frame, max_text_chars)
    line_rejects = pd.DataFrame(
        [{"record": r["source"], **{c: None for c in CHAT_LOG_COLUMNS}, **r} for r in rejects], columns=QUARANTINE_COLUMNS
    )
    quarantined = pd.concat([line_rejects, quarantined], ignore_index=True) if rejects else quarantined
    rows_in = len(frame) + len(rejects)
    if rows_in != len(valid) + len(quarantined):
        raise RuntimeError(f"loader lost records: {rows_in} in, {len(valid)} valid, {len(quarantined)} quarantined")
    return LoadResult(valid, quarantined, rows_in, "+".join(sorted(kinds)) or "empty", files, skipped,
                      {d: int(n) for d, n in sorted(by_day.items())})


def data_days(location: str | Path, calendar: Calendar | None = None) -> list[str]:
    """The days (partition keys) that hold records at ``location``: from file names where they give one, else by
    reading the file (timestamps; undated records are the first day's). What ``make run`` materializes."""
    calendar = calendar or Calendar()
    found: set[str] = set()
    for path in list_input_files(location):
        day = calendar.file_day(path)
        if day is not None:
            found.add(day)
            continue
        try:
            frame, rejects, _ = read_file(path)
        except LabelListFile:
            continue
        if rejects:
            found.add(calendar.first)
        if len(frame):
            found.update(calendar.record_days(frame["timestamp"], pd.Series(None, index=frame.index, dtype=object))[0])
    return sorted(found)
