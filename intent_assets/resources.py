"""Every external system as a Dagster resource, and the one place where each environment picks its resources.

* ``local`` (the embedded default): files under ``$INTENT_ASSETS_DATA_DIR`` (default ``<project>/data``), raw
  (PII) tables in ``raw/`` and everything redacted in ``redacted/``, run artifacts in ``artifacts/``; the
  Dagster instance is SQLite under ``$DAGSTER_HOME``.
* ``tiny`` (``INTENT_ASSETS_ENV=tiny``): ``local`` with caps that shrink a default "Materialize all" to a smoke
  run of a few minutes (a few hundred records, 2 training steps of a rank-8 adapter, 2 calibration prompts, 12 test
  examples): the browser test and quick demos of the UI use it.
* ``prod`` (EKS, ``INTENT_ASSETS_ENV=prod``, see k8s/README.md): raw (PII) tables in their own bucket
  (``$INTENT_ASSETS_RAW_BUCKET``), redacted tables and artifacts in ``$INTENT_ASSETS_BUCKET``, all through
  dagster-aws; model directories as S3 prefixes with a verified manifest; the instance is Postgres
  (``k8s/dagster.yaml``). Any other name is an error, not a silent fallback.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Optional

import dagster as dg
import pandas as pd
from dagster_aws.s3 import S3Resource
from dagster_openai import OpenAIResource
from pydantic import Field

from intent_assets.deploy.s3_artifacts import delete_directory, download_directory, read_manifest, upload_directory
from intent_assets.paths import data_dir

TABLE_SUFFIXES = (".parquet", ".json")


def table_bytes(obj, name: str) -> tuple[str, bytes]:
    """(suffix, bytes) of a table output: a DataFrame as Parquet, a dict as JSON; anything else is refused."""
    if isinstance(obj, pd.DataFrame):
        buffer = io.BytesIO()
        obj.to_parquet(buffer, index=False)
        return ".parquet", buffer.getvalue()
    if isinstance(obj, dict):
        return ".json", json.dumps(obj, indent=1, ensure_ascii=False).encode("utf-8")
    raise TypeError(f"{name}: cannot store a {type(obj).__name__}")


def table_from_bytes(suffix: str, data: bytes):
    return pd.read_parquet(io.BytesIO(data)) if suffix == ".parquet" else json.loads(data.decode("utf-8"))


def _location(where: str) -> dict:
    return {"uri": dg.MetadataValue.url(where)} if where.startswith("s3://") else {"path": dg.MetadataValue.path(where)}


class TableIOManager(dg.ConfigurableIOManager):
    """DataFrames as Parquet, dicts as JSON, one object per asset (``<asset key>.parquet``); a partitioned asset
    keeps one object per partition (``<asset key>/<partition key>.parquet``).

    A partitioned asset returns ``{partition key: DataFrame}`` with exactly the keys of its run (a single-run
    backfill writes a whole range at once). Reading a partitioned asset gives one DataFrame: the partitions asked
    for, concatenated in key order (a downstream asset that depends on all of them gets those that were
    materialized; the number read is in the log). Loaded without partition information (``intent_taxonomy`` reads
    the stored corpus), every stored partition is read. Subclasses say where bytes live."""

    def _name(self, asset_key: dg.AssetKey) -> str:
        return "/".join(asset_key.path)

    # storage: relative names ("<asset>.parquet", "<asset>/<key>.parquet")
    def _write(self, name: str, data: bytes) -> str:
        raise NotImplementedError

    def _read(self, name: str) -> Optional[bytes]:
        raise NotImplementedError

    def _stored_partitions(self, name: str) -> list[str]:
        raise NotImplementedError

    def _where(self) -> str:
        raise NotImplementedError

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        name = self._name(context.asset_key)
        if not context.has_asset_partitions:
            suffix, data = table_bytes(obj, context.asset_key.to_user_string())
            context.add_output_metadata(_location(self._write(name + suffix, data)))
            return
        keys = sorted(context.asset_partition_keys)
        if not isinstance(obj, dict) or sorted(obj) != keys:
            got = sorted(obj)[:5] if isinstance(obj, dict) else type(obj).__name__
            raise TypeError(f"{name}: a partitioned output must be a dict with one DataFrame per partition key of the "
                            f"run ({keys[0]}..{keys[-1]}, {len(keys)} keys); got {got}")
        for key in keys:
            if not isinstance(obj[key], pd.DataFrame):
                raise TypeError(f"{name}: partition {key}: expected a DataFrame, got {type(obj[key]).__name__}")
            location = self._write(f"{name}/{key}.parquet", table_bytes(obj[key], name)[1])
        context.add_output_metadata({**_location(location.rsplit("/", 1)[0] + "/"), "partitions_written": len(keys)})

    def load_input(self, context: dg.InputContext):
        keys = sorted(context.asset_partition_keys) if context.has_asset_partitions else None
        return self.load_table(context.asset_key, keys, log=context.log)

    def load_table(self, asset_key: dg.AssetKey | str, partitions: Optional[list[str]] = None, log=None):
        """The stored table of ``asset_key``: for a partitioned asset, ``partitions`` (default: every stored one)
        concatenated; what a reader outside Dagster (a notebook, a test) calls too."""
        asset_key = dg.AssetKey.from_user_string(asset_key) if isinstance(asset_key, str) else asset_key
        name = self._name(asset_key)
        keys = partitions if partitions is not None else self._stored_partitions(name)
        if not keys:
            for suffix in TABLE_SUFFIXES:
                data = self._read(name + suffix)
                if data is not None:
                    return table_from_bytes(suffix, data)
            raise FileNotFoundError(f"{asset_key.to_user_string()}: not materialized yet in {self._where()}")
        stored = set(self._stored_partitions(name)) if len(keys) > 1 else set(keys)
        frames = [f for f in (self._read(f"{name}/{k}.parquet") for k in keys if k in stored) if f is not None]
        if not frames:
            raise FileNotFoundError(f"{asset_key.to_user_string()}: partition(s) {keys[0]}..{keys[-1]} not "
                                    f"materialized yet in {self._where()}")
        if len(frames) < len(keys) and log is not None:
            log.info(f"{name}: read the {len(frames)} materialized partitions of the {len(keys)} asked for")
        tables = [table_from_bytes(".parquet", f) for f in frames]
        return pd.concat([t for t in tables if len(t)] or tables[:1], ignore_index=True)


class LocalTableIOManager(TableIOManager):
    """Tables as files under ``base_dir`` (written to a temporary name, then renamed)."""

    base_dir: str = Field(description="Folder that holds this IO manager's files.")

    def _write(self, name: str, data: bytes) -> str:
        path = Path(self.base_dir, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_name(path.name + ".tmp").write_bytes(data)
        path.with_name(path.name + ".tmp").replace(path)
        return str(path)

    def _read(self, name: str) -> Optional[bytes]:
        path = Path(self.base_dir, name)
        return path.read_bytes() if path.is_file() else None

    def _stored_partitions(self, name: str) -> list[str]:
        folder = Path(self.base_dir, name)
        return sorted(p.name[: -len(".parquet")] for p in folder.glob("*.parquet")) if folder.is_dir() else []

    def _where(self) -> str:
        return self.base_dir


class S3TableIOManager(TableIOManager):
    """``prod``: the same tables (Parquet / JSON, never pickles) as objects ``s3://bucket/prefix/<asset key>``,
    through dagster-aws's ``S3Resource``. Raw (PII) and redacted tables use two instances on separate buckets."""

    s3: S3Resource
    bucket: str = Field(description="Bucket of this IO manager's tables.")
    prefix: str = Field(default="", description="Key prefix inside the bucket.")

    def _key(self, name: str) -> str:
        return "/".join([p for p in self.prefix.strip("/").split("/") if p] + [name])

    def _write(self, name: str, data: bytes) -> str:
        key = self._key(name)
        self.s3.get_client().put_object(Bucket=self.bucket, Key=key, Body=data)
        return f"s3://{self.bucket}/{key}"

    def _read(self, name: str) -> Optional[bytes]:
        client = self.s3.get_client()
        try:
            return client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"].read()
        except client.exceptions.NoSuchKey:
            return None

    def _stored_partitions(self, name: str) -> list[str]:
        prefix = self._key(name) + "/"
        keys = []
        for page in self.s3.get_client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys += [o["Key"][len(prefix): -len(".parquet")] for o in page.get("Contents", []) if o["Key"].endswith(".parquet")]
        return sorted(k for k in keys if "/" not in k)

    def _where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


class ArtifactStore(dg.ConfigurableResource):
    """Where stages write files that are not tables (JSONL datasets, caches, reports, models).

    ``publish(dir)`` after a stage has written a directory another stage (maybe in another pod) will read, and
    ``fetch(dir)`` before reading one: on one machine both are no-ops; ``S3ArtifactStore`` keeps them in S3.
    """

    base_dir: str = Field(description="Root folder for artifacts.")

    def path(self, *parts: str) -> Path:
        path = Path(self.base_dir, *parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def publish(self, directory: str | os.PathLike) -> Optional[str]:
        """Make a finished directory durable; returns its URI where it is stored elsewhere than ``directory``."""
        return None

    def unpublish(self, directory: str | os.PathLike) -> None:
        """Withdraw a published directory (e.g. a checkpoint the trainer rotated away); here: nothing to do, the local
        directory is the only copy and whoever deleted it already withdrew it."""

    def fetch(self, directory: str | os.PathLike, missing_ok: bool = False) -> Path:
        """Make a published directory present (and verified) at ``directory``; returns it."""
        directory = Path(directory)
        if not directory.is_dir() and not missing_ok:
            raise FileNotFoundError(f"{directory}: not materialized yet")
        return directory

    def children(self, directory: str | os.PathLike) -> list[str]:
        """Names of the sub-directories of ``directory`` that were published (here: that exist)."""
        directory = Path(directory)
        return sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")) if directory.is_dir() else []

    def uri(self, directory: str | os.PathLike) -> str:
        """Where ``directory`` is kept durably: here the directory itself."""
        return str(Path(directory).expanduser().resolve())


class S3ArtifactStore(ArtifactStore):
    """``prod``: artifacts are written under ``base_dir`` (the pod's scratch volume) and published as S3 prefixes
    with a manifest (files, sizes, sha256) that ``fetch`` verifies (``intent_assets.deploy.s3_artifacts``)."""

    s3: S3Resource
    bucket: str = Field(description="Bucket of the artifacts (redacted data and models only, never raw PII).")
    prefix: str = Field(default="artifacts", description="Key prefix inside the bucket.")

    def _inside(self, directory: str | os.PathLike) -> bool:
        return Path(directory).expanduser().resolve().is_relative_to(Path(self.base_dir).resolve())

    def _prefix(self, directory: str | os.PathLike) -> str:
        if not self._inside(directory):
            raise ValueError(f"{directory}: prod artifacts live under {self.base_dir} (S3 prefix {self.prefix}/), not elsewhere")
        rel = Path(directory).expanduser().resolve().relative_to(Path(self.base_dir).resolve()).as_posix()
        return f"{self.prefix.strip('/')}/{rel}" if self.prefix.strip("/") else rel

    def publish(self, directory: str | os.PathLike) -> Optional[str]:
        prefix = self._prefix(directory)
        upload_directory(self.s3.get_client(), self.bucket, prefix, directory)
        return self.uri(directory)

    def uri(self, directory: str | os.PathLike) -> str:
        return f"s3://{self.bucket}/{self._prefix(directory)}/"

    def unpublish(self, directory: str | os.PathLike) -> None:
        delete_directory(self.s3.get_client(), self.bucket, self._prefix(directory))

    def fetch(self, directory: str | os.PathLike, missing_ok: bool = False) -> Path:
        if missing_ok and not self._inside(directory):
            return Path(directory)  # not an artifact (e.g. a model directory baked into the image)
        client = self.s3.get_client()
        prefix = self._prefix(directory)
        if missing_ok and read_manifest(client, self.bucket, prefix) is None:
            return Path(directory)
        download_directory(client, self.bucket, prefix, directory)
        return Path(directory)

    def children(self, directory: str | os.PathLike) -> list[str]:
        prefix = self._prefix(directory).rstrip("/") + "/"
        names = set()
        for page in self.s3.get_client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
            names.update(p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", []))
        return sorted(n for n in names if n and not n.startswith("."))


class ParaphraseLLM(OpenAIResource):
    """An OpenAI-compatible chat-completions endpoint for paraphrase generation (dagster-openai's resource).

    ``base_url``, ``api_key`` and ``model`` come from the environment (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``,
    ``INTENT_ASSETS_PARAPHRASE_MODEL``). Without an API key the resource is "not configured" and the
    ``synthetic_augments`` asset materializes an empty result that says why.
    """

    api_key: Optional[str] = Field(default=None, description="API key (from the environment, never from code).")
    model: str = Field(default="gpt-4o-mini", description="Model name sent with each request.")
    temperature: float = Field(default=0.9, ge=0.0, le=2.0)
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=2, ge=0)

    @property
    def configured(self) -> bool:
        return bool(self.api_key)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if not self.configured:
            return  # no client without credentials: the asset reports why and materializes an empty result
        from openai import Client

        self._client = Client(
            api_key=self.api_key,
            organization=self.organization,
            project=self.project,
            base_url=self.base_url,
            timeout=self.timeout_s,
            max_retries=self.max_retries,
        )

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self.configured:  # without credentials no client was made: nothing to close (was an ERROR event per run)
            super().teardown_after_execution(context)


# run-config fields of lora_adapter that, when left unset, take the trainer resource's value
TRAINER_DEFAULTED = ("learning_rate", "per_device_batch_size", "checkpoint_steps", "num_epochs")
# the trainer resource's caps on lora_adapter's recipe (the calibration caps apply to awq_model instead)
TRAINING_CAPS = ("max_train_examples", "max_eval_examples", "max_steps", "max_effective_batch_size", "max_lora_r",
                 "max_checkpoint_steps")


class TrainerBackend(dg.ConfigurableResource):
    """Where ``lora_adapter`` trains and the environment's budget for it.

    The run config (``LoraAdapterConfig``) says *what* to train (the seed design: r=64, alpha=16, batch 128, ...);
    this resource says what the machine can afford. The embedded CPU default caps the run to a short demo;
    production GPU pods have no caps. A cap only ever lowers a value set in the run config. The ``learning_rate``
    and ``per_device_batch_size`` here apply only where the run config leaves them unset: a run capped to ~100
    optimizer steps learns little at the seed's 2e-4, which is meant for effective batch 128 over full epochs.
    """

    device: str = Field(default="auto", description="auto (CUDA when available), cpu or cuda.")
    max_train_examples: Optional[int] = Field(default=None, ge=1, description="Cap on training examples.")
    max_eval_examples: Optional[int] = Field(default=None, ge=1, description="Cap on validation examples.")
    max_steps: Optional[int] = Field(default=None, ge=1, description="Cap on optimizer steps.")
    max_effective_batch_size: Optional[int] = Field(default=None, ge=1, description="Cap on the effective batch.")
    max_lora_r: Optional[int] = Field(default=None, ge=1, description="Cap on the LoRA rank.")
    max_checkpoint_steps: Optional[int] = Field(default=None, ge=1, description="Cap on the steps between checkpoints.")
    max_calibration_samples: Optional[int] = Field(default=None, ge=1, description="Cap on awq_model's calibration prompts.")
    max_calibration_tokens: Optional[int] = Field(default=None, ge=16, description="Cap on tokens per calibration prompt.")
    learning_rate: Optional[float] = Field(default=None, gt=0, le=1, description="Learning rate where the run config sets none.")
    per_device_batch_size: Optional[int] = Field(default=None, ge=1, description="Micro-batch where the run config sets none.")
    checkpoint_steps: Optional[int] = Field(default=None, ge=1, description="Steps between checkpoints (and validations) where the run config sets none.")
    num_epochs: Optional[float] = Field(default=None, gt=0, le=100, description="Epochs, at most, where the run config sets none (early stopping may end sooner).")

    def budget(self) -> dict:
        """Caps on the training recipe."""
        return {k: v for k, v in self.model_dump().items() if k in TRAINING_CAPS and v is not None}

    def calibration_budget(self) -> dict:
        """Caps on awq_model's calibration (``num_calibration_samples``, ``max_calibration_tokens``)."""
        values = {"num_calibration_samples": self.max_calibration_samples, "max_calibration_tokens": self.max_calibration_tokens}
        return {k: v for k, v in values.items() if v is not None}

    def defaults(self) -> dict:
        return {k: v for k, v in self.model_dump().items() if k in TRAINER_DEFAULTED and v is not None}


class InferenceEngine(dg.ConfigurableResource):
    """How the evaluation runs a model, two implementations behind one interface (:meth:`classifier`):

    - ``transformers``: in-process, constrained decoding over the taxonomy with the cached system-prompt prefix
      (``intent_assets.model.classifier.ConstrainedClassifier``);
    - ``openai``: an OpenAI-compatible server (vLLM: ``make serve``) at ``base_url``, with structured outputs over
      the taxonomy's answers (``intent_assets.serving.vllm_server.OpenAIClassifier``). The server serves one model: the
      one it was started with (``intent_assets.serving.champion.current_model_dir``).

    A classification head's router (``lora_adapter``'s ``head: classifier``) takes one forward pass and the most
    probable label instead: ``intent_assets.model.head.HeadClassifier`` in-process, vLLM's ``/classify`` through
    ``intent_assets.serving.vllm_server.PoolingHeadClassifier``.
    """

    kind: str = Field(default="transformers", description="transformers (in-process) or openai (a vLLM server at base_url).")
    device: str = Field(default="auto", description="auto (CUDA when available), cpu or cuda.")
    dtype: str = Field(default="bfloat16", description="bfloat16 (fast on AMX CPUs and GPUs) or float32.")
    batch_size: int = Field(default=16, ge=1, description="Requests per forward pass (openai: concurrent requests).")
    base_url: Optional[str] = Field(default=None, description="openai: the server's URL, e.g. http://127.0.0.1:8000/v1.")
    served_model: str = Field(default="intent-router", description="openai: the model name the server serves.")
    api_key: Optional[str] = Field(default=None, description="openai: API key (from the environment), if the server wants one.")
    # the environment's evaluation budget: caps only lower the run config's values (None: no cap)
    max_test_examples: Optional[int] = Field(default=None, ge=1, description="Cap on eval_report's test examples.")
    max_latency_requests: Optional[int] = Field(default=None, ge=1, description="Cap on eval_report's timed single requests.")
    max_canaries: Optional[int] = Field(default=None, ge=1, description="Cap on pii_memorization's canaries.")

    def cap(self, name: str, value: Optional[int]) -> Optional[int]:
        """``value`` lowered to this resource's ``max_<name>`` (a None value means "all", so the cap applies)."""
        limit = getattr(self, f"max_{name}")
        if limit is None:
            return value
        return limit if value is None else min(value, limit)

    def load(self, model_dir: str, adapter_dir: Optional[str] = None, quantized: bool = False, causal_lm: bool = False):
        """(model, tokenizer) in-process for a base model directory, optionally with a LoRA adapter (or a fully
        fine-tuned model in its place) or as a 4-bit model. ``causal_lm``: a classification head's router (16-bit)
        as its backbone under the LM head, to generate with (``pii_memorization``)."""
        from intent_assets.model.base_model import load_base_model, resolve_device

        device = resolve_device(self.device)
        if quantized:
            from intent_assets.model.quantization import load_quantized_for_inference

            return load_quantized_for_inference(model_dir, device=device, dtype=self.dtype)
        from intent_assets.model.head import head_labels, is_head_model
        from intent_assets.model.quantization import is_full_model

        if adapter_dir and is_full_model(adapter_dir):  # lora_adapter's method: full: the model itself
            model_dir, adapter_dir = adapter_dir, None
        # a classification head's adapter: the base with a head over the adapter's labels, the adapter fills it in
        labels = head_labels(adapter_dir) if adapter_dir and is_head_model(adapter_dir) else None
        model, tokenizer = load_base_model(Path(model_dir), dtype=self.dtype, device=device, causal_lm=causal_lm,
                                           head_labels=labels)
        if adapter_dir:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter_dir).eval()
        return model, tokenizer

    def classifier(self, model_dir: str, labels: list[str], system_prompt: str, quantized: bool = False):
        """An object with ``classify(texts, batch_size) -> [Prediction]`` (label always in ``labels``)."""
        if self.kind == "openai":
            from intent_assets.serving.vllm_server import server_classifier

            if not self.base_url:
                raise ValueError("InferenceEngine(kind='openai') needs base_url (the server's /v1 URL)")
            return server_classifier(self.base_url, model_dir, labels, system_prompt, model=self.served_model,
                                     api_key=self.api_key or "EMPTY", max_concurrency=self.batch_size)
        if self.kind != "transformers":
            raise ValueError(f"InferenceEngine.kind={self.kind!r}: 'transformers' or 'openai'")
        from intent_assets.model.head import make_classifier

        model, tokenizer = self.load(model_dir, quantized=quantized)
        return make_classifier(model, tokenizer, labels, system_prompt)  # constrained decoding, or a head's argmax


class CorrectionsSource(dg.ConfigurableResource):
    """Where support agents' corrections arrive (``intent_assets.loop.corrections``): batches with deterministic ids."""

    def client(self):
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class FileCorrections(CorrectionsSource):
    """Correction files (JSONL or CSV) dropped into a local folder, or under an S3 prefix when ``bucket`` is set.
    They hold raw text (PII): keep them with the raw data, never in the artifacts bucket."""

    location: str = Field(default="", description="Local folder, or the key prefix inside ``bucket``.")
    bucket: Optional[str] = Field(default=None, description="S3 bucket of the correction files (None: a local folder).")
    s3: Optional[S3Resource] = None

    def client(self):
        from intent_assets.loop.corrections import FolderSource

        if self.bucket:
            s3 = self.s3 or S3Resource()
            return FolderSource(f"s3://{self.bucket}/{self.location.strip('/')}", s3.get_client())
        return FolderSource(self.location)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.location.strip('/')}/" if self.bucket else self.location


class PostgresCorrections(CorrectionsSource):
    """Rows of the support system's corrections table in PostgreSQL (``id bigserial`` plus the correction fields)."""

    dsn: str = Field(description="libpq connection string (a secret: only ever via EnvVar).")
    table: str = Field(default="intent_corrections", description="Table (or schema.table) of corrections.")
    batch_size: int = Field(default=1000, ge=1, description="Rows per batch (one run per batch).")

    def client(self):
        from intent_assets.loop.corrections import PostgresSource

        return PostgresSource(self.dsn, self.table, self.batch_size)

    def describe(self) -> str:
        return f"postgres table {self.table}"


class RetrainPolicy(dg.ConfigurableResource):
    """When corrections trigger retraining, and what a challenger must show to replace the champion."""

    min_new_corrections: int = Field(default=200, ge=1, description="Corrections accumulated since the last retraining that trigger a new one.")
    max_batches_per_tick: int = Field(default=20, ge=1, description="New batches one sensor tick requests (a backlog spreads over ticks).")
    promotion_metric: str = Field(default="macro_f1", description="macro_f1, micro_f1 or accuracy.")
    promotion_margin: float = Field(default=0.005, ge=0, le=1, description="How much the challenger must beat the champion by.")
    max_intent_f1_drop: float = Field(default=0.10, ge=0, le=1, description="Largest F1 drop allowed on any single intent.")
    require_beating_baselines: bool = Field(default=True, description="Refuse a challenger that scores below the best classical baseline (TF-IDF + SVM, MiniLM + LR) of its own eval_report on promotion_metric, or when the report has none. False: the comparison stays in the decision's reasons but does not block.")
    baseline_margin: float = Field(default=0.0, ge=-1, le=1, description="The challenger must reach the best baseline's score + this margin (negative: tolerate being that much below it).")


class ChatLogSource(dg.ConfigurableResource):
    """Where each day's chat logs land, and the environment's budget for reading them.

    ``landing``: the folder (or, with ``bucket``, the S3 key prefix in the raw bucket) where the support system drops
    each day's export, the day in the file's name (``2025-03-07.jsonl``, ``day=2025-03-07/part-0.parquet``): what
    ``chat_log_days_sensor`` watches and what ``raw_chat_logs`` reads with ``path: landing``.
    ``max_records``: ``raw_chat_logs`` reads at most that many records (the first ones), whatever its run config's
    ``limit`` says. None: no cap."""

    max_records: Optional[int] = Field(default=None, ge=1, description="Cap on the records raw_chat_logs reads.")
    landing: str = Field(default="", description="Folder, or key prefix in ``bucket``, where day files land.")
    bucket: Optional[str] = Field(default=None, description="S3 bucket of the landing prefix (None: a local folder).")
    s3: Optional[S3Resource] = None

    def cap(self, limit: Optional[int]) -> Optional[int]:
        if self.max_records is None:
            return limit
        return self.max_records if limit is None else min(limit, self.max_records)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.landing.strip('/')}/" if self.bucket else self.landing

    def _s3(self):
        return (self.s3 or S3Resource()).get_client()

    def _prefix(self) -> str:
        return self.landing.strip("/") + "/" if self.landing.strip("/") else ""

    def day_files(self) -> dict[str, list[tuple[str, str]]]:
        """``{day: [(name, fingerprint), ...]}`` of the landed files whose name gives a day (size and modification
        time, or the S3 ETag: a file rewritten under the same name changes its day's fingerprint). One listing."""
        from intent_assets.data.chat_logs import SUPPORTED_SUFFIXES
        from intent_assets.data.days import name_day

        found: list[tuple[str, str]] = []
        if self.bucket:
            prefix = self._prefix()
            for page in self._s3().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                found += [(o["Key"][len(prefix):], o["ETag"].strip('"')) for o in page.get("Contents", [])]
        elif self.landing and Path(self.landing).is_dir():
            root = Path(self.landing)
            found = [(p.relative_to(root).as_posix(), f"{p.stat().st_size}-{p.stat().st_mtime_ns}")
                     for p in root.rglob("*") if p.is_file()]
        days: dict[str, list[tuple[str, str]]] = {}
        for name, fingerprint in sorted(found):
            day = name_day(name)
            if day and name.endswith(SUPPORTED_SUFFIXES) and not Path(name).name.startswith("."):
                days.setdefault(day, []).append((name, fingerprint))
        return days

    def stage(self, days: list[str], scratch: Path) -> Path:
        """A local folder holding the landed files of ``days``: the landing folder itself, or (S3) those objects
        downloaded into ``scratch`` (the caller deletes it: raw PII)."""
        if not self.landing:
            raise ValueError("raw_chat_logs path 'landing': this environment's chat_log_source has no landing location")
        if not self.bucket:
            return Path(self.landing)
        wanted, client, prefix = set(days), self._s3(), self._prefix()
        for day, files in self.day_files().items():
            if day in wanted:
                for name, _ in files:
                    target = scratch / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    client.download_file(self.bucket, prefix + name, str(target))
        return scratch


class AuditSalt(dg.ConfigurableResource):
    """The secret salt of ``pii_audit_log``'s keyed record ids: ``INTENT_ASSETS_AUDIT_SALT`` from the environment
    (production: a secret), else a per-installation random salt file kept with the raw (restricted) data."""

    salt: Optional[str] = Field(default=None, description="The salt (only ever via EnvVar, never written in config).")
    salt_dir: str = Field(description="Where the per-installation salt file lives when no salt is set (the raw location).")

    def resolve(self) -> tuple[bytes, str]:
        from intent_assets.privacy.pii_audit import resolve_salt

        return resolve_salt(self.salt, Path(self.salt_dir))


def _env_or_none(name: str):
    """``EnvVar(name)`` when the variable is set (so the value is never written into config), else None."""
    return dg.EnvVar(name) if os.environ.get(name) else None


LOCAL_TRAINING_BUDGET = {
    # caps: 240 optimizer steps of 16 examples (one pass over 3,840 of them: ~50 per intent on Banking77, with the
    # tuned recipe's class-balanced subset), validation on 128 every 60 steps; about 8 minutes on 2 cores with the
    # compact system prompt (bench/recipe_sweep.py: 0.835 on 400 test messages, against 0.812 in 19.5 minutes with
    # the intents listed: BENCHMARKS.md)
    "max_train_examples": 3840, "max_eval_examples": 128, "max_effective_batch_size": 16, "max_steps": 240,
    "checkpoint_steps": 60,
}
# INTENT_ASSETS_ENV=full: the full-data switch on one machine. No caps on data, steps or rank: every training
# message, epochs until early stopping (at most 8: the recipe's 3 stopped NLU++ banking while its validation loss
# still fell, 0.170; it stopped itself after 6.4 epochs at 0.155, exact-set accuracy 0.409 -> 0.620: BENCHMARKS.md).
# Validation on a seeded 256 every 100 steps (a validation pass over ~1,000 messages every 20 steps would cost as
# much as the training).
FULL_TRAINING_BUDGET = {"max_eval_examples": 256, "checkpoint_steps": 100, "num_epochs": 8}


def _paraphrase_llm() -> ParaphraseLLM:
    llm_kwargs = {"base_url": _env_or_none("OPENAI_BASE_URL"), "api_key": _env_or_none("OPENAI_API_KEY")}
    if os.environ.get("INTENT_ASSETS_PARAPHRASE_MODEL"):
        llm_kwargs["model"] = dg.EnvVar("INTENT_ASSETS_PARAPHRASE_MODEL")
    return ParaphraseLLM(**{k: v for k, v in llm_kwargs.items() if v is not None})


def _inference_engine() -> InferenceEngine:
    """In-process transformers, or the OpenAI-compatible server (vLLM) at ``$INTENT_ASSETS_INFERENCE_URL``."""
    if os.environ.get("INTENT_ASSETS_INFERENCE_URL"):
        return InferenceEngine(kind="openai", base_url=dg.EnvVar("INTENT_ASSETS_INFERENCE_URL"))
    return InferenceEngine()


def local_resources(root: Path | None = None) -> dict:
    root = Path(root) if root is not None else data_dir()
    return {
        "io_manager": LocalTableIOManager(base_dir=str(root / "redacted")),
        "raw_io_manager": LocalTableIOManager(base_dir=str(root / "raw")),
        "artifacts": ArtifactStore(base_dir=str(root / "artifacts")),
        "audit_salt": AuditSalt(salt=_env_or_none("INTENT_ASSETS_AUDIT_SALT"), salt_dir=str(root / "raw")),
        # each day's export lands in a folder next to the raw tables (chat_log_days_sensor watches it)
        "chat_log_source": ChatLogSource(landing=str(root / "raw" / "landing")),
        "paraphrase_llm": _paraphrase_llm(),
        # one CPU machine: a short demo fine-tune (see README "Embedded default budget")
        "trainer": TrainerBackend(**LOCAL_TRAINING_BUDGET),
        "inference": _inference_engine(),
        # files dropped into a folder (raw text: kept with the raw data)
        "corrections": FileCorrections(location=str(root / "raw" / "corrections_inbox")),
        "retrain_policy": RetrainPolicy(),
    }


TINY_TRAINING_BUDGET = {
    "max_train_examples": 16, "max_eval_examples": 4, "max_effective_batch_size": 4, "max_steps": 2, "max_lora_r": 8,
    "max_checkpoint_steps": 1,
    "max_calibration_samples": 2, "max_calibration_tokens": 32, "per_device_batch_size": 2,
}
TINY_INFERENCE_BUDGET = {"max_test_examples": 12, "max_latency_requests": 2, "max_canaries": 8}
TINY_MAX_RECORDS = 900


def tiny_resources(root: Path | None = None) -> dict:
    """``local`` capped to a smoke run: what the browser test materializes with the UI's "Materialize all"."""
    return {
        **local_resources(root),
        "chat_log_source": ChatLogSource(max_records=TINY_MAX_RECORDS, landing=str(Path(root or data_dir()) / "raw" / "landing")),
        "trainer": TrainerBackend(**TINY_TRAINING_BUDGET),
        "inference": InferenceEngine(**TINY_INFERENCE_BUDGET),
    }


def full_resources(root: Path | None = None) -> dict:
    """``local`` without the CPU demo's caps (``INTENT_ASSETS_ENV=full``): all training data, the tuned recipe's
    epochs until early stopping, the whole test split. The run log's ETA (``lora_adapter``: step, loss, ETA) says
    how long training will take at most."""
    return {**local_resources(root), "trainer": TrainerBackend(**FULL_TRAINING_BUDGET)}


def s3_resource() -> S3Resource:
    """dagster-aws's S3 client. Credentials come from the pod's IRSA role (or the standard AWS environment), never
    from config; ``AWS_REGION`` and, for an S3-compatible store, ``INTENT_ASSETS_S3_ENDPOINT_URL``."""
    kwargs = {"region_name": _env_or_none("AWS_REGION"), "endpoint_url": _env_or_none("INTENT_ASSETS_S3_ENDPOINT_URL")}
    return S3Resource(**{k: v for k, v in kwargs.items() if v is not None})


def prod_resources(root: Path | None = None) -> dict:
    """EKS: raw (PII) tables in ``$INTENT_ASSETS_RAW_BUCKET``; redacted tables and every artifact (models as
    manifest-verified prefixes) in ``$INTENT_ASSETS_BUCKET``; local files only on the pod's scratch volume;
    no training caps (GPU pods)."""
    root = Path(root) if root is not None else data_dir()
    s3 = s3_resource()
    bucket = dg.EnvVar("INTENT_ASSETS_BUCKET")
    return {
        "io_manager": S3TableIOManager(s3=s3, bucket=bucket, prefix="redacted"),
        "raw_io_manager": S3TableIOManager(s3=s3, bucket=dg.EnvVar("INTENT_ASSETS_RAW_BUCKET"), prefix="raw"),
        "artifacts": S3ArtifactStore(base_dir=str(root / "artifacts"), s3=s3, bucket=bucket, prefix="artifacts"),
        # a secret (Kubernetes Secret or external secret store): pods must share one salt for stable audit ids
        "audit_salt": AuditSalt(salt=dg.EnvVar("INTENT_ASSETS_AUDIT_SALT"), salt_dir=str(root / "raw")),
        # each day's export lands under chat_logs/ in the raw bucket (chat_log_days_sensor lists it)
        "chat_log_source": ChatLogSource(landing="chat_logs", bucket=dg.EnvVar("INTENT_ASSETS_RAW_BUCKET"), s3=s3),
        "paraphrase_llm": _paraphrase_llm(),
        "trainer": TrainerBackend(),
        "inference": _inference_engine(),
        "corrections": _prod_corrections(s3),
        "retrain_policy": RetrainPolicy(),
    }


def _prod_corrections(s3: S3Resource) -> CorrectionsSource:
    """The support system's Postgres table when ``INTENT_ASSETS_CORRECTIONS_DSN`` is set, else correction files under
    ``corrections/`` in the raw (PII) bucket."""
    if os.environ.get("INTENT_ASSETS_CORRECTIONS_DSN"):
        return PostgresCorrections(dsn=dg.EnvVar("INTENT_ASSETS_CORRECTIONS_DSN"))
    return FileCorrections(location="corrections", bucket=dg.EnvVar("INTENT_ASSETS_RAW_BUCKET"), s3=s3)


ENVIRONMENTS = {"local": local_resources, "tiny": tiny_resources, "full": full_resources, "prod": prod_resources}


def environment_name(environment: str | None = None) -> str:
    """The environment asked for: ``environment``, else ``$INTENT_ASSETS_ENV``, else ``local``."""
    return environment or os.environ.get("INTENT_ASSETS_ENV", "local")


def resources_for(environment: str | None = None) -> dict:
    """The resources of one environment: ``$INTENT_ASSETS_ENV`` (default ``local``)."""
    environment = environment_name(environment)
    if environment not in ENVIRONMENTS:
        raise ValueError(f"INTENT_ASSETS_ENV={environment!r}: unknown environment (available: {', '.join(ENVIRONMENTS)})")
    return ENVIRONMENTS[environment]()
