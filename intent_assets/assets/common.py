"""Conventions shared by every asset: owners, tags, and metadata helpers."""

import base64
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
import pandas as pd

from intent_assets.data.chat_logs import data_days
from intent_assets.data.days import first_day
from intent_assets.paths import DEFAULT_CHAT_LOGS, project_path

DATA_OWNERS = ["team:data-platform"]
PRIVACY_OWNERS = ["team:data-platform", "team:privacy"]
MODEL_OWNERS = ["team:ml-platform"]
PII_RAW = {"pii": "raw"}
PII_REDACTED = {"pii": "redacted"}

def image(png: bytes, path: Path, alt: str) -> dg.MetadataValue:
    """Writes the PNG next to the artifacts and returns Markdown that shows it inline in the Dagster UI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")

def column_lineage(deps: Mapping[str, list[tuple[str, str]]]) -> dg.TableColumnLineage:
    """``dagster/column_lineage``: output column -> [(upstream asset, column), ...]."""
    return dg.TableColumnLineage(
        deps_by_column={
            col: [dg.TableColumnDep(asset_key=dg.AssetKey(asset), column_name=c) for asset, c in sources]
            for col, sources in deps.items()
        }
    )


def counts_table(counts: Mapping[str, int], key: str, value: str = "count") -> dg.MetadataValue:
    """A two-column table (e.g. quarantine reason → rows) for the UI."""
    return dg.MetadataValue.table(
        records=[dg.TableRecord({key: str(k), value: int(v)}) for k, v in counts.items()],
        schema=dg.TableSchema(columns=[dg.TableColumn(key, "string"), dg.TableColumn(value, "int")]),
    )


# ------------------------------------------------------------------------------------------- daily partitions
# The raw and redacted tables are partitioned by the day the messages were written (intent_assets.data.days): a new
# day is validated, redacted and audited alone. Daily time partitions rather than one dynamic partition per file:
# a day is what analysts ask about ("redact yesterday again"), a day's records may arrive in several files, and
# time partitions give the UI's calendar and ranges for free. Today's partition exists (end_offset=1).
DAILY = dg.DailyPartitionsDefinition(start_date=first_day(), end_offset=1, timezone="UTC")
# One run for a whole range (one op invocation that reads and writes every day in it): a year of the shipped
# sample is one process, not 363. Prod swaps in a multi-run policy (definitions.PROD_BACKFILL).
DAILY_BACKFILL = dg.BackfillPolicy.single_run()


def by_day(frame: pd.DataFrame, keys: list[str]) -> dict[str, pd.DataFrame]:
    """``{day: rows of that day}`` for every key of the run (an empty frame for a day without rows)."""
    groups = dict(tuple(frame.groupby("day", sort=False))) if len(frame) else {}
    unknown = sorted(set(groups) - set(keys))
    if unknown:
        raise ValueError(f"rows of day(s) {unknown[:3]} are outside the run's partitions {keys[0]}..{keys[-1]}")
    return {k: groups[k].reset_index(drop=True) if k in groups else frame.iloc[:0] for k in keys}


def day_table(**columns: Mapping[str, int]) -> dg.MetadataValue:
    """A per-day table (one row per day that has any count, columns as given) so counts reconcile per partition."""
    days = sorted(set().union(*[set(c) for c in columns.values()]))
    return dg.MetadataValue.table(
        records=[dg.TableRecord({"day": d, **{name: int(c.get(d, 0)) for name, c in columns.items()}}) for d in days],
        schema=dg.TableSchema(columns=[dg.TableColumn("day", "string"), *[dg.TableColumn(n, "int") for n in columns]]),
    )


def add_day_metadata(context: dg.AssetExecutionContext, asset_key: str, keys: list[str],
                     **values: Mapping[str, int | bool]) -> None:
    """Each day's own values (``{day: value}`` per name; a missing day counts 0) on that day's materialization:
    what a partition's page shows. Run-wide totals go in the output metadata, prefixed ``run_``."""
    for day in keys:
        context.add_asset_metadata({name.replace("__", "/"): v.get(day, 0) for name, v in values.items()},
                                   asset_key=asset_key, partition_key=day)


def day_counts(frame: pd.DataFrame) -> dict[str, int]:
    return frame["day"].value_counts().to_dict() if len(frame) else {}


def partition_range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags that make one run materialize the daily partitions ``first`` to ``last`` (what the UI's backfill
    with a single-run policy and ``dagster asset materialize --partition-range`` set)."""
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


def days_of_run_config(run_config: Mapping | None = None) -> dict[str, str]:
    """``partition_range_tags`` for every day that holds records at the ``raw_chat_logs`` path of ``run_config``
    (default: the shipped sample): an in-process ``dg.materialize`` of the whole graph, as tests and benches run it."""
    path = ((run_config or {}).get("ops", {}).get("raw_chat_logs", {}).get("config", {}).get("path"))
    found = data_days(project_path(path) if path else DEFAULT_CHAT_LOGS)
    return partition_range_tags(found[0], found[-1])
