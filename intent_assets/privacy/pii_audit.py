"""The auditor's view of redaction: one row per raw record, what was found where, never the values (no Dagster).

    >>> salt = b"0" * 32
    >>> rows = audit_rows(frame, salt)      # frame: raw_chat_logs (record_id, conversation_id, turn, text)
    >>> rows.columns.tolist()
    ['audit_id', 'record_id', 'speaker', 'text_chars', 'pii_count', 'entity_types', 'detectors', 'counts', 'positions']

* ``audit_id``: HMAC-SHA256 over (conversation id, turn) keyed with a secret salt, 24 hex characters. Stable across
  runs with the same salt; without the salt it cannot be recomputed from a guessed conversation id (an e-mail
  address, a phone number), unlike the unkeyed ``record_id``. Whoever holds the salt (a privacy officer answering a
  data-subject request) can compute it from a known conversation id and turn with :func:`audit_id`.
* ``record_id``: the graph-wide id that ``redacted_corpus``, ``dataset_splits`` and ``instruction_dataset`` carry:
  the join key for tracing a record downstream.
* ``entity_types``, ``detectors``, ``counts`` (JSON: type -> spans), ``positions`` (JSON list of
  ``[type, start, end, detector]``, character offsets in the raw text): where redaction happened, not what was there.

The salt comes from the environment (``INTENT_ASSETS_AUDIT_SALT``). When it is unset, :func:`resolve_salt` creates a
random per-installation salt file next to the raw data (same access restrictions as the raw data) and reports that
it did so; there is no salt constant in code.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

import pandas as pd

from intent_assets.privacy.pii import ENTITY_TYPES, redact_many

SALT_ENV = "INTENT_ASSETS_AUDIT_SALT"
SALT_FILE_NAME = ".audit_salt"
MIN_SALT_BYTES = 16
AUDIT_COLUMNS = ["audit_id", "record_id", "speaker", "text_chars", "pii_count", "entity_types", "detectors", "counts", "positions"]


def resolve_salt(env_value: str | None, salt_dir: Path) -> tuple[bytes, str]:
    """(salt, where it came from). ``env_value`` wins; otherwise a per-installation salt file under ``salt_dir``
    (created with 32 random bytes, mode 0600, on first use)."""
    if env_value:
        if len(env_value.encode()) < MIN_SALT_BYTES:
            raise ValueError(f"{SALT_ENV} must be at least {MIN_SALT_BYTES} bytes long (got {len(env_value.encode())})")
        return env_value.encode(), f"environment variable {SALT_ENV}"
    path = Path(salt_dir) / SALT_FILE_NAME
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        tmp.replace(path)
    salt = path.read_text().strip().encode()
    if len(salt) < MIN_SALT_BYTES:
        raise ValueError(f"salt file {path} is shorter than {MIN_SALT_BYTES} bytes: delete it to get a new one")
    return salt, f"{SALT_ENV} unset: per-installation salt file {path}"


def audit_id(salt: bytes, conversation_id: str, turn: int) -> str:
    """Keyed, non-reversible id of one raw message (24 hex characters)."""
    msg = f"{conversation_id}\x1f{int(turn)}".encode()
    return hmac.new(salt, msg, hashlib.sha256).hexdigest()[:24]


def audit_rows(frame: pd.DataFrame, salt: bytes, processes: int = 1) -> pd.DataFrame:
    """One audit row per row of ``frame`` (raw chat logs); raises ``ValueError`` naming the record and field of
    any bad input. ``processes``: worker processes for the PII scan (``pii.redact_many``: the same spans as
    ``find_pii``, in order)."""
    missing = [c for c in ("record_id", "conversation_id", "turn", "text") if c not in frame.columns]
    if missing:
        raise ValueError(f"raw_chat_logs lacks column(s) {missing}")
    for rid, conv, text in zip(frame["record_id"], frame["conversation_id"], frame["text"]):
        if not isinstance(text, str):
            raise ValueError(f"record {rid}: field 'text' must be a string, not {type(text).__name__}")
        if not isinstance(conv, str) or not conv:
            raise ValueError(f"record {rid}: field 'conversation_id' must be a non-empty string")
    found = [r.spans for r in redact_many(frame["text"].tolist(), processes=processes)]
    rows = []
    speakers = frame["speaker"] if "speaker" in frame.columns else pd.Series([""] * len(frame), index=frame.index)
    for rid, conv, turn, text, speaker, spans in zip(frame["record_id"], frame["conversation_id"], frame["turn"],
                                                     frame["text"], speakers, found):
        counts: dict[str, int] = {}
        for s in spans:
            counts[s.entity_type] = counts.get(s.entity_type, 0) + 1
        rows.append({
            "audit_id": audit_id(salt, conv, turn),
            "record_id": str(rid),
            "speaker": str(speaker),
            "text_chars": len(text),
            "pii_count": len(spans),
            "entity_types": ",".join(t for t in ENTITY_TYPES if t in counts),
            "detectors": ",".join(sorted({s.detector for s in spans})),
            "counts": json.dumps({t: counts[t] for t in ENTITY_TYPES if t in counts}),
            "positions": json.dumps([[s.entity_type, s.start, s.end, s.detector] for s in spans]),
        })
    out = pd.DataFrame(rows, columns=AUDIT_COLUMNS).astype({"text_chars": "int64", "pii_count": "int64"})
    if "day" in frame.columns:  # the daily partition of the raw record
        out["day"] = frame["day"].to_numpy()
    return out


def summary(rows: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Records and spans per entity type, and spans per detector (counts only)."""
    by_type: dict[str, int] = {}
    by_detector: dict[str, int] = {}
    for positions in rows["positions"]:
        for etype, _s, _e, det in json.loads(positions):
            by_type[etype] = by_type.get(etype, 0) + 1
            by_detector[det] = by_detector.get(det, 0) + 1
    return {"spans_by_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1])),
            "spans_by_detector": dict(sorted(by_detector.items(), key=lambda kv: -kv[1]))}
