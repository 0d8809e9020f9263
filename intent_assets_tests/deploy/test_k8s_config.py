"""The Kubernetes Job each step would run in prod, built with dagster-k8s's own API (no cluster needed).

The construction is the one ``K8sStepHandler.launch_step`` does: the executor's container context, merged with
``get_user_defined_k8s_config`` of the step's op tags, handed to ``construct_dagster_k8s_job``.
"""

import json

import kubernetes
import kubernetes_validate
import pytest
import yaml
from dagster._config import process_config
from dagster_k8s import DagsterK8sJobConfig, construct_dagster_k8s_job, k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import UserDefinedDagsterK8sConfig, get_k8s_job_name, get_user_defined_k8s_config

from intent_assets.definitions import ASSETS, CHECKS, PROD_EXECUTOR_CONFIG, executor_for
from intent_assets.deploy import k8s_config
from intent_assets.paths import PROJECT_DIR

USER_CODE_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/intent-assets:0.1.0"
GPU_ASSETS = {"lora_adapter", "awq_model", "eval_report", "pii_memorization"}
K8S_VERSION = "1.33.0"


VALUES = yaml.safe_load((PROJECT_DIR / "k8s" / "helm" / "values.yaml").read_text())
_RUN_K8S_KEYS = {"containerConfig": "container_config", "podSpecConfig": "pod_spec_config",
                 "podTemplateSpecMetadata": "pod_template_spec_metadata", "jobSpecConfig": "job_spec_config",
                 "jobMetadata": "job_metadata"}


def _names(entries) -> list[str]:
    return [e["name"] for e in entries or []]


def _run_context() -> K8sContainerContext:
    """What a run carries in prod, as ``K8sContainerContext.create_for_run`` builds it: the K8sRunLauncher's
    settings (k8s/helm/values.yaml runLauncher, as the official chart renders them), then the code location's
    container context (the chart's includeConfigInLaunchedRuns: dagsterUserDeployments.k8sContainerContext)."""
    launcher = VALUES["runLauncher"]["config"]["k8sRunLauncher"]
    launcher_context = K8sContainerContext(
        service_account_name=VALUES["global"]["serviceAccountName"],
        env_config_maps=_names(launcher.get("envConfigMaps")),
        env_secrets=_names(launcher.get("envSecrets")),
        volumes=launcher.get("volumes"),
        volume_mounts=launcher.get("volumeMounts"),
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(
            {_RUN_K8S_KEYS[k]: v for k, v in launcher.get("runK8sConfig", {}).items()}),
    )
    (deployment,) = VALUES["dagster-user-deployments"]["deployments"]
    code_location = {"image_pull_policy": deployment["image"]["pullPolicy"],
                     "env_config_maps": [f"dagster-{deployment['name']}-user-env", *_names(deployment.get("envConfigMaps"))],
                     "env_secrets": _names(deployment.get("envSecrets")),
                     "namespace": "intent-assets", "service_account_name": VALUES["global"]["serviceAccountName"]}
    for key, name in (("volumeMounts", "volume_mounts"), ("volumes", "volumes"), ("resources", "resources"),
                      ("labels", "labels")):
        if deployment.get(key):
            code_location[name] = deployment[key]
    return launcher_context.merge(K8sContainerContext.create_from_config({"k8s": code_location}))


def _job(context: K8sContainerContext, name: str, component: str) -> dict:
    job_config = DagsterK8sJobConfig(  # what the Helm chart's K8sRunLauncher supplies
        job_image=USER_CODE_IMAGE,
        dagster_home="/opt/dagster/dagster_home",
        instance_config_map="dagster-instance",
        postgres_password_secret="dagster-postgresql-secret",
    )
    job = construct_dagster_k8s_job(
        job_config=job_config,
        args=["dagster", "api", "execute_step"],
        job_name=name,
        component=component,
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": "x"},
    )
    return kubernetes.client.ApiClient().sanitize_for_serialization(job)


def _step_job(asset_def) -> dict:
    """The Job manifest (camelCase, as sent to the API server) for the step that materializes ``asset_def`` (an
    asset or an asset check): the run's context, then the k8s_job_executor's, then the step's op tags, as
    ``K8sStepHandler._get_container_context`` merges them."""
    op = asset_def.node_def
    executor_context = K8sContainerContext(
        labels=PROD_EXECUTOR_CONFIG["labels"],
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(PROD_EXECUTOR_CONFIG.get("step_k8s_config", {})),
    )
    context = _run_context().merge(executor_context).merge(
        K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(op.tags)))
    # named as K8sStepHandler names it
    return _job(context, f"dagster-step-{get_k8s_job_name('0123abcd-run', op.name)}", "step_worker")


def _assert_unique_volumes(job: dict) -> None:
    """The API server refuses a pod with two volumes of one name or two mounts at one path (dagster-k8s only
    drops duplicates that are identical)."""
    pod = job["spec"]["template"]["spec"]
    names = [v["name"] for v in pod.get("volumes", [])]
    assert len(names) == len(set(names)), names
    for container in pod["containers"]:
        paths = [m["mountPath"] for m in container.get("volumeMounts", [])]
        assert len(paths) == len(set(paths)), paths
        assert set(m["name"] for m in container.get("volumeMounts", [])) <= set(names)


def test_the_run_worker_pod_is_valid_with_one_scratch_and_one_tmp():
    job = _job(_run_context(), "dagster-run-0123abcd", "run_worker")
    _assert_unique_volumes(job)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {k8s_config.SCRATCH, "/tmp"}
    kubernetes_validate.validate(json.loads(json.dumps(job)), K8S_VERSION, strict=True)


def _assets_by_name():
    return {spec.key.to_user_string(): a for a in ASSETS for spec in a.specs}


@pytest.mark.parametrize("name", sorted(GPU_ASSETS))
def test_gpu_asset_step_job_gets_a_gpu_node_and_the_gpu_image(name):
    job = _step_job(_assets_by_name()[name])
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == k8s_config.GPU_IMAGE != USER_CODE_IMAGE
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    for key in ("cpu", "memory", "ephemeral-storage"):
        assert key in container["resources"]["requests"], key
    assert pod["nodeSelector"] == {"karpenter.sh/nodepool": "gpu"}
    (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [
        {"key": "karpenter.k8s.aws/instance-gpu-name", "operator": "In", "values": ["a10g", "a100"]}
    ]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert job["spec"]["template"]["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]


@pytest.mark.parametrize("name", sorted(set(_assets_by_name()) - GPU_ASSETS))
def test_cpu_asset_step_job_runs_on_the_user_code_image_without_a_gpu(name):
    job = _step_job(_assets_by_name()[name])
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == USER_CODE_IMAGE
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert pod["nodeSelector"] == {"karpenter.sh/nodepool": "cpu"}
    assert "tolerations" not in pod


@pytest.mark.parametrize("name", sorted(_assets_by_name()))
def test_every_step_job_is_non_root_read_only_and_valid_kubernetes(name):
    job = _step_job(_assets_by_name()[name])
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["INTENT_ASSETS_DATA_DIR"].startswith(k8s_config.SCRATCH)
    assert {"name": "scratch", "mountPath": k8s_config.SCRATCH} in container["volumeMounts"]
    assert job["metadata"]["labels"]["app.kubernetes.io/part-of"] == "intent-assets"
    # the postgres password reaches the pod from a Kubernetes Secret, never as a literal
    pg = next(e for e in container["env"] if e["name"] == "DAGSTER_PG_PASSWORD")
    assert "value" not in pg and pg["valueFrom"]["secretKeyRef"]["name"] == "dagster-postgresql-secret"
    _assert_unique_volumes(job)
    # a writable temporary directory (Python's tempfile, torch's caches, the S3 compute-log manager's staging)
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"] and env["TMPDIR"] == "/tmp"
    kubernetes_validate.validate(json.loads(json.dumps(job)), K8S_VERSION, strict=True)


def _reads_raw_pii(definition) -> bool:
    """From the graph itself: the step writes or reads a table stored by the raw (PII) IO manager, or reads the
    agents' corrections (which live in the raw bucket or the support system's database)."""
    raw = {spec.key for a in ASSETS for spec in a.specs
           if a.get_io_manager_key_for_asset_key(spec.key) == "raw_io_manager"}
    keys = set(getattr(definition, "keys", ())) | set(definition.keys_by_input_name.values())
    return bool(keys & raw) or "corrections" in definition.required_resource_keys


STEPS = {d.node_def.name: d for d in [*ASSETS, *CHECKS]}


@pytest.mark.parametrize("name", sorted(STEPS))
def test_only_the_steps_that_read_raw_pii_run_under_the_pii_identity(name):
    """The pii ServiceAccount's IRSA role is the only one allowed to read the raw bucket (k8s/iam): steps that need
    raw data get it, every other step (GPU training included) keeps the default identity and cannot read it."""
    pod = _step_job(STEPS[name])["spec"]["template"]["spec"]
    expected = k8s_config.PII_SERVICE_ACCOUNT if _reads_raw_pii(STEPS[name]) else "intent-assets-dagster"
    assert pod["serviceAccountName"] == expected


@pytest.mark.parametrize("name", sorted(_assets_by_name()))
def test_gpu_steps_share_one_concurrency_pool_and_the_dedup_index_has_its_own(name):
    """Two GPU steps at most at once, from any run (a UI "Materialize all" has no job tag to limit by); the step
    that updates the persisted near-duplicate index in a pool of its own (limit 1, k8s/README.md)."""
    pools = {**{a: k8s_config.GPU_POOL for a in GPU_ASSETS}, "redacted_corpus": k8s_config.DEDUP_POOL}
    assert _assets_by_name()[name].op.pool == pools.get(name)


def test_the_raw_pii_steps_are_the_expected_ones():
    assert {n for n, d in STEPS.items() if _reads_raw_pii(d)} == {
        "raw_chat_logs", "redacted_corpus", "pii_audit_log", "agent_corrections",
        "raw_chat_logs_raw_chat_logs_schema", "quarantined_records_quarantine_share_within_limit"}


def test_prod_definitions_run_each_step_in_its_own_pod():
    assert executor_for("local") is None
    executor = executor_for("prod")
    assert executor.name == "k8s_prod"
    # the configured executor accepted PROD_EXECUTOR_CONFIG against dagster-k8s's own schema
    assert process_config(k8s_job_executor.config_schema.config_type, PROD_EXECUTOR_CONFIG).success
