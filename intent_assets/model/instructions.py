"""The ``instruction_dataset`` stage: chat records for supervised fine-tuning (no Dagster import).

Every record is ``{"messages": [system, user, assistant], ...}``. The system prompt carries the whole taxonomy
and is byte-identical across records (a server can cache its prefix); the user turn is the redacted utterance;
the assistant answers ``{"intent": "<name>"}``.

Two prompt styles (``PROMPT_STYLES``):

- ``compact`` (the default): the task and the taxonomy's name and version, no list. The fine-tuned model learns the
  names from its answers, and constrained decoding over the label trie keeps every answer inside the taxonomy
  whatever the prompt says. About 60 tokens instead of 689 on Banking77: a training step on the CPU takes half the
  time, and the model is at least as accurate (BENCHMARKS.md, "The fine-tuned router against its baselines").
- ``taxonomy``: every intent listed by name, as the seed did (what a model that has not been fine-tuned needs:
  the zero-shot baseline is always prompted this way); ``describe_intents=True`` adds each intent's description
  (Banking77: 1,502 tokens).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from intent_assets.data.multi_intent import is_blend
from intent_assets.data.taxonomy import Taxonomy

SYSTEM_TEMPLATE = (
    "You route customer-support messages. Classify the customer's message into exactly one intent from the "
    "list below and answer with JSON only, in the form {{\"intent\": \"<name>\"}}. Personal data has been replaced "
    "by placeholders such as {{{{EMAIL}}}}.\n\nIntents ({name} v{version}):\n{lines}"
)


COMPACT_TEMPLATE = (
    "You route customer-support messages. Classify the customer's message into exactly one intent of the taxonomy "
    "{name} v{version} and answer with JSON only, in the form {{\"intent\": \"<name>\"}}. Personal data has been "
    "replaced by placeholders such as {{{{EMAIL}}}}."
)
PROMPT_STYLES = ("compact", "taxonomy")

# Answer formats (``ANSWER_FORMATS``): one label, ``{"intent": "<name>"}``, or a label set, ``{"intents": [...]}`` (the
# labels in ``LIST_ORDERS`` order, ``[]`` when it carries none). One format per data set: a multi-intent
# data set answers every record, single-intent ones too, with a list (one element), so the model never has to guess
# which form a message wants and one constrained decoder (the label-set trie) serves every request.
ANSWER_FORMATS = ("intent", "intents")
# Order of the labels in a list answer (``LIST_ORDERS``): ``auto`` (the default) keeps a blend's labels in the order
# its parts appear in the message and puts an annotated label set in the taxonomy's order; ``stated`` keeps every set
# as the record gives it; ``taxonomy`` puts every set in the taxonomy's order. Annotators list a message's labels in
# no stated order (NLU++ lists its modules at will): one canonical answer per set raised exact-set accuracy on NLU++
# banking from 0.620 to 0.716; on blended Banking77 the message's order did better than the taxonomy's (0.714
# against 0.685), because there the order is known (BENCHMARKS.md, "Multi-intent messages").
LIST_ORDERS = ("auto", "stated", "taxonomy")
_ORDER_PHRASE = {"auto": "in the order the message states them, else in the taxonomy's order",
                 "stated": "in the order the message states them", "taxonomy": "in the taxonomy's order"}
_LIST_TASK = (
    ("exactly one intent", "all the intents it carries, none, one or several,"),
    ("{{\"intent\": \"<name>\"}}", "{{\"intents\": [\"<name>\", ...]}} ({order}; [] when it carries none)"),
)


def _template(template: str, answers: str, list_order: str = "auto") -> str:
    if answers not in ANSWER_FORMATS:
        raise ValueError(f"answer format {answers!r}: expected one of {ANSWER_FORMATS}")
    if list_order not in LIST_ORDERS:
        raise ValueError(f"list order {list_order!r}: expected one of {LIST_ORDERS}")
    if answers == "intents":
        for one, many in _LIST_TASK:
            template = template.replace(one, many.replace("{order}", _ORDER_PHRASE[list_order]))
    return template


def system_prompt(taxonomy: Taxonomy, describe_intents: bool = False, style: str = "taxonomy",
                  answers: str = "intent", list_order: str = "auto") -> str:
    """The system prompt of every record: ``style`` is one of ``PROMPT_STYLES``, ``answers`` one of
    ``ANSWER_FORMATS``, ``list_order`` (list answers) one of ``LIST_ORDERS``."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt style {style!r}: expected one of {PROMPT_STYLES}")
    if style == "compact":
        if describe_intents:
            raise ValueError("describe_intents needs the 'taxonomy' prompt style (the compact prompt lists no intents)")
        return _template(COMPACT_TEMPLATE, answers, list_order).format(name=taxonomy.name, version=taxonomy.version)
    if describe_intents:
        # a derived taxonomy has no descriptions: such an intent is listed by name only
        lines = "\n".join(f"- {name}: {description}" if description else f"- {name}" for name, description in taxonomy.intents)
    else:
        lines = "\n".join(f"- {name}" for name in taxonomy.names)
    return _template(SYSTEM_TEMPLATE, answers, list_order).format(name=taxonomy.name, version=taxonomy.version, lines=lines)


def dataset_system_prompt(messages: Iterable[str]) -> str:
    """The one system prompt shared by every record of an instruction dataset (``messages`` column, JSON).

    Evaluation and serving must prompt exactly as training did; records that disagree are an error.
    """
    prompts = {json.loads(m)[0]["content"] for m in messages}
    if len(prompts) != 1:
        raise ValueError(f"instruction_dataset: expected one system prompt shared by every record, found {len(prompts)}")
    return prompts.pop()


def answer(intent: str) -> str:
    return json.dumps({"intent": intent})


def answer_set(intents) -> str:
    """The list answer: ``{"intents": ["a", "b"]}`` (``[]``: no intent)."""
    return json.dumps({"intents": list(intents)})


def answers_with_lists(system: str) -> bool:
    """Whether a model trained with this system prompt answers with a list (``{"intents": [...]}``)."""
    return '{"intents": [' in system


def answer_format(messages: Iterable[str]) -> str:
    """``intents`` when the records (``messages`` column, JSON) answer with lists, else ``intent``."""
    for m in messages:
        return "intents" if '"intents"' in json.loads(m)[-1]["content"][:12] else "intent"
    return "intent"


def parse_answer(content: str) -> str | None:
    """The intent named by an assistant answer, or None when the answer is not the expected JSON."""
    try:
        value = json.loads(content)
    except (json.JSONDecodeError, TypeError):
        return None
    return value.get("intent") if isinstance(value, dict) and isinstance(value.get("intent"), str) else None


def parse_answer_set(content: str) -> list[str] | None:
    """The intents of a list answer (``[]``: none), or None when the answer is not the expected JSON."""
    try:
        value = json.loads(content)
    except (json.JSONDecodeError, TypeError):
        return None
    labels = value.get("intents") if isinstance(value, dict) else None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        return None
    return labels


def chat_record(system: str, text: str, intent: str, intents=None) -> dict:
    """One chat record; with ``intents`` (a label set) the answer is the list, else the one ``intent``."""
    return {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": text},
            {"role": "assistant", "content": answer(intent) if intents is None else answer_set(intents)},
        ]
    }


def ordered(intents, list_order: str, rank: dict[str, int], blend: bool = False) -> list[str]:
    """A label set in the list answer's order (``LIST_ORDERS``); ``rank``: each label's place in the taxonomy;
    ``blend``: the set of a blend (its order known)."""
    if list_order == "taxonomy" or (list_order == "auto" and not blend):
        return sorted(intents, key=lambda name: rank.get(name, len(rank)))
    return list(intents)


def build_records(examples: pd.DataFrame, taxonomy: Taxonomy, describe_intents: bool = False,
                  style: str = "taxonomy", answers: str = "intent", list_order: str = "auto") -> pd.DataFrame:
    """One row per example (columns ``record_id, split, intent, text, synthetic``, optionally ``corrected``; with
    ``answers="intents"`` also ``intents``, the label sets) → adds ``messages`` (JSON) with the system prompt of
    ``style`` and answers of that format (lists in ``list_order``)."""
    system = system_prompt(taxonomy, describe_intents, style, answers, list_order)
    lists = answers == "intents"
    columns = ["record_id", "split", "intent", *(["intents"] if lists else []), "text", "synthetic",
               *(["corrected"] if "corrected" in examples else [])]
    out = examples[columns].reset_index(drop=True).copy()
    rank = {name: i for i, name in enumerate(taxonomy.names)}  # once, not per record
    sets = ([ordered(s, list_order, rank, is_blend(r)) for s, r in zip(out["intents"], out["record_id"])]
            if lists else [None] * len(out))
    out["messages"] = [json.dumps(chat_record(system, t, i, s)["messages"])
                       for t, i, s in zip(out["text"], out["intent"], sets)]
    return out


def write_jsonl(records: pd.DataFrame, directory: Path) -> dict[str, Path]:
    """Write ``<split>.jsonl`` files (one chat record per line); returns the paths by split."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, part in records.groupby("split", sort=True):
        path = directory / f"{split}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in part.itertuples(index=False):
                labels = {"intents": list(row.intents)} if "intents" in part else {}
                fh.write(json.dumps({"record_id": row.record_id, "intent": row.intent, **labels,
                                     "synthetic": bool(row.synthetic), "messages": json.loads(row.messages)}) + "\n")
        tmp.replace(path)
        paths[str(split)] = path
    return paths


def token_lengths(tokenizer, records: Iterable[str]) -> np.ndarray:
    """Token count of each full chat (chat template applied) with the base model's tokenizer."""
    conversations = [json.loads(m) for m in records]
    if not conversations:
        return np.zeros(0, dtype=int)
    ids = tokenizer.apply_chat_template(conversations, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return np.array([len(x) for x in ids], dtype=int)


def length_stats(lengths: np.ndarray) -> dict[str, float]:
    if len(lengths) == 0:
        return {"min": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0, "max": 0}
    return {
        "min": int(lengths.min()),
        "mean": round(float(lengths.mean()), 1),
        "p50": float(np.percentile(lengths, 50)),
        "p95": float(np.percentile(lengths, 95)),
        "max": int(lengths.max()),
    }
