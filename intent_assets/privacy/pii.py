"""Redaction of personal data in customer-support chat messages (plain module, no Dagster import).

    >>> r = redact("Hi, I'm John Smith, card 4111 1111 1111 1111")
    >>> r.text
    "Hi, I'm {{PERSON}}, card {{CREDIT_CARD}}"

Every detected span is replaced by a typed placeholder ``{{TYPE}}`` (``TYPE`` in :data:`ENTITY_TYPES`).
:class:`Span` offsets always refer to the *original* text; spans are sorted and never overlap.
A span records which detector fired (``Span.detector``) but never the value, so spans and
:attr:`Redaction.counts` can go into logs and metadata.

Engine: scrubadub's default detectors (one lazily built ``Scrubber`` per process; its url
detector is dropped) plus the project's regex / context detectors below. All candidate spans
are merged: the longest span wins; on equal length a fixed detector rank decides (validated
patterns such as Luhn cards and IBANs first, then cue-based detectors, plain patterns, names,
bare digit runs). Text that is already a placeholder (``{{EMAIL}}``) is never detected again,
so redaction is idempotent.

Detectors (``Span.detector`` names):

* ``scrubadub.email`` / ``scrubadub.phone`` / ``scrubadub.credit_card`` /
  ``scrubadub.social_security_number`` / ``scrubadub.credential`` / ``scrubadub.twitter``:
  scrubadub's detectors. Its e-mail hits must contain ``@`` (its ``x at y`` form fires on
  plain English such as "working at all"), its credit-card hits must pass the Luhn check, and
  its credential hit ("username: x password: y") is split into USERNAME and PASSWORD (only the
  first password token, not the rest of the line). Twitter handles (``@jdoe``) -> USERNAME.
* ``luhn_card``: 13-19 digits, unseparated or in groups of >= 3 digits separated by single spaces or
  dashes (4-4-4-4, Amex 4-6-5), Luhn-valid and starting with an issuer digit 2-6 (Visa, Mastercard,
  Amex, Discover, JCB, Diners, UnionPay). Other 13-19 digit runs fall to ``long_digits``.
* ``iban``: country code + 2 check digits + BBAN of that country's length, spaces/dashes
  between characters allowed, mod-97 checked.
* ``ssn`` (ddd-dd-dddd, ddd dd dddd) and ``ssn_cue`` (9 digits after "ssn" / "social security").
* ``phone_intl`` (+44 20 7946 0958, 0049 30 1234567, +44 (0)20 ...), ``phone_nanp``
  ((555) 123-4567, 555.123.4567, 1-800-555-0199), ``phone_national`` (07700 900123,
  (0161) 4960066, 020 7946 0958) and ``phone_cue`` (7-15 digits after "phone", "mobile",
  "my number is", "call me on", "reach me at" ...).
* ``email_obfuscated``: "john at example dot com", "john[at]example[dot]com", "j (at) x (dot) org".
  The plain-word form "x at y.com" needs a "dot" word or a local part with a digit, dot or
  underscore, so "bought it at amazon.com" is left alone.
* ``account_cue`` (-> ACCOUNT_NUMBER: "account number 12345678", "acct no: GB-99812",
  "sort code 12-34-56") and ``id_cue`` (-> ID: order / reference / customer / claim / policy /
  booking / transaction / ticket / case / invoice / tracking / member ... numbers). The value must
  contain a digit and at least 4 characters and must not be an amount ("transaction 1000 euros").
* ``long_digits``: any other run of >= 8 digits, unseparated or in groups of >= 3 digits (the last
  group may have 2: "5982-7430-64"); dates and times never qualify -> ACCOUNT_NUMBER.
* ``address``: house number + 1-3 street-name words + a street suffix (the USPS list Faker ships
  plus st, rd, ave, ln, dr, blvd ...), optionally "Flat 3," before and apt/unit, city, state and
  ZIP / UK postcode after. Core suffixes (street, road, avenue, lane, drive ...) work in any case;
  other suffixes ("Vista", "Way", "Club") need Title Case words or a following ZIP / postcode.
  ``po_box``: "PO Box 1234".
* ``zip_cue`` ("zip 90210", "postcode SW1A 1AA"), ``zip_state`` (US ZIP after a state
  abbreviation or name), ``uk_postcode`` (an upper-case UK postcode "SW1A 1AA") -> ZIP_CODE.
* ``username_cue`` / ``password_cue`` / ``pin_cue``: the token after "username", "login",
  "user id" / "password", "passcode", "pwd" / "pin" (4-8 digits) -> USERNAME / PASSWORD. Without
  ":" or "=" ("login issues", "password is wrong") the value must have a digit or symbol or not be
  an English word.
* Names (-> PERSON), with a first/last-name gazetteer from Faker's person providers (en_US,
  en_GB and a few other locales) filtered against an English lexicon (TextBlob's Brill lexicon,
  shipped with scrubadub's dependencies) so that "will", "mark", "grace" in lower case are not
  taken for names:
  ``name_cue``: after "my name is", "name:", "cardholder", "name on the card is", "surname";
  "call me", "Mr/Mrs/Ms/Dr", "my brother/wife/friend/landlord ..."; and "I'm / I am / im",
  "this is", "it's" (only before a gazetteer name or two capitalised non-English words, so
  "I am waiting" is safe). Up to 4 tokens; an ambiguous lower-case name needs a clear surname
  after it ("dawn henry") or the end of the message.
  ``name_signoff``: "Thanks, X Y", "regards, X", "cheers X", "Hi X", "- X Y" at the end, "X here".
  ``name_vocative``: ", Rosie." (a capitalised first name between a comma and sentence end).
  ``name_bigram``: a capitalised known first name followed by a capitalised surname anywhere.
  ``name_only``: a message that is nothing but a name ("Rosie Thompson", "sure, rosie thompson").

Wide-coverage detectors for chat-style text (lower case, punctuation stripped, values typed as bare replies to an
agent's question). They only fill gaps: a span of a precise detector above is never replaced by one of these.

* ``phone_groups``: 7-15 digits in 2-5 groups ("78 651 450", "71-33-52-22", "+1-903-140-4508x769"), not a
  date -> PHONE.
* ``number``: a standalone run of >= 4 digits ("8986776", "ssn is 8547") that is no amount ("25000 rupees"),
  no year after "in/since/March", no date or time and no card last-4 -> ACCOUNT_NUMBER.
* ``code``: 2-8 adjacent short tokens mixing letters and digits ("gt 67 g 6", "254 e 15", "kjl 486") or one
  mixed token of >= 4 characters ("f6el23") -> ID. English words end the run.
* ``email_squashed``: "vickygold 3003 gmailcom", "rosygmailcom" (mail host glued to com/net/org/in) -> EMAIL.
* ``address_cue``: the clause after "address is", "lives at", "sent to", "moved to" ... when it holds a digit or
  a street word; ``address_chat``: "no 33 kamaraj street kinder garden fl" (house number, street word,
  then up to 6 words of city/state/zip); ``address_euro``: "Pivovarská 276", "2035 Gewerbepark 45 Apt. 815,
  Brú, Iceland 82407" (capitalised street words around a house number, with unit/city/country/postcode tail).
* ``name_gazetteer``: a word from a wide gazetteer (first and last names of ~50 Latin-script Faker locales and
  common transliterated Indian names, minus English words, street words and chat interjections), plus the
  next name-like word; in mixed-case text only capitalised words count, lower-case names only in lower-cased
  text; never after "in/at/from/to". Also a short reply made only of 1-3 unknown words ("santosh korpade").

Measured recall and precision per type: ``bench/pii_eval.py`` and BENCHMARKS.md ("PII redaction").

Not redacted on purpose: amounts, dates, times, card last-4 mentions ("card ending 1234").
"""

from __future__ import annotations

import bisect
import functools
import importlib
import importlib.util
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ENTITY_TYPES", "Span", "Redaction", "find_pii", "redact", "redact_many"]

ENTITY_TYPES: tuple[str, ...] = (
    "PERSON", "EMAIL", "PHONE", "CREDIT_CARD", "SSN", "IBAN", "ACCOUNT_NUMBER",
    "ADDRESS", "ZIP_CODE", "ID", "USERNAME", "PASSWORD",
)
_ENTITY_SET = frozenset(ENTITY_TYPES)


@dataclass(frozen=True, slots=True)
class Span:
    """One redacted span: ``text[start:end]`` of the original text was ``entity_type``, found by ``detector``."""

    start: int
    end: int
    entity_type: str
    detector: str

    def __post_init__(self) -> None:
        if self.entity_type not in _ENTITY_SET:
            raise ValueError(f"unknown entity type {self.entity_type!r}")
        if not 0 <= self.start < self.end:
            raise ValueError(f"bad span offsets {self.start}..{self.end}")


@dataclass(frozen=True, slots=True)
class Redaction:
    """Redacted ``text`` and the ``spans`` (offsets in the original text) that were replaced."""

    text: str
    spans: tuple[Span, ...]

    @property
    def counts(self) -> dict[str, int]:
        """Number of spans per entity type (only types that occur, in :data:`ENTITY_TYPES` order)."""
        found: dict[str, int] = {}
        for s in self.spans:
            found[s.entity_type] = found.get(s.entity_type, 0) + 1
        return {t: found[t] for t in ENTITY_TYPES if t in found}


# --------------------------------------------------------------------------------------
# Detector ranks: on equal span length the lower rank wins.
# --------------------------------------------------------------------------------------
_RANK = {
    "luhn_card": 0, "scrubadub.credit_card": 0, "iban": 1,
    "ssn_cue": 2, "phone_cue": 2, "account_cue": 2, "id_cue": 2, "password_cue": 2, "pin_cue": 2,
    "username_cue": 2, "zip_cue": 2, "scrubadub.credential": 2,
    "scrubadub.email": 3, "email": 3, "email_obfuscated": 3,
    "ssn": 4, "scrubadub.social_security_number": 4,
    "phone_intl": 5, "phone_nanp": 5, "phone_national": 5, "scrubadub.phone": 5,
    "address": 6, "po_box": 6, "zip_state": 6, "uk_postcode": 6,
    "name_cue": 7, "name_signoff": 7, "name_vocative": 7, "name_only": 7, "name_bigram": 8,
    "scrubadub.twitter": 9, "long_digits": 10,
    "email_squashed": 3, "address_cue": 6, "address_euro": 6, "address_chat": 6, "address_block": 6, "address_military": 6, "name_gazetteer": 8, "number": 11, "code": 11,
}

_PLACEHOLDER_RE = re.compile(r"\{\{[A-Z_]+\}\}")
_HAS_DIGIT = re.compile(r"\d")

# --------------------------------------------------------------------------------------
# scrubadub (one Scrubber per process, built on first use)
# --------------------------------------------------------------------------------------
_SCRUBBER = None
_SCRUBBER_LOCK = threading.Lock()
_SCRUBADUB_TYPES = {
    "email": "EMAIL", "phone": "PHONE", "credit_card": "CREDIT_CARD",
    "social_security_number": "SSN", "twitter": "USERNAME", "credential": None,
}


def _scrubber():
    global _SCRUBBER
    if _SCRUBBER is None:
        with _SCRUBBER_LOCK:
            if _SCRUBBER is None:
                import scrubadub

                s = scrubadub.Scrubber(locale="en_US")
                for name in list(s._detectors):  # noqa: SLF001 (no public listing)
                    if name not in _SCRUBADUB_TYPES:
                        s.remove_detector(name)  # url: not personal data by itself
                _SCRUBBER = s
    return _SCRUBBER


def _credential_regex():
    from scrubadub.detectors.credential import CredentialDetector

    return CredentialDetector.regex


# scrubadub's detectors all need one of these (email/twitter "@", phone/card/SSN digits, credential
# "username|login|u:"); skipping it otherwise gives the same result, faster.
_SCRUBADUB_GATE = re.compile(r"[\d@]|username|login|u:", re.I)


def _det_scrubadub(text: str, out: list) -> None:
    """scrubadub's detectors, with the validation described in the module docstring."""
    if not _SCRUBADUB_GATE.search(text):
        return
    for f in _scrubber().iter_filth(text, run_post_processors=False):
        for filth in getattr(f, "filths", None) or (f,):
            name = filth.detector_name
            beg, end = filth.beg, filth.end
            det = "scrubadub." + str(name)
            if name == "email":
                if "@" in text[beg:end]:
                    out.append((beg, end, "EMAIL", det))
            elif name == "credit_card":
                if _luhn_ok(re.sub(r"\D", "", text[beg:end])):
                    out.append((beg, end, "CREDIT_CARD", det))
            elif name == "credential":
                m = _credential_regex().match(text, beg)
                if m is None:
                    continue
                if m.group("username") and _value_ok(m.group("username"), loose=False):
                    out.append((m.start("username"), m.end("username"), "USERNAME", det))
                pw = _FIRST_TOKEN.match(text, m.start("password"), m.end("password"))
                if pw and _value_ok(pw.group(), loose=False):
                    out.append((pw.start(), pw.end(), "PASSWORD", det))
            elif name in _SCRUBADUB_TYPES:
                out.append((beg, end, _SCRUBADUB_TYPES[name], det))


# --------------------------------------------------------------------------------------
# Word lists (built on first use): name gazetteer and an English lexicon
# --------------------------------------------------------------------------------------
_NAME_LOCALES = ("en_US", "en_GB", "en_IE", "en_IN", "en_NZ", "es_ES", "fr_FR", "de_DE", "it_IT", "pt_BR")

# Never names / street words / values, whatever the gazetteer says.
_BLOCK = frozenset("""
i me my mine you your yours we us our they them their he him his she her it its this that these those
a an the and or but so if then than to of in on at by for from with about as into over after before
is am are was were be been being do does did done have has had will would can could should shall may
might must not no yes ok okay please pls thanks thank thx hi hello hey dear sir madam again here there
also just still too very really all any some every each new now today tomorrow yesterday sorry
card cards bank account accounts money cash atm pin app visa mastercard amex paypal euro euros dollar
dollars pound pounds usd eur gbp uk us eu usa team support customer service help what why how when
where which who whom whose waiting trying unable able going looking
password passwords passcode passwd username login logins details email code number id online
monday tuesday wednesday thursday friday saturday sunday
""".split())

_FALLBACK_COMMON = """
about above account add address after again against ago all also always amount another any app
arrive arrived back bad balance bank before best between bill black blue brown buy call can card
cash change charge charged check close code cost could credit date day days debit did different
do done down early east end euro every extra fee find first free fund get give go good great green
happen have help high hold home hope how just keep kind know last late left like limit line little
long look lost main make many mark may mean money more most much need new next north number old
only open order other out over own paid park pay payment place please point rate read real receive
refund right road rose round same send set show side small south still stop street sure take than
that then there this time top transfer true try turn under up use very wait want way week west white
why will with work would wrong year young
""".split()


@functools.cache
def _lexicon() -> tuple[frozenset, frozenset, frozenset, frozenset, frozenset]:
    """(first names, last names, all names, ambiguous names, common English words), lower case."""
    first: set[str] = set()
    last: set[str] = set()
    for loc in _NAME_LOCALES:
        try:
            prov = importlib.import_module(f"faker.providers.person.{loc}").Provider
        except Exception:  # pragma: no cover - locale missing in another Faker version
            continue
        for attr, bucket in (("first_names", first), ("first_names_male", first), ("first_names_female", first),
                             ("last_names", last)):
            for n in getattr(prov, attr, ()) or ():
                for part in re.split(r"[\s\-]+", str(n)):
                    if len(part) >= 2 and part.isalpha():
                        bucket.add(part.lower())
    common: set[str] = set()
    try:
        spec = importlib.util.find_spec("textblob")  # locate only: importing textblob pulls in nltk (slow)
        if spec is None or spec.origin is None:
            raise FileNotFoundError("textblob")
        path = Path(spec.origin).parent / "en" / "en-lexicon.txt"
        tags: dict[str, set[str]] = {}
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(";;;"):
                    continue
                parts = line.split()
                if len(parts) >= 2 and parts[0].isalpha():
                    tags.setdefault(parts[0], set()).add(parts[1])
        for word, ts in tags.items():
            if ts - {"NNP", "NNPS"}:  # used as an ordinary word (lower case, or an adjective like "Canadian")
                common.add(word.lower())
    except Exception:  # pragma: no cover - textblob absent: fall back to a small list
        try:
            from faker.providers.lorem.en_US import Provider as Lorem

            common.update(w.lower() for w in Lorem.word_list)
        except Exception:
            pass
        common.update(_FALLBACK_COMMON)
    common |= _BLOCK | _NOT_NAMES
    first -= _BLOCK
    last -= _BLOCK
    names = first | last
    # Names that are also ordinary words; a few clear first names stay unambiguous.
    ambiguous = (names & common) - _CLEAR_NAMES
    return frozenset(first), frozenset(last), frozenset(names), frozenset(ambiguous), frozenset(common)


# Months and nationality/language words: names only when capitalised ("June Doyle"), never "april 1".
_NOT_NAMES = frozenset("""
january february march april may june july august september october november december
english french spanish german italian dutch british american canadian irish scottish welsh indian chinese
japanese korean polish portuguese russian turkish greek swiss swedish danish norwegian mexican brazilian
""".split())

_CLEAR_NAMES = frozenset("""
john peter william harry charlotte maria lucy tony louis graham donna bobby eva victor warren hugh derrick
dustin sally terry teddy sherry dean brad gene glen ken lacey lana maya angelica shea sienna darin
""".split())


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------
def _luhn_ok(digits: str) -> bool:
    if not digits:
        return False
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = ord(ch) - 48
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


_FIRST_TOKEN = re.compile(r"[^\s]+?(?=[.,;:!?)\"']*(?:\s|$))")
_WORD_WITH_APOSTROPHE = re.compile(r"^[^\W\d_]*['’][^\W\d_]*$")
_VALUE_SYMBOL = re.compile(r"[\d_@#$%^&*+=!?.\-]")


def _value_ok(value: str, loose: bool) -> bool:
    """Is ``value`` (after a username/password cue) plausibly a credential, not an English word?"""
    if not value or value.startswith("{{"):
        return False
    low = value.lower()
    if low in _BLOCK:
        return False
    if _WORD_WITH_APOSTROPHE.match(value):  # "doesn't", "won't": English, not a secret
        return False
    if loose:  # an explicit "username: x" / "password = x"
        return True
    if _VALUE_SYMBOL.search(value):
        return True
    return low not in _lexicon()[4]


def _is_title(tok: str) -> bool:
    return tok[:1].isupper() and not (len(tok) > 1 and tok.isupper())


# --------------------------------------------------------------------------------------
# Cards, IBANs, SSNs, long digit runs
# --------------------------------------------------------------------------------------
_DIGIT_RUN = re.compile(r"(?<![\w.,$£€¥])\d+(?:[ -]\d+)*(?![\w]|[.,]\d)")
_DIGIT_GROUP = re.compile(r"\d+")


def _det_digit_runs(text: str, out: list) -> None:
    """``luhn_card`` and ``long_digits`` over runs of digit groups separated by single spaces/dashes."""
    for run in _DIGIT_RUN.finditer(text):
        groups = [(g.start(), g.end()) for g in _DIGIT_GROUP.finditer(text, run.start(), run.end())]
        n = len(groups)
        used = [False] * n
        # Luhn-valid card numbers: the longest window of whole groups (>= 3 digits each) with 13-19 digits.
        i = 0
        while i < n:
            best = -1
            digits = ""
            if text[groups[i][0]] in "23456":
                for j in range(i, n):
                    a, b = groups[j]
                    if b - a < 3:
                        break
                    digits += text[a:b]
                    if len(digits) > 19:
                        break
                    if len(digits) >= 13 and _luhn_ok(digits):
                        best = j
            if best >= 0:
                out.append((groups[i][0], groups[best][1], "CREDIT_CARD", "luhn_card"))
                for k in range(i, best + 1):
                    used[k] = True
                i = best + 1
            else:
                i += 1
        # Long digit runs: maximal stretches of unused groups.
        i = 0
        while i < n:
            if used[i]:
                i += 1
                continue
            if groups[i][1] - groups[i][0] >= 8:
                out.append((groups[i][0], groups[i][1], "ACCOUNT_NUMBER", "long_digits"))
            # groups of >= 3 digits, the last one may have 2 ("5982-7430-64"); dates and times never qualify
            j = i
            while j < n and not used[j] and groups[j][1] - groups[j][0] >= 3:
                j += 1
            end_j = j + 1 if j < n and not used[j] and groups[j][1] - groups[j][0] == 2 else j
            if end_j - i >= 2 and sum(b - a for a, b in groups[i:end_j]) >= 8:
                out.append((groups[i][0], groups[end_j - 1][1], "ACCOUNT_NUMBER", "long_digits"))
            i = max(j, i + 1)


_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])([A-Za-z]{2})(\d{2})")


def _det_iban(text: str, out: list) -> None:
    """``iban``: known country code, exact national length, mod-97 == 1; single spaces/dashes allowed."""
    n = len(text)
    pos = 0
    while True:
        m = _IBAN_START.search(text, pos)
        if m is None:
            return
        pos = m.start() + 1
        country = m.group(1).upper()
        length = _IBAN_LENGTHS.get(country)
        if length is None:
            continue
        chars = [country, m.group(2)]
        need = length - 4
        i = m.end()
        while need and i < n:
            c = text[i]
            if c.isascii() and c.isalnum():
                chars.append(c.upper())
                need -= 1
                i += 1
            elif c in " -" and i + 1 < n and text[i + 1].isascii() and text[i + 1].isalnum():
                i += 1
            else:
                break
        if need or (i < n and text[i].isalnum()):
            continue
        iban = "".join(chars)
        rearranged = iban[4:] + iban[:4]
        if not any(ch.isdigit() for ch in iban[4:]):
            continue
        try:
            if int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 != 1:
                continue
        except ValueError:
            continue
        out.append((m.start(), i, "IBAN", "iban"))
        pos = i


_SSN_RE = re.compile(r"(?<![\w-])\d{3}([- ])\d{2}\1\d{4}(?![\w]|-\d)")
_SSN_CUE = re.compile(
    r"\b(?:ssn|ss\#|social\s+security(?:\s+(?:number|num|no|\#))?)\.?[ \t]*(?:is|:|\#|=|-)?[ \t]*"
    r"(\d{3}[- .]?\d{2}[- .]?\d{4})(?![\w]|-\d)", re.I)


def _det_ssn(text: str, out: list) -> None:
    """``ssn`` (ddd-dd-dddd / ddd dd dddd) and ``ssn_cue`` (9 digits after "ssn" / "social security")."""
    for m in _SSN_RE.finditer(text):
        out.append((m.start(), m.end(), "SSN", "ssn"))
    for m in _SSN_CUE.finditer(text):
        out.append((m.start(1), m.end(1), "SSN", "ssn_cue"))


# --------------------------------------------------------------------------------------
# Phones
# --------------------------------------------------------------------------------------
_PHONE_INTL = re.compile(r"(?<![\w+])(?:\+|00)[ ]?\d{1,3}(?:[ .-]?\(0\))?(?:[ .-]?\(?\d{1,5}+\)?){1,6}+(?![\w])")
_PHONE_NANP = re.compile(
    r"(?<![\w+])(?:1[ .-]?)?(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}"
    r"(?:[ ]?(?:x|ext\.?)[ ]?\d{1,5})?(?![\w]|[.-]\d)")
_PHONE_NATIONAL = re.compile(r"(?<![\w+])(?:\(0\d{2,4}\)|0\d{1,4})(?:[ .-]?\d{2,4}+){1,4}+(?![\w]|[.-]\d)")
_PHONE_CUE = re.compile(
    r"\b(?:(?:phone|mobile|cell|cellphone|tel|telephone|landline|contact|whatsapp)(?:[ \t]+(?:number|num|no|\#))?"
    r"|my[ \t]+number|(?:call|text|reach|ring|phone|contact)[ \t]+me(?:[ \t]+(?:on|at))?|messaging[ \t]+from"
    r"|calling[ \t]+from)\b\.?[ \t]*(?:(?:is|was)\b|:|\#|=|-)?\s{0,3}(\+?\(?\d[\d ().-]{5,20}\d)(?![\w])", re.I)


def _digits(s: str) -> int:
    return sum(c.isdigit() for c in s)


def _det_phone(text: str, out: list) -> None:
    """``phone_intl``, ``phone_nanp``, ``phone_national`` and ``phone_cue`` (see module docstring)."""
    for m in _PHONE_INTL.finditer(text):
        if 8 <= _digits(m.group()) <= 15:
            out.append((m.start(), m.end(), "PHONE", "phone_intl"))
    for m in _PHONE_NANP.finditer(text):
        out.append((m.start(), m.end(), "PHONE", "phone_nanp"))
    for m in _PHONE_NATIONAL.finditer(text):
        if 9 <= _digits(m.group()) <= 12:
            out.append((m.start(), m.end(), "PHONE", "phone_national"))
    for m in _PHONE_CUE.finditer(text):
        if 7 <= _digits(m.group(1)) <= 15:
            out.append((m.start(1), m.end(1), "PHONE", "phone_cue"))


# --------------------------------------------------------------------------------------
# Obfuscated e-mails
# --------------------------------------------------------------------------------------
_OBF_AT = r"(?:[ \t]*(?:\[at\]|\(at\)|\{at\}|<at>|\[@\]|\(@\))[ \t]*|[ \t]+at[ \t]+|[ \t]*@[ \t]*)"
_OBF_DOT = r"(?:[ \t]*(?:\[dot\]|\(dot\)|\{dot\}|<dot>|\[\.\]|\(\.\))[ \t]*|[ \t]+dot[ \t]+|\.)"
_TLDS = (r"com|net|org|edu|gov|mil|io|co|uk|us|ca|au|nz|ie|de|fr|es|it|nl|be|ch|at|se|no|dk|fi|pl|pt|"
         r"ru|in|jp|cn|br|mx|za|eu|info|biz|me|tv|app|dev|ai|email|mail")
_EMAIL_OBF = re.compile(
    r"(?<![\w.%+-])(?P<local>[a-z0-9][a-z0-9._%+-]{0,63}(?:" + _OBF_DOT + r"[a-z0-9_%+-]{1,64}){0,3})"
    r"(?P<at>" + _OBF_AT + r")"
    r"(?P<domain>[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:" + _OBF_DOT + r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?){0,4}"
    + _OBF_DOT + r"(?:" + _TLDS + r"))(?![\w@])", re.I)
_EMAIL_PLAIN = re.compile(
    r"(?<![\w.%+-])[a-z0-9](?:[a-z0-9._%+-]{0,62}[a-z0-9_%+-])?@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
    r"(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?){0,6}\.[a-z]{2,24}(?![\w@])", re.I)
_EMAIL_PREFILTER = re.compile(r"@|\bat\b|\[at\]|\(at\)", re.I)


def _det_email_obfuscated(text: str, out: list) -> None:
    """``email_obfuscated``: "at"/"dot" spelt out or bracketed (plain "x@y.z" is scrubadub's)."""
    if "@" in text:
        for m in _EMAIL_PLAIN.finditer(text):
            out.append((m.start(), m.end(), "EMAIL", "email"))
    if not _EMAIL_PREFILTER.search(text):
        return
    for m in _EMAIL_OBF.finditer(text):
        at = m.group("at").strip().lower()
        body = m.group()
        if at == "at":  # plain word: demand more evidence than English prose gives
            local = m.group("local")
            if not (re.search(r"\bdot\b|\[dot\]|\(dot\)", body, re.I) or re.search(r"[\d._]", local)):
                continue
        elif at == "@" and " " not in body and "\t" not in body and not re.search(r"dot", body, re.I):
            continue  # an ordinary address: ``email``
        out.append((m.start(), m.end(), "EMAIL", "email_obfuscated"))


# --------------------------------------------------------------------------------------
# Account numbers and other IDs after cue words
# --------------------------------------------------------------------------------------
_UNITS = (r"(?:euros?|eur|dollars?|usd|pounds?|gbp|quid|bucks|cents?|pence|p|k|%|percent|days?|weeks?|"
          r"months?|years?|hours?|hrs?|minutes?|mins?|seconds?|times?|am|pm)")
_VALUE = (r"(?<![$£€¥])(?P<value>[A-Za-z0-9]{1,24}(?:[-/][A-Za-z0-9]{1,12}){0,5}(?:[ ]\d{3,12}){0,5})"
          r"(?![\w$£€%]|[.,]\d|[ \t]*" + _UNITS + r"\b)")
_CUE_SEP = r"\b\.?[ \t]*(?:is\b|:|\#|=|-|–)?[ \t]*(?:\#[ \t]*)?"
_ACCOUNT_CUE = re.compile(
    r"\b(?:(?:bank[ \t]+)?(?:account|acct|acc|a/c)\.?(?:[ \t]*(?:number|num|nr|no|\#|id))?"
    r"|sort[ \t]+code|routing[ \t]+(?:number|no)|iban)" + _CUE_SEP + _VALUE, re.I)
_ID_CUE = re.compile(
    r"\b(?:order|reference|ref|customer|client|member(?:ship)?|claim|policy|booking|transaction|txn|"
    r"confirmation|ticket|case|invoice|tracking|receipt|passport|(?:driver'?s?[ \t]+)?licen[cs]e|"
    r"national[ \t]+insurance|employee|student|id)"
    r"\.?(?:[ \t]*(?:number|num|nr|no|\#|id|code|ref))?" + _CUE_SEP + _VALUE, re.I)


def _id_value_ok(v: str) -> bool:
    alnum = sum(c.isalnum() for c in v)
    return alnum >= 4 and _HAS_DIGIT.search(v.split(" ", 1)[0]) is not None


def _det_ids(text: str, out: list) -> None:
    """``account_cue`` -> ACCOUNT_NUMBER and ``id_cue`` -> ID (value needs a digit and >= 4 characters)."""
    for regex, etype, det in ((_ACCOUNT_CUE, "ACCOUNT_NUMBER", "account_cue"), (_ID_CUE, "ID", "id_cue")):
        for m in regex.finditer(text):
            v = m.group("value")
            if _id_value_ok(v):
                out.append((m.start("value"), m.end("value"), etype, det))


# --------------------------------------------------------------------------------------
# Usernames, passwords, PINs
# --------------------------------------------------------------------------------------
_USER_CUE = re.compile(
    r"\b(?:user[ \t]*name|user[ \t]*id|userid|log[ \t-]?in(?:[ \t]+(?:name|id))?|screen[ \t]*name|handle"
    r"|user(?=[ \t]*[:=]))"
    r"(?P<sep>[ \t]*(?:(?:is|was)\b|:|=|-)?[ \t]*)(?P<value>[\w.@+\-]{2,64})", re.I)
_PASS_CUE = re.compile(
    r"\b(?:pass[ \t]*word|passwd|pwd|pass[ \t]*code|pass[ \t]*phrase|pw(?=[ \t]*[:=]))"
    r"(?P<sep>[ \t]*(?:(?:is|was)\b|:|=|-)?[ \t]*)(?P<value>[^\s]{1,64})", re.I)
_PIN_CUE = re.compile(r"\bpin(?:[ \t]*(?:code|number|no))?[ \t]*(?:is|was|:|=)?[ \t]*(\d{4,8})(?![\w]|[.,]\d)", re.I)
_TRAIL_PUNCT = ".,;!?)\"'"


def _det_credentials(text: str, out: list) -> None:
    """``username_cue``, ``password_cue`` and ``pin_cue`` (-> PASSWORD)."""
    for regex, etype, det in ((_USER_CUE, "USERNAME", "username_cue"), (_PASS_CUE, "PASSWORD", "password_cue")):
        for m in regex.finditer(text):
            loose = any(c in m.group("sep") for c in ":=")
            # after "password:" the whole token is the secret ("hunter2!"); otherwise drop sentence punctuation
            value = m.group("value") if loose and etype == "PASSWORD" else m.group("value").rstrip(_TRAIL_PUNCT)
            if _value_ok(value, loose):
                out.append((m.start("value"), m.start("value") + len(value), etype, det))
    for m in _PIN_CUE.finditer(text):
        out.append((m.start(1), m.end(1), "PASSWORD", "pin_cue"))


# --------------------------------------------------------------------------------------
# Addresses and postcodes
# --------------------------------------------------------------------------------------
_CORE_SUFFIXES = frozenset("""
street streets st road roads rd avenue ave av lane ln drive drives dr boulevard blvd highway hwy terrace
crescent cres parkway pkwy turnpike expressway freeway motorway
""".split())
_EXTRA_SUFFIXES = """alley branch bridge brook brooks burg burgs bypass camp canyon cape causeway center centers
circle circles cir cliff cliffs club common corner corners course court courts ct cove coves creek crest crossing
crossroad curve dale dam divide estate estates extension extensions fall falls ferry field fields flat flats
ford fords forest forge forges fork forks fort garden gardens gdns gateway glen glens green greens grove groves
harbor harbors haven heights hill hills hollow inlet island islands isle junction junctions key keys knoll
knolls lake lakes land landing light lights loaf lock locks lodge loop mall manor manors meadow meadows mews
mill mills mission mount mountain mountains neck orchard oval overpass park parks parkways pass passage path
pike pine pines place pl plain plains plaza point points port ports prairie radial ramp ranch rapid rapids
rest ridge ridges river route row rue run shoal shoals shore shores skyway spring springs spur spurs square
sq squares station stravenue stream summit throughway trace track trafficway trail trl tunnel underpass
union unions valley valleys via viaduct view views village villages ville vista walk walks wall way ways
well wells close parade rise wharf yard""".split()
try:  # Faker's USPS suffix list, if it grows
    from faker.providers.address.en_US import Provider as _AddrProvider

    _EXTRA_SUFFIXES += [s.lower() for s in _AddrProvider.street_suffixes]
except Exception:  # pragma: no cover
    pass
_ALL_SUFFIXES = sorted(set(_EXTRA_SUFFIXES) | _CORE_SUFFIXES, key=lambda s: (-len(s), s))
_STATES = ("AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY "
           "NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR VI GU AS MP FM MH PW AA AE AP").split()
_STATE_NAMES = ("alabama alaska arizona arkansas california colorado connecticut delaware florida georgia hawaii "
                "idaho illinois indiana iowa kansas kentucky louisiana maine maryland massachusetts michigan "
                "minnesota mississippi missouri montana nebraska nevada ohio oklahoma oregon pennsylvania "
                "tennessee texas utah vermont virginia washington wisconsin wyoming").split()
_STATE_NAMES += ["new hampshire", "new jersey", "new mexico", "new york", "north carolina", "north dakota",
                 "rhode island", "south carolina", "south dakota", "west virginia"]
_UKPC = r"[A-Za-z]{1,2}\d[A-Za-z\d]?[ ]?\d[A-Za-z]{2}"
_ADDR_STOP = (r"(?:a|an|the|at|to|in|on|of|for|from|by|with|my|your|our|their|his|her|its|this|that|and|or|but|is|"
              r"are|was|were|be|am|it|i|you|we|they|he|she|me|us|them|per|days?|weeks?|months?|years?|hours?|hrs?|"
              r"mins?|minutes?|seconds?|times?|euros?|eur|dollars?|usd|pounds?|gbp|quid|bucks|cents?|pence|"
              r"percent|cards?|transactions?|transfers?|payments?|accounts?|more|less|other|another|different|"
              r"extra|additional|same|separate|than|then|so|not|no|what|which|when|where|why|how|can|could|would|"
              r"should|will|did|do|does|has|have|had|get|got|just|only|about|over|under|after|before|into|out|up|"
              r"down|off|again|still|also|too|very|all|any|some|each|every|new|old|last|first|next|second|third|"
              r"month|free|working|business|am|pm)")
_ADDR_WORD = r"(?!" + _ADDR_STOP + r"\b)(?:[^\W\d_][^\W_]*(?:['’-][^\W\d_]+)?|\d{1,3}(?:st|nd|rd|th))"
_ADDRESS_RE = re.compile(
    r"(?<![\w$£€¥.,:/-])"
    r"(?P<unit0>(?:flat|apt|apartment|unit|suite)\.?[ ]*\#?[ ]*\d{1,5}[a-z]?,?[ ]+)?"
    r"(?P<num>\d{1,5}[a-z]?(?:-\d{1,5})?)[ ]+"
    r"(?P<words>(?:" + _ADDR_WORD + r"[ ]+){1,3})"
    r"(?P<suf>" + "|".join(_ALL_SUFFIXES) + r")\b\.?"
    r"(?P<dir>[ ]+(?-i:N|S|E|W|NE|NW|SE|SW)\b\.?)?"
    r"(?P<unit>,?[ ]*(?:(?:apt|apartment|unit|flat|suite|ste|floor|fl|room|rm)\b\.?|\#)[ ]*\#?[ ]*[a-z0-9-]{1,6}\b)?"
    r"(?P<city>,[ ]*[^\W\d_][^\W\d_'’-]*\b(?:[ ][^\W\d_][^\W\d_'’-]*\b){0,2})?"
    r"(?P<state>,?[ ]+(?:" + "|".join(_STATES) + r"|" + "|".join(_STATE_NAMES) + r")\b)?"
    r"(?P<zip>,?[ ]+(?:\d{5}(?:-\d{4})?|" + _UKPC + r")\b)?", re.I)
_PO_BOX = re.compile(r"\bp\.?[ ]?o\.?[ ]*box[ ]+\d{1,6}\b", re.I)


def _det_address(text: str, out: list) -> None:
    """``address`` and ``po_box`` (see module docstring for the acceptance rules)."""
    for m in _ADDRESS_RE.finditer(text):
        words = m.group("words").split()
        suf = m.group("suf")
        has_zip = m.group("zip") is not None
        if suf.lower() in _CORE_SUFFIXES:
            pass
        elif all(_is_title(w) or w[0].isdigit() for w in words) and _is_title(suf):
            pass
        elif not has_zip:
            continue
        end = m.end("suf")
        for g in ("dir", "unit"):
            if m.group(g):
                end = m.end(g)
        city, state = m.group("city"), m.group("state")
        state_ok = state is not None and (has_zip or state.strip(" ,").isupper())
        city_ok = city is not None and (has_zip or state_ok or all(_is_title(w) for w in city[1:].split()))
        if city_ok:
            end = m.end("city")
            if state_ok:
                end = m.end("state")
            if has_zip:
                end = m.end("zip")
        elif city is None and state_ok:
            end = m.end("zip") if has_zip else m.end("state")
        out.append((m.start(), end, "ADDRESS", "address"))
    for m in _PO_BOX.finditer(text):
        out.append((m.start(), m.end(), "ADDRESS", "po_box"))


_ZIP_CUE = re.compile(
    r"\b(?:zip(?:[ \t]*code)?|postal[ \t]*code|post[ \t]*code|postcode)[ \t]*(?:is|:|\#|-)?[ \t]*"
    r"(\d{5}(?:-\d{4})?|" + _UKPC + r"|[A-Za-z]\d[A-Za-z][ ]?\d[A-Za-z]\d|\d{3,5}(?:[ -]\d{2,4})?)(?![\w])", re.I)
_ZIP_STATE = re.compile(
    r"(?:\b(?-i:" + "|".join(_STATES) + r")|\b(?:" + "|".join(_STATE_NAMES) + r"))\b,?[ ]+"
    r"(\d{5}(?:-\d{4})?)(?![\w]|[.,]\d)",
    re.I)
_FIVE_DIGITS = re.compile(r"(?<!\d)\d{5}(?!\d)")
_UK_POSTCODE = re.compile(r"(?<![\w{])(?-i:[A-Z]{1,2}\d[A-Z\d]? \d[A-Z]{2})(?![\w}])")


def _det_zip(text: str, out: list) -> None:
    """``zip_cue``, ``zip_state`` and ``uk_postcode`` -> ZIP_CODE."""
    for m in _ZIP_CUE.finditer(text):
        out.append((m.start(1), m.end(1), "ZIP_CODE", "zip_cue"))
    if _FIVE_DIGITS.search(text):
        for m in _ZIP_STATE.finditer(text):
            out.append((m.start(1), m.end(1), "ZIP_CODE", "zip_state"))
    for m in _UK_POSTCODE.finditer(text):
        out.append((m.start(), m.end(), "ZIP_CODE", "uk_postcode"))


# --------------------------------------------------------------------------------------
# Person names
# --------------------------------------------------------------------------------------
_STRONG, _MEDIUM, _WEAK = 3, 2, 1
_MODAL_NAMES = frozenset({"will", "may"})  # blocked words that are names after "my name is"
_CONTRACTION = re.compile(r"['’](?:m|s|ve|d|ll|re|t)$")
_NAME_CUES = re.compile(
    r"\b(?=[a-z])(?:"
    r"(?P<strong>my[ \t]+(?:full[ \t]+|first[ \t]+|last[ \t]+|sur)?name(?:[ \t]*(?:is|'s|’s|:|=|-))?"
    r"|(?<!user )(?<!screen )(?<!file )(?<!domain )(?:full[ \t]+)?name[ \t]*(?:[:=]|is\b)"
    r"|(?:first|last|given|family)[ \t]+name[ \t]*(?:is\b|[:=])|surname[ \t]*(?:is\b|[:=])?"
    r"|(?:card[ \t]*holder|account[ \t]*holder)(?:'?s)?(?:[ \t]+name)?[ \t]*(?:is\b|[:=-])?"
    r"|name[ \t]+on[ \t]+(?:the[ \t]+|my[ \t]+)?(?:card|account)[ \t]*(?:is\b|[:=])?)"
    r"|(?P<medium>(?:call[ \t]+me|(?:mr|mrs|ms|miss|mx|dr|prof|mister)\b\.?"
    r"|my[ \t]+(?:brother|sister|wife|husband|friend|son|daughter|mother|father|mom|mum|dad|partner|"
    r"boyfriend|girlfriend|colleague|landlord|boss|cousin|uncle|aunt|niece|nephew|flatmate|roommate|kid|child|baby)\b"
    r"|(?:named|called)(?:[ \t]+(?:him|her|them|me))?|(?:said|told|asked|thanked|add|added|ask)(?=[ \t]+(?-i:[A-Z]))"
    r"|(?:to|from|by|with|for|and)(?=[ \t]+(?-i:[A-Z][^\W\d_]+[ \t]+[A-Z][^\W\d_]+)\b(?![ \t]+(?-i:[A-Z])))))"
    r"|(?P<weak>(?:i[ \t]*['’]?[ \t]*m|i[ \t]+am|im|this[ \t]+is|it[ \t]*['’]?s|it[ \t]+is)\b)"
    r"|(?P<signoff>(?:hi|hello|hey|dear|morning|sure|thanks|thank[ \t]+you|thx|ty|cheers|regards|kind[ \t]+regards"
    r"|best[ \t]+regards|warm[ \t]+regards|many[ \t]+thanks|best[ \t]+wishes|sincerely|yours[ \t]+(?:sincerely|truly)"
    r"|best|love|signed)\b))"
    r"|(?P<dash>(?<!\S)[-–—]+)",
    re.I)
_WORD = r"[^\W\d_]+(?:['’\-][^\W\d_]+)*"
_TOKEN_FIRST_COMMA = re.compile(r"[ \t]*,?[ \t]*(?:\r?\n[ \t]*)?(" + _WORD + r")")  # "Regards,\nJohn"
_TOKEN_FIRST = re.compile(r"[ \t]*(" + _WORD + r")")
_TOKEN_NEXT = re.compile(r"[ \t]+([A-Z]\.(?=[ \t]+[A-Z])|" + _WORD + r")")
_TRAILER = re.compile(r"[ \t]*[.!?,;:)]*[ \t]*(?:\n|$)")
_HERE = re.compile(r"\bhere\b", re.I)
_BEFORE_HERE = re.compile(r"(?:(" + _WORD + r")[ \t]+)?(" + _WORD + r")[ \t]+$")
_TITLE_PAIR = re.compile(r"(?<![\w'’-])(" + _WORD + r")(?=[ \t]+(" + _WORD + r")(?![\w'’-]))")
_VOCATIVE = re.compile(r",[ \t]*(" + _WORD + r")[ \t]*(?=[.!?]|$)")
_NAME_ONLY = re.compile(
    r"^[\s\W]*(?:(?:sure|yes|yeah|yep|ok|okay|it'?s|its|it ?is|that'?s|that ?is|name:?|hi|hello)[ \t]*[,:.!-]?[ \t]*)?"
    r"(?P<name>" + _WORD + r"(?:[ \t]+" + _WORD + r"){0,3})[\s.!?,]*$", re.I)


def _name_tok_ok(tok: str, level: int, first: bool, at_end: bool) -> bool:
    """May ``tok`` be part of a name at cue strength ``level`` (as first token or as a continuation)?"""
    _fnames, lnames, names, ambiguous, common = _lexicon()
    if len(tok) == 2 and tok[1] == ".":  # middle initial "J."
        return not first
    low = tok.lower()
    if len(tok) < 2 or _CONTRACTION.search(low):
        return False
    if low in _BLOCK and not (level == _STRONG and first and low in _MODAL_NAMES and _is_title(tok)):
        return False
    title = _is_title(tok)
    if level == _STRONG:
        return low in names or low not in common or (title and low in _MODAL_NAMES)
    if first and level == _WEAK:
        return low in names and (title or low not in ambiguous or (at_end and len(low) > 2))
    known = low in names and (title or low not in ambiguous)
    if first:  # medium: "call me", "Mr"
        return known or (title and low not in common)
    return known or low in lnames or (title and (at_end or low not in common)) or (at_end and low in names)


def _take_name(text: str, pos: int, level: int, first_re: re.Pattern) -> tuple[int, int] | None:
    """Consume up to 4 name tokens at ``pos``; returns (start, end) or None."""
    start = end = -1
    p = pos
    n = 0
    while n < 4:
        m = (first_re if n == 0 else _TOKEN_NEXT).match(text, p)
        if m is None:
            break
        at_end = _TRAILER.match(text, m.end(1)) is not None
        if not _name_tok_ok(m.group(1), level, n == 0, at_end):
            # an ambiguous first name ("dawn", "grace") followed by a clear surname: "dawn henry"
            nxt = _TOKEN_NEXT.match(text, m.end(1)) if n == 0 and level == _WEAK else None
            if not (nxt and m.group(1).lower() in _lexicon()[2] and m.group(1).lower() not in _BLOCK
                    and nxt.group(1).lower() in _lexicon()[2] and nxt.group(1).lower() not in _lexicon()[3]):
                break
        if n == 0:
            start = m.start(1)
        end = p = m.end(1)
        n += 1
    if n and text[end - 1] == ".":  # never end on an initial
        end = text.rfind(" ", start, end)
        if end <= start:
            return None
        end = len(text[:end].rstrip())
    return (start, end) if n else None


def _det_names(text: str, out: list) -> None:
    """``name_cue``, ``name_signoff``, ``name_vocative``, ``name_bigram`` and ``name_only``."""
    fnames, lnames, names, ambiguous, common = _lexicon()
    for m in _NAME_CUES.finditer(text):
        kind = m.lastgroup
        det = "name_cue"
        if kind == "strong":
            got = _take_name(text, m.end(), _STRONG, _TOKEN_FIRST_COMMA)
        elif kind == "medium":
            got = _take_name(text, m.end(), _MEDIUM, _TOKEN_FIRST)
        elif kind == "weak":
            got = _take_name(text, m.end(), _WEAK, _TOKEN_FIRST)
            if got is None:  # two capitalised words that are not English: "I'm Zyx Qwerty"
                ws = len(text) - len(text[m.end():].lstrip(" \t"))
                t = _TITLE_PAIR.match(text, ws)
                if t and all(_is_title(w) and w.lower() not in common and not _CONTRACTION.search(w.lower())
                             for w in t.groups()):
                    got = (t.start(1), t.end(2))
        else:
            det = "name_signoff"
            got = _take_name(text, m.end(), _WEAK, _TOKEN_FIRST_COMMA)
            if got is not None and m.group()[:1] in "-–—" and _TRAILER.match(text, got[1]) is None:
                got = None  # a dash sign-off ends the message
        if got is not None:
            out.append((got[0], got[1], "PERSON", det))
    for h in _HERE.finditer(text):  # "Rosie here", "Rosie Thompson here"
        b = _BEFORE_HERE.search(text, max(0, h.start() - 80), h.start())
        if b is None:
            continue
        if b.group(1) and _name_tok_ok(b.group(1), _WEAK, True, False) and _name_tok_ok(b.group(2), _WEAK, False, True):
            out.append((b.start(1), b.end(2), "PERSON", "name_signoff"))
        elif _name_tok_ok(b.group(2), _WEAK, True, True):
            out.append((b.start(2), b.end(2), "PERSON", "name_signoff"))
    for m in _VOCATIVE.finditer(text):  # "..., Rosie."
        low = m.group(1).lower()
        if _is_title(m.group(1)) and low in fnames and low not in _BLOCK:
            out.append((m.start(1), m.end(1), "PERSON", "name_vocative"))
    for m in _TITLE_PAIR.finditer(text):  # "Rosie Thompson" anywhere
        w1, w2 = m.group(1), m.group(2)
        a, b = w1.lower(), w2.lower()
        if (a in fnames and a not in ambiguous and b not in _BLOCK and (b in lnames or b not in common)
                and _is_title(w1) and _is_title(w2) and not _CONTRACTION.search(b)):
            out.append((m.start(1), m.end(2), "PERSON", "name_bigram"))
    if len(text) <= 80:  # the whole message is a name: "Rosie Thompson", "sure, rosie"
        m = _NAME_ONLY.match(text)
        if m:
            toks = m.group("name").split()
            lows = [t.lower() for t in toks]
            ok = lows[0] in names and (_is_title(toks[0]) or lows[0] not in ambiguous or (
                len(toks) > 1 and lows[1] in names and lows[1] not in ambiguous)) and all(
                w in names or (_is_title(t) and w not in common) for t, w in zip(toks[1:], lows[1:]))
            if ok and len(toks) == 1:  # a lone word: only a capitalised, unambiguous first name
                ok = _is_title(toks[0]) and lows[0] in fnames and lows[0] not in ambiguous
            if ok:
                out.append((m.start("name"), m.end("name"), "PERSON", "name_only"))


# --------------------------------------------------------------------------------------
# Chat-style text (lower case, no punctuation) and wider coverage
# --------------------------------------------------------------------------------------
# Latin-script Faker locales for the wide name gazetteer (``name_gazetteer``).
_WIDE_NAME_LOCALES = (
    "en_US", "en_GB", "en_IE", "en_IN", "en_NZ", "en_KE", "en_NG", "en_PK", "en_TH", "cs_CZ", "da_DK", "de_AT",
    "de_CH", "de_DE", "es_ES", "es_MX", "es_AR", "es_CO", "et_EE", "fi_FI", "fr_FR", "fr_CA", "ga_IE", "hr_HR",
    "hu_HU", "id_ID", "is_IS", "it_IT", "lt_LT", "lv_LV", "nl_NL", "nl_BE", "no_NO", "pl_PL", "pt_BR", "pt_PT",
    "ro_RO", "sk_SK", "sl_SI", "sv_SE", "tr_TR", "vi_VN", "yo_NG", "zu_ZA", "sw", "tw_GH", "ha_NG", "ig_NG",
)
# Transliterated Indian names are common in support chats and absent from the Latin-script locales above.
_EXTRA_NAMES = """
aarav aditi aditya ajay akash akhil amit amitha anand anil anita anjali ankit anu anusha arjun arun aruna
ashok bala balaji bhavana chandra deepa deepak deepika devi dinesh divya ganesh gaurav geetha gopal gopi
hari harish hema indira jaya kalpana kamal karan karthik karthick kavitha kiran krishna kumar lakshmi latha
madhu mahesh manoj meena mohan murali nandini naveen nikhil nila nisha pavi pooja prabhu pradeep prakash
pranav prasad preethi priya rahul raj raja rajesh rakesh ram ramesh ravi rekha sachin sanjay santhosh
saravanan senthil shankar sharma shiva shruthi siva sneha sri sridhar srinivas subash suhas sunil suresh
swathi tharun uma varma vasu venkat vijay vikram vinod vishnu yuvashri
""".split()


@functools.cache
def _wide_names() -> frozenset:
    """First and last names of many Latin-script Faker locales, lower case, minus English words."""
    names: set[str] = set(_EXTRA_NAMES)
    for loc in _WIDE_NAME_LOCALES:
        try:
            prov = importlib.import_module(f"faker.providers.person.{loc}").Provider
        except Exception:  # pragma: no cover - locale missing in another Faker version
            continue
        for attr in ("first_names", "first_names_male", "first_names_female", "last_names"):
            raw = getattr(prov, attr, ()) or ()
            for n in (raw.keys() if isinstance(raw, dict) else raw):
                for part in re.split(r"[\s\-]+", str(n)):
                    if len(part) >= 3 and part.isalpha() and all(c < "\u0250" for c in part):
                        names.add(part.lower())
    common = _lexicon()[4]
    return frozenset(names - common - _BLOCK - _STREET_WORDS - _CHAT_WORDS)


# Chat interjections and misspellings that are no names ("hii", "thnx").
_CHAT_WORDS = frozenset("""
hii hiii hai hei hey heyy helo hellow hllo hlo hye hy heya ya yaa yah yaah yeah yea yep yup nope nah ok okk okey okie
thnx thanx thnks thnk thanq tq ty tx bye byee byeee plz plzz pls plss nothanks thankyou thanku sry srry loo hmm hmmm
""".split())
_LABEL_WORDS = frozenset("""
bot user agent customer client website web site email mail phone fax mobile tel address note notes subject re fwd
cc bcc from to date time info summary question answer reply system assistant admin support operator
""".split())
_STREET_WORDS = frozenset(_ALL_SUFFIXES) | frozenset("""
north south east west main park new old lake hill street road avenue lane drive court place square
""".split())
_CHAT_NAME_ONLY = re.compile(
    r"^[ \t]*(?:(?:my[ \t]+)?(?:full[ \t]+)?name(?:[ \t]+is)?|this[ \t]+is|i[ \t]+am|im|i'm|its|it's|it[ \t]+is)?[ \t]*"
    r"(?P<name>[^\W\d_]{3,}(?:[ \t]+[^\W\d_]{2,}){0,2})[ \t.!]*$", re.I)
_ALPHA_TOKEN = re.compile(r"(?<![\w@.'’-])[^\W\d_]{3,}(?![\w@-]|['’](?!s\b)|\.\w)")
_SPEAKER_LABEL = re.compile(r"(?m)^[ \t>]*([A-Z][^\W\d_'’-]+(?:[ \t]+[A-Z][^\W\d_'’-]+)?)[ \t]*:(?![/\d])")
_SENTENCE_START = re.compile(r"(?:^|[.!?:\"“(\n]|\s[-–—])[ \t\"“']*$")
_PLACE_PREP = re.compile(r"\b(?:in|at|from|to|near|of|aus|via|into|visit|visiting)[ \t]+$", re.I)
_NAME_NEXT = re.compile(r"[ \t]+([^\W\d_]{2,})(?![\w@'’-])")
_NAME_PREV = re.compile(r"([^\W\d_]{2,})[ \t]+$")


_CHAT_LEAD = re.compile(
    r"^[ \t]*(?:(?:hi|hello|hey|yes|yeah|ok|okay|sure|surely|its|it'?s|am|i[ \t]+am|im|i'?m|this[ \t]+is|"
    r"(?:my[ \t]+)?(?:full[ \t]+)?name(?:[ \t]+is)?|name[ \t]*:)[ \t]+)?")
_CHAT_AFTER_NAME = re.compile(
    r"[ \t]*$|[ \t]+(?:and[ \t]+)?(?:\d|[a-z]{1,3}[ \t]+\d|(?:ssn|social|confirmation|booking|reservation|account|acc|ac|"
    r"acct|pwd|pass|password|pin|card|credit|debit|phone|ph|mobile|cell|contact|email|mail|e-mail|zip|address|"
    r"policy|claim|order|dob|birth|id|here|speaking)\b)")
_CHAT_NAME_TOKEN = re.compile(r"[a-z]{2,}(?![\w@'’-])")


def _chat_leading_name(text: str, out: list, wide: frozenset, common: frozenset) -> None:
    """Lower-cased chat: the one to three words a reply starts with, when they look like a name and the rest is a
    number, a code or another detail ("jawahar 8528", "sana and 8294", "name drew applesmith and credit card ...",
    "keaton graves"); a first name that is also an English word ("lily", "jack") counts here."""
    fnames, lnames, names = _lexicon()[0], _lexicon()[1], _lexicon()[2]
    pos = _CHAT_LEAD.match(text).end()
    toks = []
    p = pos
    while len(toks) < 3:
        m = _CHAT_NAME_TOKEN.match(text, p)
        if m is None:
            break
        w = m.group()
        if w in _BLOCK or w in _CHAT_WORDS or w in _STREET_WORDS or w in _LABEL_WORDS or w == "and":
            break
        ok = (w in wide or w in fnames or w not in common) if not toks else (w in wide or w in names or w not in common)
        if not ok:
            break
        toks.append(m)
        nxt = re.compile(r"[ \t]+").match(text, m.end())
        if nxt is None:
            break
        p = nxt.end()
    while toks:
        end = toks[-1].end()
        if _CHAT_AFTER_NAME.match(text, end):
            first = toks[0].group()
            if len(toks) == 1 and first in common and first not in fnames:
                break
            out.append((toks[0].start(), end, "PERSON", "name_gazetteer"))
            break
        toks.pop()


def _det_name_gazetteer(text: str, out: list) -> None:
    """``name_gazetteer``: a word in the wide name gazetteer that is not an English word, in any case, with
    the next word when that is a name or an unknown word too ("hema latha", "suhas kooi", "Jožef Albin")."""
    wide = _wide_names()
    common = _lexicon()[4]
    has_upper = any(c.isupper() for c in text)
    for m in _ALPHA_TOKEN.finditer(text):
        low = m.group().lower()
        if low not in wide or _PLACE_PREP.search(text, max(0, m.start() - 8), m.start()):
            continue
        if has_upper and not _is_title(m.group()):
            continue  # in mixed-case text a name is capitalised; lower-case names only in lower-cased chat
        start, end = m.start(), m.end()
        nxt = _NAME_NEXT.match(text, end)
        if nxt:
            w = nxt.group(1)
            lw = w.lower()
            if lw not in _BLOCK and lw not in _STREET_WORDS and (lw in wide or lw not in common) and not _CONTRACTION.search(lw):
                end = nxt.end(1)
        prev = _NAME_PREV.search(text, max(0, start - 40), start)
        if prev:
            w = prev.group(1)
            if _is_title(w) and w.lower() not in common and w.lower() not in _BLOCK and _is_title(m.group()):
                start = prev.start(1)
        out.append((start, end, "PERSON", "name_gazetteer"))
    if has_upper:
        # dialogue speaker labels ("Natasha: ...") and capitalised first names that are also English words
        # ("Frank", "Heather") in the middle of a sentence
        for m in _SPEAKER_LABEL.finditer(text):
            words = m.group(1).split()
            if (all(w.lower() not in common or w.lower() in wide for w in words) and words[0].lower() not in _BLOCK
                    and not any(w.lower() in _LABEL_WORDS for w in words)):
                out.append((m.start(1), m.end(1), "PERSON", "name_gazetteer"))
        fnames, ambiguous = _lexicon()[0], _lexicon()[3]
        for m in _ALPHA_TOKEN.finditer(text):
            w = m.group()
            low = w.lower()
            if (_is_title(w) and low in fnames and low not in _BLOCK and low not in _NOT_NAMES and low not in _STREET_WORDS
                    and not _SENTENCE_START.search(text, max(0, m.start() - 4), m.start())):
                nxt = _NAME_NEXT.match(text, m.end())
                if nxt and _is_title(nxt.group(1)) and nxt.group(1).lower() in _STREET_WORDS:
                    continue  # "Bay Street"
                out.append((m.start(), m.end(), "PERSON", "name_gazetteer"))
    if not has_upper:
        _chat_leading_name(text, out, wide, common)
    # a short reply that is nothing but one to three unknown words ("tharma", "santosh korpade"), or such words
    # after a bare "name" / "name is" / "this is" / "i am"
    m = _CHAT_NAME_ONLY.match(text)
    if m:
        toks = m.group("name").split()
        if all(t.lower() not in common and t.lower() not in _BLOCK and t.lower() not in _STREET_WORDS
               and t.lower() not in _CHAT_WORDS or t.lower() in wide for t in toks) and any(t.lower() not in common for t in toks):
            out.append((m.start("name"), m.end("name"), "PERSON", "name_gazetteer"))


# E-mail addresses as chat logs write them: lower case, punctuation stripped ("vickygold 3003 gmailcom").
_MAIL_HOSTS = (r"g?mail|gamil|gmial|gmal|gmaill|gaiml|gaml|yahoo|yahho|yaho|ymail|hotmail|hotmial|hotmal|outlook|msn|"
               r"aol|icloud|rediffmail|rediff|protonmail|proton|zoho|gmx|yandex|mailinator|\w*mail")
_EMAIL_SQUASHED = re.compile(
    r"(?<![\w@.])(?P<local>(?:[a-z0-9._-]+[ \t]+){0,3}?)(?P<host>[a-z0-9._-]*?(?:" + _MAIL_HOSTS + r"))"
    r"(?:[ \t]?dot[ \t]?)?(?:com|coin|couk|in|net|org)(?![\w@])", re.I)


_EMAIL_SQUASHED_HINT = re.compile(r"com\b|net\b|org\b|in\b|mail|yahoo|yaho|outlook|aol|icloud|rediff|proton", re.I)


def _det_email_squashed(text: str, out: list) -> None:
    """``email_squashed``: "name 45 gmailcom", "rosygmailcom", "asha at gmail com"; the words before the host
    are taken while they are digits or not English words."""
    if not _EMAIL_SQUASHED_HINT.search(text):
        return
    common = _lexicon()[4]
    for m in _EMAIL_SQUASHED.finditer(text):
        host = m.group("host").lower()
        start = m.start("host")
        local_words = m.group("local").split()
        # take preceding words from the right while they look like parts of a mailbox name: digits ("45"), words
        # that are not English, or any word right before such digits ("daisy 1234 gmailcom"); a phone-length
        # number ends the mailbox ("9788554466 kavithagmailcom")
        pos = m.start("host")
        after_digits = False
        for w in reversed(local_words):
            lw = w.lower()
            ndigits = sum(c.isdigit() for c in lw)
            if lw == "at" or lw in _BLOCK or ndigits >= 7:
                break
            if lw in common and not ndigits and not after_digits:
                break
            after_digits = ndigits > 0 and ndigits == len(lw)
            pos = text.rfind(w, m.start(), pos)
        start = min(start, pos)
        if start == m.start("host") and host in {"gmail", "mail", "yahoo", "hotmail", "outlook", "live", "me", "msn",
                                                   "aol", "icloud", "gmx", "zoho"}:
            # a bare provider name ("gmail com") is the service, not an address, unless "at" precedes it
            before = text[max(0, start - 4):start].lower()
            if not before.rstrip().endswith("at"):
                continue
            start = text.rfind(" ", 0, len(text[:start].rstrip()) - 2) + 1
        out.append((start, m.end(), "EMAIL", "email_squashed"))


# Numbers and codes as customers type them in reply to "what is your ...?" (no cue word in the message).
_NUMBER = re.compile(r"(?<![\w$£€¥.,:/-])\d{4,}(?![\w]|[.,:/-]\d)")
_CARD_LAST4 = re.compile(
    r"(?:\b(?:card|visa|mastercard|amex|debit|credit)\b[^.\n]{0,20}\b(?:ending|ends)(?:[ \t]+(?:in|with))?"
    r"|\blast[ \t]+(?:4|four)(?:[ \t]+digits?)?(?:[ \t]+of[ \t]+(?:my|the)?[ \t]*(?:card|visa|mastercard|amex|debit|credit)"
    r"(?:[ \t]+card)?)?(?:[ \t]+(?:are|is))?)[ \t:]*$", re.I)
_YEAR_CUE = re.compile(
    r"(?:\b(?:in|since|year|years|yr|from|until|till|of|back|january|february|march|april|may|june|july|august|"
    r"september|october|november|december|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec)[ \t]+|\b\d{1,2}(?:st|nd|rd|th)?[ \t,]+|')$",
    re.I)
_AFTER_NUMBER_UNIT = re.compile(r"[ \t]*(?:" + _UNITS + r"|rs|rupees|inr|dollars|bucks|miles|km|kg|gb|mb)\b", re.I)
_CODE_TOKEN = re.compile(r"(?<![\w@.'’-])(?:\d{1,12}|[a-z]{1,5}|[a-z0-9]*(?:[a-z]\d|\d[a-z])[a-z0-9]*)(?![\w@'’-]|[.,]\d)", re.I)
_ORDINAL_OR_TIME = re.compile(r"^\d{1,4}(?:st|nd|rd|th|am|pm|s|k|gb|mb|kg|km|hrs?|mins?|x)$|^[a-z]\d$|^(?:mp3|mp4|4k|hd|3d|2fa|4g|5g|3g)$", re.I)


_PHONE_GROUPS = re.compile(
    r"(?<![\w.,$£€¥:/+-])(?:\+?\d{1,3}[ .-])?(?:\(\d{2,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,6}){1,4}(?:x\d{1,5})?(?![\w]|[.,:/-]\d)")
_DATE_LIKE = re.compile(r"^\d{1,4}([ ./-])\d{1,2}\1\d{1,4}$")


def _det_phone_groups(text: str, out: list) -> None:
    """``phone_groups`` (wide): 7-15 digits in 2-5 groups of 2-4 ("78 651 450", "71-33-52-22", "668 5702",
    "(37) 788-063", "+1-903-140-4508x769"); dates ("12-05-1999", "2024 03 12") and amounts are left alone."""
    for m in _PHONE_GROUPS.finditer(text):
        v = m.group()
        core = v.split("x")[0]
        if not 7 <= _digits(core) <= 15 or _DATE_LIKE.match(core) or _AFTER_NUMBER_UNIT.match(text, m.end()):
            continue
        out.append((m.start(), m.end(), "PHONE", "phone_groups"))


def _det_chat_numbers(text: str, out: list) -> None:
    """``number``: a standalone run of >= 4 digits that is no amount, year or time (-> ACCOUNT_NUMBER);
    ``code``: 2-8 adjacent short tokens mixing letters and digits ("gt 67 g 6", "254 e 15", "kjl 486") or one
    token mixing both ("f6el23") -> ID."""
    for m in _NUMBER.finditer(text):
        v = m.group()
        before = text[m.start() - 1] if m.start() else ""
        if before != "#" and (_AFTER_NUMBER_UNIT.match(text, m.end()) or (before and before in "$£€¥")):
            continue
        if len(v) == 4 and _CARD_LAST4.search(text, max(0, m.start() - 50), m.start()):
            continue  # "card ending in 1234": left alone on purpose (see the module docstring)
        if len(v) == 4 and v[:2] in ("19", "20") and _YEAR_CUE.search(text, max(0, m.start() - 12), m.start()):
            continue
        out.append((m.start(), m.end(), "ACCOUNT_NUMBER", "number"))
    common = _lexicon()[4]
    toks = [t for t in _CODE_TOKEN.finditer(text)]
    i = 0
    while i < len(toks):
        # grow a run of adjacent code-like tokens (single spaces between them)
        j = i
        run = []
        while j < len(toks):
            t = toks[j]
            w = t.group()
            lw = w.lower()
            if run and text[run[-1].end():t.start()] not in (" ", "-", " - "):
                break
            if _ORDINAL_OR_TIME.match(w):
                break
            if w.isalpha() and (lw in common or lw in _BLOCK) and not (len(lw) == 1 and lw not in "ai"):
                break
            run.append(t)
            j += 1
        if run:
            words = [t.group() for t in run]
            has_digit = any(any(c.isdigit() for c in w) for w in words)
            has_alpha = any(any(c.isalpha() for c in w) for w in words)
            digits = sum(c.isdigit() for w in words for c in w)
            mixed = any(any(c.isdigit() for c in w) and any(c.isalpha() for c in w) for w in words)
            if has_digit and has_alpha and digits >= 2 and len(run) <= 8 and (len(run) >= 2 or (mixed and len(words[0]) >= 4)):
                # trim leading/trailing pure-letter tokens longer than 3 unless they sit between digit tokens
                a, b = 0, len(run)
                if a < b:
                    out.append((run[a].start(), run[b - 1].end(), "ID", "code"))
        i = max(j, i + 1)


_ADDRESS_CUE = re.compile(
    r"\b(?:(?:home|billing|shipping|delivery|mailing|postal|new|old|current|street|my)[ \t]+)?(?:address|addr)"
    r"(?:[ \t]+(?:is|was|will[ \t]+be|to))?[ \t]*[:=\-]?[ \t]*"
    r"|\b(?:live|living|lives|located|reside|residing|moved|move|moving|deliver(?:ed)?|send(?:[ \t]+it)?|sent|ship(?:ped)?|mail(?:ed)?)"
    r"[ \t]+(?:at|to|in)[ \t]+(?:the[ \t]+corner[ \t]+of[ \t]+)?", re.I)
_ADDRESS_STOP = re.compile(
    r"[.?!;](?=[ \t]+[A-Z][a-z]|[ \t]*$)|\n[ \t]*\n|[ \t]+(?:and|&)[ \t]+(?:my|the|i|it|also|please|then|phone|email|mobile|contact|ssn|pin|card)\b"
    r"|[ \t]+(?:my|phone|mobile|contact|email|e-mail|ssn|card|account|acct|name|please|pls|thanks|thank|but|so|because|"
    r"last[ \t]+night|yesterday|today|tomorrow|blocked|instead)\b|[ \t]+(?:is|was|has|have)\b", re.I)
_ADDRESS_TAIL = re.compile(
    r"(?:,?[ \t]*\n?[ \t]*(?:(?i:apt|apartment|suite|ste|unit|flat|floor|fl|room|box)\.?[ \t]*\#?[ \t]*\w{1,6}\b"
    r"|(?:[A-Z][\w'’-]*|de|da|do|del|la|le|von|van)\b(?:[ \t]+(?:[A-Z][\w'’-]*|de|da|do|del|la|le|von|van)\b){0,3}"
    r"|[A-Z]{2}\b|\d{4,6}(?:-\d{4})?\b|[A-Za-z]{1,2}\d[A-Za-z\d]?[ ]?\d[A-Za-z]{2}\b))+")
_EURO_STREET = re.compile(
    r"(?<![\w.])(?:\d{1,5}[ \t]+)?(?:(?:[A-ZÀ-Þ][\w'’.-]*|de|da|do|del|la|le|di|von|van|der|str)[ \t]+){1,4}\d{1,5}[a-zA-Z]?(?![\w])"
    r"(?![ \t]*(?:" + _UNITS + r"|people|persons?|items?|times|cards?|transfers?|payments?|transactions?)\b)")


_CHAT_STOP = (r"(?:and|&|my|phone|ph|mobile|cell|contact|email|mail|ssn|card|account|acct|name|please|pls|thanks|thank|"
              r"but|so|is|was|zip|pin|no|number|num|i|im|its|it|the|for|to|from|with|on|at|of|in|by|ok|okay|yes)")
_CHAT_SUFFIX = (r"(?:" + "|".join(_ALL_SUFFIXES) + r"|nagar|colony|salai|marg|chowk|layout|puram|pet|halli|pally|building|"
                r"apartments|complex|tower|towers|block|sector|phase|market|mall|plaza|village|vihar|enclave|bazaar|bazar)")
_CHAT_ADDR_WORD = r"(?:(?:new|old|north|south|east|west|upper|lower|little|big)\b|" + _ADDR_WORD + r")"
_CHAT_TAIL = r"(?P<tail>(?:[ \t]+(?!" + _CHAT_STOP + r"\b)(?:[^\W\d_]{2,}|\d{1,6}(?:-\d{4})?)(?![\w@])){0,6})"
_CHAT_STREET = re.compile(
    r"(?<![\w.,$£€])(?:(?:no|num|number|house|door|flat|apt|plot)\.?[ \t]*)?\d{1,5}[a-z]?(?:[ \t]+\d{1,5})?[ \t]+"
    r"(?:(?!" + _CHAT_STOP + r"\b)" + _CHAT_ADDR_WORD + r"[ \t]+|\d{1,3}[ \t]*(?:st|nd|rd|th)[ \t]+){0,4}?"
    + _CHAT_SUFFIX + r"\b" + _CHAT_TAIL, re.I)
# lower-cased chat only: "madurai nethaji street pune", "sindh vihar colony" (no house number), and a bare
# "number + unknown place words" reply ("82 kondalampatti", "367 natham 7561379073")
_CHAT_STREET_NONUM = re.compile(
    r"(?<![\w])(?P<words>(?:(?!" + _CHAT_STOP + r"\b)[a-z]{3,}[ \t]+){1,3})"
    r"(?:street|st|road|rd|avenue|ave|lane|ln|drive|boulevard|blvd|nagar|colony|salai|marg|layout|vihar|enclave|puram)\b"
    + _CHAT_TAIL)
_CHAT_NUM_PLACE = re.compile(r"(?<![\w.,$£€])\d{1,5}(?P<words>(?:[ \t]+[a-z]{4,}){1,3})(?P<tail2>(?:[ \t]+\d{3,10}){0,2})(?![\w])")


_TAIL_SEP = re.compile(r"[ \t]*(?:[,/][ \t]*)?(?:\n[ \t]*)?(?:,[ \t]*)?")
_TAIL_PART = re.compile(
    r"(?i:apt|apartment|suite|ste|unit|flat|floor|fl|room|box|p\.?o\.?[ \t]*box)\.?[ \t]*\#?[ \t]*\w{1,6}\b"
    r"|(?:APO|FPO|DPO)[ \t]+(?:AA|AE|AP)\b"
    r"|\d{4,6}(?:-\d{4})?\b(?![ \t]*(?:" + _UNITS + r")\b)"
    r"|[A-Za-z]{1,2}\d[A-Za-z\d]?[ ]?\d[A-Za-z]{2}\b"
    r"|[A-Z]{2}\b"
    r"|[^\W\d_][^\W\d_'’.-]*(?:[ \t-]+[^\W\d_][^\W\d_'’.-]*){0,3}(?:[ \t]+\([^\W\d_]+\))?")
_MILITARY = re.compile(
    r"\b(?:(?:USNS|USNV|USS|USCGC)[ \t]+[A-Z][\w'’-]+|(?:PSC|Unit)[ \t]+\d{4},?[ \t]+Box[ \t]+\d{4})[ \t]*\n?[ \t]*"
    r"(?:APO|FPO|DPO)[ \t]+(?:AA|AE|AP)[ \t]+\d{5}\b", re.I)
_NUMBER_BEFORE = re.compile(r"(?<![\w.,$£€-])\d{1,6}[ \t]+$")


def _address_tail(text: str, end: int, lower_chat: bool) -> int:
    """Extend an address over following unit / city / region / country / postcode parts, across line breaks."""
    parts = 0
    while parts < 6:
        sep = _TAIL_SEP.match(text, end)
        p = _TAIL_PART.match(text, sep.end())
        if p is None or sep.end() == end and not text[end:end + 1].isspace() and parts == 0 and False:
            break
        if sep.end() == end:  # parts must be separated
            break
        word = p.group()
        words = word.split()
        if word[:1].isalpha() and not word[:1].isupper() and not lower_chat and not re.match(r"(?i:apt|apartment|suite|ste|unit|flat|floor|fl|room|box|p\.?o)", word):
            break
        if word[:1].isalpha() and not (len(word) == 2 and word.isupper()) and any(
                w.lower().strip("().") in _BLOCK or w.lower() in _ADDR_TAIL_STOP for w in words):
            break
        end = p.end()
        parts += 1
    return end


_ADDR_TAIL_STOP = frozenset("""
i im and or but please pls thanks thank last next after before in on at for from with when where what why how
blocked instead yesterday today tomorrow tonight mobile phone fax desk office email e-mail website contact
""".split())


def _extend_addresses(text: str, out: list) -> None:
    """``address_block``: every ADDRESS candidate found so far, widened by a house number just before it and by
    the unit / city / country / postcode parts after it (also on the following lines)."""
    lower_chat = not any(c.isupper() for c in text)
    for s, e, t, d in list(out):
        if t != "ADDRESS":
            continue
        b = _NUMBER_BEFORE.search(text, max(0, s - 10), s)
        s2 = b.start() if b else s
        e2 = _address_tail(text, e, lower_chat)
        if (s2, e2) != (s, e):
            out.append((s2, len(text[:e2].rstrip(" \t\n,")), "ADDRESS", "address_block"))
    for m in _MILITARY.finditer(text):
        out.append((m.start(), m.end(), "ADDRESS", "address_military"))


_POSTCODE_ONLY = re.compile(r"\d{5}(?:-\d{4})?|" + _UKPC)


def _det_address_wide(text: str, out: list) -> None:
    """``address_cue`` (the words after "address is", "lives at", "sent to ...", up to the next clause, when
    they hold a digit or a street word) and ``address_euro`` ("Pivovarská 276", "2035 Gewerbepark 45") with
    the trailing "Apt. 815, Brú, Iceland 82407" / line-separated city, region and postcode."""
    common = _lexicon()[4]
    for m in _ADDRESS_CUE.finditer(text):
        start = m.end()
        if start >= len(text):
            continue
        window = text[start:start + 160]
        stop = _ADDRESS_STOP.search(window, 1)
        value = window[:stop.start()] if stop else window
        value = value.rstrip(" \t\n,.;:!?")
        if len(value) < 3 or value.startswith("{{") or _POSTCODE_ONLY.fullmatch(value):
            continue  # a lone postcode is the zip detectors' (ZIP_CODE)
        words = re.findall(r"[^\W_]+", value.lower())
        if not words or not (any(c.isdigit() for c in value) or any(w in _STREET_WORDS for w in words)):
            continue
        if not any(c.isdigit() for c in value) and (len(words) > 8 or all(w in common for w in words)):
            continue  # without a number, demand a proper name among the words ("same place", "a new city": no)
        out.append((start, start + len(value), "ADDRESS", "address_cue"))
    for m in _CHAT_STREET.finditer(text):  # "no 33 kamaraj street kinder garden fl", "3380 w hill st champaign il 61820"
        out.append((m.start(), m.end(), "ADDRESS", "address_chat"))
    if not any(c.isupper() for c in text):
        for m in _CHAT_STREET_NONUM.finditer(text):
            if any(w not in common and w not in _CHAT_WORDS for w in m.group("words").split()):
                out.append((m.start(), m.end(), "ADDRESS", "address_chat"))
        for m in _CHAT_NUM_PLACE.finditer(text):
            words = m.group("words").split()
            if all(w not in common and w not in _BLOCK and w not in _CHAT_WORDS and not _EMAIL_SQUASHED_HINT.search(w)
                   for w in words):
                out.append((m.start(), m.end(), "ADDRESS", "address_chat"))
    for m in _EURO_STREET.finditer(text):
        words = [w for w in re.findall(r"[^\W\d_][\w'’.-]*", m.group()) if w[:1].isupper()]
        if not words or any(len(w) > 1 and w.isupper() for w in words) or all(w.lower().rstrip(".") in common for w in words):
            continue
        end = m.end()
        tail = _ADDRESS_TAIL.match(text, end)
        if tail:
            end = tail.end()
        out.append((m.start(), len(text[:end].rstrip(" \t\n,")), "ADDRESS", "address_euro"))
    _extend_addresses(text, out)


# --------------------------------------------------------------------------------------
# Merging and the public API
# --------------------------------------------------------------------------------------
_DIGIT_DETECTORS = (_det_digit_runs, _det_iban, _det_ssn, _det_phone, _det_ids, _det_address, _det_zip, _det_chat_numbers,
                    _det_phone_groups)
_TEXT_DETECTORS = (_det_address_wide, _det_scrubadub, _det_email_obfuscated, _det_email_squashed, _det_credentials,
                   _det_names, _det_name_gazetteer)


def _candidates(text: str) -> list[tuple[int, int, str, str]]:
    out: list[tuple[int, int, str, str]] = []
    if _HAS_DIGIT.search(text):
        for det in _DIGIT_DETECTORS:
            det(text, out)
    for det in _TEXT_DETECTORS:
        det(text, out)
    return out


# Wide-coverage detectors only fill the gaps that the precise ones leave: they never replace a precise span.
_WIDE_DETECTORS = frozenset({"number", "code", "name_gazetteer", "email_squashed", "phone_groups"})


def _merge_key(c: tuple[int, int, str, str]) -> tuple:
    # precise detectors before wide ones; longest first; then rank; then scrubadub before an equal project hit;
    # then position and name
    return (c[3] in _WIDE_DETECTORS, c[0] - c[1], _RANK.get(c[3], 99), not c[3].startswith("scrubadub."), c[0], c[3], c[2])


def _merge(cands: list[tuple[int, int, str, str]], text: str) -> tuple[Span, ...]:
    """Longest span first (ties: detector rank, then position); drop anything overlapping a kept span.

    Placeholders already in the text (``{{EMAIL}}``) are pre-kept so nothing is found inside them.
    """
    if not cands:
        return ()
    starts: list[int] = []
    ends: list[int] = []
    if "{{" in text:
        for m in _PLACEHOLDER_RE.finditer(text):
            starts.append(m.start())
            ends.append(m.end())
    n_placeholders = len(starts)
    kept: list[tuple[int, int, str, str]] = []
    for c in sorted(set(cands), key=_merge_key):
        s, e = c[0], c[1]
        if s >= e:
            continue
        i = bisect.bisect_right(starts, s)
        if (i and ends[i - 1] > s) or (i < len(starts) and starts[i] < e):
            if c[3] in _WIDE_DETECTORS and kept:
                # a wide span may absorb generic number spans, or spans of its own type, that it fully contains
                # ("nlk 458968458": code over long_digits), never another typed span and never a placeholder
                inside = [k for k in kept if k[0] < e and s < k[1]]
                if (inside and all(s <= k[0] and k[1] <= e and (k[3] in _ABSORBABLE or k[2] == c[2]) for k in inside)
                        and not _overlaps_placeholder(text, s, e, n_placeholders)):
                    for k in inside:
                        kept.remove(k)
                        j = starts.index(k[0])
                        del starts[j], ends[j]
                    i = bisect.bisect_right(starts, s)
                    starts.insert(i, s)
                    ends.insert(i, e)
                    kept.append(c)
            continue
        starts.insert(i, s)
        ends.insert(i, e)
        kept.append(c)
    kept.sort()
    return tuple(Span(s, e, t, d) for s, e, t, d in kept)


_ABSORBABLE = frozenset({"long_digits", "number", "code", "phone_groups"})


def _overlaps_placeholder(text: str, s: int, e: int, n_placeholders: int) -> bool:
    return bool(n_placeholders) and "{{" in text[max(0, s - 30):e + 2] and any(
        m.start() < e and s < m.end() for m in _PLACEHOLDER_RE.finditer(text))


def find_pii(text: str) -> tuple[Span, ...]:
    """Detect personal data in ``text``: sorted, non-overlapping spans (offsets into ``text``)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    if not text:
        return ()
    return _merge(_candidates(text), text)


def redact(text: str) -> Redaction:
    """Replace every span found by :func:`find_pii` with its ``{{TYPE}}`` placeholder."""
    spans = find_pii(text)
    if not spans:
        return Redaction(text, ())
    parts = []
    pos = 0
    for s in spans:
        parts.append(text[pos:s.start])
        parts.append("{{" + s.entity_type + "}}")
        pos = s.end
    parts.append(text[pos:])
    return Redaction("".join(parts), spans)


def _redact_chunk(texts: list[str]) -> list[Redaction]:
    return [redact(t) for t in texts]


def redact_many(texts: Iterable[str], processes: int = 1, chunk_size: int = 2000, executor=None) -> list[Redaction]:
    """Batch form of :func:`redact` (same results, in order).

    ``processes > 1`` spreads chunks of ``chunk_size`` texts over that many worker processes (spawned, so it is
    safe inside a threaded server); below ``2 * chunk_size`` texts it stays in this process, where it is faster.
    ``executor``: an existing process pool to use instead (one pool for many calls: a worker's start, ~2 s of
    imports, is paid once).
    """
    texts = list(texts)
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] must be str, not {type(t).__name__}")
    if (processes == 1 and executor is None) or len(texts) < 2 * chunk_size:
        return _redact_chunk(texts)
    chunks = [texts[i:i + chunk_size] for i in range(0, len(texts), chunk_size)]
    if executor is not None:
        return [r for part in executor.map(_redact_chunk, chunks) for r in part]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        return [r for part in pool.map(_redact_chunk, chunks) for r in part]
