"""Checks shared by the tests of k8s/ (plain manifests and the rendered intent-router chart)."""

import re

import kubernetes_validate

K8S_VERSION = "1.33.0"  # EKS 1.33
SECRET_NAMES = re.compile(r"password|secret|api_?key|access_?key|(^|_)token(_|$)", re.I)
# custom resources kubernetes-validate has no schema for: their fields are checked in their own tests
CUSTOM_RESOURCES = {"karpenter.sh/v1": {"NodePool"}, "karpenter.k8s.aws/v1": {"EC2NodeClass"},
                    "monitoring.coreos.com/v1": {"PodMonitor"}}


def is_builtin(doc: dict) -> bool:
    return doc["kind"] not in CUSTOM_RESOURCES.get(doc["apiVersion"], ())


def validate(doc: dict) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def pod_spec(doc: dict) -> dict | None:
    if doc["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


def assert_hardened(doc: dict) -> None:
    """Every container: read-only root filesystem, no privilege escalation; the pod: non-root (but a DaemonSet)."""
    spec = pod_spec(doc)
    for container in spec.get("initContainers", []) + spec["containers"]:
        ctx = container.get("securityContext", {})
        assert ctx.get("readOnlyRootFilesystem") is True, container["name"]
        assert ctx.get("allowPrivilegeEscalation") is False, container["name"]
    if doc["kind"] != "DaemonSet":  # the device plugin needs root for the kubelet socket
        assert spec["securityContext"]["runAsNonRoot"] is True


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


def assert_no_secret(doc, where: str) -> None:
    """No Secret object, no secret-looking key with a literal value, no env entry setting a secret-looking name."""
    if isinstance(doc, dict):
        assert doc.get("kind") != "Secret", where
    for keys, value in _walk(doc):
        if not any(SECRET_NAMES.search(k) for k in keys):
            continue
        # allowed: a reference ({env: VAR}) or the name of a Kubernetes Secret, never a value
        assert keys[-1] == "env" or isinstance(value, bool) or str(value).startswith(("dagster-", "intent-assets-")), (
            where, keys, "<value hidden>")
    for entry in _dicts(doc):  # env entries {name: X, value: Y}: no secret-looking X with a literal Y
        if "value" in entry and SECRET_NAMES.search(str(entry.get("name", ""))):
            raise AssertionError(f"{where}: env {entry['name']} set in a manifest")
