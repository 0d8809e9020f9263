"""The versioned intent schema (no Dagster import).

A taxonomy file is JSON: ``{"name", "version", "source", "intents": [{"name", "description"}, ...]}``.
Labels outside it never reach training data: :func:`partition_by_taxonomy` sets them aside with a reason.

A taxonomy may also be **derived** from the labels of the data (:func:`derive_taxonomy`): the distinct labels of
the labelled customer messages, sorted, with a content version ``derived-<hash of the labels>`` and no
descriptions (``"derived": true`` in its JSON; a derived taxonomy is the only kind whose descriptions may be
empty). :func:`resolve_taxonomy` chooses between a file and a derived taxonomy (``auto``, ``derive`` or a path).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

AUTO, DERIVE = "auto", "derive"
# auto: a shipped taxonomy is used when it holds the labels of at least this share of the labelled messages
AUTO_MIN_COVERAGE = 0.5
_SPLIT_STEMS = {"train", "validation", "val", "dev", "test", "data_full"}

_NAME = re.compile(r"^[^\s\"\\{}]+$")  # labels go into JSON answers: no whitespace, quotes, backslashes, braces


class TaxonomyError(ValueError):
    pass


@dataclass(frozen=True)
class Taxonomy:
    name: str
    version: str
    intents: tuple[tuple[str, str], ...]  # (name, description), in file order
    source: str = ""
    derived: bool = False  # derived from the data's labels: descriptions may be empty

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
            **({"derived": True} if self.derived else {}),
            "intents": [{"name": n, "description": d} for n, d in self.intents],
        }

    @classmethod
    def from_dict(cls, data: dict, origin: str = "<dict>") -> "Taxonomy":
        for key in ("name", "version", "intents"):
            if key not in data:
                raise TaxonomyError(f"{origin}: missing field '{key}'")
        intents, seen = [], set()
        derived = data.get("derived") is True
        for i, item in enumerate(data["intents"]):
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str) or not _NAME.match(name):
                raise TaxonomyError(f"{origin}: intents[{i}].name {name!r} is not a label (non-empty, no whitespace, quotes, backslashes or braces)")
            if name in seen:
                raise TaxonomyError(f"{origin}: intents[{i}].name {name!r} is duplicated")
            description = item.get("description", "")
            if not isinstance(description, str) or not (description.strip() or derived):
                raise TaxonomyError(f"{origin}: intents[{i}].description of {name!r} is empty")
            seen.add(name)
            intents.append((name, description.strip()))
        if not intents:
            raise TaxonomyError(f"{origin}: no intents")
        return cls(str(data["name"]), str(data["version"]), tuple(intents), str(data.get("source", "")), derived)


def load_taxonomy(path: str | Path) -> Taxonomy:
    """A taxonomy file: the project's format (name, version, intents as a list of name + description), or an
    ontology as NLU++ ships it (``{"intents": {name: {"description": ..., "domain": [...]}}, "slots": ...}``),
    named after its data set's folder, version 1."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TaxonomyError(f"{path}: cannot read taxonomy: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("intents"), dict) and "name" not in data:
        folder = path.parent.parent if path.parent.name == "data" else path.parent
        data = {"name": folder.name or "ontology", "version": "1", "source": str(path),
                "intents": [{"name": name, "description": (item or {}).get("description", "")
                             if isinstance(item, dict) else ""} for name, item in data["intents"].items()]}
    return Taxonomy.from_dict(data, origin=str(path))


def partition_by_taxonomy(frame: pd.DataFrame, taxonomy: Taxonomy) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows whose labels are all in the taxonomy, rows outside it with ``field``/``reason`` columns). With an
    ``intents`` column (label sets) every label of a row must be known, and the reason names the first that is not;
    an empty set (a message labelled with no intent) is known."""
    names = set(taxonomy.names)
    if "intents" in frame:
        first_unknown = [next((x for x in labels if x not in names), None) for labels in frame["intents"]]
    else:
        first_unknown = [None if v in names else v for v in frame["intent"]]
    known = pd.Series([u is None for u in first_unknown], index=frame.index, dtype=bool)
    outside = frame[~known].copy()
    outside["field"] = "intent"
    outside["reason"] = [f"intent {u!r} is not in taxonomy {taxonomy.name} v{taxonomy.version}"
                         for u, k in zip(first_unknown, known) if not k]
    return frame[known].copy(), outside


def label_sets(frame: pd.DataFrame) -> list[tuple[str, ...]]:
    """Each row's label set: its ``intents`` when the frame has them, else the one ``intent``."""
    if "intents" in frame:
        return [tuple(v) if v is not None else () for v in frame["intents"]]
    return [(v,) if v else () for v in frame["intent"]]


def is_multi_intent(frame: pd.DataFrame) -> bool:
    """Whether any row's label set has other than one intent (several, or none): the graph then answers lists."""
    return any(len(s) != 1 for s in label_sets(frame))


def single_intent(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows labelled with exactly one intent (what paraphrases, blends and single-label baselines take)."""
    keep = [len(s) == 1 for s in label_sets(frame)]
    return frame[pd.Series(keep, index=frame.index, dtype=bool)]


def labels_long(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (message, label): ``frame`` exploded over its label sets into ``intent`` (a message labelled
    with none gives no row)."""
    if "intents" not in frame:
        return frame[frame["intent"] != ""]
    long = frame.drop(columns=["intent"]).assign(intent=[list(s) for s in label_sets(frame)]).explode("intent")
    return long[long["intent"].notna()]


def labelled_messages(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows that are training data: customer messages with a label set (one intent, several, or none: NLU++
    labels some messages with no intent, and a model must learn to answer those with an empty list). The result
    always has ``intents`` (a list per row; ``[intent]`` for single-label input) and ``intent`` (the first label,
    empty when there is none)."""
    customer = frame[frame["speaker"] == "customer"]
    if "intents" in customer:
        given = customer["intents"].map(lambda v: v is not None and not (isinstance(v, float) and pd.isna(v)))
        out = customer[given].copy()
        out["intents"] = [list(v) for v in out["intents"]]
        out["intent"] = [v[0] if len(v) else "" for v in out["intents"]]
        return out
    out = customer[customer["intent"] != ""].copy()
    out["intents"] = [[v] for v in out["intent"]]
    return out


def coverage(taxonomy: Taxonomy, labels: pd.Series) -> float:
    """Share of the labels (``labels``: one per row, e.g. :func:`labels_long`) that are in ``taxonomy``."""
    return float(labels.isin(set(taxonomy.names)).mean()) if len(labels) else 0.0


def dataset_name(source: str | Path | None) -> str:
    """A derived taxonomy's name: the data file's stem, or its folder's name when the stem is a split name or
    CLINC150's ``data_full`` (``.../banking77/train.csv`` -> ``banking77``)."""
    if not source:
        return "derived"
    path = Path(str(source))
    stem = Path(path.name.removesuffix(".gz")).stem
    if stem.lower() in _SPLIT_STEMS and path.parent.name:
        stem = path.parent.name
    return stem or "derived"


def derive_taxonomy(labelled: pd.DataFrame, name: str, source: str = "") -> Taxonomy:
    """The taxonomy of the labels of ``labelled`` (columns ``intent`` and ``record_id``): sorted, no descriptions,
    version ``derived-<hash of the sorted labels>``. A label that cannot be an intent name (whitespace, quotes,
    backslashes, braces: the model answers it inside JSON) is an error naming it and a record that carries it."""
    if labelled.empty:
        raise TaxonomyError("cannot derive a taxonomy: no labelled customer messages (field intent) in the data")
    first = labelled.drop_duplicates("intent")
    bad = [(label, rid) for label, rid in zip(first["intent"], first["record_id"]) if not _NAME.match(str(label))]
    if bad:
        listed = "; ".join(f"{label!r} (record {rid})" for label, rid in bad[:10])
        raise TaxonomyError(
            f"cannot derive a taxonomy: {len(bad)} label(s) in field intent are not intent names (no whitespace, "
            f"quotes, backslashes or braces): {listed}. Rename them in the data, or give a taxonomy file."
        )
    labels = sorted(str(label) for label in first["intent"])
    digest = hashlib.sha256(json.dumps(labels).encode()).hexdigest()[:12]
    return Taxonomy(name, f"derived-{digest}", tuple((label, "") for label in labels), source, derived=True)


def resolve_taxonomy(
    choice: str,
    labelled: pd.DataFrame | None,
    shipped: Sequence[str | Path],
    *,
    name: str = "derived",
    source: str = "",
    min_coverage: float = AUTO_MIN_COVERAGE,
) -> tuple[Taxonomy, dict]:
    """The taxonomy for ``choice`` (a file path, ``derive`` or ``auto``) and how it was chosen.

    ``labelled``: the labelled customer messages (``intent``, ``record_id``), None when not known yet.
    ``shipped``: the shipped taxonomy files, the default first (``auto`` keeps it when no labels are known).

    * a path: that file, as always (labels outside it are quarantined downstream);
    * ``derive``: derived from the labels;
    * ``auto``: the shipped file that holds the labels of most labelled messages when it holds at least
      ``min_coverage`` of them, else derived from the labels.
    """
    labels = labelled["intent"] if labelled is not None else pd.Series(dtype=str)
    if choice == DERIVE:
        if labelled is None:
            raise TaxonomyError("derive: the labels come from redacted_corpus, which is not materialized yet")
        taxonomy = derive_taxonomy(labelled, name, source)
        return taxonomy, {"mode": DERIVE, "reason": "derived from the labels of the data (configured)",
                          "coverage": coverage(taxonomy, labels)}
    if choice != AUTO:
        taxonomy = load_taxonomy(choice)
        return taxonomy, {"mode": "file", "reason": "configured file", "source_file": str(choice),
                          "coverage": coverage(taxonomy, labels) if len(labels) else None}
    if not shipped:
        raise TaxonomyError("auto: no shipped taxonomy files")
    if not len(labels):
        taxonomy = load_taxonomy(shipped[0])
        return taxonomy, {"mode": AUTO, "source_file": str(shipped[0]), "coverage": None,
                          "reason": "no labelled messages known yet (redacted_corpus not materialized, or unlabelled): "
                                    "the default file"}
    scored = [(coverage(t, labels), str(path), t) for path, t in ((p, load_taxonomy(p)) for p in shipped)]
    best = max(scored, key=lambda item: item[0])  # the first (the default) on ties
    candidates = {Path(path).name: round(share, 4) for share, path, _ in scored}
    if best[0] >= min_coverage:
        return best[2], {"mode": AUTO, "source_file": best[1], "coverage": best[0], "candidates": candidates,
                         "reason": f"{Path(best[1]).name} holds the labels of {best[0]:.1%} of the labelled messages "
                                   f"(at least {min_coverage:.0%})"}
    taxonomy = derive_taxonomy(labelled, name, source)
    return taxonomy, {"mode": AUTO, "coverage": coverage(taxonomy, labels), "candidates": candidates,
                      "reason": f"no shipped taxonomy holds the labels of {min_coverage:.0%} of the labelled messages "
                                f"(best {best[0]:.1%}): derived from the labels"}
