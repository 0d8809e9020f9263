"""Multi-intent messages: blends of single-intent utterances and set-valued scores (no Dagster import).

* ``blend``: multi-intent messages built as the BlendX (LREC-COLING 2024) and MixATIS benchmarks built theirs from
  single-intent data: 2-3 utterances of different intents joined by varied conjunctions and punctuation, seeded and
  reproducible, the intents listed in the order the message states them. Call it on one split at a time (training
  blends from the training split, test blends from the test split only), so no utterance crosses splits.
* ``blend_splits``: such blends for every split from that split's own rows, as instruction-dataset rows.
* ``rewrite_blends``: a share of the training blends rewritten by the paraphrase endpoint into one natural message,
  each rewrite judged (``judge_rewrite``: changed, similar length, content words kept, no personal data) and kept
  rule-built when rejected; validation and test blends stay rule-built.
* ``list_decoding``: how many labels a list answer may hold, and whether it may be empty, from the training sets.
* ``multilabel_scores``: exact-set accuracy, micro and macro precision/recall/F1 over intent labels (scikit-learn on
  binarized label sets), accuracy by number of intents, and how often the number of intents is right.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, precision_score, recall_score
from sklearn.preprocessing import MultiLabelBinarizer

# How two parts are joined: (joiner, whether the next part keeps its capital letter). The first part loses its final
# punctuation unless the joiner ends a sentence ("{a}. Also, {b}" keeps a question mark: "{a}? Also, {b}").
_JOINERS = (
    (" and ", False), (", and ", False), (" and also ", False), (", and also ", False), (". Also, ", False),
    ("; ", False), (". ", True), (", plus ", False), (". And ", False), (" and, by the way, ", False),
    (". Another thing: ", False), (", also ", False),
)
_SENTENCE_JOINERS = {". Also, ", ". ", ". And ", ". Another thing: "}
_END = re.compile(r"[\s.!?,;:]+$")


def _lower_first(text: str) -> str:
    """``text`` with its first letter lower-cased, unless it starts with "I" as a word or an acronym."""
    first = text.split(" ", 1)[0]
    if first in {"I", "I'm", "I've", "I'd", "I'll"} or (len(first) > 1 and first.isupper()):
        return text
    return text[:1].lower() + text[1:]


def join_parts(parts: Sequence[str], rng: random.Random) -> str:
    """One message from ``parts`` (each a single-intent utterance), in the given order."""
    out = parts[0].strip()
    for part in parts[1:]:
        joiner, keep_case = rng.choice(_JOINERS)
        ending = _END.search(out)
        tail = ending.group(0).strip() if ending else ""
        head = out[: ending.start()] if ending else out
        if joiner in _SENTENCE_JOINERS and tail.startswith("?"):
            joiner = "? " + joiner[2:]  # a question stays a question before the next sentence
        nxt = part.strip()
        out = head + joiner + (nxt if keep_case else _lower_first(nxt))
    return out


def blend(rows: Iterable[tuple[str, str]], count: int, seed: int = 0, sizes: Sequence[int] = (2, 3),
          weights: Sequence[float] = (0.7, 0.3)) -> list[tuple[str, list[str]]]:
    """``count`` blended messages from ``rows`` of (text, intent), each joining ``k`` utterances of ``k`` different
    intents (``k`` drawn from ``sizes`` with ``weights``), returned as (text, intents in stated order). Seeded: the
    same rows and seed give the same blends. Raises ``ValueError`` when there are fewer intents than a blend needs."""
    rows = [(str(t), str(i)) for t, i in rows]
    by_intent: dict[str, list[str]] = {}
    for text, intent in rows:
        by_intent.setdefault(intent, []).append(text)
    intents = sorted(by_intent)
    if count and len(intents) < min(sizes):
        raise ValueError(f"blend needs at least {min(sizes)} intents, the rows have {len(intents)}")
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        k = min(rng.choices(list(sizes), weights=list(weights))[0], len(intents))
        chosen = rng.sample(intents, k)
        parts = [rng.choice(by_intent[i]) for i in chosen]
        out.append((join_parts(parts, rng), chosen))
    return out


def multilabel_scores(gold: Sequence[Iterable[str]], predicted: Sequence[Iterable[str]],
                      labels: Sequence[str] | None = None) -> dict:
    """Scores of predicted label sets against gold label sets (one per message, either may be empty).

    ``labels``: the label space of the macro average (default: every label in gold or predicted)."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold label sets but {len(predicted)} predicted ones")
    gold_sets = [frozenset(g) for g in gold]
    pred_sets = [frozenset(p) for p in predicted]
    space = sorted(set(labels) if labels is not None else set().union(*gold_sets, *pred_sets))
    unknown = set().union(*gold_sets, *pred_sets) - set(space)
    if unknown:
        raise ValueError(f"labels outside the given label space: {sorted(unknown)[:5]}")
    n = len(gold_sets)
    result = {
        "messages": n,
        "exact_set_accuracy": float(np.mean([g == p for g, p in zip(gold_sets, pred_sets)])) if n else 0.0,
        "count_accuracy": float(np.mean([len(g) == len(p) for g, p in zip(gold_sets, pred_sets)])) if n else 0.0,
    }
    if space and n:
        binarizer = MultiLabelBinarizer(classes=space)
        y_true, y_pred = binarizer.fit_transform(gold_sets), binarizer.transform(pred_sets)
        for average in ("micro", "macro"):
            result[f"{average}_precision"] = float(precision_score(y_true, y_pred, average=average, zero_division=0))
            result[f"{average}_recall"] = float(recall_score(y_true, y_pred, average=average, zero_division=0))
            result[f"{average}_f1"] = float(f1_score(y_true, y_pred, average=average, zero_division=0))
    by_count: dict[int, list[bool]] = {}
    for g, p in zip(gold_sets, pred_sets):
        by_count.setdefault(len(g), []).append(g == p)
    result["by_intent_count"] = {k: {"messages": len(v), "exact_set_accuracy": float(np.mean(v))}
                                 for k, v in sorted(by_count.items())}
    result["gold_intent_counts"] = dict(sorted(Counter(len(g) for g in gold_sets).items()))
    return result


BLEND_SPLITS = ("train", "validation", "test")
BLEND_ID_PREFIX = "blend-"  # record_id of a blend: its labels are in the order its parts appear in the message


def is_blend(record_id) -> bool:
    return str(record_id).startswith(BLEND_ID_PREFIX)


def blend_splits(examples: pd.DataFrame, share: float, seed: int = 0):
    """Blended messages for each split from that split's own single-intent rows (``examples``: ``split, text,
    intent, intents``): ``share`` x the split's rows, as rows ``record_id, split, intent, intents, text, synthetic``
    (``synthetic`` True, ``record_id`` ``blend-<hash>``). Training blends come from the training split only and test
    blends from the test split only, so no utterance crosses splits; a split with fewer than two intents gets none.
    Seeded: the same rows, share and seed give the same blends."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"blend share must be in [0, 1], got {share}")
    rows = []
    for offset, split in enumerate(BLEND_SPLITS):
        part = examples[examples["split"] == split]
        single = part[[len(s) == 1 for s in part["intents"]]]
        count = int(round(share * len(part)))
        if not count or single["intent"].nunique() < 2:
            continue
        for text, intents in blend(zip(single["text"], single["intent"]), count, seed=seed * 7919 + offset):
            key = hashlib.sha256(f"{split}\x1f{text}\x1f{intents}".encode()).hexdigest()[:12]
            rows.append({"record_id": f"{BLEND_ID_PREFIX}{key}", "split": split, "intent": intents[0], "intents": intents,
                         "text": text, "synthetic": True})
    columns = ["record_id", "split", "intent", "intents", "text", "synthetic"]
    out = pd.DataFrame(rows, columns=columns)
    return out.drop_duplicates("record_id").reset_index(drop=True)


def list_decoding(label_sets: Iterable[Sequence[str]], max_intents: int | None = None) -> tuple[int, bool]:
    """(max_intents, allow_empty) of the list answers a model trained on ``label_sets`` gives: at most the largest
    set it was trained on (or ``max_intents`` when given), and an empty list only when some training message had
    none. Read from the training data, so no data set needs its own setting."""
    sizes = [len(s) for s in label_sets]
    largest = max(sizes, default=1)
    return (max_intents if max_intents is not None else max(1, largest)), any(n == 0 for n in sizes)


# --------------------------------------------------------------------------- blends rewritten by the paraphrase endpoint
REWRITE_SYSTEM = (
    "You rewrite customer-support messages. The user gives one message that joins several requests. Rewrite it as "
    "one natural message a customer could write: keep every request and its details, add none, keep the language. "
    'Answer with JSON only: {"message": "<the rewritten message>"}'
)
_WORD = re.compile(r"[a-z0-9']{4,}")
REWRITE_REASONS = ("accepted", "request_failed", "unparseable", "unchanged", "length", "requests_dropped", "contains_pii")


def rewrite_request(text: str) -> list[dict]:
    """The chat request that asks the paraphrase endpoint to rewrite one rule-built blend."""
    return [{"role": "system", "content": REWRITE_SYSTEM}, {"role": "user", "content": text}]


def parse_rewrite(content: str) -> str | None:
    """The rewritten message of a reply (``{"message": ...}``, possibly after other text), or None."""
    start = content.find("{")
    while start != -1:
        try:
            value, _ = json.JSONDecoder().raw_decode(content[start:])
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict) and isinstance(value.get("message"), str) and value["message"].strip():
            return value["message"].strip()
        start = content.find("{", start + 1)
    return None


def judge_rewrite(original: str, rewrite: str | None, find_pii=None, min_kept: float = 0.5) -> str:
    """``accepted`` or why not (``REWRITE_REASONS``): the rewrite must differ from the rule-built blend, stay within
    half to twice its length, keep at least ``min_kept`` of its content words (a cheap proxy for "every request is
    still there"), and carry no personal data by the redaction's own detector."""
    if rewrite is None:
        return "unparseable"
    if " ".join(rewrite.lower().split()) == " ".join(original.lower().split()):
        return "unchanged"
    if not 0.5 * len(original) <= len(rewrite) <= 2.0 * len(original):
        return "length"
    words = set(_WORD.findall(original.lower()))
    if words and len(words & set(_WORD.findall(rewrite.lower()))) < min_kept * len(words):
        return "requests_dropped"
    if find_pii is None:
        from intent_assets.privacy import pii  # heavy: only when a rewrite is judged

        find_pii = pii.find_pii
    if find_pii(rewrite):
        return "contains_pii"
    return "accepted"


def rewrite_blends(blends: pd.DataFrame, share: float, chat, model: str, temperature: float, cache, seed: int = 0,
                   find_pii=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rewrite ``share`` of the **training** blends (``blend_splits`` rows) through ``chat(messages) -> content`` (the
    paraphrase endpoint, asked with ``model`` and ``temperature``), usable replies cached by request in ``cache``
    (``augment.ResponseCache``; an unparseable reply is asked again next time, as ``generate_augments`` does).
    Validation and test blends stay rule-built: the frozen test split never receives generated text. A rejected
    rewrite keeps the rule-built blend. Returns (the blends, rewritten where accepted; one row per attempt:
    ``record_id, reason, from_cache, error`` (a failed request's exception), so every attempt is accounted for."""
    from intent_assets.data.augment import check_chat_matches_key

    check_chat_matches_key(chat, model, temperature, "rewrite_blends")
    params = {"task": "blend_rewrite", "temperature": temperature}
    out = blends.copy()
    train = out.index[out["split"] == "train"]
    count = int(round(share * len(train)))
    chosen = sorted(random.Random(seed).sample(list(train), count)) if count else []
    attempts = []
    for idx in chosen:
        original = out.at[idx, "text"]
        messages = rewrite_request(original)
        key = cache.key(model, messages, params)
        content = cache.get(key)
        from_cache = content is not None
        if not from_cache:
            try:
                content = chat(messages)
            except Exception as exc:  # noqa: BLE001  (a failed request keeps the rule-built blend, and says why)
                attempts.append({"record_id": out.at[idx, "record_id"], "reason": "request_failed", "from_cache": False,
                                 "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
                continue
        rewrite = parse_rewrite(content)
        if rewrite is not None and not from_cache:
            cache.put(key, content, meta={"model": model, "params": params})
        reason = judge_rewrite(original, rewrite, find_pii)
        attempts.append({"record_id": out.at[idx, "record_id"], "reason": reason, "from_cache": from_cache, "error": ""})
        if reason == "accepted":
            out.at[idx, "text"] = rewrite
    return out, pd.DataFrame(attempts, columns=["record_id", "reason", "from_cache", "error"])
