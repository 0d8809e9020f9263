"""Which model serves, and how to load it for classification (no Dagster import).

:func:`current_model_dir` is the ONE place that decides which model is "the current champion": every consumer
(``intent-assets classify``, ``intent-assets serve`` / ``make serve``, :func:`load_classifier`) goes through it.
It is the model registry's ``champion``. Once a registry exists and holds no champion (every challenger so far
was refused by the gate), nothing serves: :class:`NoModelError`, which ``intent-assets`` prints as one line (exit
code 2). The zero-shot base model is never served silently in its place (about 13% accuracy on Banking77, below
every baseline): ``--model <dir>`` or ``INTENT_ASSETS_SERVE_MODEL=<dir>`` serve a model on purpose.

A model directory served here carries ``intent_assets.json`` (``awq_model`` writes it next to the weights, as
:func:`write_serving_info` does) or is accompanied by an ``instruction_dataset`` under the same artifacts root: the labels and the exact
system prompt the model was trained with. Serving must prompt exactly as training did.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from intent_assets.loop.registry import ModelRegistry
from intent_assets.paths import data_dir

__all__ = [
    "NoModelError",
    "ServingSpec",
    "check_model_dir",
    "current_model_dir",
    "is_quantized_dir",
    "load_classifier",
    "read_serving_info",
    "serving_spec",
    "write_serving_info",
    "serving_info_text",
    "labels_from_prompt",
]

SERVING_INFO = "intent_assets.json"


def _artifacts_root(artifacts_root: str | os.PathLike | None) -> Path:
    return Path(artifacts_root) if artifacts_root is not None else data_dir() / "artifacts"


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


class NoModelError(FileNotFoundError):
    """Nothing to serve, or the named directory is not a model: a one-line message for the command line."""


OVERRIDE = "--model <dir> or INTENT_ASSETS_SERVE_MODEL=<dir>"


def check_model_dir(path: str | os.PathLike, source: str = "model directory ") -> Path:
    """``path`` if it is a model directory (``config.json`` and safetensors weights), else :class:`NoModelError`."""
    path = Path(path)
    if not path.exists():
        raise NoModelError(f"{source}{path} does not exist")
    if not _is_model_dir(path):
        raise NoModelError(f"{source}{path} is not a model directory (it needs config.json and *.safetensors)")
    return path


def _newest(paths: list[Path]) -> Path:
    return max(paths, key=lambda p: (p / "config.json").stat().st_mtime)


def current_model_dir(artifacts_root: str | os.PathLike | None = None, *, fallback_to_base: bool = False) -> Path:
    """The model that serves now, from under ``artifacts_root`` (default ``$INTENT_ASSETS_DATA_DIR/artifacts``):

    * ``INTENT_ASSETS_SERVE_MODEL`` (a model directory), when set, overrides everything;
    * the model registry's ``champion``;
    * a registry without a champion (every challenger so far was refused by the gate): nothing, on purpose. A
      model the gate refused, or the zero-shot base model (~13% accuracy on Banking77), is not served silently;
    * without any registry (the pipeline predates it, or model_promotion never ran): the newest finished
      ``awq_model/<run key>/quantized``.

    ``fallback_to_base`` (off by default; for demos) serves the converted base model where the above finds
    nothing. Raises :class:`NoModelError` (a FileNotFoundError) with a one-line reason and how to override it.
    """
    override = os.environ.get("INTENT_ASSETS_SERVE_MODEL")
    if override:
        return check_model_dir(override, "INTENT_ASSETS_SERVE_MODEL=")
    root = _artifacts_root(artifacts_root)
    registry = ModelRegistry(root / "registry")
    bases = [p for p in root.glob("base_model/*") if _is_model_dir(p)] if fallback_to_base else []
    if registry.file.exists():
        champion = registry.alias("champion")
        if champion is not None:
            return check_model_dir(champion["model_dir"], f"the champion v{champion['version']}'s model directory ")
        if bases:
            return _newest(bases)
        raise NoModelError(f"no model has been promoted yet: the model registry {registry.file} has no champion (the "
                           f"gate refused every challenger; reasons in registry.json). Serve one anyway with {OVERRIDE}, "
                           "or make one the champion with rollback_job")
    candidates = [p for p in root.glob("awq_model/*/quantized") if _is_model_dir(p)]
    if candidates or bases:
        return _newest(candidates or bases)
    raise NoModelError(f"no model to serve under {root}: no model registry and no finished awq_model (run `make run` "
                       f"first, or pass {OVERRIDE})")


def is_quantized_dir(model_dir: str | os.PathLike) -> bool:
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    return bool(config.get("quantization_config"))


@dataclass(frozen=True)
class ServingSpec:
    model_dir: Path
    labels: list[str]
    system_prompt: str
    # list answers (a model trained on label sets): at most this many labels, and whether an empty list is allowed
    max_intents: int = 3
    allow_empty: bool = False

    @property
    def answers_with_lists(self) -> bool:
        return '{"intents": [' in self.system_prompt

    def to_dict(self) -> dict:
        return {"labels": self.labels, "system_prompt": self.system_prompt,
                **({"max_intents": self.max_intents, "allow_empty": self.allow_empty} if self.answers_with_lists else {})}


def labels_from_prompt(system_prompt: str) -> list[str]:
    """The intent names a training system prompt lists (its ``- name`` or ``- name: description`` lines)."""
    return [line[2:].split(": ", 1)[0] for line in system_prompt.split("\n") if line.startswith("- ")]


def serving_info_text(labels: Sequence[str], system_prompt: str, max_intents: int | None = None,
                      allow_empty: bool = False) -> str:
    """The content of ``intent_assets.json``: what a client of the served model needs (labels, system prompt; for a
    model that answers with lists, how many labels a list may hold and whether it may be empty)."""
    spec = ServingSpec(Path("."), list(labels), system_prompt, max_intents or 3, allow_empty)
    return json.dumps(spec.to_dict(), indent=1) + "\n"


def write_serving_info(model_dir: str | os.PathLike, labels: Sequence[str], system_prompt: str,
                       max_intents: int | None = None, allow_empty: bool = False) -> Path:
    """Write the labels and the training system prompt next to a model's weights (``intent_assets.json``)."""
    path = Path(model_dir) / SERVING_INFO
    path.write_text(serving_info_text(labels, system_prompt, max_intents, allow_empty), encoding="utf-8")
    return path


def read_serving_info(model_dir: str | os.PathLike) -> ServingSpec | None:
    """The labels and training system prompt written beside a model's weights (``intent_assets.json``), if any."""
    info = Path(model_dir) / SERVING_INFO
    if not info.is_file():
        return None
    data = json.loads(info.read_text(encoding="utf-8"))
    return ServingSpec(Path(model_dir), list(data["labels"]), data["system_prompt"], int(data.get("max_intents", 3)),
                       bool(data.get("allow_empty", False)))


def serving_spec(model_dir: str | os.PathLike, artifacts_root: str | os.PathLike | None = None,
                 taxonomy_path: str | os.PathLike | None = None) -> ServingSpec:
    """Labels and system prompt for ``model_dir``: from its ``intent_assets.json`` (every ``awq_model`` writes one);
    else the prompt of the instruction dataset under ``artifacts_root`` (the prompt it trained with) and the labels
    it lists, or, for a compact prompt that lists none, the default taxonomy's (Banking77); else, and always when
    ``taxonomy_path`` is given, that taxonomy's names and listing prompt (what a model that was not fine-tuned, or
    one trained before the compact prompt, needs)."""
    model_dir = Path(model_dir)
    spec = read_serving_info(model_dir)
    if spec is not None:
        return spec
    from intent_assets.data.taxonomy import load_taxonomy
    from intent_assets.model.instructions import system_prompt
    from intent_assets.paths import DEFAULT_TAXONOMY

    train = _artifacts_root(artifacts_root) / "instruction_dataset" / "train.jsonl"
    if taxonomy_path is None and train.is_file():
        with train.open(encoding="utf-8") as fh:
            first = json.loads(fh.readline())
        prompt = first["messages"][0]["content"]
        return ServingSpec(model_dir, labels_from_prompt(prompt) or load_taxonomy(DEFAULT_TAXONOMY).names, prompt)
    taxonomy = load_taxonomy(taxonomy_path or DEFAULT_TAXONOMY)
    return ServingSpec(model_dir, taxonomy.names, system_prompt(taxonomy))


def in_process_model_dir(model_dir: str | os.PathLike) -> Path:
    """The directory the in-process engine loads for ``model_dir``: for an ``awq_model`` output
    (``<run key>/quantized``) the same model's merged 16-bit weights beside it (``<run key>/merged``) when they are
    there, since transformers dequantizes the 4-bit weights to 16-bit at load time anyway (no speed on a CPU, and
    the rounding costs accuracy: BENCHMARKS.md); vLLM loads the 4-bit directory itself. Otherwise ``model_dir``."""
    model_dir = Path(model_dir)
    merged = model_dir.parent / "merged"
    if model_dir.name == "quantized" and _is_model_dir(merged) and is_quantized_dir(model_dir):
        return merged
    return model_dir


def load_model(model_dir: str | os.PathLike, dtype: str = "bfloat16", device: str = "cpu", *,
               prefer_16bit: bool = True):
    """(model, tokenizer) for a plain or compressed-tensors (AWQ) model directory; with ``prefer_16bit`` (default) an
    AWQ model's merged 16-bit weights when they lie beside it (``in_process_model_dir``)."""
    if prefer_16bit:
        model_dir = in_process_model_dir(model_dir)
    if is_quantized_dir(model_dir):
        from intent_assets.model.quantization import load_quantized_for_inference

        return load_quantized_for_inference(model_dir, device=device, dtype=dtype)
    from intent_assets.model.base_model import load_base_model

    return load_base_model(Path(model_dir), dtype=dtype, device=device)


def load_classifier(model_dir: str | os.PathLike | None = None, *, artifacts_root: str | os.PathLike | None = None,
                    taxonomy_path: str | os.PathLike | None = None, dtype: str = "bfloat16", device: str = "cpu"):
    """A ready router for the current champion (or ``model_dir``): a
    :class:`~intent_assets.model.classifier.ConstrainedClassifier`, or for a classification head's model a
    :class:`~intent_assets.model.head.HeadClassifier` (``intent_assets.model.head.make_classifier``).

    >>> clf = load_classifier()                                   # doctest: +SKIP
    >>> clf.classify(["I lost my card"])[0].label                 # doctest: +SKIP
    'lost_or_stolen_card'
    """
    from intent_assets.model.head import make_classifier

    model_dir = check_model_dir(model_dir) if model_dir is not None else current_model_dir(artifacts_root)
    spec = serving_spec(model_dir, artifacts_root, taxonomy_path)
    model, tokenizer = load_model(model_dir, dtype=dtype, device=device)
    return make_classifier(model, tokenizer, spec.labels, spec.system_prompt)
