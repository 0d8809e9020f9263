"""The ``synthetic_augments`` stage logic (no Dagster import).

Intents with fewer than ``min_examples`` real training rows get LLM paraphrases from an
OpenAI-compatible chat-completions endpoint; only candidates that pass a quality gate are kept.

* :func:`plan_requests` -- how many synthetic rows each small intent may get (capped at
  ``max_share`` of its real training rows).
* :func:`build_messages` -- a deterministic chain-of-thought prompt (reason first, then a final
  ``{"paraphrases": [...]}`` JSON object).
* :func:`parse_paraphrases` -- pull the paraphrases out of the reply.
* :class:`ResponseCache` -- replies on disk keyed by sha256(model, messages, params): re-running
  with the same prompts makes no HTTP calls.
* :class:`QualityGate` -- rejects empty candidates, duplicates, candidates with personal data and
  candidates a cheap TF-IDF classifier assigns to another intent.
* :func:`generate_augments` -- ties it together; every candidate comes back with its reason.
* :func:`make_openai_chat` -- adapts an ``openai.OpenAI`` client to ``chat(messages) -> str``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import string
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "AUGMENT_COLUMNS",
    "GateResult",
    "QualityGate",
    "REASONS",
    "ResponseCache",
    "build_messages",
    "generate_augments",
    "make_openai_chat",
    "normalize_text",
    "parse_paraphrases",
    "plan_requests",
]

PROMPT_VERSION = "augment-cot-v1"
MAX_PROMPT_EXAMPLES = 8
MAX_EXAMPLE_CHARS = 300
OVERSAMPLE = 1.5

AUGMENT_COLUMNS = ["intent", "text", "accepted", "reason", "predicted_intent", "prompt_hash", "from_cache"]

# Gate reasons, then the ones generate_augments adds.
REASONS = (
    "accepted",
    "empty",
    "duplicate_of_existing",
    "contains_pii",
    "classifier_disagrees",
    "over_cap",
    "request_failed",
    "unparseable",
)

_PLACEHOLDER = re.compile(r"\{\{[A-Z][A-Z0-9_]*\}\}")


# ---------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------

def plan_requests(train_counts: Mapping[str, int], min_examples: int, max_share: float = 0.30) -> dict[str, int]:
    """Synthetic rows to aim for, per intent with fewer than ``min_examples`` training rows.

    ``min(min_examples - count, floor(max_share * count))``: fill up to ``min_examples`` but never let the
    synthetic rows of an intent exceed ``max_share`` of its *real* training rows. Intents needing 0 are
    omitted. Keys keep the order of ``train_counts``.
    """
    if min_examples < 0:
        raise ValueError(f"min_examples must be >= 0, got {min_examples}")
    if not (max_share >= 0 and math.isfinite(max_share)):
        raise ValueError(f"max_share must be a finite number >= 0, got {max_share}")
    plan: dict[str, int] = {}
    for intent, count in train_counts.items():
        count = int(count)
        if count < 0:
            raise ValueError(f"training count of intent {intent!r} is negative: {count}")
        if count >= min_examples:
            continue
        # the epsilon keeps e.g. 0.29 * 100 = 28.999999999999996 from flooring to 28
        cap = math.floor(max_share * count + 1e-9)
        need = min(min_examples - count, cap)
        if need > 0:
            plan[intent] = need
    return plan


# ---------------------------------------------------------------------------
# Prompt
# ---------------------------------------------------------------------------

_SYSTEM_PROMPT = (
    "You write training data for the intent classifier of a customer-support assistant. "
    "You produce realistic customer messages that keep exactly the meaning of a given intent. "
    "You never write personal data: no real or realistic names, e-mail addresses, phone numbers, "
    "card, account or IBAN numbers, postal addresses or ID numbers. Where a message needs such a detail, "
    "use a placeholder like {{NAME}}, {{EMAIL}}, {{PHONE}}, {{CARD_NUMBER}} or {{ACCOUNT_NUMBER}}."
)


def _select_examples(examples: Sequence[str], round_index: int) -> list[str]:
    """Up to MAX_PROMPT_EXAMPLES distinct examples, chosen independently of input order.

    Ordering by a salted hash makes the prompt (hence the cache key) stable when the upstream rows come
    in another order, and shows the model a different subset in each round.
    """
    seen: set[str] = set()
    unique: list[str] = []
    for ex in examples:
        if not isinstance(ex, str):
            continue
        ex = " ".join(ex.split())
        if ex and ex not in seen:
            seen.add(ex)
            unique.append(ex[:MAX_EXAMPLE_CHARS])
    salt = f"{PROMPT_VERSION}:{round_index}:"
    unique.sort(key=lambda t: (hashlib.sha256((salt + t).encode("utf-8")).hexdigest(), t))
    return unique[:MAX_PROMPT_EXAMPLES]


def build_messages(intent: str, description: str, examples: Sequence[str], n: int, *,
                   round_index: int = 0) -> list[dict]:
    """System + user messages asking for ``n`` new paraphrases of ``intent``.

    The model is told to reason briefly about the intent and how customers phrase it, then to end with
    ``Final:`` and a JSON object ``{"paraphrases": [...]}``. ``examples`` are PII-redacted real texts (they
    may contain ``{{PLACEHOLDER}}``s); up to 8 are shown. ``round_index`` > 0 marks a follow-up request
    (different example subset and wording, so the cache key differs). Same input -> same messages.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    shown = _select_examples(examples, round_index)
    description = " ".join((description or "").split()) or "(no description given)"
    lines = [
        f"Intent: {intent}",
        f"Description: {description}",
        "",
    ]
    if shown:
        lines.append("Real customer messages with this intent (personal data already replaced by placeholders):")
        lines.extend(f"- {json.dumps(ex, ensure_ascii=False)}" for ex in shown)
        lines.append("")
    lines += [
        f"Task: write {n} NEW customer messages that a customer with this intent could send.",
        "",
        "First, under the heading 'Reasoning:', think briefly (a few sentences) about what this intent means, "
        "what separates it from similar intents, and how real customers phrase it.",
        "",
        "Then write the messages. Requirements:",
        "- every message keeps exactly the same intent; none drifts to a neighbouring topic;",
        "- vary them: short and long, formal and informal, polite and impatient, questions and statements, "
        "some all lower-case, some with small typos or missing punctuation;",
        "- do not copy or lightly edit the examples above, and make the messages differ from each other;",
        "- no personal data (names, e-mail addresses, phone, card or account numbers, addresses); use "
        "placeholders such as {{EMAIL}} if a detail is needed;",
        "- plain text only, one message per string, no numbering inside the strings.",
        "",
        "End your answer with a line 'Final:' followed by one JSON object and nothing after it:",
        '{"paraphrases": ["<message 1>", "<message 2>", ...]}',
        f"The list must contain exactly {n} strings.",
    ]
    if round_index > 0:
        lines += [
            "",
            f"This is follow-up request #{round_index + 1} for this intent: earlier messages were too similar "
            "to existing ones, so be more inventive with wording and situations.",
        ]
    return [
        {"role": "system", "content": _SYSTEM_PROMPT},
        {"role": "user", "content": "\n".join(lines)},
    ]


# ---------------------------------------------------------------------------
# Reply parsing
# ---------------------------------------------------------------------------

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?|```")
_TRAILING_COMMA = re.compile(r",\s*([\]}])")
_FINAL_MARKER = re.compile(r"^[ \t>#*_`-]*final\b[^\n]*$", re.IGNORECASE | re.MULTILINE)
_LIST_ITEM = re.compile(r"^\s*(?:\d{1,3}[.)]|[-*\u2022])\s+(.+?)\s*$")
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "`": "`"}


def _json_objects_with_paraphrases(text: str) -> list[dict]:
    """Every JSON object in ``text`` that has a "paraphrases" key, ordered by start position."""
    decoder = json.JSONDecoder()
    found: list[tuple[int, dict]] = []
    for variant in (text, _TRAILING_COMMA.sub(r"\1", text)):
        for match in re.finditer(r"\{", variant):
            try:
                obj, _ = decoder.raw_decode(variant, match.start())
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and "paraphrases" in obj:
                found.append((match.start(), obj))
        if found:
            break  # only repair trailing commas when the strict pass found nothing
    return [obj for _, obj in sorted(found, key=lambda p: p[0])]


def _unquote(item: str) -> str:
    item = item.strip()
    if len(item) >= 2 and item[0] in _QUOTES and item[-1] == _QUOTES[item[0]]:
        item = item[1:-1].strip()
    return item


def _list_after_final(text: str) -> list[str]:
    markers = list(_FINAL_MARKER.finditer(text))
    if not markers:
        return []
    items: list[str] = []
    for line in text[markers[-1].end():].splitlines():
        if not line.strip():
            continue
        m = _LIST_ITEM.match(line)
        if m:
            items.append(_unquote(m.group(1)))
        elif items:
            break  # prose after the list ends it
    return [i for i in items if i]


def parse_paraphrases(content: str) -> list[str]:
    """The paraphrases of a model reply.

    Takes the last JSON object with a "paraphrases" key (reasoning text and code fences around it are
    fine); failing that, a numbered or bulleted list after the last line starting with "Final". Items are
    stripped and empty ones dropped. Raises ``ValueError`` saying what was wrong when nothing usable is
    found.
    """
    if not isinstance(content, str):
        raise ValueError(f"reply content is not a string (got {type(content).__name__})")
    if not content.strip():
        raise ValueError("reply is empty")
    text = _FENCE.sub("\n", content)
    problem = None
    objects = _json_objects_with_paraphrases(text)
    if objects:
        value = objects[-1]["paraphrases"]
        if not isinstance(value, list):
            problem = f'"paraphrases" is not a list (got {type(value).__name__})'
        else:
            items = [v.strip() for v in value if isinstance(v, str)]
            items = [v for v in items if v]
            if items:
                return items
            problem = f'"paraphrases" list has no non-empty strings ({len(value)} items)'
    items = _list_after_final(text)
    if items:
        return items
    if problem is None:
        snippet = " ".join(content.split())[:160]
        problem = ('no JSON object with a "paraphrases" key and no numbered/bulleted list after a "Final" '
                   f"marker in the reply (starts: {snippet!r})")
    raise ValueError(f"cannot parse paraphrases: {problem}")


# ---------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ResponseCache:
    """Model replies on disk, one JSON file per key (``<directory>/<sha256>.json``)."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(model: str, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any] | None = None) -> str:
        """sha256 hex of the canonical JSON of (model, messages, params); dict key order does not matter."""
        payload = {"model": model, "messages": list(messages), "params": dict(params or {})}
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        if not _HEX64.match(key or ""):
            raise ValueError(f"cache key must be a 64-character lower-case sha256 hex digest, got {key!r}")
        return self.directory / f"{key}.json"

    def get(self, key: str) -> str | None:
        """The cached reply, or None (a missing or unreadable/corrupt entry is a miss)."""
        path = self._path(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, OSError):
            return None
        content = data.get("content") if isinstance(data, dict) else None
        return content if isinstance(content, str) else None

    def put(self, key: str, content: str, *, meta: Mapping[str, Any] | None = None) -> None:
        """Store ``content`` atomically (temp file in the same directory, fsync, rename)."""
        if not isinstance(content, str):
            raise TypeError(f"content must be a str, got {type(content).__name__}")
        path = self._path(key)
        record = {"key": key, "content": content}
        if meta:
            record["meta"] = dict(meta)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(record, fh, ensure_ascii=False, default=str)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        return sum(1 for p in self.directory.glob("*.json") if _HEX64.match(p.stem))


# ---------------------------------------------------------------------------
# Quality gate
# ---------------------------------------------------------------------------

_ASCII_PUNCT = set(string.punctuation)


def normalize_text(text: str) -> str:
    """Duplicate key: NFKC, lower case, punctuation removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch for ch in text if ch not in _ASCII_PUNCT and not unicodedata.category(ch).startswith("P"))
    return " ".join(text.split())


@dataclass(frozen=True)
class GateResult:
    text: str
    accepted: bool
    reason: str  # "accepted" | "empty" | "duplicate_of_existing" | "contains_pii" | "classifier_disagrees"
    predicted_intent: str


def _span_bounds(span: Any) -> tuple[int, int] | None:
    """(start, end) of a span given as an object, a mapping or a tuple; None if it has no usable bounds."""
    for a, b in (("start", "end"), ("begin", "end"), ("start", "stop")):
        if isinstance(span, Mapping):
            s, e = span.get(a), span.get(b)
        else:
            s, e = getattr(span, a, None), getattr(span, b, None)
        if isinstance(s, int) and isinstance(e, int):
            return s, e
    if isinstance(span, (tuple, list)) and len(span) >= 2 and isinstance(span[0], int) and isinstance(span[1], int):
        return span[0], span[1]
    return None


def _default_find_pii(text: str) -> Sequence[Any]:
    from intent_assets.privacy import pii  # lazy: heavy to import

    return pii.find_pii(text)


def _default_redact(text: str) -> str:
    from intent_assets.privacy import pii

    return pii.redact(text).text


class QualityGate:
    """Accepts or rejects synthetic candidates for one intent at a time.

    Built from the real (PII-redacted) training data: it remembers the normalized training texts and fits
    a cheap deterministic classifier (TF-IDF word 1-2-grams + char_wb 2-5-grams, LinearSVC).

    ``find_pii(text) -> spans`` defaults to :func:`intent_assets.privacy.pii.find_pii`; any span that is not an
    existing ``{{PLACEHOLDER}}`` rejects the candidate. ``redact(text) -> str`` (default: the text of
    :func:`intent_assets.privacy.pii.redact` when ``find_pii`` is not injected; pass ``redact=False`` to disable)
    is a second opinion: if redaction changes anything outside the placeholders, the candidate is rejected.
    """

    def __init__(self, texts: Sequence[str], labels: Sequence[str], *,
                 find_pii: Callable[[str], Sequence[Any]] | None = None,
                 redact: Callable[[str], str] | bool | None = None,
                 random_state: int = 0) -> None:
        texts = ["" if t is None else str(t) for t in texts]
        labels = [str(label) for label in labels]
        if len(texts) != len(labels):
            raise ValueError(f"texts and labels differ in length: {len(texts)} != {len(labels)}")
        if not texts:
            raise ValueError("QualityGate needs at least one training row")
        self.labels = sorted(set(labels))
        self._existing = {k for k in (normalize_text(t) for t in texts) if k}
        self._find_pii = find_pii or _default_find_pii
        if redact is None:
            self._redact = None if find_pii is not None else _default_redact
        elif redact is False:
            self._redact = None
        elif redact is True:
            self._redact = _default_redact
        else:
            self._redact = redact
        self._model = None
        if len(self.labels) >= 2:
            from sklearn.feature_extraction.text import TfidfVectorizer
            from sklearn.pipeline import make_pipeline, make_union
            from sklearn.svm import LinearSVC

            self._model = make_pipeline(
                make_union(
                    TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=1),
                    TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=1),
                ),
                LinearSVC(C=1.0, random_state=random_state),
            )
            self._model.fit(texts, labels)

    # -- pieces ---------------------------------------------------------
    def predict(self, texts: Sequence[str]) -> list[str]:
        if not texts:
            return []
        if self._model is None:
            return [self.labels[0]] * len(texts)
        return [str(p) for p in self._model.predict(list(texts))]

    def is_existing(self, text: str) -> bool:
        return normalize_text(text) in self._existing

    def has_pii(self, text: str) -> bool:
        """True if the detector finds anything that is not already a ``{{PLACEHOLDER}}``."""
        for span in self._find_pii(text) or ():
            bounds = _span_bounds(span)
            if bounds is None:
                return True  # cannot tell where: be conservative
            s, e = bounds
            if not _PLACEHOLDER.fullmatch(text[s:e].strip()):
                return True
        if self._redact is not None:
            redacted = self._redact(text)
            if _PLACEHOLDER.sub("", redacted) != _PLACEHOLDER.sub("", text):
                return True
        return False

    # -- main entry ------------------------------------------------------
    def evaluate(self, candidates: Sequence[str], target_intent: str, *,
                 already_accepted: Iterable[str] = ()) -> list[GateResult]:
        """One :class:`GateResult` per candidate, in order.

        Checks, first failing wins: "empty", "duplicate_of_existing" (normalized text equals a training
        text, a text in ``already_accepted`` or an earlier accepted candidate of this call),
        "contains_pii", "classifier_disagrees"; otherwise "accepted".
        """
        stripped = ["" if c is None else str(c).strip() for c in candidates]
        keys = [normalize_text(c) for c in stripped]
        to_predict = [c for c, k in zip(stripped, keys) if k]
        predictions = iter(self.predict(to_predict))
        seen = {k for k in (normalize_text(t) for t in already_accepted) if k}
        results: list[GateResult] = []
        for text, key in zip(stripped, keys):
            if not key:
                results.append(GateResult(text, False, "empty", ""))
                continue
            predicted = next(predictions)
            if key in self._existing or key in seen:
                reason = "duplicate_of_existing"
            elif self.has_pii(text):
                reason = "contains_pii"
            elif predicted != target_intent:
                reason = "classifier_disagrees"
            else:
                reason = "accepted"
                seen.add(key)
            results.append(GateResult(text, reason == "accepted", reason, predicted))
        return results


# ---------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------

def make_openai_chat(client: Any, model: str, temperature: float = 0.9, **create_kwargs: Any) -> Callable[[list[dict]], str]:
    """``chat(messages) -> content`` over ``client.chat.completions.create`` (an ``openai.OpenAI`` client).

    Raises ``RuntimeError`` when the reply has no choices or no text content (e.g. a refusal).
    """

    def chat(messages: list[dict]) -> str:
        response = client.chat.completions.create(model=model, messages=messages, temperature=temperature,
                                                  **create_kwargs)
        choices = getattr(response, "choices", None) or []
        if not choices:
            raise RuntimeError("chat completion returned no choices")
        message = choices[0].message
        content = getattr(message, "content", None)
        if content is None:
            refusal = getattr(message, "refusal", None)
            raise RuntimeError(f"chat completion has no content (finish_reason={choices[0].finish_reason!r}"
                               + (f", refusal={refusal!r})" if refusal else ")"))
        return content

    chat.model = model  # type: ignore[attr-defined]
    chat.temperature = temperature  # type: ignore[attr-defined]
    return chat


def check_chat_matches_key(chat: Callable, model: str, temperature: float, caller: str) -> None:
    """A chat from :func:`make_openai_chat` knows its model and temperature: they must be the ones the cache key
    names, else a cached reply would stand for a request that was never made."""
    for name, value in (("model", model), ("temperature", temperature)):
        bound = getattr(chat, name, None)
        if bound is not None and bound != value:
            raise ValueError(f"chat was built with {name}={bound!r} but {caller} got {name}={value!r}; "
                             "the cache key would not describe the requests")


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "intent": pd.Series(dtype="object"),
        "text": pd.Series(dtype="object"),
        "accepted": pd.Series(dtype="bool"),
        "reason": pd.Series(dtype="object"),
        "predicted_intent": pd.Series(dtype="object"),
        "prompt_hash": pd.Series(dtype="object"),
        "from_cache": pd.Series(dtype="bool"),
    })


def generate_augments(
    chat: Callable[[list[dict]], str],
    model: str,
    plan: Mapping[str, int],
    taxonomy: Mapping[str, str],
    examples_by_intent: Mapping[str, Sequence[str]],
    gate: QualityGate,
    cache: ResponseCache,
    *,
    temperature: float = 0.9,
    max_rounds: int = 2,
) -> tuple[pd.DataFrame, dict]:
    """Ask for paraphrases of every planned intent, gate them, cap them.

    Per intent (sorted by name): up to ``max_rounds`` requests, each for ``ceil(1.5 * still_needed)``
    paraphrases, stopping once ``plan[intent]`` candidates are accepted. Passing candidates beyond the plan
    are recorded with reason "over_cap". Replies come from ``cache`` when present; fresh replies that parse
    are cached (failed requests and unparseable replies are not, so the next run retries them). A request
    that raises gives a "request_failed" row, a reply without paraphrases an "unparseable" row (both with
    empty text); the intent is then abandoned and the stage goes on with the next one.

    ``model`` and ``temperature`` go into the cache key only -- ``chat`` must use the same ones (checked
    when ``chat`` comes from :func:`make_openai_chat`).

    Returns (all candidates with columns :data:`AUGMENT_COLUMNS`, stats dict).
    """
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
    check_chat_matches_key(chat, model, temperature, "generate_augments")
    rows: list[dict] = []
    errors: list[dict] = []
    requests = cache_hits = 0
    accepted_texts: list[str] = []  # across intents, for duplicate detection
    accepted_by_intent: dict[str, int] = {}
    rounds_by_intent: dict[str, int] = {}

    def failure(intent: str, reason: str, prompt_hash: str, from_cache: bool, round_index: int, exc: BaseException) -> None:
        rows.append({"intent": intent, "text": "", "accepted": False, "reason": reason, "predicted_intent": "",
                     "prompt_hash": prompt_hash, "from_cache": from_cache})
        errors.append({"intent": intent, "round": round_index, "reason": reason, "prompt_hash": prompt_hash,
                       "error": f"{type(exc).__name__}: {exc}"[:500]})

    for intent in sorted(plan):
        needed = int(plan[intent])
        accepted_by_intent[intent] = 0
        rounds_by_intent[intent] = 0
        if needed <= 0:
            continue
        description = taxonomy.get(intent, "")
        examples = list(examples_by_intent.get(intent, ()) or ())
        for round_index in range(max_rounds):
            still_needed = needed - accepted_by_intent[intent]
            if still_needed <= 0:
                break
            rounds_by_intent[intent] += 1
            n = math.ceil(OVERSAMPLE * still_needed)
            messages = build_messages(intent, description, examples, n, round_index=round_index)
            params = {"temperature": temperature, "round": round_index, "n": n, "prompt_version": PROMPT_VERSION}
            key = cache.key(model, messages, params)
            content = cache.get(key)
            from_cache = content is not None
            if from_cache:
                cache_hits += 1
            else:
                requests += 1
                try:
                    content = chat(messages)
                    if not isinstance(content, str):
                        raise TypeError(f"chat returned {type(content).__name__}, expected str")
                except Exception as exc:  # one intent must not sink the stage
                    failure(intent, "request_failed", key, False, round_index, exc)
                    break
            try:
                candidates = parse_paraphrases(content)
            except ValueError as exc:
                failure(intent, "unparseable", key, from_cache, round_index, exc)
                break
            if not from_cache:
                cache.put(key, content, meta={"model": model, "intent": intent, "round": round_index,
                                              "params": params})
            for result in gate.evaluate(candidates, intent, already_accepted=accepted_texts):
                accepted, reason = result.accepted, result.reason
                if accepted and accepted_by_intent[intent] >= needed:
                    accepted, reason = False, "over_cap"
                elif accepted:
                    accepted_by_intent[intent] += 1
                    accepted_texts.append(result.text)
                rows.append({"intent": intent, "text": result.text, "accepted": accepted, "reason": reason,
                             "predicted_intent": result.predicted_intent, "prompt_hash": key,
                             "from_cache": from_cache})

    frame = pd.DataFrame(rows, columns=AUGMENT_COLUMNS) if rows else _empty_frame()
    frame["accepted"] = frame["accepted"].astype(bool)
    frame["from_cache"] = frame["from_cache"].astype(bool)
    failure_reasons = {"request_failed", "unparseable"}
    is_candidate = ~frame["reason"].isin(failure_reasons)
    rejected = Counter(frame.loc[~frame["accepted"], "reason"])
    stats = {
        "requests": requests,
        "cache_hits": cache_hits,
        "candidates": int(is_candidate.sum()),
        "accepted": int(frame["accepted"].sum()),
        "rejected": int((~frame["accepted"] & is_candidate).sum()),
        "rejected_by_reason": {r: int(rejected[r]) for r in sorted(rejected)},
        "request_failed": int(rejected["request_failed"]),
        "unparseable": int(rejected["unparseable"]),
        "planned_by_intent": {i: int(plan[i]) for i in sorted(plan)},
        "accepted_by_intent": accepted_by_intent,
        "shortfall_by_intent": {i: max(int(plan[i]) - accepted_by_intent.get(i, 0), 0) for i in sorted(plan)
                                if int(plan[i]) > accepted_by_intent.get(i, 0)},
        "rounds_by_intent": rounds_by_intent,
        "errors": errors,
    }
    return frame, stats
