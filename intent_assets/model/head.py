"""The router as a classification head on the base model (no Dagster import).

``lora_adapter``'s ``head: classifier`` trains the base model with a linear layer over its last token's hidden state
(``AutoModelForSequenceClassification``; LoRA by PEFT with ``task_type=SEQ_CLS``, the head itself trained in full)
instead of teaching it to write ``{"intent": "<name>"}``: one forward pass per message, no decoding, and a
probability for every label (the OOS threshold reads the top one). It scored above the generative router wherever
both ran (through the graph: full Banking77 0.919 against 0.903, CLINC150 95.4% against 93.2% in-scope, the embedded
default 0.870 against 0.841; BENCHMARKS.md), so the tuned recipe's ``head: auto`` (:func:`resolve_head`) trains it
wherever it can route the data.

The input is the chat template's user turn and generation prompt, with an empty system turn: the head needs no
instruction, and an empty system message keeps templates that add a default one (SmolLM2's) from adding it.
:func:`head_input_text` is the one place that renders it, for training, calibration and classification alike.

The labels travel with the model: ``head_labels.json`` beside a LoRA adapter (its weights hold no config), and the
merged model's ``config.json`` (``id2label``) after ``awq_model`` merged it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from intent_assets.model.instructions import parse_answer, parse_answer_set

HEAD_LABELS_FILE = "head_labels.json"
# the head's schedule where the run config sets none: one cosine over 3 epochs, no early stopping (the adapter with
# the lowest validation loss is still kept). At the tuned peak learning rate the head's validation loss jumps between
# evaluations (full Banking77: 1.64, 2.23, 0.84, 0.93 at steps 100-400), so the patience ran out at 1.4 epochs
# near the peak, and the anneal that followed ended with the loss still falling (0.919); a 3-epoch cosine decays from
# the start (0.926 in bench/cls_head.py; BENCHMARKS.md). 5 epochs scored no better (0.926) at 5/3 the time.
HEAD_SCHEDULE = {"num_epochs": 3, "early_stopping_patience": 0}

__all__ = ["HEAD_LABELS_FILE", "HEAD_SCHEDULE", "HeadClassifier", "head_config", "head_examples", "head_input_ids",
           "head_input_text", "head_labels", "is_head_config", "is_head_model", "is_head_module", "make_classifier",
           "model_class", "pad_batch", "resolve_head", "why_not_head"]


def why_not_head(backend: str = "peft", dpo_from_corrections: bool = False,
                 single_label: bool | None = None) -> str | None:
    """Why a classification head cannot be the router here, or None when it can.

    A head cannot answer a label set (``single_label`` False: some training or validation message has other than
    one intent), trains with the ``peft`` backend only, and has no answer for DPO to prefer
    (``dpo_from_corrections``). ``single_label`` None (data not seen yet, as when a run config is validated) counts
    as single-label."""
    if dpo_from_corrections:
        return "dpo_from_corrections prefers one written answer over another"
    if backend != "peft":
        return f"a classification head trains with backend peft, not {backend}"
    if single_label is False:
        return "some training or validation messages carry other than one intent"
    return None


def resolve_head(head: str, backend: str = "peft", dpo_from_corrections: bool = False,
                 single_label: bool | None = None) -> str:
    """``head`` with ``auto`` resolved: ``classifier`` wherever a head can be the router (:func:`why_not_head`),
    else ``generative``."""
    if head != "auto":
        return head
    return "generative" if why_not_head(backend, dpo_from_corrections, single_label) else "classifier"


def is_head_config(config) -> bool:
    """Whether a transformers config (or its ``config.json`` as a dict) is a sequence-classification model."""
    architectures = config.get("architectures") if isinstance(config, dict) else getattr(config, "architectures", None)
    return any(str(a).endswith("ForSequenceClassification") for a in architectures or ())


def is_head_module(model) -> bool:
    """Whether a loaded model (a PeftModel: the model inside) is a sequence-classification model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(base).__name__.endswith("ForSequenceClassification")


def is_head_model(model_dir: str | Path) -> bool:
    """Whether ``model_dir`` holds a classification-head router: a model (``config.json``) or a LoRA adapter
    (``head_labels.json``)."""
    model_dir = Path(model_dir)
    if (model_dir / HEAD_LABELS_FILE).is_file():
        return True
    config = model_dir / "config.json"
    return config.is_file() and is_head_config(json.loads(config.read_text(encoding="utf-8")))


def model_class(model_dir: str | Path, causal_lm: bool = False):
    """The transformers auto class that loads ``model_dir``: sequence classification for a head router, else (or
    with ``causal_lm``) causal LM. A head router loaded as a causal LM is its fine-tuned backbone under the base's
    LM head (tied to the embeddings in SmolLM2): what a memorization probe generates with."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if is_head_model(model_dir) and not causal_lm else AutoModelForCausalLM


def head_labels(model_dir: str | Path) -> list[str]:
    """The head's labels in output order: from ``head_labels.json`` (an adapter) or ``config.json``'s ``id2label``."""
    model_dir = Path(model_dir)
    path = model_dir / HEAD_LABELS_FILE
    if path.is_file():
        return list(json.loads(path.read_text(encoding="utf-8"))["labels"])
    id2label = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("id2label") or {}
    return [id2label[k] for k in sorted(id2label, key=int)]


def head_config(labels: Sequence[str], pad_token_id: int | None) -> dict:
    """``from_pretrained`` keywords that put a classification head over ``labels`` on a base model."""
    return dict(num_labels=len(labels), id2label=dict(enumerate(labels)),
                label2id={label: i for i, label in enumerate(labels)}, pad_token_id=pad_token_id)


def head_examples(records: Sequence[dict], source: str = "records") -> tuple[list[str], list[str]]:
    """(texts, labels) of chat records ``{"messages": [system?, user, assistant]}``: the last user turn and the label
    the assistant answers. A classification head gives one label per message: a list answer with other than one
    label (a multi-intent data set) is an error naming the record, as is an answer that names no label."""
    texts, labels = [], []
    for number, record in enumerate(records, 1):
        where = f"{source}: record {record.get('record_id', number)!r}"
        messages = record.get("messages") or []
        users = [m.get("content") for m in messages if m.get("role") == "user"]
        if not users or not messages or messages[-1].get("role") != "assistant":
            raise ValueError(f"{where}: field 'messages' needs a user turn and the assistant's answer last")
        content = messages[-1].get("content")
        label = parse_answer(content)
        if label is None:
            listed = parse_answer_set(content)
            if listed is not None and len(listed) != 1:
                raise ValueError(f"{where}: field 'messages' answers {len(listed)} intents; a classification head "
                                 "gives one per message (head: generative decodes label sets)")
            label = listed[0] if listed else None
        if label is None:
            raise ValueError(f"{where}: field 'messages' has an assistant answer that names no intent: {content!r}")
        texts.append(users[-1])
        labels.append(label)
    return texts, labels


def head_input_text(tokenizer, text: str) -> str:
    """What a head router reads for ``text``: the chat template with an empty system turn, the user turn and the
    generation prompt, so that the last token is where the answer would start."""
    messages = [{"role": "system", "content": ""}, {"role": "user", "content": text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def head_input_ids(tokenizer, text: str) -> list[int]:
    """``head_input_text`` as token ids (the template writes its own special tokens)."""
    return tokenizer(head_input_text(tokenizer, text), add_special_tokens=False)["input_ids"]


def pad_batch(tokenizer, ids: Sequence[Sequence[int]]) -> dict:
    """Right-padded to a multiple of 16 (few distinct shapes: oneDNN reuses its kernels); the model reads each row's
    last non-pad token (``config.pad_token_id``)."""
    return tokenizer.pad({"input_ids": [list(x) for x in ids]}, padding=True, pad_to_multiple_of=16,
                         padding_side="right", return_tensors="pt")


class HeadClassifier:
    """``classify(texts) -> [Prediction]`` with a sequence-classification model: one forward pass per batch, the
    label with the highest probability (always one of the model's labels), its softmax probability as confidence."""

    def __init__(self, model, tokenizer, labels: Sequence[str] | None = None):
        id2label = getattr(model.config, "id2label", None) or {}
        self.labels = [id2label[i] for i in range(len(id2label))]
        if labels is not None:
            unknown = sorted(set(self.labels) - set(labels))
            if unknown:
                raise ValueError(f"the classification head has labels the taxonomy lacks: {unknown[:5]}")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self.model, self.tokenizer = model.eval(), tokenizer

    def probabilities(self, texts: Sequence[str], batch_size: int = 64):
        """A ``(len(texts), labels)`` float tensor of label probabilities, in the order of ``self.labels``."""
        import torch

        ids = [head_input_ids(self.tokenizer, t) for t in texts]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # rows of similar length: little padding
        out = torch.empty(len(ids), len(self.labels))
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                batch = {k: v.to(device) for k, v in pad_batch(self.tokenizer, [ids[i] for i in rows]).items()}
                out[rows] = self.model(**batch).logits.float().softmax(-1).cpu()
        return out

    def classify(self, texts: Sequence[str], batch_size: int = 16) -> list:
        from intent_assets.model.classifier import Prediction

        predictions = []
        for start in range(0, len(texts), batch_size):
            began = time.perf_counter()
            confidence, index = self.probabilities(texts[start:start + batch_size], batch_size).max(-1)
            latency = time.perf_counter() - began
            predictions += [Prediction(self.labels[int(i)], float(c), 1, latency) for c, i in zip(confidence, index)]
        return predictions

    def classify_sets(self, texts, **_):
        raise ValueError("a classification-head router gives one intent per message: it cannot answer label sets "
                         "(train with head: generative for a multi-intent data set)")


def make_classifier(model, tokenizer, labels: Sequence[str], system_prompt: str):
    """The router for a loaded model: :class:`HeadClassifier` for a classification head, else constrained decoding
    over ``labels`` prompted with ``system_prompt`` (``ConstrainedClassifier``)."""
    if is_head_module(model):
        return HeadClassifier(model, tokenizer, labels)
    from intent_assets.model.classifier import ConstrainedClassifier

    return ConstrainedClassifier(model, tokenizer, labels, system_prompt)
