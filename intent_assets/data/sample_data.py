"""Reproducible builder for the shipped sample data (Banking77 rendered as support chat logs).

This is a plain module (no Dagster import). It turns the Banking77 training set
(Casanueva et al. 2020, CC BY 4.0) into customer-support chat logs with synthetic,
deliberately inserted PII, and writes:

* ``banking77_chat_logs.jsonl``: one JSON object per message with exactly the fields
  ``conversation_id, turn, timestamp, speaker, text, intent, channel``.
* ``banking77_pii_manifest.jsonl``: one JSON object per inserted PII value with
  ``conversation_id, turn, entity_type, value, start, end``; ``text[start:end] == value``
  (offsets are Python ``str`` indices, i.e. Unicode code points).
* ``plain_labelled.csv``: a small plain labelled data set (``text,label``) taken from the
  Banking77 test split.
* ``LICENSE-banking77``: a copy of the Banking77 license.

Every Banking77 utterance becomes one conversation. The original utterance is kept
intact inside the labelled customer turn; PII may be prepended or appended around it.
All PII is synthetic (Faker, locales en_US and en_GB, plus ``random.Random``), seeded,
so the same command produces byte-identical files (for a given Faker version).

Usage::

    python -m intent_assets.data.sample_data --source /work/shared/data/banking77 \\
        --out intent_assets/data/sample [--seed 77] [--per-intent N]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import shutil
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterable, Sequence

from intent_assets.paths import TAXONOMY_DIR

DEFAULT_SEED = 77
CHAT_LOG_FILE = "banking77_chat_logs.jsonl"
MANIFEST_FILE = "banking77_pii_manifest.jsonl"
PLAIN_LABELLED_FILE = "plain_labelled.csv"
LICENSE_FILE = "LICENSE-banking77"

MESSAGE_FIELDS = ("conversation_id", "turn", "timestamp", "speaker", "text", "intent", "channel")
MANIFEST_FIELDS = ("conversation_id", "turn", "entity_type", "value", "start", "end")
ENTITY_TYPES = ("PERSON", "EMAIL", "PHONE", "CREDIT_CARD", "ACCOUNT_NUMBER", "ADDRESS")
CHANNELS = ("chat", "app", "web", "email")

PLAIN_LABELLED_INTENTS = ("card_arrival", "lost_or_stolen_card", "exchange_rate", "transfer_timing")
PLAIN_LABELLED_PER_INTENT = 10

# Target share of customer turns that carry PII is about 30%; these probabilities get there.
P_LABELLED_PII = 0.28
P_SECOND_PII = 0.2
P_GREETING = 0.88
P_AGENT_FOLLOWUP = 0.65
P_EXTRA_CUSTOMER = 0.7
P_EXTRA_PII = 0.38
P_AGENT_USES_NAME = 0.5
P_LOWERCASE = 0.2

YEAR_START = datetime(2025, 1, 1, tzinfo=timezone.utc)
YEAR_SECONDS = 365 * 24 * 3600
LAST_START_SECONDS = YEAR_SECONDS - 2 * 24 * 3600  # leave room so conversations end in 2025

# --------------------------------------------------------------------------------------
# Templates. Placeholders: {name} full name, {first} first name (both PERSON), {email},
# {phone}, {card}, {account}, {address}.
# --------------------------------------------------------------------------------------

GREETINGS = (
    "Hi, thanks for contacting support. How can I help you today?",
    "Hello! You're chatting with the support team. What can I do for you?",
    "Welcome to support. How can we help?",
    "Hi there, how can I help you today?",
    "Good day! What can I help you with?",
    "Hello, thanks for getting in touch. What can I do for you today?",
    "Hi! Thanks for reaching out. What seems to be the problem?",
    "Hello and welcome. Please tell me how I can help.",
    "Hey, thanks for messaging us. How can I help?",
    "Hi, you're through to customer support. What can I do for you?",
)
EMAIL_GREETINGS = (
    "Thank you for contacting us. A member of our support team will reply shortly.",
    "We have received your message and will get back to you as soon as possible.",
    "Thanks for your email. Our support team will be in touch shortly.",
)

AGENT_FOLLOWUPS = (
    "Thanks for reaching out. Let me look into that for you.",
    "I'm sorry to hear that. Let me check what's going on.",
    "Sure, I can help with that.",
    "Thanks for the details, one moment while I check.",
    "I understand. Let me see what I can do.",
    "Of course. Give me a moment to pull up the details.",
    "Thanks for letting us know. I'll take a look.",
    "Happy to help with that. Let me check a few things.",
    "I see. Could you tell me a little more about what happened?",
    "No problem, I'll look into it right away.",
)
AGENT_FOLLOWUPS_NAMED = (
    "Thanks {first}, let me look into that for you.",
    "Hi {first}, I'm sorry to hear that. Let me check.",
    "Thanks for getting in touch, {first}. One moment please.",
    "Sure {first}, I can help with that.",
    "Thank you {first}. Let me see what I can do.",
)
AGENT_REQUESTS = {
    "EMAIL": (
        "Could you confirm the email address on your account?",
        "What email address did you register with?",
    ),
    "PHONE": (
        "What's the best phone number to reach you on?",
        "Could you confirm the phone number linked to your account?",
    ),
    "PERSON": (
        "Can I take your full name, please?",
        "Could you tell me the name on the account?",
    ),
    "ACCOUNT_NUMBER": (
        "Could you give me your account number so I can check?",
        "Which account is this about? Please share the account number.",
    ),
    "ADDRESS": (
        "Can you confirm the address we have on file for you?",
        "What's your current home address?",
    ),
}

# (entity type, template) pairs; prefixes end with a space, suffixes start with one.
PREFIXES = (
    ("PERSON", "Hi, this is {name}. "),
    ("PERSON", "Hello, my name is {name}. "),
    ("PERSON", "My name is {name}, "),
    ("PERSON", "Hi, I'm {name}. "),
    ("PERSON", "Hey there, {first} here. "),
    ("PERSON", "This is {name} again. "),
    ("EMAIL", "Hi, my email is {email}. "),
    ("EMAIL", "Account email {email}: "),
    ("PHONE", "My number is {phone}. "),
    ("PHONE", "Hi, I'm messaging from {phone}. "),
    ("ACCOUNT_NUMBER", "Re: account number {account}. "),
    ("ACCOUNT_NUMBER", "acct {account} - "),
    ("ADDRESS", "I live at {address}. "),
)
SUFFIXES = (
    ("PERSON", " Thanks, {first}"),
    ("PERSON", " - {name}"),
    ("PERSON", " Regards, {name}"),
    ("PERSON", " thanks {first}"),
    ("PERSON", " Cheers, {first}"),
    ("PERSON", " I'm {name} by the way."),
    ("EMAIL", " My email is {email}."),
    ("EMAIL", " You can email me at {email}."),
    ("EMAIL", " email: {email}"),
    ("PHONE", " Please call me on {phone}."),
    ("PHONE", " My phone number is {phone}."),
    ("PHONE", " You can reach me at {phone}."),
    ("CREDIT_CARD", " My card number is {card}."),
    ("CREDIT_CARD", " The card is {card}."),
    ("CREDIT_CARD", " card no {card}"),
    ("ACCOUNT_NUMBER", " My account number is {account}."),
    ("ACCOUNT_NUMBER", " acct {account}"),
    ("ACCOUNT_NUMBER", " Account no. {account}."),
    ("ADDRESS", " I live at {address}."),
    ("ADDRESS", " My address is {address}."),
    ("ADDRESS", " I'm at {address}."),
)
EXTRA_PII_REPLIES = {
    "EMAIL": ("sure, it's {email}", "{email}", "It's {email}."),
    "PHONE": ("{phone}", "you can call me on {phone}", "My mobile is {phone}."),
    "PERSON": ("{name}", "It's {name}.", "sure, {name}"),
    "ACCOUNT_NUMBER": ("it's {account}", "account number {account}", "acct {account}"),
    "ADDRESS": ("{address}", "It's {address}.", "I live at {address}"),
    "CREDIT_CARD": (
        "The card number is {card} if that helps.",
        "card is {card}",
        "Here is my card number: {card}",
    ),
}
EXTRA_PLAIN_REPLIES = (
    "ok thanks",
    "Thank you!",
    "Sure, take your time.",
    "ok",
    "That's all, thanks.",
    "How long will it take?",
    "Yes please.",
    "great, thank you",
    "Thanks, I'll wait.",
    "ok, please let me know asap",
    "Any update?",
    "Cool, appreciate it.",
)
EXTRA_DECLINES = ("I'd rather not share that here.", "Can we do this without that?")

ENTITY_WEIGHTS = {
    "PERSON": 0.35,
    "EMAIL": 0.18,
    "PHONE": 0.15,
    "CREDIT_CARD": 0.08,
    "ACCOUNT_NUMBER": 0.12,
    "ADDRESS": 0.12,
}
PLACEHOLDER_TYPES = {
    "name": "PERSON",
    "first": "PERSON",
    "email": "EMAIL",
    "phone": "PHONE",
    "card": "CREDIT_CARD",
    "account": "ACCOUNT_NUMBER",
    "address": "ADDRESS",
}
_PLACEHOLDER_RE = re.compile(r"\{(" + "|".join(PLACEHOLDER_TYPES) + r")\}")


def all_template_text() -> str:
    """Every literal string the builder can emit (used to keep PII tokens distinctive)."""
    parts: list[str] = []
    parts += GREETINGS + EMAIL_GREETINGS + AGENT_FOLLOWUPS + AGENT_FOLLOWUPS_NAMED
    for group in AGENT_REQUESTS.values():
        parts += group
    parts += [t for _, t in PREFIXES] + [t for _, t in SUFFIXES]
    for group in EXTRA_PII_REPLIES.values():
        parts += group
    parts += EXTRA_PLAIN_REPLIES + EXTRA_DECLINES
    return "\n".join(_PLACEHOLDER_RE.sub(" ", p) for p in parts)


# --------------------------------------------------------------------------------------
# Data loading
# --------------------------------------------------------------------------------------


def read_banking77_csv(path: Path) -> list[tuple[str, str]]:
    """Rows of ``(text, category)`` in file order; text kept exactly as in the CSV."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames != ["text", "category"]:
            raise ValueError(f"{path}: expected header text,category, got {reader.fieldnames}")
        return [(row["text"], row["category"]) for row in reader]


def read_categories(source: Path) -> list[str]:
    with open(source / "categories.json", encoding="utf-8") as fh:
        return list(json.load(fh))


def stratified_subset(
    rows: Sequence[tuple[str, str]], per_intent: int, rng: random.Random
) -> list[tuple[str, str]]:
    """Up to ``per_intent`` rows per category, sampled without replacement, file order kept."""
    by_cat: dict[str, list[int]] = defaultdict(list)
    for i, (_, cat) in enumerate(rows):
        by_cat[cat].append(i)
    keep: list[int] = []
    for cat in sorted(by_cat):
        idx = by_cat[cat]
        keep += idx if len(idx) <= per_intent else rng.sample(idx, per_intent)
    return [rows[i] for i in sorted(keep)]


# --------------------------------------------------------------------------------------
# Synthetic PII
# --------------------------------------------------------------------------------------


def luhn_valid(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    if len(digits) < 12:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


@dataclass
class Persona:
    locale: str
    first: str
    last: str
    email: str
    phone: str
    card: str
    account: str
    address: str


class PiiFactory:
    """Seeded generator of synthetic PII (Faker en_US + en_GB, plus ``random.Random``)."""

    def __init__(self, seed: int, protected_text: str):
        from faker import Faker  # imported lazily so the module imports without Faker

        self.rng = random.Random(seed * 1_000_003 + 1)
        self.fakers = {}
        for k, locale in enumerate(("en_US", "en_GB")):
            fk = Faker(locale)
            fk.seed_instance(seed * 1_000 + k)
            self.fakers[locale] = fk
        self.protected = protected_text.lower()
        self._name_ok: dict[str, bool] = {}

    # Names must be distinctive: alphabetic, >= 3 letters and not a substring of any text the
    # pipeline ships anyway (Banking77 utterances, templates, intent names). That way a scan
    # of downstream artifacts for the name tokens finds only real leaks.
    def _distinctive_name(self, name: str) -> bool:
        ok = self._name_ok.get(name)
        if ok is None:
            ok = name.isascii() and name.isalpha() and len(name) >= 3
            ok = ok and name.lower() not in self.protected
            self._name_ok[name] = ok
        return ok

    def _fresh(self, gen: Callable[[], str]) -> str:
        for _ in range(1000):
            value = gen()
            if value.lower() not in self.protected:
                return value
        raise RuntimeError("could not generate a distinctive PII value")

    def _name_part(self, fk, attr: str) -> str:
        for _ in range(1000):
            value = getattr(fk, attr)()
            if self._distinctive_name(value):
                return value
        raise RuntimeError("could not generate a distinctive name")

    def _email(self, fk, first: str, last: str) -> str:
        r = self.rng.random()
        if r < 0.45:
            sep = self.rng.choice((".", "_", ""))
            local = f"{first}{sep}{last}".lower()
            if self.rng.random() < 0.4:
                local += str(self.rng.randint(1, 99))
            return f"{local}@{fk.free_email_domain()}"
        if r < 0.6:
            return f"{first[0].lower()}{last.lower()}{self.rng.randint(1, 999)}@{fk.free_email_domain()}"
        return fk.free_email()

    def _phone(self, locale: str) -> str:
        rng = self.rng
        if locale == "en_US":
            area = rng.randint(201, 989)
            exch = rng.randint(200, 999)
            line = rng.randint(0, 9999)
            fmt = rng.choice(
                (
                    "({a}) {e}-{l:04d}",
                    "{a}-{e}-{l:04d}",
                    "{a}.{e}.{l:04d}",
                    "+1 {a} {e} {l:04d}",
                    "+1-{a}-{e}-{l:04d}",
                    "{a}{e}{l:04d}",
                )
            )
            return fmt.format(a=area, e=exch, l=line)
        fk = self.fakers["en_GB"]
        r = rng.random()
        if r < 0.45:
            return fk.phone_number()
        if r < 0.75:
            return fk.cellphone_number()
        # UK mobile written nationally, e.g. 07700 900123
        return f"07{rng.randint(100, 999)} {rng.randint(100000, 999999)}"

    def _card(self, fk) -> str:
        card_type = self.rng.choice(("visa16", "visa16", "mastercard", "mastercard", "amex", "discover"))
        for _ in range(100):
            number = fk.credit_card_number(card_type=card_type)
            if luhn_valid(number):
                break
        else:  # pragma: no cover - Faker always emits Luhn-valid numbers
            raise RuntimeError("Faker produced no Luhn-valid card number")
        sep = self.rng.choice((" ", " ", "-", ""))
        if len(number) == 15:  # amex 4-6-5
            groups = [number[:4], number[4:10], number[10:]]
        else:
            groups = [number[i : i + 4] for i in range(0, len(number), 4)]
        return sep.join(groups)

    def _account(self, locale: str) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.35:  # UK style 8 digits
            return "".join(str(rng.randint(0, 9)) for _ in range(8))
        if r < 0.6:  # 0012-4455-66 style
            d = "".join(str(rng.randint(0, 9)) for _ in range(10))
            return f"{d[:4]}-{d[4:8]}-{d[8:]}"
        if r < 0.85:  # US style 10-12 digits
            return "".join(str(rng.randint(0, 9)) for _ in range(rng.randint(10, 12)))
        iban = self.fakers["en_GB"].iban()  # GB IBAN, grouped in fours
        return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))

    def _address(self, locale: str) -> str:
        fk = self.fakers[locale]
        number = self.rng.randint(1, 2999) if locale == "en_US" else self.rng.randint(1, 199)
        street = f"{number} {fk.street_name()}"
        if locale == "en_US":
            if self.rng.random() < 0.2:
                street += f", Apt {self.rng.randint(1, 40)}{self.rng.choice('ABCD')}"
            state = fk.state_abbr(include_territories=False)
            return f"{street}, {fk.city()}, {state} {fk.zipcode_in_state(state)}"
        if self.rng.random() < 0.15:
            street = f"Flat {self.rng.randint(1, 30)}, {street}"
        return f"{street}, {fk.city()}, {fk.postcode()}"

    def persona(self) -> Persona:
        locale = "en_US" if self.rng.random() < 0.5 else "en_GB"
        fk = self.fakers[locale]
        first = self._name_part(fk, "first_name")
        last = self._name_part(fk, "last_name")
        return Persona(
            locale=locale,
            first=first,
            last=last,
            email=self._fresh(lambda: self._email(fk, first, last)),
            phone=self._fresh(lambda: self._phone(locale)),
            card=self._fresh(lambda: self._card(fk)),
            account=self._fresh(lambda: self._account(locale)),
            address=self._fresh(lambda: self._address(locale)),
        )


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


@dataclass
class TextBuilder:
    """Concatenates literal text and PII values, recording PII spans exactly."""

    parts: list[str] = field(default_factory=list)
    spans: list[tuple[str, str, int, int]] = field(default_factory=list)
    length: int = 0

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.length += len(text)

    def add_pii(self, entity_type: str, value: str) -> None:
        self.spans.append((entity_type, value, self.length, self.length + len(value)))
        self.add(value)

    def add_template(self, template: str, persona: Persona, lower: bool = False) -> list[str]:
        """Render ``template``; returns the placeholder names used."""
        used = []
        pos = 0
        for m in _PLACEHOLDER_RE.finditer(template):
            literal = template[pos : m.start()]
            self.add(literal.lower() if lower else literal)
            key = m.group(1)
            value = _placeholder_value(key, persona)
            self.add_pii(PLACEHOLDER_TYPES[key], value.lower() if lower else value)
            used.append(key)
            pos = m.end()
        tail = template[pos:]
        self.add(tail.lower() if lower else tail)
        return used

    @property
    def text(self) -> str:
        return "".join(self.parts)


def _placeholder_value(key: str, p: Persona) -> str:
    return {
        "name": f"{p.first} {p.last}",
        "first": p.first,
        "email": p.email,
        "phone": p.phone,
        "card": p.card,
        "account": p.account,
        "address": p.address,
    }[key]


def _weighted_type(rng: random.Random, exclude: Iterable[str] = ()) -> str:
    excl = set(exclude)
    types = [t for t in ENTITY_TYPES if t not in excl]
    return rng.choices(types, weights=[ENTITY_WEIGHTS[t] for t in types])[0]


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def render_conversations(
    rows: Sequence[tuple[str, str]], seed: int, protected_text: str
) -> tuple[list[dict], list[dict]]:
    """Render ``rows`` (text, intent) as conversations. Returns (messages, manifest)."""
    rng = random.Random(seed)
    pii = PiiFactory(seed, protected_text)

    order = list(range(len(rows)))
    rng.shuffle(order)
    starts = sorted(rng.randrange(LAST_START_SECONDS) for _ in order)

    messages: list[dict] = []
    manifest: list[dict] = []
    for conv_no, (row_idx, start_s) in enumerate(zip(order, starts)):
        utterance, intent = rows[row_idx]
        conv_id = f"b77-{conv_no:06d}"
        channel = rng.choices(CHANNELS, weights=(0.45, 0.3, 0.15, 0.1))[0]
        persona = pii.persona()
        ts = YEAR_START + timedelta(seconds=start_s)
        turns: list[tuple[str, TextBuilder, str]] = []  # speaker, builder, intent
        name_given = False

        # 1. agent greeting
        if rng.random() < P_GREETING:
            tb = TextBuilder()
            tb.add(rng.choice(EMAIL_GREETINGS if channel == "email" else GREETINGS))
            turns.append(("agent", tb, ""))

        # 2. labelled customer turn, original utterance kept intact
        tb = TextBuilder()
        prefix = suffix = None
        if rng.random() < P_LABELLED_PII:
            first_type = _weighted_type(rng)
            pre = [tpl for et, tpl in PREFIXES if et == first_type]
            suf = [tpl for et, tpl in SUFFIXES if et == first_type]
            if pre and (not suf or rng.random() < 0.45):
                prefix = rng.choice(pre)
            else:
                suffix = rng.choice(suf)
            if rng.random() < P_SECOND_PII:  # a second, different type on the other side
                pool = [
                    (et, tpl)
                    for et, tpl in (SUFFIXES if prefix is not None else PREFIXES)
                    if et != first_type
                ]
                no_template = set(ENTITY_TYPES) - {et for et, _ in pool}
                second_type = _weighted_type(rng, exclude={first_type} | no_template)
                tpl = rng.choice([t for et, t in pool if et == second_type])
                if prefix is None:
                    prefix = tpl
                else:
                    suffix = tpl
        lower = utterance == utterance.lower() or rng.random() < P_LOWERCASE
        if prefix is not None:
            # lower-cased PII sometimes (chat is often typed in lower case)
            used = tb.add_template(prefix, persona, lower=lower and rng.random() < 0.6)
            name_given |= bool({"name", "first"} & set(used))
        tb.add(utterance)
        if suffix is not None:
            used = tb.add_template(suffix, persona, lower=lower and rng.random() < 0.6)
            name_given |= bool({"name", "first"} & set(used))
        turns.append(("customer", tb, intent))

        # 3. optional agent follow-up and 4. optional extra (unlabelled) customer turn
        if rng.random() < P_AGENT_FOLLOWUP:
            extra = rng.random() < P_EXTRA_CUSTOMER
            extra_pii = extra and rng.random() < P_EXTRA_PII
            extra_type = _weighted_type(rng) if extra_pii else None
            agent = TextBuilder()
            declined = False
            if extra_type in AGENT_REQUESTS:
                if name_given and extra_type != "PERSON" and rng.random() < P_AGENT_USES_NAME:
                    agent.add("Thanks ")
                    agent.add_pii("PERSON", persona.first)
                    agent.add(". ")
                agent.add(rng.choice(AGENT_REQUESTS[extra_type]))
            elif extra and not extra_pii and rng.random() < 0.08:
                # agent asks for a detail, customer declines
                declined = True
                agent.add(rng.choice(AGENT_REQUESTS[rng.choice(sorted(AGENT_REQUESTS))]))
            elif name_given and rng.random() < P_AGENT_USES_NAME:
                agent.add_template(rng.choice(AGENT_FOLLOWUPS_NAMED), persona)
            else:
                agent.add(rng.choice(AGENT_FOLLOWUPS))
            turns.append(("agent", agent, ""))
            if extra:
                cust = TextBuilder()
                if extra_type is not None:
                    cust.add_template(
                        rng.choice(EXTRA_PII_REPLIES[extra_type]),
                        persona,
                        lower=rng.random() < P_LOWERCASE,
                    )
                elif declined:
                    cust.add(rng.choice(EXTRA_DECLINES))
                else:
                    cust.add(rng.choice(EXTRA_PLAIN_REPLIES))
                turns.append(("customer", cust, ""))

        for turn_no, (speaker, tb, turn_intent) in enumerate(turns):
            if turn_no:
                gap = rng.randint(600, 8 * 3600) if channel == "email" else rng.randint(5, 180)
                ts += timedelta(seconds=gap)
            text = tb.text
            messages.append(
                {
                    "conversation_id": conv_id,
                    "turn": turn_no,
                    "timestamp": _iso(ts),
                    "speaker": speaker,
                    "text": text,
                    "intent": turn_intent,
                    "channel": channel,
                }
            )
            for entity_type, value, s, e in tb.spans:
                assert text[s:e] == value
                manifest.append(
                    {
                        "conversation_id": conv_id,
                        "turn": turn_no,
                        "entity_type": entity_type,
                        "value": value,
                        "start": s,
                        "end": e,
                    }
                )
    return messages, manifest


# --------------------------------------------------------------------------------------
# Writing and statistics
# --------------------------------------------------------------------------------------


def _write_jsonl(path: Path, records: Iterable[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")))
            fh.write("\n")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_plain_labelled(
    source: Path,
    out_path: Path,
    intents: Sequence[str] = PLAIN_LABELLED_INTENTS,
    per_intent: int = PLAIN_LABELLED_PER_INTENT,
) -> int:
    """First ``per_intent`` test rows of each intent in ``intents`` as ``text,label`` CSV."""
    rows = read_banking77_csv(source / "test.csv")
    out: list[tuple[str, str]] = []
    for intent in intents:
        picked = [r for r in rows if r[1] == intent][:per_intent]
        if len(picked) < per_intent:
            raise ValueError(f"only {len(picked)} test rows for {intent}")
        out += picked
    with open(out_path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows(out)
    return len(out)


def compute_stats(messages: Sequence[dict], manifest: Sequence[dict]) -> dict:
    customer = [m for m in messages if m["speaker"] == "customer"]
    pii_turns = {(e["conversation_id"], e["turn"]) for e in manifest}
    customer_keys = {(m["conversation_id"], m["turn"]) for m in customer}
    agent_pii = [e for e in manifest if (e["conversation_id"], e["turn"]) not in customer_keys]
    return {
        "conversations": len({m["conversation_id"] for m in messages}),
        "messages": len(messages),
        "customer_turns": len(customer),
        "agent_turns": len(messages) - len(customer),
        "labelled_customer_turns": sum(1 for m in customer if m["intent"]),
        "unlabelled_customer_turns": sum(1 for m in customer if not m["intent"]),
        "intents": len({m["intent"] for m in customer if m["intent"]}),
        "customer_turns_with_pii": len(pii_turns & customer_keys),
        "agent_turns_with_pii": len(pii_turns - customer_keys),
        "pii_values": len(manifest),
        "pii_values_in_agent_turns": len(agent_pii),
        "pii_by_type": {t: c for t, c in sorted(Counter(e["entity_type"] for e in manifest).items())},
        "channels": dict(sorted(Counter(m["channel"] for m in messages if m["turn"] == 0).items())),
    }


def _taxonomy_text() -> str:
    """Text of the shipped taxonomy files (intent names and descriptions), if present.

    Synthetic names are kept out of any text the pipeline ships on purpose, so that a scan
    of downstream artifacts for name tokens only finds real leaks.
    """
    if not TAXONOMY_DIR.is_dir():
        return ""
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(TAXONOMY_DIR.glob("*.json")))


def build(source: Path, out: Path, seed: int = DEFAULT_SEED, per_intent: int | None = None) -> dict:
    """Build every sample file from the Banking77 folder ``source`` into ``out``."""
    source, out = Path(source), Path(out)
    train = read_banking77_csv(source / "train.csv")
    test = read_banking77_csv(source / "test.csv")
    categories = read_categories(source)
    unknown = {c for _, c in train} - set(categories)
    if unknown:
        raise ValueError(f"train.csv has categories missing from categories.json: {sorted(unknown)}")

    rows = train if per_intent is None else stratified_subset(train, per_intent, random.Random(seed + 1))
    protected = "\n".join(
        [t for t, _ in train] + [t for t, _ in test] + categories + [all_template_text(), _taxonomy_text()]
    )
    messages, manifest = render_conversations(rows, seed, protected)

    out.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out / CHAT_LOG_FILE, messages)
    _write_jsonl(out / MANIFEST_FILE, manifest)
    write_plain_labelled(source, out / PLAIN_LABELLED_FILE)
    shutil.copyfile(source / "LICENSE", out / LICENSE_FILE)
    stats = compute_stats(messages, manifest)
    stats.update({"seed": seed, "per_intent": per_intent, "source_rows": len(rows)})
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m intent_assets.data.sample_data",
        description="Render Banking77 as support chat logs with synthetic PII (reproducible).",
    )
    parser.add_argument("--source", type=Path, required=True, help="Banking77 folder (train.csv, test.csv, categories.json, LICENSE)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    parser.add_argument("--per-intent", type=int, default=None, help="stratified subset: at most N training rows per intent (default: all rows)")
    args = parser.parse_args(argv)
    if args.per_intent is not None and args.per_intent < 1:
        parser.error("--per-intent must be >= 1")
    stats = build(args.source, args.out, seed=args.seed, per_intent=args.per_intent)
    json.dump(stats, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
