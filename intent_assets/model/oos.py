"""Out-of-scope routing (no Dagster import): requests no intent covers go to a human.

Two mechanisms, used together: the taxonomy may carry an out-of-scope label (CLINC150's ``oos``; the model learns
it from out-of-scope training examples), and a confidence threshold calibrated on validation data sends any
prediction the model is unsure of to that label too. Reported separately, as in CLINC150's paper (Larson et al.,
2019): accuracy on in-scope requests and recall (and precision) of out-of-scope ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["OOS_LABELS", "apply_threshold", "calibrate_threshold", "oos_label", "oos_report"]

OOS_LABELS = ("oos", "out_of_scope")


def oos_label(labels: Sequence[str]) -> str | None:
    """The taxonomy's out-of-scope label (``oos`` or ``out_of_scope``), or None when it has none."""
    return next((label for label in OOS_LABELS if label in set(labels)), None)


def oos_report(gold: Sequence[str], pred: Sequence[str], oos: str) -> dict:
    """In-scope accuracy (over gold in-scope requests; predicting ``oos`` for one is wrong), out-of-scope recall
    and precision, and the counts."""
    gold, pred = [str(g) for g in gold], [str(p) for p in pred]
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    ins = [(g, p) for g, p in zip(gold, pred) if g != oos]
    out = [p for g, p in zip(gold, pred) if g == oos]
    predicted_oos = sum(p == oos for p in pred)
    hits = sum(p == oos for p in out)
    return {
        "in_scope_n": len(ins),
        "oos_n": len(out),
        "in_scope_accuracy": sum(g == p for g, p in ins) / len(ins) if ins else float("nan"),
        "oos_recall": hits / len(out) if out else float("nan"),
        "oos_precision": hits / predicted_oos if predicted_oos else float("nan"),
    }


def apply_threshold(pred: Sequence[str], confidence: Sequence[float], threshold: float, oos: str) -> list[str]:
    """Every prediction whose confidence is below ``threshold`` becomes ``oos``."""
    return [oos if (c < threshold) else p for p, c in zip(pred, confidence)]


def calibrate_threshold(gold: Sequence[str], pred: Sequence[str], confidence: Sequence[float], oos: str,
                        min_in_scope_accuracy_ratio: float = 0.0) -> dict:
    """The confidence threshold that maximizes the mean of in-scope accuracy and out-of-scope recall on these
    (validation) predictions, among thresholds that keep at least ``min_in_scope_accuracy_ratio`` of the
    un-thresholded in-scope accuracy. Candidates: 0 (no threshold) and every distinct confidence. Returns
    ``{"threshold", "balanced", **oos_report}``; the smallest best threshold wins ties."""
    conf = np.asarray(confidence, dtype=float)
    if len(conf) != len(gold):
        raise ValueError("one confidence per prediction")
    base = oos_report(gold, pred, oos)
    floor = min_in_scope_accuracy_ratio * (base["in_scope_accuracy"] if base["in_scope_n"] else 0.0)
    best = None
    for t in [0.0, *sorted(set(np.nextafter(conf[np.isfinite(conf)], np.inf).tolist()))]:
        rep = oos_report(gold, apply_threshold(pred, conf, t, oos), oos)
        acc = rep["in_scope_accuracy"] if rep["in_scope_n"] else 1.0
        rec = rep["oos_recall"] if rep["oos_n"] else 1.0
        if acc < floor:
            continue
        score = (acc + rec) / 2
        if best is None or score > best["balanced"] + 1e-12:
            best = {"threshold": float(t), "balanced": score, **rep}
    assert best is not None  # t = 0 always qualifies
    return best
