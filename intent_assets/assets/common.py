"""Conventions shared by every asset: owners, tags, and metadata helpers."""

import base64
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

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
