"""Constrained decoding over the taxonomy with a transformers causal LM (no Dagster import).

List answers (issue 15): :class:`LabelSetTrie` and :func:`greedy_label_sets` decode ``{"intents": ["a", "b"]}``
over the same taxonomy: distinct labels only, at most ``max_intents``, each label with its own confidence.

The model answers ``{"intent": "<name>"}``. :class:`ConstrainedClassifier` forces the part of that answer shared by
every label (``{"intent": "``), then lets the model choose only among tokens that keep a valid label, and stops as
soon as the label is unique: the output is a taxonomy label by construction, whatever the model or the input.

Tokenization follows the model's own view of the text: every label's continuation is cut from the joint tokenization
of the whole answer (``?"`` in ``reverted_card_payment?"}`` is one token), and a prompt is split only right after a
special token (``<|im_start|>``...), where a BPE tokenizer never merges across.

Speed (CPU): the system prompt's KV cache is computed once and shared by every request, so a request only prefills
its own user turn (~30 tokens instead of ~1,500). Requests are batched: each row's suffix is left-padded *after* the
cached prefix (attention mask: prefix + real tokens; position ids continue after the prefix), and every later
decoding step feeds each row's chosen token plus the tokens forced after it (a chain with no choice) in one call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from intent_assets.model.instructions import answer as default_answer
from intent_assets.model.instructions import parse_answer

__all__ = [
    "LabelTrie",
    "LabelSetTrie",
    "greedy_label_sets",
    "ConstrainedClassifier",
    "Prediction",
    "SetPrediction",
    "PromptLayout",
    "generate_unconstrained",
]


@dataclass(frozen=True)
class SetPrediction:
    labels: tuple[str, ...]  # 1 (0 where empty answers are allowed) to max_intents distinct labels, in the model's order
    confidences: tuple[float, ...]  # per label: product of p(choice) over the choices made while it was open
    decode_steps: int
    latency_s: float


@dataclass(frozen=True)
class Prediction:
    label: str  # always one of the classifier's labels for ConstrainedClassifier
    confidence: float  # product over choice points of p(chosen token), normalized over the allowed tokens
    decode_steps: int  # model evaluations used to choose the label (branch points of the trie on its path)
    latency_s: float  # wall time of the batch that carried the request (tokenization + forward passes)


# --------------------------------------------------------------------------------------------------------- trie
@dataclass
class _Node:
    children: dict[int, int] = field(default_factory=dict)  # token id -> node index
    labels: list[str] = field(default_factory=list)  # labels whose path passes through (or ends at) this node


class LabelTrie:
    """Token-id prefix tree of every label's answer continuation.

    ``forced_ids`` is the longest token prefix shared by every label's tokenized answer (``assistant\\n{"intent": "``
    for SmolLM2: the generation-prompt text after its last special token, plus the JSON prefix); ``paths[label]`` are
    the tokens after it, up to the end of the answer (closing ``"}`` included, so that no label's path is a prefix
    of another's). Build it with :meth:`from_tokenizer`.
    """

    def __init__(self, forced_ids: Sequence[int], paths: dict[str, list[int]]):
        if not paths:
            raise ValueError("LabelTrie needs at least one label")
        self.forced_ids = list(forced_ids)
        self.paths = {label: list(ids) for label, ids in paths.items()}
        self.nodes: list[_Node] = [_Node()]
        for label, ids in self.paths.items():
            node = 0
            self.nodes[0].labels.append(label)
            for tok in ids:
                nxt = self.nodes[node].children.get(tok)
                if nxt is None:
                    nxt = len(self.nodes)
                    self.nodes.append(_Node())
                    self.nodes[node].children[tok] = nxt
                node = nxt
                self.nodes[node].labels.append(label)
        for label, ids in self.paths.items():
            node = self.walk(ids)
            if len(self.nodes[node].labels) != 1:
                others = [x for x in self.nodes[node].labels if x != label]
                raise ValueError(f"label {label!r} tokenizes as a prefix of {others[:3]}: ambiguous answers")
        # per-node tensors of the allowed token ids, for fast gathering of logits
        self._allowed = [torch.tensor(sorted(n.children), dtype=torch.long) for n in self.nodes]

    # --- construction
    @classmethod
    def from_tokenizer(
        cls,
        tokenizer,
        labels: Sequence[str],
        lead_text: str = "",
        answer: Callable[[str], str] = default_answer,
    ) -> "LabelTrie":
        """Tokenize ``lead_text + answer(label)`` jointly for every label; the common token prefix is forced.

        ``lead_text`` is the text that precedes the answer in the same tokenizer segment (the generation prompt after
        its last special token, e.g. ``"assistant\\n"``), so the answer is tokenized exactly as in a full chat.
        """
        labels = list(dict.fromkeys(labels))
        seqs = {label: _encode(tokenizer, lead_text + answer(label)) for label in labels}
        first = seqs[labels[0]]
        common = len(first)
        for ids in seqs.values():
            n = 0
            while n < min(common, len(ids)) and ids[n] == first[n]:
                n += 1
            common = n
        if len(labels) == 1:  # nothing to choose: the whole answer is forced
            common = len(first)
        return cls(first[:common], {label: ids[common:] for label, ids in seqs.items()})

    # --- queries
    @property
    def labels(self) -> list[str]:
        return list(self.paths)

    @property
    def max_depth(self) -> int:
        return max((len(p) for p in self.paths.values()), default=0)

    def child(self, node: int, token: int) -> int | None:
        return self.nodes[node].children.get(token)

    def allowed(self, node: int) -> torch.Tensor:
        """Token ids that keep a valid label after ``node`` (sorted)."""
        return self._allowed[node]

    def unique_label(self, node: int) -> str | None:
        labels = self.nodes[node].labels
        return labels[0] if len(labels) == 1 else None

    def walk(self, ids: Sequence[int], node: int = 0) -> int:
        for tok in ids:
            nxt = self.nodes[node].children.get(tok)
            if nxt is None:
                raise KeyError(f"token {tok} leaves the trie")
            node = nxt
        return node

    def forced_chain(self, node: int) -> list[tuple[int, int]]:
        """(token, node) pairs forced after ``node`` while there is exactly one child and the label is not unique."""
        chain = []
        while self.unique_label(node) is None and len(self.nodes[node].children) == 1:
            (tok, nxt), = self.nodes[node].children.items()
            chain.append((tok, nxt))
            node = nxt
        return chain

    def decode(self, ids: Sequence[int]) -> str | None:
        """The label whose path starts with ``ids`` if it is unique (round trip of :attr:`paths`), else None."""
        try:
            return self.unique_label(self.walk(ids))
        except KeyError:
            return None


# ----------------------------------------------------------------------------------------------- label sets
SET_PREFIX = '{"intents": ["'
SET_CLOSE = '"]}'
SET_NEXT = '",'
SET_JOINER = ' "'
# with empty answers allowed the forced part stops before the list opens: `` ["`` (a label follows) and `` []`` (the
# empty list) are different tokens in byte-level BPE vocabularies
SET_LEAD, SET_OPEN, SET_EMPTY = '{"intents":', ' ["', ' []}'
NO_INTENT = ""  # the payload label of the empty answer


@dataclass(frozen=True)
class SetState:
    """Where a list answer stands: the labels chosen so far, the trie node inside the current one (-1: closed)."""

    chosen: tuple[str, ...] = ()
    node: int = 0

    @property
    def closed(self) -> bool:
        return self.node < 0


class LabelSetTrie:
    """Token automaton of a list answer ``{"intents": ["a", "b"]}`` over a label set (issue 15).

    After the forced ``{"intents": ["``, the model chooses a label token by token (a trie over every label followed
    by its ending: ``"]}`` closes the list, ``",`` announces another label, then `` "`` is forced); a label already
    chosen is never allowed again, and after ``max_intents`` labels only the closing ending is. Every answer is thus
    a list of 1 to ``max_intents`` distinct taxonomy labels, by construction; with ``allow_empty`` the forced part
    stops at ``{"intents":`` and the first choice is between `` []}`` (no intent) and `` ["`` + a label. Each label's tokens come from the joint
    tokenization of the label with its ending (``?"]`` is one token after ``reverted_card_payment``), and
    :meth:`from_tokenizer` checks that a whole answer tokenizes as its pieces do.
    """

    def __init__(self, forced_ids: Sequence[int], paths: dict[tuple[str, bool], list[int]],
                 joiner_ids: Sequence[int], max_intents: int = 3,
                 first_paths: dict[tuple[str, bool], list[int]] | None = None):
        """``first_paths``: the paths of the first position when they differ from the later ones (empty answers
        allowed: the list's opening is part of them, and the payload ``(NO_INTENT, True)`` is the empty list)."""
        if not paths:
            raise ValueError("LabelSetTrie needs at least one label")
        if max_intents < 1:
            raise ValueError(f"max_intents must be >= 1, got {max_intents}")
        self.forced_ids, self.joiner_ids, self.max_intents = list(forced_ids), list(joiner_ids), max_intents
        self.labels = list(dict.fromkeys(label for label, _ in paths))
        self.allows_empty = first_paths is not None and (NO_INTENT, True) in first_paths
        self.children: list[dict[int, int]] = []
        self.payloads: list[list[tuple[str, bool]]] = []  # (label, closes) of every path through the node
        self.terminal: dict[int, tuple[str, bool]] = {}
        self._insert(first_paths if first_paths is not None else paths)
        # where the labels after the first start: the same root unless the first position has paths of its own
        self.next_root = self._insert(paths) if first_paths is not None else 0

    def _insert(self, paths: dict[tuple[str, bool], list[int]]) -> int:
        root = len(self.children)
        self.children.append({})
        self.payloads.append([])
        for payload, ids in paths.items():
            node = root
            self.payloads[root].append(payload)
            for tok in ids:
                nxt = self.children[node].get(tok)
                if nxt is None:
                    nxt = len(self.children)
                    self.children.append({})
                    self.payloads.append([])
                    self.children[node][tok] = nxt
                node = nxt
                self.payloads[node].append(payload)
            if self.children[node] or node in self.terminal:
                raise ValueError(f"label {payload[0]!r} with its ending is a prefix of another answer")
            self.terminal[node] = payload
        return root

    @classmethod
    def from_tokenizer(cls, tokenizer, labels: Sequence[str], lead_text: str = "",
                       max_intents: int = 3, allow_empty: bool = False) -> "LabelSetTrie":
        """Tokenize each label with either ending; ``lead_text`` as for :meth:`LabelTrie.from_tokenizer`.
        ``allow_empty``: ``{"intents": []}`` is an answer too (a message that carries no intent)."""
        import json

        labels = list(dict.fromkeys(labels))
        if NO_INTENT in labels:
            raise ValueError("an empty label cannot be an intent")
        forced = _encode(tokenizer, lead_text + (SET_LEAD if allow_empty else SET_PREFIX))
        paths = {(label, closes): _encode(tokenizer, label + (SET_CLOSE if closes else SET_NEXT))
                 for label in labels for closes in (True, False)}
        first = None
        if allow_empty:
            first = {(label, closes): _encode(tokenizer, SET_OPEN + label + (SET_CLOSE if closes else SET_NEXT))
                     for label in labels for closes in (True, False)}
            first[(NO_INTENT, True)] = _encode(tokenizer, SET_EMPTY)
        joiner = _encode(tokenizer, SET_JOINER)
        trie = cls(forced, paths, joiner, max_intents, first)
        # whole answers must tokenize as their pieces: a few two-label answers and every one-label answer
        samples = [[label] for label in labels] + [list(pair) for pair in zip(labels, labels[1:])]
        for sample in ([[]] if allow_empty else []) + samples[: len(labels) + 32]:
            pieces = list(forced) + (first[(NO_INTENT, True)] if not sample else [])
            for n, label in enumerate(sample):
                step = first if (first is not None and n == 0) else paths
                pieces += step[(label, n == len(sample) - 1)] + ([] if n == len(sample) - 1 else joiner)
            if _encode(tokenizer, lead_text + json.dumps({"intents": sample})) != pieces:
                raise ValueError(f"the answer {sample} does not tokenize as its pieces: this tokenizer merges across "
                                 "a label's boundary")
        return trie

    def _open(self, state: SetState, payload: tuple[str, bool]) -> bool:
        label, closes = payload
        if label == NO_INTENT:
            return not state.chosen
        if label in state.chosen:
            return False
        # another label may follow while the list is short enough and some label is still unchosen
        return closes or len(state.chosen) + 1 < min(self.max_intents, len(self.labels))

    def allowed(self, state: SetState) -> list[int]:
        """Token ids that keep a valid answer after ``state`` (sorted)."""
        if state.closed:
            return []
        return sorted(tok for tok, nxt in self.children[state.node].items()
                      if any(self._open(state, p) for p in self.payloads[nxt]))

    def determined(self, state: SetState) -> tuple[str, ...] | None:
        """The final labels when nothing is left to choose (closed, or one label left that must close)."""
        if state.closed:
            return state.chosen
        open_payloads = {p for p in self.payloads[state.node] if self._open(state, p)}
        if len(open_payloads) == 1:
            (label, closes), = open_payloads
            if closes:
                return state.chosen + ((label,) if label != NO_INTENT else ())
        return None

    def advance(self, state: SetState, token: int) -> tuple[SetState, list[int]]:
        """The state after ``token`` and the tokens to feed the model: ``token``, then what is forced after it (the
        rest of a label with one allowed way on, the joiner before the next label)."""
        if token not in self.allowed(state):
            raise KeyError(f"token {token} is not allowed here")
        feed = [token]
        node = self.children[state.node][token]
        while True:
            if node in self.terminal:
                label, closes = self.terminal[node]
                chosen = state.chosen + ((label,) if label != NO_INTENT else ())
                if closes:
                    return SetState(chosen, -1), feed
                return SetState(chosen, self.next_root), feed + self.joiner_ids
            state_here = SetState(state.chosen, node)
            options = self.allowed(state_here)
            if len(options) != 1:
                return state_here, feed
            feed.append(options[0])
            node = self.children[node][options[0]]


def greedy_label_sets(trie: LabelSetTrie, logits: torch.Tensor,
                      extend: Callable[[list[int], list[list[int]]], torch.Tensor]) -> list[tuple[tuple[str, ...], list[float], int]]:
    """Greedy constrained decoding of one list answer per row. ``logits``: next-token logits of every row after its
    prompt and ``trie.forced_ids``; ``extend(rows, feeds)``: feed those rows their tokens, return their next logits.
    Returns per row (labels, confidence of each label: the product of p(choice) over the choices made while that label
    was open, normalized over the allowed tokens; model evaluations)."""
    batch = logits.shape[0]
    states = [SetState() for _ in range(batch)]
    logconf: list[list[float]] = [[] for _ in range(batch)]
    steps = [0] * batch
    rows = list(range(batch))
    while True:
        feeds, keep = [], []
        for r, i in enumerate(rows):
            if trie.determined(states[i]) is not None:
                continue
            allowed = torch.tensor(trie.allowed(states[i]), dtype=torch.long)
            row = logits[r, allowed.to(logits.device)]
            j = int(torch.argmax(row))
            k = len(states[i].chosen)
            while len(logconf[i]) <= k:
                logconf[i].append(0.0)
            logconf[i][k] += float(torch.log_softmax(row.float(), dim=-1)[j])
            steps[i] += 1
            states[i], feed = trie.advance(states[i], int(allowed[j]))
            if trie.determined(states[i]) is None:
                keep.append(i)
                feeds.append(feed)
        if not keep:
            break
        rows = keep
        logits = extend(rows, feeds)
    out = []
    for i in range(batch):
        labels = trie.determined(states[i])
        conf = [math.exp(x) for x in logconf[i]] + [1.0] * (len(labels) - len(logconf[i]))
        out.append((labels, conf[: len(labels)], steps[i]))
    return out


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _special_strings(tokenizer) -> list[str]:
    """Text of the atomic added tokens (split out before BPE: no merge can cross them)."""
    out = set()
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    for tok in decoder.values():
        content = getattr(tok, "content", str(tok))
        if content:
            out.add(content)
    out.update(t for t in getattr(tokenizer, "all_special_tokens", []) if t)
    return sorted(out, key=len, reverse=True)


def _cut_after_last_special(text: str, specials: Sequence[str]) -> int:
    """Index just after the last occurrence of any special token in ``text`` (0 when there is none)."""
    cut = 0
    for s in specials:
        i = text.rfind(s)
        if i >= 0:
            cut = max(cut, i + len(s))
    return cut


# ------------------------------------------------------------------------------------------------ prompt layout
_SENTINEL = "\u2063USER\u2063TEXT\u2063"


@dataclass
class PromptLayout:
    """How a request's token ids are laid out: ``prefix_ids`` (shared, cached) + suffix(text) + ``trie.forced_ids``.

    The chat template is rendered once with a sentinel user message and split: ``head`` (before the user text; cut
    after its last special token: everything up to there is the cached prefix), ``user_lead`` (the head's rest),
    ``tail`` (after the user text up to the generation prompt's last special token) and the generation prompt's
    remaining text, which goes with the answer into the trie (``lead_text``).
    """

    prefix_ids: list[int]
    user_lead: str
    tail: str
    lead_text: str

    @classmethod
    def from_chat_template(cls, tokenizer, system_prompt: str) -> "PromptLayout":
        messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": _SENTINEL}]
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if rendered.count(_SENTINEL) != 1:
            raise ValueError("the chat template does not render the user message verbatim")
        head, after = rendered.split(_SENTINEL)
        specials = _special_strings(tokenizer)
        cut = _cut_after_last_special(head, specials)
        gcut = _cut_after_last_special(after, specials)
        # chat templates write their own BOS text: ids are always encoded with add_special_tokens=False
        prefix_ids = _encode(tokenizer, head[:cut]) if cut else []
        return cls(prefix_ids=prefix_ids, user_lead=head[cut:], tail=after[:gcut], lead_text=after[gcut:])

    def suffix_ids(self, tokenizer, text: str) -> list[int]:
        """The request's own tokens (user turn and generation-prompt head), without the forced answer prefix."""
        return _encode(tokenizer, self.user_lead + text + self.tail)


# ------------------------------------------------------------------------------------------------ classifier
class ConstrainedClassifier:
    """Greedy constrained decoding of ``{"intent": "<label>"}`` with a causal LM (transformers or PeftModel).

    ``classify(texts)`` returns one :class:`Prediction` per text, always with a label from ``labels``. The system
    prompt's KV cache is computed once (lazily) and reused by every batch; pass a bf16 model for ~2x speed on CPU.

    ``mode`` picks how a batch shares the cached prefix:

    - ``"packed"`` (default for sdpa/eager attention): the batch's suffixes are packed one after the other into a
      single sequence behind one copy of the prefix; a 4D attention mask lets each request see the prefix and its own
      tokens only, position ids restart at ``len(prefix)`` for every request. No padding, and the prefix cache is never
      copied per request (the expanded-batch layout copies ``batch x 1,500`` cached tokens at every step, which
      dominates on CPU). Packs are capped at ``max_pack_tokens`` query tokens to bound the masked-out attention work.
    - ``"padded"``: the prefix cache is expanded to the batch, suffixes are left-padded after it (2D attention mask
      over prefix + suffix, position ids continuing after the prefix). For attention kernels without 4D masks.
    - ``"uncached"``: every request is fed whole (left-padded batch, no shared cache): the reference.
    """

    def __init__(self, model, tokenizer, labels: Sequence[str], system_prompt: str, *,
                 answer: Callable[[str], str] = default_answer, mode: str | None = None,
                 max_pack_tokens: int = 512):
        self.model = model
        self.tokenizer = tokenizer
        self.labels = list(dict.fromkeys(labels))
        if not self.labels:
            raise ValueError("no labels")
        self.system_prompt = system_prompt
        self.answer = answer
        self.layout = PromptLayout.from_chat_template(tokenizer, system_prompt)
        self.trie = LabelTrie.from_tokenizer(tokenizer, self.labels, lead_text=self.layout.lead_text, answer=answer)
        self.pad_id = _pad_id(tokenizer)
        self.max_pack_tokens = max(1, int(max_pack_tokens))
        attn = getattr(self.model.config, "_attn_implementation", None) or "eager"
        if mode is None:
            mode = "packed" if attn in ("sdpa", "eager") else "padded"
        if mode not in ("packed", "padded", "uncached"):
            raise ValueError(f"unknown mode {mode!r}")
        if not self.layout.prefix_ids:
            mode = "uncached"  # no special token to cut the prompt at: nothing can be shared safely
        self.mode = mode
        self._prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._logits_to_keep_ok = True
        model.eval()

    # ------------------------------------------------------------------------------------------- prompt ids
    def suffix_ids(self, text: str) -> list[int]:
        """A request's own tokens after the cached prefix, through the forced answer prefix."""
        return self.layout.suffix_ids(self.tokenizer, text) + self.trie.forced_ids

    def prompt_ids(self, text: str) -> list[int]:
        """The full prompt (through the forced answer prefix), as one uncached sequence would be fed."""
        return self.layout.prefix_ids + self.suffix_ids(text)

    def check_tokenization(self, text: str = "Where is my card?", label: str | None = None) -> bool:
        """Whether prefix + suffix + forced + path equals the joint tokenization of the rendered chat + answer."""
        label = self.labels[0] if label is None else label
        messages = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": text}]
        rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        joint = _encode(self.tokenizer, rendered + self.answer(label))
        return joint == self.prompt_ids(text) + self.trie.paths[label]

    # ------------------------------------------------------------------------------------------- model plumbing
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _float_dtype(self) -> torch.dtype:
        for p in self.model.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32  # pragma: no cover

    def _forward(self, input_ids, attention_mask, position_ids, cache, keep):
        """Logits [rows, V] (float32). ``keep``: an int (last positions, one per row) or 1D positions of row 0."""
        kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      past_key_values=cache, use_cache=True)
        logits = None
        if self._logits_to_keep_ok:
            try:
                logits = self.model(**kwargs, logits_to_keep=keep).logits
            except TypeError:
                self._logits_to_keep_ok = False
        if logits is None:
            logits = self.model(**kwargs).logits
            logits = logits[:, -keep:, :] if isinstance(keep, int) else logits[:, keep, :]
        if isinstance(keep, int):
            return logits[:, -1, :].float()
        return logits[0].float()

    def prefix_cache(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (keys, values) [1, kv_heads, len(prefix), head_dim] of the system prompt, computed once."""
        if self._prefix_kv is None:
            from transformers import DynamicCache

            ids = torch.tensor([self.layout.prefix_ids], dtype=torch.long, device=self._device())
            cache = DynamicCache(config=self.model.config)
            with torch.inference_mode():
                self._forward(ids, torch.ones_like(ids), None, cache, keep=1)
            self._prefix_kv = [(layer.keys, layer.values) for layer in cache.layers]
        return self._prefix_kv

    def _run(self, seqs: list[list[int]], mode: str):
        if mode == "packed":
            return _PackedRun(self, seqs)
        return _PaddedRun(self, seqs, cached=(mode == "padded"))

    # ------------------------------------------------------------------------------------------- public API
    def prompt_logits(self, texts: Sequence[str], mode: str | None = None) -> torch.Tensor:
        """Next-token logits [B, V] (float32) after each full prompt (through the forced answer prefix)."""
        mode = mode or self.mode
        texts = list(texts)
        with torch.inference_mode():
            return self._run([self.suffix_ids(t) for t in texts], mode).logits

    def classify(self, texts: Sequence[str], batch_size: int = 16) -> list[Prediction]:
        return [Prediction(label=l, confidence=c, decode_steps=s, latency_s=t)
                for (l, c, s), t in self._batches(texts, batch_size, self.suffix_ids, self._decode)]

    def _batches(self, texts: Sequence[str], batch_size: int, suffix: Callable[[str], list[int]],
                 decode: Callable[[list[list[int]]], list]) -> list[tuple[object, float]]:
        """``decode`` over packs of each batch's suffix ids; each result with the wall time of its batch."""
        texts = list(texts)
        out = []
        for start in range(0, len(texts), max(1, batch_size)):
            t0 = time.perf_counter()
            results = []
            with torch.inference_mode():
                seqs = [suffix(t) for t in texts[start:start + max(1, batch_size)]]
                for group in self._packs(seqs):
                    results.extend(decode([seqs[i] for i in group]))
            latency = time.perf_counter() - t0
            out.extend((r, latency) for r in results)
        return out

    def _packs(self, seqs: list[list[int]]) -> list[list[int]]:
        if self.mode != "packed":
            return [list(range(len(seqs)))]
        groups, cur, n = [], [], 0
        for i, s in enumerate(seqs):
            if cur and n + len(s) > self.max_pack_tokens:
                groups.append(cur)
                cur, n = [], 0
            cur.append(i)
            n += len(s)
        groups.append(cur)
        return groups

    def _decode(self, seqs: list[list[int]]) -> list[tuple[str, float, int]]:
        trie = self.trie
        B = len(seqs)
        node, logconf, steps = [0] * B, [0.0] * B, [0] * B
        done: list[str | None] = [trie.unique_label(0)] * B
        if done[0] is not None:  # a single label: nothing to decide
            return [(done[0], 1.0, 0)] * B
        run = self._run(seqs, self.mode)
        logits, rows = run.logits, list(range(B))
        while True:
            feeds = []
            for r, i in enumerate(rows):
                allowed = trie.allowed(node[i])
                row = logits[r, allowed.to(logits.device)]
                j = int(torch.argmax(row))
                tok = int(allowed[j])
                logconf[i] += float(torch.log_softmax(row, dim=-1)[j])
                steps[i] += 1
                node[i] = trie.child(node[i], tok)
                feed = [tok]
                for ftok, fnode in trie.forced_chain(node[i]):
                    feed.append(ftok)
                    node[i] = fnode
                done[i] = trie.unique_label(node[i])
                feeds.append(feed)
            keep = [r for r, i in enumerate(rows) if done[i] is None]
            if not keep:
                break
            rows, feeds = [rows[r] for r in keep], [feeds[r] for r in keep]
            logits = run.extend(rows, feeds)
        return [(done[i], math.exp(logconf[i]), steps[i]) for i in range(B)]

    def set_trie(self, max_intents: int = 3, allow_empty: bool = False) -> LabelSetTrie:
        """The list-answer automaton over this classifier's labels (built once per setting)."""
        tries = self.__dict__.setdefault("_set_tries", {})
        if (max_intents, allow_empty) not in tries:
            tries[(max_intents, allow_empty)] = LabelSetTrie.from_tokenizer(
                self.tokenizer, self.labels, lead_text=self.layout.lead_text, max_intents=max_intents,
                allow_empty=allow_empty)
        return tries[(max_intents, allow_empty)]

    def classify_sets(self, texts: Sequence[str], max_intents: int = 3, batch_size: int = 16,
                      allow_empty: bool = False) -> list[SetPrediction]:
        """List answers ``{"intents": [...]}``: every intent a message carries, 1 to ``max_intents`` distinct labels
        (0 to ``max_intents`` with ``allow_empty``; the model must have been trained on list answers). Same cached
        prefix, batching and packing as :meth:`classify`."""
        trie = self.set_trie(max_intents, allow_empty)

        def suffix(text: str) -> list[int]:
            return self.layout.suffix_ids(self.tokenizer, text) + trie.forced_ids

        def decode(seqs: list[list[int]]) -> list:
            run = self._run(seqs, self.mode)
            return greedy_label_sets(trie, run.logits, run.extend)

        return [SetPrediction(tuple(labels), tuple(conf), steps, t)
                for (labels, conf, steps), t in self._batches(texts, batch_size, suffix, decode)]

    # ------------------------------------------------------------------------------------------- reference scoring
    def label_logprobs(self, text: str, labels: Sequence[str] | None = None) -> dict[str, list[float]]:
        """Per-token log-probs (full-vocabulary softmax) of each label's answer path given the whole prompt,
        computed without any cache (one right-padded batch of full sequences starting at position 0)."""
        labels = list(labels or self.labels)
        prompt = self.prompt_ids(text)
        seqs = [prompt + self.trie.paths[l] for l in labels]
        L = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), L), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        device = self._device()
        with torch.inference_mode():
            logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        return {l: [float(logp[i, len(prompt) - 1 + k, tok]) for k, tok in enumerate(self.trie.paths[l])]
                for i, l in enumerate(labels)}


class _PackedRun:
    """Batch of 1: [prefix][suffix 1][suffix 2]...; later steps append each row's new tokens at the end."""

    def __init__(self, clf: ConstrainedClassifier, seqs: list[list[int]]):
        from transformers import DynamicCache

        self.clf = clf
        self.device = clf._device()
        kv = clf.prefix_cache()
        self.P = len(clf.layout.prefix_ids)
        self.cache = DynamicCache(ddp_cache_data=kv, config=clf.model.config)
        self.seg = torch.full((self.P,), -1, dtype=torch.long, device=self.device)  # owner of each cached slot
        self.next_pos = [self.P] * len(seqs)
        self.additive = getattr(clf.model.config, "_attn_implementation", "eager") != "sdpa"
        self.logits = self.extend(list(range(len(seqs))), seqs)

    def extend(self, rows: list[int], feeds: list[list[int]]) -> torch.Tensor:
        ids, seg, pos, last = [], [], [], []
        for r, f in zip(rows, feeds):
            ids.extend(f)
            seg.extend([r] * len(f))
            pos.extend(range(self.next_pos[r], self.next_pos[r] + len(f)))
            self.next_pos[r] += len(f)
            last.append(len(ids) - 1)
        dev = self.device
        q_seg = torch.tensor(seg, dtype=torch.long, device=dev)
        kv_seg = torch.cat([self.seg, q_seg])
        old = self.seg.numel()
        q_idx = torch.arange(old, old + len(ids), device=dev)
        k_idx = torch.arange(kv_seg.numel(), device=dev)
        allowed = (kv_seg[None, :] == -1) | ((kv_seg[None, :] == q_seg[:, None]) & (k_idx[None, :] <= q_idx[:, None]))
        mask = allowed[None, None]
        if self.additive:
            dtype = self.clf._float_dtype()
            mask = torch.zeros(mask.shape, dtype=dtype, device=dev).masked_fill(~mask, torch.finfo(dtype).min)
        self.seg = kv_seg
        return self.clf._forward(
            torch.tensor([ids], dtype=torch.long, device=dev), mask,
            torch.tensor([pos], dtype=torch.long, device=dev), self.cache,
            keep=torch.tensor(last, dtype=torch.long, device=dev),
        )


class _PaddedRun:
    """Batch of B rows, left-padded; with ``cached`` the prefix cache is expanded to the batch and the pads sit
    between it and each row's suffix, else every row carries its whole prompt (the uncached reference)."""

    def __init__(self, clf: ConstrainedClassifier, seqs: list[list[int]], cached: bool):
        from transformers import DynamicCache

        self.clf = clf
        self.device = clf._device()
        B = len(seqs)
        if cached:
            P = len(clf.layout.prefix_ids)
            self.cache = DynamicCache(
                ddp_cache_data=[(k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1)) for k, v in clf.prefix_cache()],
                config=clf.model.config,
            )
        else:
            P = 0
            seqs = [clf.layout.prefix_ids + s for s in seqs]
            self.cache = DynamicCache(config=clf.model.config)
        self.mask = torch.ones((B, P), dtype=torch.long, device=self.device)
        self.next_pos = torch.full((B,), P, dtype=torch.long, device=self.device)
        self.logits = self.extend(list(range(B)), seqs)

    def extend(self, rows: list[int], feeds: list[list[int]]) -> torch.Tensor:
        B = self.mask.shape[0]
        K = max(len(f) for f in feeds)
        ids = torch.full((B, K), self.clf.pad_id, dtype=torch.long)
        new = torch.zeros((B, K), dtype=torch.long)
        for r, f in zip(rows, feeds):  # rows not fed get pads only (mask 0): their logits are ignored
            ids[r, K - len(f):] = torch.tensor(f, dtype=torch.long)
            new[r, K - len(f):] = 1
        new = new.to(self.device)
        pos = (self.next_pos[:, None] + new.cumsum(-1) - 1).clamp(min=0)
        self.next_pos = self.next_pos + new.sum(-1)
        self.mask = torch.cat([self.mask, new], dim=-1)
        logits = self.clf._forward(ids.to(self.device), self.mask, pos, self.cache, keep=1)
        return logits[torch.tensor(rows, dtype=torch.long, device=logits.device)]


def _pad_id(tokenizer) -> int:
    for cand in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id):
        if cand is not None:
            return int(cand)
    return 0


# ------------------------------------------------------------------------------------------ unconstrained baseline
def generate_unconstrained(model, tokenizer, system_prompt: str, texts: Sequence[str], batch_size: int = 16,
                           max_new_tokens: int = 24, min_new_tokens: int = 0) -> list[Prediction]:
    """Plain ``generate`` of the whole JSON answer (greedy, no shared cache): the comparison point for
    :class:`ConstrainedClassifier`. ``label`` is the parsed intent, ``""`` when the answer is not the expected JSON
    (it may also be a name outside the taxonomy); ``confidence`` is NaN. ``min_new_tokens`` makes a model that does
    not stop (e.g. zero-shot) generate as many tokens as a whole answer would take."""
    texts = list(texts)
    end_ids = [i for i in {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")}
               if isinstance(i, int) and i >= 0 and i != tokenizer.unk_token_id]
    pad = _pad_id(tokenizer)
    device = next(model.parameters()).device
    model.eval()
    out: list[Prediction] = []
    for start in range(0, len(texts), max(1, batch_size)):
        chunk = texts[start:start + batch_size]
        t0 = time.perf_counter()
        seqs = [
            _encode(tokenizer, tokenizer.apply_chat_template(
                [{"role": "system", "content": system_prompt}, {"role": "user", "content": t}],
                tokenize=False, add_generation_prompt=True))
            for t in chunk
        ]
        L = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), L), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(seqs):
            ids[i, L - len(s):] = torch.tensor(s)
            mask[i, L - len(s):] = 1
        with torch.inference_mode():
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                 max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens or None,
                                 eos_token_id=end_ids or None, pad_token_id=pad)
        latency = time.perf_counter() - t0
        for i in range(len(chunk)):
            new = gen[i, L:].tolist()
            steps = len(new)
            text = tokenizer.decode(new, skip_special_tokens=True).strip()
            out.append(Prediction(label=parse_answer(text) or "", confidence=float("nan"), decode_steps=steps,
                                  latency_s=latency))
    return out
