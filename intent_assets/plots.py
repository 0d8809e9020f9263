"""Small matplotlib figures for asset metadata (no Dagster import): PNG bytes, rendered headless."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def bar_chart(values: Mapping[str, float], title: str, xlabel: str = "", horizontal: bool = True) -> bytes:
    labels, heights = list(values), list(values.values())
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.22 * len(labels))) if horizontal else (7, 3.5))
    if horizontal:
        ax.barh(labels[::-1], heights[::-1], color="#4c72b0")
        ax.set_xlabel(xlabel)
    else:
        ax.bar(labels, heights, color="#4c72b0")
        ax.set_ylabel(xlabel)
    ax.set_title(title)
    return _png(fig)


def histogram(values: Sequence[float], title: str, xlabel: str, bins: int = 40) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.hist(values, bins=bins, color="#4c72b0")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    return _png(fig)


def line_chart(series: Mapping[str, Sequence[tuple[float, float]]], title: str, xlabel: str, ylabel: str) -> bytes:
    """One line per named series of (x, y) points, e.g. training and validation loss per step."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, points in series.items():
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o" if len(points) < 30 else None, markersize=3, label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)
