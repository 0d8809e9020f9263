import pandas as pd
import pytest

from intent_assets.data.days import OUTSIDE_CALENDAR, Calendar, first_day, in_files, name_day


@pytest.mark.parametrize("path, day", [
    ("logs/2025-03-07.jsonl", "2025-03-07"),
    ("logs/chats-2025-03-07.csv.gz", "2025-03-07"),
    ("s3://raw/chat_logs/day=2025-03-07/part-0.parquet", "2025-03-07"),
    ("2025-03-06/export-2025-03-07.jsonl", "2025-03-07"),  # the file's own name wins over its folder's
    ("logs/banking77/train.csv", None),
    ("logs/2025-13-40.jsonl", None),  # not a date
    ("logs/id-12025-03-070.jsonl", None),  # digits around it: not a date either
])
def test_the_day_a_file_name_gives(path, day):
    assert name_day(path) == day


def test_record_days_file_then_timestamp_then_first_day_and_outside_is_clamped_and_flagged():
    calendar = Calendar(first="2025-01-01", last="2025-06-30")
    stamps = pd.Series(["2025-03-01T23:30:00-02:00", None, "", "not a time", "2024-12-31T10:00:00Z", "2026-01-01T00:00:00Z",
                        "2025-02-01T23:59:00Z"])
    files = pd.Series([None, "2025-02-02", None, "2025-02-03", None, None, "2025-02-02"], dtype=object)
    days, outside = calendar.record_days(stamps, files)
    # UTC date of the timestamp (23:30 at -02:00 is the next day), the file's day, the first day, the file's day
    # for an unparseable timestamp (validation quarantines it there), two outside the calendar (clamped), and a
    # dated file's record stamped the day before: its file's day (the run of 2025-02-01 never opens that file)
    assert list(days) == ["2025-03-02", "2025-02-02", "2025-01-01", "2025-02-03", "2025-01-01", "2025-06-30", "2025-02-02"]
    assert list(outside) == [False, False, False, False, True, True, False]


def test_calendar_and_its_helpers(monkeypatch, tmp_path):
    monkeypatch.setenv("INTENT_ASSETS_FIRST_DAY", "2025-02-01")
    assert first_day() == "2025-02-01" and Calendar().first == "2025-02-01"
    monkeypatch.setenv("INTENT_ASSETS_FIRST_DAY", "February")
    with pytest.raises(ValueError, match="INTENT_ASSETS_FIRST_DAY='February' is not a YYYY-MM-DD date"):
        first_day()
    with pytest.raises(ValueError, match="ends .* before it starts"):
        Calendar(first="2025-02-01", last="2025-01-01")
    files = [tmp_path / "2025-01-02.jsonl", tmp_path / "2025-01-03.jsonl", tmp_path / "history.csv"]
    calendar = Calendar(first="2025-01-01", last="2025-01-31")
    assert in_files(files, calendar, {"2025-01-03"}) == files[1:]
    assert in_files(files, calendar, None) == files
    assert OUTSIDE_CALENDAR == "timestamp outside the partitioned days"
