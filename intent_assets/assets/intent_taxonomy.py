"""``intent_taxonomy``: the versioned intent schema the model routes to."""

from typing import Optional

import dagster as dg
import pandas as pd
from pydantic import Field, field_validator

from intent_assets.assets.common import DATA_OWNERS
from intent_assets.data.taxonomy import AUTO, AUTO_MIN_COVERAGE, DERIVE, dataset_name, labelled_messages, labels_long, resolve_taxonomy
from intent_assets.deploy import k8s_config
from intent_assets.paths import DEFAULT_TAXONOMY, PROJECT_DIR, TAXONOMY_DIR, project_path

CORPUS = dg.AssetKey("redacted_corpus")


class TaxonomyConfig(dg.Config):
    path: str = Field(
        default=AUTO,
        description=(
            f"'{AUTO}' (default): the shipped taxonomy (intent_assets/data/taxonomy/*.json) that holds the labels of "
            f"most labelled messages, if it holds at least {AUTO_MIN_COVERAGE:.0%} of them, else one derived from the "
            f"labels; '{DERIVE}': always derived from the labels (sorted, no descriptions, version derived-<hash>); "
            "or a taxonomy JSON file (name, version, intents[name, description]), relative to the project folder."
        ),
    )

    @field_validator("path")
    @classmethod
    def _is_file(cls, value: str) -> str:
        if value not in (AUTO, DERIVE) and not project_path(value).is_file():
            raise ValueError(f"no taxonomy file at {value!r} (relative paths are from {PROJECT_DIR}; or '{AUTO}', '{DERIVE}')")
        return value


def _stored_labels(context: dg.AssetExecutionContext) -> Optional[pd.DataFrame]:
    """The labelled customer messages of the stored ``redacted_corpus`` (redacted, never the raw table), or None
    when it was never materialized (e.g. the taxonomy alone, on a fresh instance). A dependency, not an input, so
    that the taxonomy can be materialized on its own with a file."""
    try:
        corpus = context.resources.io_manager.load_table(CORPUS)
    except FileNotFoundError:
        return None
    return labels_long(labelled_messages(corpus))[["record_id", "intent"]]  # one row per label of a label set


def _data_source(context: dg.AssetExecutionContext) -> Optional[str]:
    """The location ``raw_chat_logs`` last read (its ``source`` metadata): a derived taxonomy is named after it."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey("raw_chat_logs"))
    source = event.asset_materialization.metadata.get("source") if event and event.asset_materialization else None
    return str(source.value) if source is not None else None


@dg.asset(
    group_name="data",
    op_tags=k8s_config.DATA_STEP,
    owners=DATA_OWNERS,
    kinds={"json"},
    tags={"pii": "none"},
    deps=[CORPUS],
    required_resource_keys={"io_manager"},
)
def intent_taxonomy(context: dg.AssetExecutionContext, config: TaxonomyConfig) -> dict:
    """The versioned intent schema (name and short description of every intent): a project file, or derived from
    the labels of ``redacted_corpus`` (``path``: ``auto``, ``derive`` or a file).

    ``auto`` keeps a shipped taxonomy when it fits the data (Banking77 for the embedded sample, CLINC150 for its
    data set) and otherwise derives one (sorted labels, no descriptions, version ``derived-<hash of the labels>``),
    so that switching data sets is one path, ``raw_chat_logs``' ``path``. Labels outside the taxonomy are
    quarantined from training data (see ``quarantined_labels``). The system prompt of ``instruction_dataset`` is
    built from it.
    """
    labelled = _stored_labels(context) if config.path in (AUTO, DERIVE) else None
    source = _data_source(context) if labelled is not None else None
    shipped = [DEFAULT_TAXONOMY, *sorted(p for p in TAXONOMY_DIR.glob("*.json") if p != DEFAULT_TAXONOMY)]
    choice = config.path if config.path in (AUTO, DERIVE) else str(project_path(config.path))
    taxonomy, how = resolve_taxonomy(
        choice, labelled, shipped, name=dataset_name(source), source=f"labels of redacted_corpus ({source or 'unknown source'})"
    )
    context.log.info(f"intent_taxonomy: {taxonomy.name} v{taxonomy.version}, {len(taxonomy.intents)} intents: {how['reason']}")
    context.add_output_metadata(
        {
            "name": taxonomy.name,
            "version": taxonomy.version,
            "fingerprint": taxonomy.fingerprint,
            "intents": len(taxonomy.intents),
            "mode": how["mode"],
            "taxonomy_source": "derived" if taxonomy.derived else "file",
            "descriptions": "derived" if taxonomy.derived else "given",
            "chosen_because": how["reason"],
            **({"source_file": dg.MetadataValue.path(how["source_file"])} if "source_file" in how else {}),
            **({"label_coverage": round(how["coverage"], 4)} if how.get("coverage") is not None else {}),
            **({"coverage_by_file": dg.MetadataValue.json(how["candidates"])} if "candidates" in how else {}),
            "intent_list": dg.MetadataValue.md(
                "\n".join(f"- `{n}`: {d}" if d else f"- `{n}`" for n, d in taxonomy.intents)
            ),
        }
    )
    return taxonomy.to_dict()
