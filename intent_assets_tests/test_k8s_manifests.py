"""Everything in k8s/ without a cluster: every manifest passes kubernetes-validate --strict (schemas shipped with
the package, offline), pods are non-root with read-only root filesystems, no secret is written anywhere, and the
Helm values, instance file and Dockerfiles agree with the code."""

import re

import kubernetes_validate
import pytest
import yaml
from dagster._config import process_config
from dagster_k8s import K8sRunLauncher

from intent_assets.paths import PROJECT_DIR

K8S = PROJECT_DIR / "k8s"
K8S_VERSION = "1.33.0"  # EKS 1.33
CUSTOM_RESOURCES = {"karpenter.sh/v1": {"NodePool"}, "karpenter.k8s.aws/v1": {"EC2NodeClass"}}
SECRET_NAMES = re.compile(r"password|secret|api_?key|access_?key|(^|_)token(_|$)", re.I)


def _documents():
    docs = []
    for path in sorted((K8S / "manifests").glob("*.yaml")):
        docs.extend((path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


DOCS = _documents()


def _pod_spec(doc):
    if doc["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


# Karpenter's custom resources have no schema in kubernetes-validate: their fields are checked in their own test
BUILTIN = [(n, d) for n, d in DOCS if d["kind"] not in CUSTOM_RESOURCES.get(d["apiVersion"], ())]


def test_only_karpenter_resources_lack_a_builtin_schema():
    assert {(d["apiVersion"], d["kind"]) for n, d in DOCS if (n, d) not in BUILTIN} <= {
        (api, kind) for api, kinds in CUSTOM_RESOURCES.items() for kind in kinds}


@pytest.mark.parametrize("name,doc", BUILTIN, ids=[f"{n}:{d['kind']}/{d['metadata']['name']}" for n, d in BUILTIN])
def test_every_manifest_passes_kubernetes_validate_strict(name, doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_manifests_cover_the_issue():
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in DOCS}
    assert {("Deployment", "intent-router-vllm"), ("Service", "intent-router"),
            ("HorizontalPodAutoscaler", "intent-router-vllm"), ("DaemonSet", "nvidia-device-plugin-daemonset"),
            ("NodePool", "gpu"), ("NodePool", "cpu"), ("EC2NodeClass", "gpu")} <= kinds


def test_karpenter_gpu_pool_offers_a10g_or_a100_behind_the_nvidia_taint():
    pools = {d["metadata"]["name"]: d for _, d in DOCS if d["kind"] == "NodePool"}
    gpu = pools["gpu"]["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"} in gpu["taints"]
    req = {r["key"]: r["values"] for r in gpu["requirements"]}
    assert req["karpenter.k8s.aws/instance-gpu-name"] == ["a10g", "a100"]
    classes = {d["metadata"]["name"] for _, d in DOCS if d["kind"] == "EC2NodeClass"}
    assert {p["spec"]["template"]["spec"]["nodeClassRef"]["name"] for p in pools.values()} <= classes


@pytest.mark.parametrize("name,doc", [(n, d) for n, d in DOCS if _pod_spec(d)], ids=lambda x: x if isinstance(x, str) else x["metadata"]["name"])
def test_pods_run_non_root_with_a_read_only_root_filesystem(name, doc):
    spec = _pod_spec(doc)
    for container in spec.get("initContainers", []) + spec["containers"]:
        ctx = container.get("securityContext", {})
        assert ctx.get("readOnlyRootFilesystem") is True, container["name"]
        assert ctx.get("allowPrivilegeEscalation") is False, container["name"]
        if doc["kind"] != "DaemonSet":  # the device plugin needs root for the kubelet socket
            assert spec["securityContext"]["runAsNonRoot"] is True


def test_vllm_serves_the_awq_model_with_prefix_caching_on_a_gpu():
    (deploy,) = [d for _, d in DOCS if d["kind"] == "Deployment" and d["metadata"]["name"] == "intent-router-vllm"]
    spec = deploy["spec"]["template"]["spec"]
    (vllm,) = spec["containers"]
    assert "--enable-prefix-caching" in vllm["args"] and vllm["resources"]["limits"]["nvidia.com/gpu"] == "1"
    (fetch,) = spec["initContainers"]
    assert fetch["command"][-2:] == ["intent_assets.s3_artifacts", "download"]  # verified against the manifest
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]


def _walk(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, (*path, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, (*path, str(i)))
    else:
        yield path, node


def _dicts(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _dicts(value)
    elif isinstance(node, list):
        for value in node:
            yield from _dicts(value)


def test_no_secret_is_written_in_manifests_values_or_instance():
    assert not [d for _, d in DOCS if d["kind"] == "Secret"]
    files = [K8S / "helm" / "values.yaml", K8S / "dagster.yaml", *(K8S / "manifests").glob("*.yaml")]
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            for keys, value in _walk(doc):
                if not any(SECRET_NAMES.search(k) for k in keys):
                    continue
                # allowed: a reference ({env: VAR}) or the name of a Kubernetes Secret, never a value
                assert keys[-1] == "env" or isinstance(value, bool) or str(value).startswith(("dagster-", "intent-assets-")), (path.name, keys, "<value hidden>")
            for entry in _dicts(doc):  # env entries {name: X, value: Y}: no secret-looking X with a literal Y
                if "value" in entry and SECRET_NAMES.search(str(entry.get("name", ""))):
                    raise AssertionError(f"{path.name}: env {entry['name']} set in a manifest")


def test_helm_values_use_postgres_s3_logs_irsa_and_the_k8s_run_launcher():
    values = yaml.safe_load((K8S / "helm" / "values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
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


def test_iam_policies_keep_raw_pii_away_from_the_model_server():
    import json

    dagster = json.loads((K8S / "iam" / "dagster-s3-policy.json").read_text())
    vllm = json.loads((K8S / "iam" / "vllm-s3-read-policy.json").read_text())
    vllm_resources = [r for st in vllm["Statement"] for r in st["Resource"]]
    assert all("raw-pii" not in r for r in vllm_resources)
    assert {a for st in vllm["Statement"] for a in st["Action"]} == {"s3:ListBucket", "s3:GetObject"}
    assert any("raw-pii" in r for st in dagster["Statement"] for r in st["Resource"])
    assert all("*" != r for st in dagster["Statement"] + vllm["Statement"] for r in st["Resource"])
