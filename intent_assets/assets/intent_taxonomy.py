"""``intent_taxonomy``: the versioned intent schema the model routes to."""

import dagster as dg
from pydantic import Field, field_validator

from intent_assets import k8s_config
from intent_assets.assets.common import DATA_OWNERS
from intent_assets.paths import DEFAULT_TAXONOMY, PROJECT_DIR, project_path
from intent_assets.taxonomy import load_taxonomy

class TaxonomyConfig(dg.Config):
    path: str = Field(
        default=str(DEFAULT_TAXONOMY.relative_to(PROJECT_DIR)),
        description="Taxonomy JSON file (name, version, intents[name, description]); relative to the project folder.",
    )

    @field_validator("path")
    @classmethod
    def _is_file(cls, value: str) -> str:
        if not project_path(value).is_file():
            raise ValueError(f"no taxonomy file at {value!r} (relative paths are from {PROJECT_DIR})")
        return value

@dg.asset(
    group_name="data",
    op_tags=k8s_config.DATA_STEP,
    owners=DATA_OWNERS,
    kinds={"json"},
    tags={"pii": "none"},
)
def intent_taxonomy(context: dg.AssetExecutionContext, config: TaxonomyConfig) -> dict:
    """The versioned intent schema (name and short description of every intent), loaded from a project file.

    Labels outside it are quarantined from training data (see ``quarantined_labels``). The system prompt of
    ``instruction_dataset`` is built from it.
    """
    path = project_path(config.path)
    taxonomy = load_taxonomy(path)
    context.add_output_metadata(
        {
            "name": taxonomy.name,
            "version": taxonomy.version,
            "fingerprint": taxonomy.fingerprint,
            "intents": len(taxonomy.intents),
            "source_file": dg.MetadataValue.path(str(path)),
            "intent_list": dg.MetadataValue.md("\n".join(f"- `{n}`: {d}" for n, d in taxonomy.intents)),
        }
    )
    return taxonomy.to_dict()
