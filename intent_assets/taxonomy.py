"""The versioned intent schema (no Dagster import).

A taxonomy file is JSON: ``{"name", "version", "source", "intents": [{"name", "description"}, ...]}``.
Labels outside it never reach training data: :func:`partition_by_taxonomy` sets them aside with a reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

_NAME = re.compile(r"^[^\s\"\\{}]+$")  # labels go into JSON answers: no whitespace, quotes, backslashes, braces


class TaxonomyError(ValueError):
    pass


@dataclass(frozen=True)
class Taxonomy:
    name: str
    version: str
    intents: tuple[tuple[str, str], ...]  # (name, description), in file order
    source: str = ""

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.intents]

    @property
    def descriptions(self) -> dict[str, str]:
        return dict(self.intents)

    @property
    def fingerprint(self) -> str:
        """Content hash: changes whenever a name or description changes."""
        return hashlib.sha256(json.dumps(self.intents).encode()).hexdigest()[:12]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "intents": [{"name": n, "description": d} for n, d in self.intents],
        }

    @classmethod
    def from_dict(cls, data: dict, origin: str = "<dict>") -> "Taxonomy":
        for key in ("name", "version", "intents"):
            if key not in data:
                raise TaxonomyError(f"{origin}: missing field '{key}'")
        intents, seen = [], set()
        for i, item in enumerate(data["intents"]):
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str) or not _NAME.match(name):
                raise TaxonomyError(f"{origin}: intents[{i}].name {name!r} is not a label (non-empty, no whitespace, quotes, backslashes or braces)")
            if name in seen:
                raise TaxonomyError(f"{origin}: intents[{i}].name {name!r} is duplicated")
            description = item.get("description", "")
            if not isinstance(description, str) or not description.strip():
                raise TaxonomyError(f"{origin}: intents[{i}].description of {name!r} is empty")
            seen.add(name)
            intents.append((name, description.strip()))
        if not intents:
            raise TaxonomyError(f"{origin}: no intents")
        return cls(str(data["name"]), str(data["version"]), tuple(intents), str(data.get("source", "")))


def load_taxonomy(path: str | Path) -> Taxonomy:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TaxonomyError(f"{path}: cannot read taxonomy: {exc}") from exc
    return Taxonomy.from_dict(data, origin=str(path))


def partition_by_taxonomy(frame: pd.DataFrame, taxonomy: Taxonomy) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows whose ``intent`` is in the taxonomy, rows outside it with ``field``/``reason`` columns)."""
    known = frame["intent"].isin(set(taxonomy.names))
    outside = frame[~known].copy()
    outside["field"] = "intent"
    outside["reason"] = [f"intent {v!r} is not in taxonomy {taxonomy.name} v{taxonomy.version}" for v in outside["intent"]]
    return frame[known].copy(), outside
