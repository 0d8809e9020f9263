"""An independent second pass over redacted text (no Dagster import, no code shared with ``intent_assets.privacy.pii``).

It looks for the shapes of personal data that must never survive redaction: e-mail addresses, card numbers
passing the Luhn check, long digit runs (phone, account or ID numbers), IBANs and US SSNs. It reports where
(record id and type), never the value, so its findings can go into metadata and logs.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

_PATTERNS = {
    "EMAIL": re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
    "IBAN": re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?\b"),
    "SSN": re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),
    "DIGITS": re.compile(r"(?<![\w])\+?\d(?:[ ().-]{0,2}\d){8,}(?![\w])"),
}


def _luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def scan_text(text: str) -> list[str]:
    """Entity types of leftover personal data in one redacted text (empty list when clean)."""
    found, covered = [], []
    for kind, pattern in _PATTERNS.items():
        for m in pattern.finditer(text):
            if any(m.start() < end and start < m.end() for start, end in covered):
                continue  # already reported under a more specific type
            covered.append(m.span())
            if kind == "DIGITS":
                digits = re.sub(r"\D", "", m.group())
                kind = "CREDIT_CARD" if 13 <= len(digits) <= 19 and _luhn_ok(digits) else "LONG_NUMBER"
            found.append(kind)
    return found


def scan(records: Iterable[tuple[str, str]]) -> tuple[Counter, list[str]]:
    """Scan (record_id, text) pairs; return counts by type and the ids of records with findings."""
    counts: Counter = Counter()
    flagged = []
    for rid, text in records:
        hits = scan_text(text)
        if hits:
            counts.update(hits)
            flagged.append(rid)
    return counts, flagged
