"""The Dagster Definitions of intent_assets: every asset, check, job and resource, in one place."""

import os
from pathlib import Path

import dagster as dg

from intent_assets.assets.agent_corrections import agent_corrections
from intent_assets.assets.awq_model import awq_model
from intent_assets.assets.base_model import base_model
from intent_assets.assets.checks import DATA_QUALITY_CHECKS, MODEL_QUALITY_CHECKS
from intent_assets.assets.dataset_splits import dataset_splits
from intent_assets.assets.eval_report import eval_report
from intent_assets.assets.instruction_dataset import instruction_dataset
from intent_assets.assets.intent_taxonomy import intent_taxonomy
from intent_assets.assets.lora_adapter import lora_adapter
from intent_assets.assets.model_promotion import model_promotion, rollback_job
from intent_assets.assets.pii_audit_log import pii_audit_log
from intent_assets.assets.pii_memorization import pii_memorization
from intent_assets.assets.raw_chat_logs import raw_chat_logs
from intent_assets.assets.redacted_corpus import redacted_corpus, redacted_corpus_has_no_pii
from intent_assets.assets.synthetic_augments import synthetic_augments
from intent_assets.resources import environment_name, resources_for
from intent_assets.sensors import JOBS, SCHEDULES, SENSORS

DATA_ASSETS = [raw_chat_logs, intent_taxonomy, redacted_corpus, pii_audit_log, dataset_splits, synthetic_augments, instruction_dataset]
MODEL_ASSETS = [base_model, lora_adapter, awq_model, eval_report, model_promotion, pii_memorization]
CORRECTION_ASSETS = [agent_corrections]
ASSETS = [*DATA_ASSETS, *CORRECTION_ASSETS, *MODEL_ASSETS]
DATA_CHECKS = [redacted_corpus_has_no_pii, *DATA_QUALITY_CHECKS]
CHECKS = [*DATA_CHECKS, *MODEL_QUALITY_CHECKS]

data_job = dg.define_asset_job(
    "data_job", selection=dg.AssetSelection.groups("data", "corrections"),
    description="The data half: raw logs (and agents' corrections) to instruction dataset."
)
training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("model"),
    description="The model half: base model, LoRA adapter, 4-bit AWQ model and evaluation report.",
)


# prod: every step in its own Kubernetes Job (dagster-k8s); each asset's pod (image, GPU, node pool, requests)
# comes from its own `dagster-k8s/config` op tag (intent_assets/deploy/k8s_config.py); namespace, service account,
# image pull policy and the instance come from the K8sRunLauncher of the Helm release (k8s/helm/values.yaml)
PROD_EXECUTOR_CONFIG = {
    "max_concurrent": 4,
    "labels": {"app.kubernetes.io/part-of": "intent-assets"},
    "retries": {"enabled": {}},
}


def executor_for(environment: str | None = None) -> dg.ExecutorDefinition | None:
    """``k8s_job_executor`` in prod (one pod per step); in ``tiny`` the in-process executor (its steps take seconds,
    and a process per step would re-import PyTorch and transformers each time: the browser test's runs spent about
    three quarters of their wall time starting step processes); the Dagster default (multiprocess) elsewhere."""
    name = environment_name(environment)
    if name == "tiny":
        return dg.in_process_executor
    if name != "prod":
        return None
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(PROD_EXECUTOR_CONFIG, name="k8s_prod")


# prod backfills: a week of days per run (7 partitions), so a year of history is 53 runs that the run queue
# spreads over pods (each step of each run is its own Kubernetes Job, sized by its op tag for a week of logs);
# redacted_corpus steps still take turns on the dedup index (pool dedup_index, limit 1). Elsewhere one run takes
# the whole range (assets.common.DAILY_BACKFILL): one process on one machine is fastest there.
PROD_BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=7)


def with_backfill_policy(assets: list, environment: str | None = None) -> list:
    """The partitioned assets with prod's multi-run backfill policy in prod; unchanged elsewhere."""
    if environment_name(environment) != "prod":
        return assets
    return [a.with_attributes(backfill_policy=PROD_BACKFILL) if a.partitions_def is not None else a for a in assets]


def with_code_references(assets: list) -> list:
    """Each asset's ``dagster/code_references``: the local file and line (the UI's "Open in editor"), or, with
    ``INTENT_ASSETS_GIT_URL`` set (e.g. in a deployed image), a link to the file in that repository at
    ``INTENT_ASSETS_GIT_BRANCH`` (default main)."""
    assets = dg.with_source_code_references(assets)
    url = os.environ.get("INTENT_ASSETS_GIT_URL")
    if not url:
        return assets
    return dg.link_code_references_to_git(
        assets,
        git_url=url.rstrip("/"),
        git_branch=os.environ.get("INTENT_ASSETS_GIT_BRANCH", "main"),
        platform="gitlab" if "gitlab" in url else "github",
        file_path_mapping=dg.AnchorBasedFilePathMapping(
            local_file_anchor=Path(__file__), file_anchor_path_in_repository="intent_assets/definitions.py"
        ),
    )


def build_definitions(environment: str | None = None) -> dg.Definitions:
    return dg.Definitions(
        assets=with_code_references(with_backfill_policy(ASSETS, environment)),
        asset_checks=CHECKS,
        jobs=[data_job, training_job, rollback_job, *JOBS],
        sensors=SENSORS,
        schedules=SCHEDULES,
        resources=resources_for(environment),
        executor=executor_for(environment),
    )


defs = build_definitions()
