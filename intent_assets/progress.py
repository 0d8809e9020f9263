"""Progress lines (step or batch, ETA) for long steps, through any ``log(str)`` callable (no Dagster import)."""

from __future__ import annotations

import time
from collections.abc import Callable


class Progress:
    """Logs ``label: <unit> i/total, elapsed, ETA`` about ``every`` share of the way (and at the end), so a long
    step writes a handful of lines to the run log, not one per batch."""

    def __init__(self, log: Callable[[str], None] | None, label: str, total: int, unit: str = "batch", every: float = 0.1):
        self.log, self.label, self.total, self.unit = log, label, max(int(total), 1), unit
        self.stride = max(1, round(self.total * every))
        self.start = time.perf_counter()
        self.lines = 0

    def line(self, done: int) -> str:
        elapsed = time.perf_counter() - self.start
        eta = elapsed / done * (self.total - done) if done else float("nan")
        return f"{self.label}: {self.unit} {done}/{self.total}, {elapsed:.0f} s elapsed, ETA {eta:.0f} s"

    def update(self, done: int) -> None:
        """Call after ``done`` units of ``total`` are finished."""
        if self.log is not None and (done % self.stride == 0 or done == self.total):
            self.log(self.line(done))
            self.lines += 1
