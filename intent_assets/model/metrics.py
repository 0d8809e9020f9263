"""Evaluation metrics and the markdown report (no Dagster import).

Everything here works on labels and numbers only: no utterance text ever enters a report.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["classification_report", "latency_summary", "confusion_plot", "render_markdown"]

OOT = "<out-of-taxonomy>"  # the confusion-matrix column of predictions outside the label set


def _f1(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def classification_report(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str],
                          top_k: int = 10) -> dict:
    """Accuracy, macro/micro/weighted F1, per-intent precision/recall/F1/support, most confused pairs,
    out-of-taxonomy rate and confusion matrix.

    ``labels`` is the taxonomy: a prediction outside it counts as wrong (and in ``oot_rate``); it lands in an extra
    last column of the confusion matrix (``matrix_columns`` = labels + ``<out-of-taxonomy>``). Gold labels must be in
    ``labels``. Per-intent and averaged scores are computed over ``labels`` (sklearn's ``labels=`` semantics, zero
    division -> 0): micro F1 equals accuracy when there is no out-of-taxonomy prediction.
    """
    y_true = [str(y) for y in y_true]
    y_pred = [str(y) for y in y_pred]
    labels = list(dict.fromkeys(labels))
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} gold labels but {len(y_pred)} predictions")
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({y for y in y_true if y not in index})
    if unknown:
        raise ValueError(f"gold labels outside the taxonomy: {unknown[:5]}")
    n, k = len(y_true), len(labels)
    matrix = np.zeros((k, k + 1), dtype=np.int64)
    oot = 0
    for t, p in zip(y_true, y_pred):
        j = index.get(p)
        if j is None:
            oot += 1
            j = k
        matrix[index[t], j] += 1
    tp = np.diag(matrix[:, :k]).astype(float)
    support = matrix.sum(axis=1).astype(float)
    predicted = matrix[:, :k].sum(axis=0).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.array([_f1(p, r) for p, r in zip(precision, recall)])
    correct = float(tp.sum())
    micro_p = correct / float(predicted.sum()) if predicted.sum() else 0.0  # plain floats: the report is
    micro_r = correct / float(support.sum()) if support.sum() else 0.0      # stored as JSON and Dagster metadata
    weighted = float((f1 * support).sum() / support.sum()) if support.sum() else 0.0

    pairs = [(labels[i], labels[j] if j < k else OOT, int(matrix[i, j]))
             for i in range(k) for j in range(k + 1) if i != j and matrix[i, j] > 0]
    pairs.sort(key=lambda x: (-x[2], x[0], x[1]))
    return {
        "n": n,
        "labels": labels,
        "accuracy": correct / n if n else 0.0,
        "macro_f1": float(f1.mean()) if k else 0.0,
        "micro_f1": _f1(micro_p, micro_r),
        "weighted_f1": weighted,
        "oot_rate": oot / n if n else 0.0,
        "oot_count": oot,
        "per_intent": {
            label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                    "support": int(support[i])}
            for i, label in enumerate(labels)
        },
        "most_confused": [{"true": t, "predicted": p, "count": c} for t, p, c in pairs[:top_k]],
        "confusion_matrix": matrix.tolist(),
        "matrix_columns": labels + [OOT],
    }


def latency_summary(latencies_s: Sequence[float], total_wall_s: float, n: int) -> dict:
    """Per-request latency percentiles (ms) and throughput (requests / s of wall time)."""
    lat = np.asarray(list(latencies_s), dtype=float) * 1000.0
    if lat.size == 0:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "mean_ms": float("nan"),
                "throughput_per_s": float("nan")}
    return {
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "mean_ms": float(lat.mean()),
        "throughput_per_s": float(n / total_wall_s) if total_wall_s > 0 else float("nan"),
    }


def confusion_plot(matrix, labels: Sequence[str], path: str | Path | None = None, title: str = "") -> bytes:
    """Row-normalized confusion matrix as PNG bytes (also written to ``path`` when given).

    ``matrix`` is k x k or k x (k+1) (last column: out-of-taxonomy predictions, drawn as an extra column). Tick
    labels are small so that 77 (or 150) intents stay legible at the figure's resolution.
    """
    matrix = np.asarray(matrix, dtype=float)
    labels = list(labels)
    k = len(labels)
    if matrix.shape[0] != k or matrix.shape[1] not in (k, k + 1):
        raise ValueError(f"matrix of shape {matrix.shape} does not fit {k} labels")
    cols = labels + ([OOT] if matrix.shape[1] == k + 1 else [])
    rows = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)

    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global state, no GUI backend
    from matplotlib.figure import Figure

    side = min(max(6.0, 0.16 * k + 3), 30.0)
    font = 8 if k <= 30 else (5 if k <= 100 else 3.5)
    fig = Figure(figsize=(side + 1.5, side), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto")
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(cols, rotation=90, fontsize=font)
    ax.set_yticks(range(k))
    ax.set_yticklabels(labels, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (rows normalized)", fontsize=10)
    ax.set_xticks(np.arange(-0.5, len(cols), 1), minor=True)
    ax.set_yticks(np.arange(-0.5, k, 1), minor=True)
    ax.grid(which="minor", color="#eeeeee", linewidth=0.2)
    ax.tick_params(which="minor", length=0)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
    return data


# ------------------------------------------------------------------------------------------------ markdown
def _pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _num(x, fmt: str = "{:.0f}") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def _cell(label: str) -> str:
    return str(label).replace("|", "\\|")


def render_markdown(report: dict) -> str:
    """Markdown summary of an evaluation.

    ``report``: ``{"title"?, "systems": {name: {"metrics": classification_report(...), "latency":
    latency_summary(...)?}}, "fine_tuned"?: name, "n"?: int, "notes"?: [str]}``. Shows a side-by-side table of every
    system, the per-intent table of the fine-tuned system (``fine_tuned``, or the first system) and its most
    confused pairs. Only labels and numbers are rendered.
    """
    systems: dict = report.get("systems", {})
    lines = [f"# {report.get('title', 'Evaluation report')}", ""]
    if "n" in report:
        lines += [f"Test examples: {int(report['n'])}", ""]
    if "router" in report:
        lines += [f"Fine-tuned router: {report['router']}", ""]
    lines += [
        "| system | accuracy | macro-F1 | micro-F1 | weighted-F1 | OOT rate | p50 latency (ms) | p95 latency (ms) "
        "| throughput (req/s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, entry in systems.items():
        m, lat = entry.get("metrics", {}), entry.get("latency") or {}
        lines.append(
            f"| {_cell(name)} | {_pct(m.get('accuracy'))} | {_pct(m.get('macro_f1'))} | {_pct(m.get('micro_f1'))} "
            f"| {_pct(m.get('weighted_f1'))} | {_pct(m.get('oot_rate'))} | {_num(lat.get('p50_ms'))} "
            f"| {_num(lat.get('p95_ms'))} | {_num(lat.get('throughput_per_s'), '{:.1f}')} |"
        )
    if not systems:
        return "\n".join(lines) + "\n"
    if any("out_of_scope" in entry for entry in systems.values()):
        lines += ["", "## Out-of-scope requests (routed to a human)", "",
                  "| system | in-scope accuracy | OOS recall | OOS precision | in-scope n | OOS n |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, entry in systems.items():
            o = entry.get("out_of_scope")
            if o:
                lines.append(f"| {_cell(name)} | {_pct(o.get('in_scope_accuracy'))} | {_pct(o.get('oos_recall'))} "
                             f"| {_pct(o.get('oos_precision'))} | {int(o.get('in_scope_n', 0))} | {int(o.get('oos_n', 0))} |")
    multi = report.get("multi_intent")
    if multi:
        lines += ["", "## Multi-intent messages (label sets)", "",
                  f"Every test message scored as a set ({int(multi['n'])} messages, blends included); baselines' "
                  f"thresholds calibrated on the {multi.get('validation', 'validation split')}.", "",
                  "| system | exact set | micro-F1 | macro-F1 | intent count right | exact set by intents in the message |",
                  "|---|---:|---:|---:|---:|---|"]
        for name, s in multi["systems"].items():
            by_count = ", ".join(f"{k}: {_pct(v['exact_set_accuracy'])} (n={v['messages']})"
                                 for k, v in s.get("by_intent_count", {}).items())
            lines.append(f"| {_cell(name)} | {_pct(s.get('exact_set_accuracy'))} | {_pct(s.get('micro_f1'))} "
                         f"| {_pct(s.get('macro_f1'))} | {_pct(s.get('count_accuracy'))} | {by_count} |")
    main = report.get("fine_tuned") or next(iter(systems))
    m = systems[main]["metrics"]
    lines += ["", f"## Per-intent scores: {_cell(main)}", "",
              "| intent | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for label, s in m.get("per_intent", {}).items():
        lines.append(f"| {_cell(label)} | {_pct(s['precision'])} | {_pct(s['recall'])} | {_pct(s['f1'])} "
                     f"| {int(s['support'])} |")
    lines += ["", f"## Most confused pairs: {_cell(main)}", ""]
    confused = m.get("most_confused", [])
    if confused:
        lines += ["| true | predicted | count |", "|---|---|---:|"]
        lines += [f"| {_cell(c['true'])} | {_cell(c['predicted'])} | {int(c['count'])} |" for c in confused]
    else:
        lines.append("No confusions.")
    for note in report.get("notes", []) or []:
        lines += ["", str(note)]
    return "\n".join(lines) + "\n"
