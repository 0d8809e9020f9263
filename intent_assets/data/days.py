"""Which day a chat-log record belongs to: the key of the daily partitions of the raw and redacted tables (no
Dagster import).

A record's day is, in this order:

1. the date in its file's name or in the name of a folder it is in (``2025-03-07.jsonl``,
   ``chats-2025-03-07.csv.gz``, ``day=2025-03-07/part-0.parquet``): how a day's export lands. Every record of a
   dated file is that day's, whatever its timestamp says, so a run reads only its days' dated files and no record
   of a dated file can fall in a day whose run never opens that file;
2. the UTC date of its ``timestamp`` (an undated file: a history export, the shipped sample);
3. the first day of the calendar: plain labelled data sets (Banking77's CSVs, CLINC150's JSON) carry no date and
   are history from before the first day, so they all belong to the first partition.

A timestamp (of an undated file) before the first day or after the last one (a clock in the future, a wrong
``INTENT_ASSETS_FIRST_DAY``) falls in no partition: the record is clamped to the nearest day and quarantined there
(field ``timestamp``), so it is counted, never dropped.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

FIRST_DAY_ENV = "INTENT_ASSETS_FIRST_DAY"
DEFAULT_FIRST_DAY = "2025-01-01"
OUTSIDE_CALENDAR = "timestamp outside the partitioned days"
_DATE = re.compile(r"(?<!\d)(\d{4}-\d{2}-\d{2})(?!\d)")


def first_day() -> str:
    """The first daily partition: ``$INTENT_ASSETS_FIRST_DAY`` (YYYY-MM-DD) or 2025-01-01."""
    value = os.environ.get(FIRST_DAY_ENV, DEFAULT_FIRST_DAY)
    try:
        dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{FIRST_DAY_ENV}={value!r} is not a YYYY-MM-DD date") from exc
    return value


def today() -> str:
    return dt.datetime.now(dt.timezone.utc).date().isoformat()


def name_day(path: str | os.PathLike) -> str | None:
    """The date written in a file's name, else in the nearest folder name that has one, else None."""
    for part in reversed(PurePosixPath(str(path).replace("\\", "/")).parts):
        match = _DATE.search(part)
        if match:
            try:
                return dt.date.fromisoformat(match.group(1)).isoformat()
            except ValueError:
                continue
    return None


@dataclass(frozen=True)
class Calendar:
    """The days a deployment partitions by: ``first`` to ``last`` inclusive (``last`` defaults to today, UTC)."""

    first: str = field(default_factory=first_day)
    last: str = field(default_factory=today)

    def __post_init__(self):
        if self.last < self.first:
            raise ValueError(f"calendar ends ({self.last}) before it starts ({self.first})")

    def record_days(self, timestamps: pd.Series, file_days: pd.Series) -> tuple[pd.Series, pd.Series]:
        """(day of each record, True where its timestamp gave the day and lies outside the calendar, clamped).

        The file's day first (see the module docstring), then the timestamp, then the first day. An unparseable
        timestamp is not this function's business (validation quarantines it in the record's day)."""
        given = timestamps.map(lambda v: v is not None and not (isinstance(v, float) and pd.isna(v)) and v != "")
        parsed = pd.to_datetime(timestamps.where(given), errors="coerce", utc=True, format="ISO8601")
        stamped = parsed.dt.strftime("%Y-%m-%d").where(parsed.notna())
        by_timestamp = stamped.notna() & file_days.isna()
        days = file_days.astype(object).where(file_days.notna(), stamped)
        days = days.where(days.notna(), self.first).astype(str)
        outside = (days < self.first) | (days > self.last)
        clamped = days.where(days >= self.first, self.first).where(days <= self.last, self.last)
        return clamped, outside & by_timestamp

    def file_day(self, path: str | os.PathLike) -> str | None:
        """The day a file's name gives, clamped to the calendar (a name is not a record: nothing to quarantine)."""
        day = name_day(path)
        return None if day is None else min(max(day, self.first), self.last)


def in_files(files: list[Path], calendar: Calendar, days: set[str] | None) -> list[Path]:
    """The files that can hold records of ``days``: those whose name gives one of them, and every undated one."""
    if days is None:
        return files
    return [p for p in files if (d := calendar.file_day(p)) is None or d in days]
