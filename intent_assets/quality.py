"""Data- and model-quality rules behind the asset checks (no Dagster import): each returns (passed, details)
with counts, shares, labels and scores only, never message text."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

# at most this share of the input records may be quarantined (malformed lines, unknown speakers, bad timestamps,
# repeated turns, ...) before the source or its format is suspect
MAX_QUARANTINE_SHARE = 0.05
# the classical baselines every system is compared with in eval_report
CLASSICAL_BASELINES = ("TF-IDF + linear SVM", "MiniLM-L6 + logistic regression")
# the same two feature sets as one-vs-rest multi-label classifiers (eval_report's multi-intent table)
MULTI_LABEL_BASELINES = ("TF-IDF one-vs-rest + threshold", "MiniLM-L6 one-vs-rest + threshold")
ZERO_SHOT = "base model zero-shot"


def schema_violations(frame: pd.DataFrame, schema) -> list[dict]:
    """Failure cases of a pandera ``schema`` on ``frame`` (lazy: all of them), as (column, check, count) rows.
    Failing values are left out: they may be raw personal data."""
    import pandera.pandas as pa

    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases
        grouped = cases.groupby([cases["column"].astype(str), cases["check"].astype(str)], dropna=False).size()
        return [{"column": c, "check": k, "failures": int(n)} for (c, k), n in grouped.items()]
    return []


def quarantine_share(rows_valid: int, rows_quarantined: int, max_share: float = MAX_QUARANTINE_SHARE) -> tuple[bool, dict]:
    total = rows_valid + rows_quarantined
    share = rows_quarantined / total if total else 0.0
    return share <= max_share and total > 0, {
        "rows_in": total, "rows_quarantined": rows_quarantined, "quarantine_share": round(share, 4), "max_share": max_share,
    }


def synthetic_share_by_intent(records: pd.DataFrame, max_share: float) -> tuple[bool, dict]:
    """Per intent of the training split: synthetic rows must not exceed ``floor(max_share * real rows)`` (the cap
    ``synthetic_augments`` plans with). ``records`` needs ``split``, ``intent`` and ``synthetic``."""
    train = records[records["split"] == "train"]
    synthetic = train[train["synthetic"]].groupby("intent").size()
    real = train[~train["synthetic"]].groupby("intent").size()
    over = {
        str(intent): {"synthetic": int(n), "real": int(real.get(intent, 0)),
                      "cap": math.floor(max_share * int(real.get(intent, 0)) + 1e-9)}
        for intent, n in synthetic.items()
        if n > math.floor(max_share * int(real.get(intent, 0)) + 1e-9)
    }
    share = float(train["synthetic"].mean()) if len(train) else 0.0
    return not over, {
        "max_share": max_share, "synthetic_rows": int(synthetic.sum()), "train_rows": len(train),
        "synthetic_share_of_train": round(share, 4), "intents_with_synthetic_rows": len(synthetic),
        "intents_over_cap": over,
    }


def compare_systems(summary: Mapping[str, Mapping[str, float]], candidate: str, baselines: tuple[str, ...],
                    metric: str = "macro_f1") -> tuple[bool, dict]:
    """Does ``candidate`` score at least as high on ``metric`` as every one of ``baselines`` present in
    ``summary`` (system -> metrics)? Fails when the candidate or every baseline is missing."""
    if candidate not in summary:
        return False, {"reason": f"{candidate!r} is not in the report"}
    present = {name: summary[name][metric] for name in baselines if name in summary}
    if not present:
        return False, {"reason": f"none of {list(baselines)} is in the report"}
    best_name = max(present, key=present.get)
    score = summary[candidate][metric]
    return score >= present[best_name], {
        "metric": metric, "candidate": candidate, "candidate_score": round(score, 4),
        "best_baseline": best_name, "best_baseline_score": round(present[best_name], 4),
        "margin": round(score - present[best_name], 4), "baselines": {k: round(v, 4) for k, v in present.items()},
    }
