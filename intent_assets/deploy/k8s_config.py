"""Per-step Kubernetes settings (the ``dagster-k8s/config`` op tag) for each asset (no Dagster import).

With ``k8s_job_executor`` (the ``prod`` Definitions) every step runs in its own Kubernetes Job; dagster-k8s reads
this tag from the step's op, so it is set on the asset itself (job-level tags are ignored for UI-launched
materializations and backfills). On the embedded default the tag is inert.

* GPU steps (``lora_adapter``, ``awq_model``, ``eval_report``): one ``nvidia.com/gpu``, the GPU image, a node from
  the Karpenter ``gpu`` NodePool restricted to A10G / A100 instances (``k8s/manifests/40-karpenter-nodepools.yaml``), the
  NVIDIA taint tolerated, requests sized for an 8B QLoRA run on a g5 node (A10G 24 GB).
* CPU steps (every data asset and ``base_model``): the user-code image (inherited from the code location), a node
  from the ``cpu`` NodePool, their own requests.
* The steps that read the raw (PII) bucket (``raw_chat_logs``, ``redacted_corpus``, ``pii_audit_log``,
  ``agent_corrections`` and the two checks on the raw tables) run under their own ServiceAccount,
  ``intent-assets-pii``, whose IRSA role alone may read and write that bucket (``k8s/iam/pii-s3-policy.json``).
  Every other pod (code server, daemon, run workers, GPU steps) runs as ``intent-assets-dagster``, whose role
  cannot read a raw object (``k8s/iam/dagster-s3-policy.json``: it may only list ``corrections/`` for the sensor).

Every step pod runs as a non-root user with a read-only root filesystem; everything it writes goes to the
``scratch`` emptyDir (``HOME``, caches, ``INTENT_ASSETS_DATA_DIR``) or the ``tmp`` emptyDir (``/tmp``); results are
kept in S3.
"""

from __future__ import annotations

import os

K8S_CONFIG_TAG = "dagster-k8s/config"

GPU_RESOURCE = "nvidia.com/gpu"
# the image of the GPU steps (CUDA + unsloth, bitsandbytes, llm-compressor: k8s/Dockerfile.gpu); the deployment
# sets the real registry path through this variable (k8s/helm/values.yaml), read when the code location loads
GPU_IMAGE = os.environ.get("INTENT_ASSETS_GPU_IMAGE", "intent-assets-gpu:0.1.0")
GPU_NODEPOOL = "gpu"
# Dagster concurrency pool of the GPU steps: at most ``concurrency.pools.default_limit`` of them at once across all
# runs (k8s/helm/values.yaml, k8s/dagster.yaml), whatever job or UI materialization they come from
GPU_POOL = "gpu"
# redacted_corpus updates the persisted near-duplicate index: one run at a time (a pool limit of 1, k8s/README.md)
DEDUP_POOL = "dedup_index"
CPU_NODEPOOL = "cpu"
# the ServiceAccount (IRSA role) of the steps that touch raw PII; the others inherit the chart's intent-assets-dagster
PII_SERVICE_ACCOUNT = "intent-assets-pii"
GPU_NAMES = ["a10g", "a100"]  # Karpenter's well-known label karpenter.k8s.aws/instance-gpu-name
NVIDIA_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}

SCRATCH = "/scratch"
_SCRATCH_ENV = [
    {"name": "HOME", "value": SCRATCH},
    {"name": "TMPDIR", "value": "/tmp"},
    {"name": "TORCHINDUCTOR_CACHE_DIR", "value": f"{SCRATCH}/inductor"},
    {"name": "TRITON_CACHE_DIR", "value": f"{SCRATCH}/triton"},
    {"name": "HF_HOME", "value": f"{SCRATCH}/hf"},
    {"name": "INTENT_ASSETS_DATA_DIR", "value": f"{SCRATCH}/data"},
    {"name": "MPLCONFIGDIR", "value": f"{SCRATCH}/mpl"},
]
# /scratch and a writable /tmp (Python's tempfile, the S3 compute-log manager's staging): exactly as the Helm values
# write them for the code server and the run launcher, so dagster-k8s merges them into one volume each (it drops only
# identical duplicates). Disk is capped by the container's ephemeral-storage limit, which counts emptyDirs.
SCRATCH_VOLUMES = [{"name": "scratch", "empty_dir": {}}, {"name": "tmp", "empty_dir": {}}]
SCRATCH_MOUNTS = [{"name": "scratch", "mount_path": SCRATCH}, {"name": "tmp", "mount_path": "/tmp"}]
_CONTAINER_SECURITY = {
    "run_as_non_root": True,
    "allow_privilege_escalation": False,
    "read_only_root_filesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
_POD_SECURITY = {"run_as_non_root": True, "run_as_user": 10001, "run_as_group": 10001, "fs_group": 10001,
                 "seccomp_profile": {"type": "RuntimeDefault"}}


def _step_config(*, cpu: str, memory: str, ephemeral: str, scratch: str, nodepool: str, image: str | None = None,
                 gpus: int = 0, shm: str | None = None, service_account: str | None = None) -> dict:
    limits = {"memory": memory, "ephemeral-storage": scratch}
    if gpus:
        limits[GPU_RESOURCE] = str(gpus)
    container = {
        "resources": {"requests": {"cpu": cpu, "memory": memory, "ephemeral-storage": ephemeral}, "limits": limits},
        "env": list(_SCRATCH_ENV),
        "security_context": dict(_CONTAINER_SECURITY),
        "volume_mounts": [dict(m) for m in SCRATCH_MOUNTS],
    }
    volumes = [dict(v) for v in SCRATCH_VOLUMES]
    if shm:  # PyTorch data loaders and NCCL use /dev/shm; the container default (64 MiB) is too small
        container["volume_mounts"].append({"name": "dshm", "mount_path": "/dev/shm"})
        volumes.append({"name": "dshm", "empty_dir": {"medium": "Memory", "size_limit": shm}})
    if image:
        container["image"] = image
    pod_spec = {"node_selector": {"karpenter.sh/nodepool": nodepool}, "security_context": dict(_POD_SECURITY),
                "volumes": volumes}
    if service_account:
        pod_spec["service_account_name"] = service_account
    if gpus:
        pod_spec["tolerations"] = [dict(NVIDIA_TOLERATION)]
        pod_spec["affinity"] = {"node_affinity": {"required_during_scheduling_ignored_during_execution": {
            "node_selector_terms": [{"match_expressions": [
                {"key": "karpenter.k8s.aws/instance-gpu-name", "operator": "In", "values": list(GPU_NAMES)},
            ]}],
        }}}
    # Karpenter must not consolidate a node away from under a running step (a training run or a 16 GB copy alike)
    return {"container_config": container, "pod_spec_config": pod_spec,
            "pod_template_spec_metadata": {"annotations": {"karpenter.sh/do-not-disrupt": "true"}}}


def gpu_step(*, cpu: str, memory: str, ephemeral: str, scratch: str, shm: str = "8Gi") -> dict:
    """Op tags of a step that needs one GPU (A10G or A100) and the GPU image."""
    return {K8S_CONFIG_TAG: _step_config(cpu=cpu, memory=memory, ephemeral=ephemeral, scratch=scratch,
                                         nodepool=GPU_NODEPOOL, image=GPU_IMAGE, gpus=1, shm=shm)}


def cpu_step(*, cpu: str = "1", memory: str = "4Gi", ephemeral: str = "5Gi", scratch: str = "10Gi",
             raw_pii: bool = False) -> dict:
    """Op tags of a CPU step on the user-code image; ``raw_pii``: it reads the raw (PII) bucket."""
    return {K8S_CONFIG_TAG: _step_config(cpu=cpu, memory=memory, ephemeral=ephemeral, scratch=scratch,
                                         nodepool=CPU_NODEPOOL,
                                         service_account=PII_SERVICE_ACCOUNT if raw_pii else None)}


# Sizing for an 8B base model (Llama-3-8B-Instruct) on a g5.2xlarge (8 vCPU, 32 GiB, A10G 24 GB) or larger:
# QLoRA keeps the 4-bit base (~5.5 GB) + LoRA r=64 + activations on the GPU; the pod holds the bf16 base model
# (16 GB) and checkpoints on scratch. AWQ merges in bf16 in host memory (16 GB + overhead: a g5.4xlarge, 64 GiB)
# and writes merged (16 GB) + quantized (5.5 GB). Evaluation loads only the 4-bit model.
LORA_ADAPTER = gpu_step(cpu="6", memory="26Gi", ephemeral="100Gi", scratch="150Gi")
AWQ_MODEL = gpu_step(cpu="12", memory="56Gi", ephemeral="100Gi", scratch="150Gi")
EVAL_REPORT = gpu_step(cpu="6", memory="26Gi", ephemeral="40Gi", scratch="60Gi")
PII_MEMORIZATION = EVAL_REPORT  # loads the same 4-bit model the same way
# base_model copies or converts the 8B model directory (16 GB) into the artifact store: CPU, large scratch
BASE_MODEL = cpu_step(cpu="2", memory="8Gi", ephemeral="60Gi", scratch="80Gi")
DATA_STEP = cpu_step()
# the embedding baseline and token statistics read the whole instruction set: more memory than a plain table step
HEAVY_DATA_STEP = cpu_step(cpu="2", memory="8Gi")
# steps that read raw chat logs or agents' corrections (both in the raw bucket)
PII_DATA_STEP = cpu_step(raw_pii=True)
PII_HEAVY_DATA_STEP = cpu_step(cpu="2", memory="8Gi", raw_pii=True)
