"""The vLLM serving chart k8s/charts/intent-router, with a real helm v4 (`make helm`, no cluster needed): it lints
clean, renders objects that pass kubernetes-validate --strict, refuses a missing or malformed model URI, and
serves the AWQ model from S3 verified, with prefix caching, on a GPU node, under the read-only IRSA identity."""

import os
import shutil
import subprocess

import pytest
import yaml

from intent_assets.paths import PROJECT_DIR
from intent_assets_tests.k8s_checks import assert_hardened, assert_no_secret, is_builtin, pod_spec, validate

CHART = PROJECT_DIR / "k8s" / "charts" / "intent-router"
URI = "s3://intent-assets-artifacts-123456789012/artifacts/awq_model/4fb5594623d367c4/quantized/"


@pytest.fixture(scope="module")
def helm() -> str:
    found = os.environ.get("INTENT_ASSETS_HELM") or (
        str(PROJECT_DIR / ".tools" / "helm") if (PROJECT_DIR / ".tools" / "helm").exists() else shutil.which("helm"))
    if not found:
        if os.environ.get("INTENT_ASSETS_REQUIRE_HELM"):
            pytest.fail("helm is missing: run `make helm`")
        pytest.skip("helm is missing: run `make helm`")
    return found


def _helm(helm: str, command: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm, command, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HELM_CACHE_HOME": "/tmp/helm-cache", "HELM_CONFIG_HOME": "/tmp/helm-config"})


def _template(helm: str, *sets: str) -> subprocess.CompletedProcess:
    args = ["intent-router", str(CHART), "-n", "intent-assets"]
    for s in sets:
        args += ["--set", s]
    return _helm(helm, "template", *args)


def _render(helm: str, *sets: str) -> list[dict]:
    result = _template(helm, *sets)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(scope="module")
def docs(helm) -> list[dict]:
    return _render(helm, f"model.uri={URI}", "metrics.podMonitor.enabled=true", "networkPolicy.allowNamespaces={monitoring,gateway}")


def _one(docs, kind):
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def test_helm_lint_strict_passes(helm):
    result = _helm(helm, "lint", "--strict", str(CHART), "-n", "intent-assets", "--set", f"model.uri={URI}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("sets,message", [
    ((), "model.uri is required"),
    (("model.uri=https://example.com/model/",), "/model/uri"),  # values.schema.json: an s3:// prefix
    (("model.uri=s3://bucket/no-trailing-slash",), "/model/uri"),
    ((f"model.uri={URI}", "vllm.extraArgs={enable-lora}"), "/vllm/extraArgs"),
])
def test_a_missing_or_malformed_value_is_refused_with_its_name(helm, sets, message):
    result = _template(helm, *sets)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_the_chart_renders_the_whole_serving_stack(docs):
    assert {d["kind"] for d in docs} == {"ServiceAccount", "Deployment", "Service", "HorizontalPodAutoscaler",
                                        "PodDisruptionBudget", "NetworkPolicy", "PodMonitor"}
    assert {d["metadata"]["namespace"] for d in docs} == {"intent-assets"}


def test_every_rendered_object_passes_kubernetes_validate_strict(docs):
    for doc in docs:
        if is_builtin(doc):
            validate(doc)


def test_no_secret_and_hardened_pods(docs):
    for doc in docs:
        assert_no_secret(doc, f"{doc['kind']}/{doc['metadata']['name']}")
    assert_hardened(_one(docs, "Deployment"))


def test_vllm_serves_the_verified_awq_model_with_prefix_caching_on_a_gpu(docs):
    deploy = _one(docs, "Deployment")
    spec = pod_spec(deploy)
    (vllm,) = spec["containers"]
    assert "--enable-prefix-caching" in vllm["args"] and "--served-model-name=intent-router" in vllm["args"]
    assert vllm["args"][0] == "/models/intent-router"
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == "1"
    (fetch,) = spec["initContainers"]
    assert fetch["command"][-2:] == ["intent_assets.deploy.s3_artifacts", "download"]  # verified against the manifest
    assert {"name": "MODEL_URI", "value": URI} in fetch["env"] and fetch["args"][-1] == "/models/intent-router"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["nodeSelector"] == {"karpenter.sh/nodepool": "gpu"}
    assert deploy["spec"]["template"]["metadata"]["annotations"]["intent-assets/model-uri"] == URI  # new model: rollout
    sa = _one(docs, "ServiceAccount")
    assert spec["serviceAccountName"] == sa["metadata"]["name"] == "intent-assets-vllm"
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/intent-assets-vllm")
    assert sa["automountServiceAccountToken"] is False and spec["automountServiceAccountToken"] is False


def test_service_pdb_policy_and_monitor_select_the_vllm_pods(docs):
    labels = _one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    selectors = [_one(docs, "Service")["spec"]["selector"],
                 _one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
                 _one(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
                 _one(docs, "PodMonitor")["spec"]["selector"]["matchLabels"]]
    for selector in selectors:
        assert selector and selector.items() <= labels.items()
    (rule,) = _one(docs, "NetworkPolicy")["spec"]["ingress"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}} in rule["from"]
    assert _one(docs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    assert _one(docs, "PodMonitor")["metadata"]["labels"]["release"] == "kube-prometheus-stack"  # the stack's selector
    # Prometheus (namespace monitoring) may scrape the server, or the HPA never gets its metric
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in rule["from"]


def test_the_hpa_scales_on_the_metric_prometheus_adapter_serves(docs):
    hpa = _one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == _one(docs, "Deployment")["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    adapter = yaml.safe_load((PROJECT_DIR / "k8s" / "helm" / "prometheus-adapter-values.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    assert metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert rule["seriesQuery"].startswith("vllm:num_requests_waiting")  # the gauge vLLM exports


def test_autoscaling_off_pins_the_replica_count(helm):
    docs = _render(helm, f"model.uri={URI}", "autoscaling.enabled=false", "autoscaling.minReplicas=2")
    assert "HorizontalPodAutoscaler" not in {d["kind"] for d in docs}
    assert _one(docs, "Deployment")["spec"]["replicas"] == 2
