"""Tests for ``intent_assets.privacy.pii_audit`` (plain module: no Dagster needed)."""

import json
import stat

import pandas as pd
import pytest

from intent_assets.privacy.pii_audit import AUDIT_COLUMNS, SALT_ENV, audit_id, audit_rows, resolve_salt, summary

SALT = b"s" * 32


def frame(texts, conv="c1"):
    return pd.DataFrame({"record_id": [f"r{i}" for i in range(len(texts))], "conversation_id": [conv] * len(texts),
                         "turn": list(range(len(texts))), "speaker": ["customer"] * len(texts), "text": texts})


def test_rows_hold_types_and_positions_never_values():
    text = "my name is Maria Lopez, email maria.lopez@gmail.com"
    rows = audit_rows(frame([text, "where is my card"]), SALT)
    assert list(rows.columns) == AUDIT_COLUMNS and len(rows) == 2
    first = rows.iloc[0]
    assert first["pii_count"] == 2 and first["entity_types"] == "PERSON,EMAIL"
    assert json.loads(first["counts"]) == {"PERSON": 1, "EMAIL": 1}
    positions = json.loads(first["positions"])
    assert [text[s:e] for _t, s, e, _d in positions] == ["Maria Lopez", "maria.lopez@gmail.com"]
    dumped = rows.to_csv()
    assert "Maria" not in dumped and "gmail" not in dumped and "Lopez" not in dumped
    assert rows.iloc[1]["pii_count"] == 0 and rows.iloc[1]["positions"] == "[]"
    assert summary(rows)["spans_by_type"] == {"PERSON": 1, "EMAIL": 1}


def test_audit_id_is_keyed_stable_and_distinct():
    a = audit_id(SALT, "jane@example.com", 3)
    assert a == audit_id(SALT, "jane@example.com", 3) and len(a) == 24
    assert a != audit_id(b"t" * 32, "jane@example.com", 3)  # another salt: another id
    assert a != audit_id(SALT, "jane@example.com", 4)
    assert "jane" not in a


def test_salt_from_environment_or_a_private_installation_file(tmp_path):
    salt, source = resolve_salt("x" * 20, tmp_path)
    assert salt == b"x" * 20 and SALT_ENV in source and not (tmp_path / ".audit_salt").exists()
    with pytest.raises(ValueError, match="at least"):
        resolve_salt("short", tmp_path)
    salt1, source1 = resolve_salt(None, tmp_path)
    salt2, _ = resolve_salt(None, tmp_path)
    assert salt1 == salt2 and len(salt1) >= 32 and "unset" in source1
    assert stat.S_IMODE((tmp_path / ".audit_salt").stat().st_mode) == 0o600
    other, _ = resolve_salt(None, tmp_path / "other_install")
    assert other != salt1  # random per installation, no constant in code


def test_bad_input_names_record_and_field():
    bad = frame(["ok", "fine"])
    bad.loc[1, "text"] = None
    with pytest.raises(ValueError, match=r"record r1: field 'text'"):
        audit_rows(bad, SALT)
    with pytest.raises(ValueError, match="lacks column"):
        audit_rows(bad.drop(columns=["turn"]), SALT)
