"""Tests of the ``synthetic_augments`` logic (``intent_assets.data.augment``).

The generation tests use the real ``openai`` client against the canned-response OpenAI-compatible server
of ``intent_assets_tests.openai_server`` (127.0.0.1, free port, real HTTP).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pandas as pd
import pytest

from intent_assets.data import augment
from intent_assets.data.augment import (
    AUGMENT_COLUMNS,
    GateResult,
    QualityGate,
    ResponseCache,
    build_messages,
    generate_augments,
    make_openai_chat,
    normalize_text,
    parse_paraphrases,
    plan_requests,
)
from intent_assets_tests.openai_server import (
    CannedHTTPError,
    CannedOpenAIServer,
    canned_openai_server,  # noqa: F401 - pytest fixture
    extract_intent,
    failing_for,
    make_paraphrase_responder,
)

MODEL = "canned-model"

# --- a small, realistic, already-redacted training set: 3 intents x 15 -------------------------------

TRAIN = {
    "card_arrival": [
        "I am still waiting on my card?",
        "What can I do if my card still hasn't arrived after 2 weeks?",
        "I have been waiting over a week. Is the card still coming?",
        "Can I track my card while it is in the process of delivery?",
        "How do I know if I will get my card, or if it is lost?",
        "When will my card arrive?",
        "my new card hasnt come in the post yet",
        "The card you sent me has not been delivered, where is it?",
        "It's been ten days and still no card in my mailbox",
        "how long does card delivery take",
        "I ordered a card to {{ADDRESS}} but nothing has arrived",
        "Has my card been shipped already?",
        "Where is the debit card I ordered last week?",
        "card not received yet, what should i do",
        "Is there a way to check the delivery status of my card?",
    ],
    "exchange_rate": [
        "What exchange rates do you use?",
        "How are your exchange rates calculated?",
        "What is the exchange rate for euros to dollars today?",
        "Do you use the real interbank exchange rate?",
        "why is the exchange rate in the app different from google",
        "Is the currency conversion rate fixed or does it change?",
        "Where can I see the current exchange rate for pounds?",
        "what rate will i get if i convert usd to gbp",
        "Are exchange rates updated during the weekend?",
        "How much is one euro in yen with your rates?",
        "Your exchange rate seems worse than the market rate",
        "Can I check the rate before I exchange currency?",
        "tell me the rate for converting francs to euros",
        "Does the exchange rate include a markup?",
        "What conversion rate applies when I pay abroad?",
    ],
    "change_pin": [
        "How do I change my PIN?",
        "I want to set a new PIN for my card",
        "Can I change my pin number in the app?",
        "where do i go to reset my pin",
        "Is it possible to choose a different PIN code?",
        "I forgot my PIN, how can I change it?",
        "Please help me update the PIN on my card",
        "can i change the pin at an atm",
        "I'd like to pick a new pin, my old one is too easy",
        "How can I modify my card's PIN?",
        "Do I need to visit a branch to change my PIN?",
        "change pin please",
        "What are the steps to change my PIN code?",
        "My PIN was seen by someone, I need to change it",
        "is there a way to alter my pin online",
    ],
}
TEXTS = [t for intent, rows in TRAIN.items() for t in rows]
LABELS = [intent for intent, rows in TRAIN.items() for _ in rows]
TAXONOMY = {
    "card_arrival": "The customer's new or replacement card has not arrived yet or they ask when it will.",
    "exchange_rate": "Questions about the currency exchange rates used and how they are calculated.",
    "change_pin": "The customer wants to change or reset the PIN of their card.",
}

# Good paraphrases, written so the tiny classifier above gets them right.
CANNED = {
    "card_arrival": [
        "hi, my card still has not arrived, when will it come?",
        "How long until my new card is delivered?",
        "still waiting for my card to arrive in the post",
        "the card i ordered hasnt been delivered yet, where is it",
        "Could you tell me when my card will be delivered?",
        "is my card lost in the mail? it still hasn't arrived",
    ],
    "exchange_rate": [
        "which exchange rate do you apply when converting currency?",
        "what's today's exchange rate from dollars to euros",
    ],
    "change_pin": [
        "how can i set a different pin for my card",
        "I would like to change the PIN code of my card please",
        "where in the app can I change my pin?",
        "need to reset my pin, how do i do that",
    ],
}


def fake_find_pii(text: str):
    """Stand-in detector (e-mail addresses and long digit runs) with pii.Span-like tuples."""
    import re

    return tuple((m.start(), m.end(), "EMAIL" if "@" in m.group() else "NUMBER")
                 for m in re.finditer(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+|\d{8,}|\{\{[A-Z_]+\}\}", text))


def _real_pii_available() -> bool:
    try:
        from intent_assets.privacy import pii  # noqa: F401
    except Exception:
        return False
    return hasattr(pii, "find_pii") and hasattr(pii, "redact")


@pytest.fixture(scope="module")
def gate() -> QualityGate:
    """The gate as production builds it: default (lazily imported) PII detector when it exists."""
    if _real_pii_available():
        return QualityGate(TEXTS, LABELS)
    return QualityGate(TEXTS, LABELS, find_pii=fake_find_pii)


_CLIENTS: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def openai_client(srv: CannedOpenAIServer) -> openai.OpenAI:
    """The real client, no retries (a 500 must fail fast); closed after the test."""
    client = openai.OpenAI(base_url=srv.base_url, api_key="test-key", max_retries=0, timeout=10)
    _CLIENTS.append(client)
    return client


def planned() -> dict[str, int]:
    counts = {intent: len(rows) for intent, rows in TRAIN.items()}  # 15 each
    return plan_requests(counts, min_examples=20, max_share=0.30)  # min(5, floor(4.5)) = 4 each


# --- plan_requests ---------------------------------------------------------------------------------------

def test_plan_requests_thresholds_and_caps():
    counts = {"small": 10, "tiny": 3, "big": 50, "exact": 20, "zero": 0, "mid": 18}
    plan = plan_requests(counts, min_examples=20, max_share=0.30)
    # small: min(10, 3); tiny: floor(0.9) = 0 -> omitted; mid: min(2, 5)
    assert plan == {"small": 3, "mid": 2}
    assert list(plan) == ["small", "mid"]  # input order kept


def test_plan_requests_share_cap_and_float_floor():
    assert plan_requests({"a": 10}, min_examples=20, max_share=1.0) == {"a": 10}
    assert plan_requests({"a": 10}, min_examples=12, max_share=1.0) == {"a": 2}
    assert plan_requests({"a": 100}, min_examples=200, max_share=0.29) == {"a": 29}  # not 28 (float error)
    assert plan_requests({"a": 10}, min_examples=20, max_share=0.0) == {}
    assert plan_requests({"a": 10}, min_examples=20) == {"a": 3}  # default max_share 0.30
    assert plan_requests({}, min_examples=20, max_share=0.3) == {}


@pytest.mark.parametrize("kwargs", [dict(min_examples=-1, max_share=0.3), dict(min_examples=5, max_share=-0.1),
                                    dict(min_examples=5, max_share=float("nan"))])
def test_plan_requests_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        plan_requests({"a": 3}, **kwargs)


def test_plan_requests_rejects_negative_count():
    with pytest.raises(ValueError, match="negative"):
        plan_requests({"a": -3}, min_examples=5, max_share=0.3)


# --- build_messages --------------------------------------------------------------------------------------

def test_build_messages_content_and_determinism():
    examples = [f"example number {i} about my card" for i in range(20)] + ["reach me at {{EMAIL}}"]
    msgs = build_messages("card_arrival", TAXONOMY["card_arrival"], examples, 6)
    assert [m["role"] for m in msgs] == ["system", "user"]
    user = msgs[1]["content"]
    assert "Intent: card_arrival" in user
    assert TAXONOMY["card_arrival"] in user
    assert "exactly 6" in user
    assert '{"paraphrases"' in user and "Reasoning" in user and "Final:" in user
    shown = [line for line in user.splitlines() if line.startswith("- \"")]
    assert len(shown) == 8  # at most 8 examples
    # same input -> same messages; input order does not matter (stable cache key)
    assert build_messages("card_arrival", TAXONOMY["card_arrival"], examples, 6) == msgs
    assert build_messages("card_arrival", TAXONOMY["card_arrival"], list(reversed(examples)), 6) == msgs
    # a later round asks differently
    assert build_messages("card_arrival", TAXONOMY["card_arrival"], examples, 6, round_index=1) != msgs
    # the canned server can read the intent back
    assert extract_intent({"messages": msgs}) == "card_arrival"
    json.dumps(msgs)  # JSON-serialisable as sent over the wire


def test_build_messages_keeps_placeholders_and_few_examples():
    msgs = build_messages("x", "", ["mail {{EMAIL}} please", "mail {{EMAIL}} please", ""], 2)
    user = msgs[1]["content"]
    assert user.count("{{EMAIL}} please") == 1  # deduplicated, empty dropped
    with pytest.raises(ValueError):
        build_messages("x", "", [], 0)


# --- parse_paraphrases -----------------------------------------------------------------------------------

def test_parse_fenced_json():
    content = 'Here you go:\n```json\n{"paraphrases": ["  one  ", "two", ""]}\n```\n'
    assert parse_paraphrases(content) == ["one", "two"]


def test_parse_reasoning_then_json_takes_last_object():
    content = (
        "Reasoning: customers ask about {their card}. A bad draft was {\"paraphrases\": [\"draft\"]}.\n"
        'Also some other JSON {"note": 1}.\n'
        'Final:\n{"paraphrases": ["where is my card", "card still not here", "mail me at {{EMAIL}}"]}'
    )
    assert parse_paraphrases(content) == ["where is my card", "card still not here", "mail me at {{EMAIL}}"]


def test_parse_tolerates_trailing_comma_and_nested_object():
    assert parse_paraphrases('{"paraphrases": ["a", "b",],}') == ["a", "b"]
    assert parse_paraphrases('{"result": {"paraphrases": ["x"]}}') == ["x"]


def test_parse_list_fallback_after_final_marker():
    content = (
        "Reasoning:\n- customers are impatient\n- they mention delivery\n\n"
        "**Final answer:**\n1. where is my card\n2) \"still no card\"\n- card not arrived yet\n\nHope this helps!"
    )
    assert parse_paraphrases(content) == ["where is my card", "still no card", "card not arrived yet"]


@pytest.mark.parametrize("content, match", [
    ("", "empty"),
    ("   \n ", "empty"),
    ("I cannot help with that.", "no JSON object"),
    ("Reasoning: - a bullet but no final marker\n- another", "no JSON object"),
    ('{"paraphrases": "where is my card"}', "not a list"),
    ('{"paraphrases": ["", "  "]}', "no non-empty strings"),
    ('{"paraphrases": ["unterminated', "no JSON object"),
])
def test_parse_garbage_raises_clear_value_error(content, match):
    with pytest.raises(ValueError, match=match):
        parse_paraphrases(content)


# --- ResponseCache ---------------------------------------------------------------------------------------

def test_response_cache_roundtrip_and_key(tmp_path: Path):
    cache = ResponseCache(tmp_path / "cache")
    msgs = build_messages("card_arrival", "d", ["a"], 3)
    key = cache.key(MODEL, msgs, {"temperature": 0.9, "round": 0})
    assert len(key) == 64 and int(key, 16) >= 0
    assert key == cache.key(MODEL, msgs, {"round": 0, "temperature": 0.9})  # param order irrelevant
    assert key != cache.key(MODEL, msgs, {"temperature": 0.5, "round": 0})
    assert key != cache.key("other-model", msgs, {"temperature": 0.9, "round": 0})
    assert cache.get(key) is None
    cache.put(key, 'reply with ünïcode {"paraphrases": []}')
    assert cache.get(key) == 'reply with ünïcode {"paraphrases": []}'
    assert ResponseCache(tmp_path / "cache").get(key) == 'reply with ünïcode {"paraphrases": []}'
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [f"{key}.json"]  # no temp files left
    cache.put(key, "overwritten")
    assert cache.get(key) == "overwritten"
    with pytest.raises(ValueError):
        cache.get("../etc/passwd")


def test_response_cache_corrupt_entry_is_a_miss(tmp_path: Path):
    cache = ResponseCache(tmp_path)
    key = cache.key(MODEL, [], {})
    (tmp_path / f"{key}.json").write_text("{not json", encoding="utf-8")
    assert cache.get(key) is None


# --- QualityGate -----------------------------------------------------------------------------------------

def test_normalize_text():
    assert normalize_text("  When will my CARD   arrive?! ") == "when will my card arrive"
    assert normalize_text("?!...") == ""


def test_gate_accepts_good_paraphrases(gate: QualityGate):
    for intent, good in CANNED.items():
        results = gate.evaluate(good, intent)
        assert all(isinstance(r, GateResult) for r in results)
        assert [(r.reason, r.predicted_intent) for r in results] == [("accepted", intent)] * len(good), results
        assert all(r.accepted for r in results)


def test_gate_rejection_reasons_each_fire(gate: QualityGate):
    candidates = [
        "   ",                                                    # empty
        "?!",                                                     # empty after normalization
        "  when will my CARD arrive  ",                           # a training text, other case/spacing
        "How long until my new card is delivered?",               # accepted
        "how long until my new card is delivered",                # duplicate of the accepted one above
        "my card hasn't arrived yet, email me at jane.doe@example.com",  # contains_pii
        "what is the exchange rate for euros to dollars now",     # another intent
        "the card still hasn't arrived, please mail it to {{ADDRESS}}",  # placeholder is not PII
    ]
    results = gate.evaluate(candidates, "card_arrival")
    assert [r.reason for r in results] == [
        "empty", "empty", "duplicate_of_existing", "accepted", "duplicate_of_existing", "contains_pii",
        "classifier_disagrees", "accepted",
    ], results
    assert [r.accepted for r in results] == [r.reason == "accepted" for r in results]
    assert results[6].predicted_intent == "exchange_rate"
    assert results[0].predicted_intent == ""
    # earlier accepted texts (e.g. from a previous round) count as existing
    again = gate.evaluate(["How long until my new card is delivered?"], "card_arrival",
                          already_accepted=["how long until my new card is delivered"])
    assert again[0].reason == "duplicate_of_existing"


def test_gate_pii_check_is_injectable_and_placeholder_aware():
    calls = []

    def detector(text):
        calls.append(text)
        return fake_find_pii(text)

    gate = QualityGate(TEXTS, LABELS, find_pii=detector)
    results = gate.evaluate(["card not here, ring me on 07700900123",
                             "my card has not arrived, send the update to {{EMAIL}}"], "card_arrival")
    assert [r.reason for r in results] == ["contains_pii", "accepted"]
    assert calls


def test_gate_rejects_when_redactor_changes_text():
    gate = QualityGate(TEXTS, LABELS, find_pii=lambda t: (),
                       redact=lambda t: t.replace("Jane Doe", "{{NAME}}"))
    results = gate.evaluate(["hi this is Jane Doe, my card has not arrived",
                             "hi this is {{NAME}}, my card has not arrived"], "card_arrival")
    assert [r.reason for r in results] == ["contains_pii", "accepted"]


def test_gate_default_detector_is_intent_assets_pii(monkeypatch):
    """Without injection the gate calls ``intent_assets.privacy.pii.find_pii`` lazily (monkeypatched here)."""
    import sys
    import types

    fake = types.ModuleType("intent_assets.privacy.pii")
    fake.find_pii = lambda text: fake_find_pii(text)
    fake.redact = lambda text: types.SimpleNamespace(text=text, spans=fake_find_pii(text))
    monkeypatch.setitem(sys.modules, "intent_assets.privacy.pii", fake)
    import intent_assets

    monkeypatch.setattr(intent_assets, "pii", fake, raising=False)
    gate = QualityGate(TEXTS, LABELS)
    results = gate.evaluate(["where is my card? write to a.b@example.org"], "card_arrival")
    assert results[0].reason == "contains_pii"


@pytest.mark.skipif(not _real_pii_available(), reason="intent_assets.privacy.pii not written yet")
def test_gate_with_real_redactor():
    gate = QualityGate(TEXTS, LABELS)
    results = gate.evaluate([
        "my card has not arrived, contact me at jane.doe@example.com",
        "my card has not arrived, contact me at {{EMAIL}}",
    ], "card_arrival")
    assert [r.reason for r in results] == ["contains_pii", "accepted"]


# --- the canned server itself ----------------------------------------------------------------------------

def test_canned_server_speaks_openai(canned_openai_server):
    srv = canned_openai_server(make_paraphrase_responder(CANNED))
    assert srv.base_url.startswith("http://127.0.0.1:") and srv.base_url.endswith("/v1")
    client = openai_client(srv)
    assert [m.id for m in client.models.list()] == [MODEL]
    chat = make_openai_chat(client, MODEL, temperature=0.7)
    msgs = build_messages("change_pin", TAXONOMY["change_pin"], TRAIN["change_pin"], 4)
    content = chat(msgs)
    assert parse_paraphrases(content)[:4] == CANNED["change_pin"]
    assert srv.requests == [{"model": MODEL, "messages": msgs, "temperature": 0.7}]
    # no bearer token -> 401 JSON error
    request = urllib.request.Request(f"{srv.base_url}/chat/completions", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    with info.value as response:
        assert response.code == 401
        assert json.loads(response.read())["error"]["code"] == "invalid_api_key"
    assert len(srv.requests) == 1  # unauthorised request not recorded as a chat request


def test_canned_server_error_status_reaches_client():
    def responder(body):
        raise CannedHTTPError(503, "overloaded")

    with CannedOpenAIServer(responder) as srv:
        chat = make_openai_chat(openai_client(srv), MODEL, 0.9)
        with pytest.raises(openai.APIStatusError) as info:
            chat([{"role": "user", "content": "Intent: change_pin"}])
        assert info.value.status_code == 503
        assert len(srv.requests) == 1
    with pytest.raises(RuntimeError):
        srv.base_url  # stopped


# --- generate_augments end to end ------------------------------------------------------------------------

def _run(srv: CannedOpenAIServer, cache: ResponseCache, gate: QualityGate, plan=None, **kwargs):
    chat = make_openai_chat(openai_client(srv), MODEL, temperature=0.9)
    return generate_augments(chat, MODEL, plan if plan is not None else planned(), TAXONOMY, TRAIN, gate,
                             cache, temperature=0.9, **kwargs)


def test_generate_augments_end_to_end_and_cache(tmp_path: Path, gate: QualityGate, canned_openai_server):
    plan = planned()
    assert plan == {"card_arrival": 4, "exchange_rate": 4, "change_pin": 4}
    srv = canned_openai_server(make_paraphrase_responder(CANNED))
    cache = ResponseCache(tmp_path / "llm_cache")

    frame, stats = _run(srv, cache, gate, plan)

    assert list(frame.columns) == AUGMENT_COLUMNS
    assert frame["accepted"].dtype == bool and frame["from_cache"].dtype == bool
    accepted = frame[frame["accepted"]]
    per_intent = accepted.groupby("intent").size().to_dict()
    assert all(per_intent.get(i, 0) <= n for i, n in plan.items())  # never more than planned
    assert per_intent == {"card_arrival": 4, "exchange_rate": 2, "change_pin": 4}
    assert stats["accepted_by_intent"] == {"card_arrival": 4, "change_pin": 4, "exchange_rate": 2}
    assert stats["shortfall_by_intent"] == {"exchange_rate": 2}
    # every candidate of every reply is returned, with a reason
    # card_arrival: 6 good + dup + pii + off-intent = 9; change_pin: 4 good + 3 = 7 (one request each)
    # exchange_rate: 2 requests (only 2 of 4 accepted after round 1), 5 candidates each
    assert frame.groupby("intent").size().to_dict() == {"card_arrival": 9, "change_pin": 7, "exchange_rate": 10}
    assert len(srv.requests) == stats["requests"] == 4
    assert stats["cache_hits"] == 0 and stats["candidates"] == len(frame) == 26
    reasons = frame.groupby(["intent", "reason"]).size().to_dict()
    assert reasons[("card_arrival", "over_cap")] == 2
    assert reasons[("card_arrival", "accepted")] == 4
    for intent in plan:
        assert reasons[(intent, "duplicate_of_existing")] >= 1
        assert reasons[(intent, "contains_pii")] == (2 if intent == "exchange_rate" else 1)  # 1 per request
        assert reasons[(intent, "classifier_disagrees")] >= 1
    assert set(frame["reason"]) <= set(augment.REASONS)
    assert stats["accepted"] == 10 and stats["rejected"] == 16
    assert sum(stats["rejected_by_reason"].values()) == 16
    assert stats["rejected_by_reason"]["over_cap"] == 2
    # the second round of exchange_rate used a different prompt (different cache key)
    assert frame.loc[frame["intent"] == "exchange_rate", "prompt_hash"].nunique() == 2
    assert stats["rounds_by_intent"]["exchange_rate"] == 2
    # the wire requests are exactly what build_messages produced, with the configured temperature
    first = srv.requests[0]
    assert first["model"] == MODEL and first["temperature"] == 0.9
    assert first["messages"] == build_messages("card_arrival", TAXONOMY["card_arrival"], TRAIN["card_arrival"],
                                               6, round_index=0)  # 1.5 x 4
    assert not frame["from_cache"].any()
    assert (frame.loc[frame["accepted"], "predicted_intent"] == frame.loc[frame["accepted"], "intent"]).all()

    # re-materialization: same prompts -> zero HTTP requests, same result
    before = len(srv.requests)
    frame2, stats2 = _run(srv, ResponseCache(tmp_path / "llm_cache"), gate, plan)
    assert len(srv.requests) == before  # ZERO HTTP calls
    assert stats2["requests"] == 0 and stats2["cache_hits"] == 4
    assert frame2["from_cache"].all()
    cols = ["intent", "text", "accepted", "reason", "predicted_intent", "prompt_hash"]
    pd.testing.assert_frame_equal(frame2[cols], frame[cols])
    assert frame2.loc[frame2["accepted"], "text"].tolist() == accepted["text"].tolist()


def test_generate_augments_server_error_for_one_intent(tmp_path: Path, gate: QualityGate, canned_openai_server):
    responder = failing_for(["exchange_rate"], make_paraphrase_responder(CANNED), status=500, known=TRAIN)
    srv = canned_openai_server(responder)
    cache = ResponseCache(tmp_path / "cache")

    frame, stats = _run(srv, cache, gate)

    failed = frame[frame["reason"] == "request_failed"]
    assert failed["intent"].tolist() == ["exchange_rate"]
    assert failed["text"].tolist() == [""] and not failed["accepted"].any()
    assert len(failed["prompt_hash"].iloc[0]) == 64
    assert stats["request_failed"] == 1
    assert stats["errors"][0]["intent"] == "exchange_rate" and "500" in stats["errors"][0]["error"]
    assert stats["accepted_by_intent"] == {"card_arrival": 4, "change_pin": 4, "exchange_rate": 0}
    assert len(srv.requests) == 3  # one per intent; the failed intent is not retried within the run

    # next run: the successful replies come from the cache, only the failed intent is asked again
    srv.responder = make_paraphrase_responder(CANNED)
    frame2, stats2 = _run(srv, cache, gate)
    assert stats2["cache_hits"] == 2 and stats2["requests"] == 2  # exchange_rate: 2 rounds
    assert "request_failed" not in set(frame2["reason"])
    assert stats2["accepted_by_intent"]["exchange_rate"] == 2


def test_generate_augments_unparseable_reply(tmp_path: Path, gate: QualityGate, canned_openai_server):
    canned = {k: v for k, v in CANNED.items() if k != "change_pin"}  # no JSON for change_pin
    srv = canned_openai_server(make_paraphrase_responder(canned))
    frame, stats = _run(srv, ResponseCache(tmp_path / "c"), gate, max_rounds=1)
    bad = frame[frame["reason"] == "unparseable"]
    assert bad["intent"].tolist() == ["change_pin"] and bad["text"].tolist() == [""]
    assert stats["unparseable"] == 1 and "cannot parse" in stats["errors"][0]["error"]
    assert stats["accepted_by_intent"]["card_arrival"] == 4
    assert stats["accepted_by_intent"]["exchange_rate"] == 2  # max_rounds=1
    assert len(srv.requests) == 3


def test_generate_augments_chat_exception_and_empty_plan(tmp_path: Path, gate: QualityGate):
    def boom(messages):
        raise ConnectionError("network down")

    cache = ResponseCache(tmp_path)
    frame, stats = generate_augments(boom, MODEL, {"change_pin": 2}, TAXONOMY, TRAIN, gate, cache)
    assert frame[["intent", "reason", "text"]].values.tolist() == [["change_pin", "request_failed", ""]]
    assert stats["requests"] == 1 and "network down" in stats["errors"][0]["error"]
    assert len(cache) == 0  # failures are not cached

    frame, stats = generate_augments(boom, MODEL, {}, TAXONOMY, TRAIN, gate, cache)
    assert list(frame.columns) == AUGMENT_COLUMNS and frame.empty
    assert stats["requests"] == 0 and stats["accepted"] == 0


def test_generate_augments_rejects_chat_with_other_settings(tmp_path: Path, gate: QualityGate):
    with CannedOpenAIServer(make_paraphrase_responder(CANNED)) as srv:
        chat = make_openai_chat(openai_client(srv), MODEL, temperature=0.2)
        with pytest.raises(ValueError, match="temperature"):
            generate_augments(chat, MODEL, {"change_pin": 2}, TAXONOMY, TRAIN, gate, ResponseCache(tmp_path))
        with pytest.raises(ValueError, match="model"):
            generate_augments(chat, "other", {"change_pin": 2}, TAXONOMY, TRAIN, gate, ResponseCache(tmp_path),
                              temperature=0.2)
        assert srv.requests == []
