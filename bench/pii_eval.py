"""Span-level recall, precision and F2 of ``intent_assets.privacy.pii.redact`` per entity type, next to scrubadub alone.

    python bench/pii_eval.py                                   # both sets, all of MultiDoGO train+dev (turn level)
    python bench/pii_eval.py --multidogo-limit 20000 --splits dev
    python bench/pii_eval.py --throughput-only --processes 2   # messages/s only

Data (read from ``--data``, default ``../shared/data``; nothing is copied into the project):

* ``pii/synth_dataset_v2.json`` (presidio-research synthetic set, 1,500 sentences, character-offset spans);
* ``multidogo/turn_level/<domain>/{train,dev}.tsv.gz`` (customer turns, lower case, no punctuation; one slot
  label per whitespace token; rows whose label count differs from the token count are skipped, as the data
  README says). A gold span is a maximal run of tokens with the same PII slot label.

Metric (the question an auditor asks: was the value removed?):

* a gold span counts as **redacted** (recall) when every letter and digit of it lies inside some predicted
  span, whatever the predicted type (a name redacted as USERNAME is still gone). ``recall_any`` is the weaker
  "at least one character covered" rate, shown for context;
* a predicted span is **correct** (precision) when it overlaps a gold PII span of an evaluated type. Predicted
  spans that overlap only a gold span of a type we do not evaluate (presidio's GPE, ORGANIZATION, DATE_TIME,
  TITLE, AGE, NRP, DOMAIN_NAME, IP_ADDRESS; MultiDoGO's non-PII slots such as city or date) are left out of
  precision: neither right nor wrong. Precision is reported per *predicted* type, recall per *gold* type;
* F2 = 5PR / (4P + R) (recall weighted 4x, as presidio-research does), from the rows' recall and precision;
  the ``ALL`` row pools every evaluated span.

Both systems run on the same texts in the same process: ``intent_assets.privacy.pii.find_pii`` (every detector on) and
scrubadub alone (``scrubadub.Scrubber()`` with its default detectors, every filth kept, url included).
Throughput is messages per second over the MultiDoGO texts, wall clock, after a warm-up, with
``intent_assets.privacy.pii.redact_many`` in one process and in ``--processes`` worker processes, against scrubadub alone in
one process; best of ``--repeats`` interleaved rounds (other jobs on a shared machine only ever slow a round down).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's intent_assets, not an installed one

PRESIDIO_TYPES = {
    "PERSON": "PERSON", "STREET_ADDRESS": "ADDRESS", "CREDIT_CARD": "CREDIT_CARD", "PHONE_NUMBER": "PHONE",
    "EMAIL_ADDRESS": "EMAIL", "ZIP_CODE": "ZIP_CODE", "IBAN_CODE": "IBAN", "US_SSN": "SSN", "US_DRIVER_LICENSE": "ID",
}
MULTIDOGO_TYPES = {
    "name": "PERSON", "email_address": "EMAIL", "phone_number": "PHONE", "phonenumber": "PHONE", "ssn": "SSN",
    "card_number": "CREDIT_CARD", "account_number": "ACCOUNT_NUMBER", "target_account_number": "ACCOUNT_NUMBER",
    "account_id": "ACCOUNT_NUMBER", "address": "ADDRESS", "password": "PASSWORD", "username": "USERNAME",
    "current_zipcode": "ZIP_CODE", "new_zipcode": "ZIP_CODE", "booking_confirmation_number": "ID", "claimid": "ID",
    "policyid": "ID", "order_number": "ID",
}
DOMAINS = ("airline", "fastfood", "finance", "insurance", "media", "software")
_ALNUM = re.compile(r"[^\W_]", re.UNICODE)


@dataclass
class Example:
    text: str
    gold: list[tuple[int, int, str]]  # evaluated PII spans (start, end, our type)
    neutral: list[tuple[int, int]] = field(default_factory=list)  # gold spans of types we do not evaluate


def load_presidio(path: Path) -> list[Example]:
    out = []
    for rec in json.loads(path.read_text(encoding="utf-8")):
        gold, neutral = [], []
        for s in rec["spans"]:
            t = PRESIDIO_TYPES.get(s["entity_type"])
            (gold.append((s["start_position"], s["end_position"], t)) if t
             else neutral.append((s["start_position"], s["end_position"])))
        out.append(Example(rec["full_text"], gold, neutral))
    return out


def load_multidogo(folder: Path, splits: tuple[str, ...], limit: int | None = None) -> tuple[list[Example], int]:
    """Customer turns with gold spans; returns (examples, rows skipped for a label/token mismatch)."""
    out, skipped = [], 0
    for split in splits:
        for domain in DOMAINS:
            with gzip.open(folder / "turn_level" / domain / f"{split}.tsv.gz", "rt", encoding="utf-8", newline="") as fh:
                reader = csv.reader(fh, delimiter="\t")
                header = next(reader)
                iu, il = header.index("utterance"), header.index("slot-labels")
                for row in reader:
                    text, labels = row[iu], row[il].split()
                    toks = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
                    if len(toks) != len(labels):
                        skipped += 1
                        continue
                    gold, neutral = [], []
                    i = 0
                    while i < len(toks):
                        lab = labels[i]
                        j = i + 1
                        while j < len(toks) and labels[j] == lab:
                            j += 1
                        if lab != "O":
                            span = (toks[i][0], toks[j - 1][1])
                            t = MULTIDOGO_TYPES.get(lab)
                            gold.append((*span, t)) if t else neutral.append(span)
                        i = j
                    out.append(Example(text, gold, neutral))
    if limit:
        step = max(1, len(out) // limit)  # an even sample across domains and splits
        out = out[::step][:limit]
    return out, skipped


# --------------------------------------------------------------------------------------
# Systems: (text) -> [(start, end, type)]
# --------------------------------------------------------------------------------------
def ours(text: str) -> list[tuple[int, int, str]]:
    from intent_assets.privacy.pii import find_pii

    return [(s.start, s.end, s.entity_type) for s in find_pii(text)]


_SCRUBADUB = None
_SCRUBADUB_TYPES = {"email": "EMAIL", "phone": "PHONE", "credit_card": "CREDIT_CARD", "social_security_number": "SSN",
                    "twitter": "USERNAME", "credential": "PASSWORD", "url": "URL"}


def scrubadub_alone(text: str) -> list[tuple[int, int, str]]:
    global _SCRUBADUB
    if _SCRUBADUB is None:
        import scrubadub

        _SCRUBADUB = scrubadub.Scrubber()
    out = []
    for f in _SCRUBADUB.iter_filth(text):
        for filth in getattr(f, "filths", None) or (f,):
            out.append((filth.beg, filth.end, _SCRUBADUB_TYPES.get(filth.detector_name, filth.detector_name.upper())))
    return out


# --------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------
def score(examples: list[Example], predict) -> dict[str, dict[str, float]]:
    gold_n, gold_hit, gold_any = defaultdict(int), defaultdict(int), defaultdict(int)
    pred_n, pred_ok = defaultdict(int), defaultdict(int)
    for ex in examples:
        preds = predict(ex.text)
        covered = bytearray(len(ex.text))
        for s, e, _ in preds:
            covered[s:e] = b"\x01" * (e - s)
        for s, e, t in ex.gold:
            chars = [i for i in range(s, e) if _ALNUM.match(ex.text[i])] or list(range(s, e))
            n = sum(covered[i] for i in chars)
            gold_n[t] += 1
            gold_hit[t] += n == len(chars)
            gold_any[t] += n > 0
        for s, e, t in preds:
            if any(s < ge and gs < e for gs, ge, _ in ex.gold):
                pred_n[t] += 1
                pred_ok[t] += 1
            elif not any(s < ne and ns < e for ns, ne in ex.neutral):
                pred_n[t] += 1
    rows: dict[str, dict[str, float]] = {}
    for t in sorted(set(gold_n) | set(pred_n)):
        rows[t] = _row(gold_n[t], gold_hit[t], gold_any[t], pred_n[t], pred_ok[t])
    rows["ALL"] = _row(sum(gold_n.values()), sum(gold_hit.values()), sum(gold_any.values()),
                       sum(pred_n.values()), sum(pred_ok.values()))
    return rows


def _row(gn: int, gh: int, ga: int, pn: int, po: int) -> dict[str, float]:
    r = gh / gn if gn else float("nan")
    p = po / pn if pn else float("nan")
    f2 = 5 * p * r / (4 * p + r) if gn and pn and (4 * p + r) else float("nan")
    return {"gold": gn, "recall": r, "recall_any": ga / gn if gn else float("nan"), "predicted": pn, "precision": p, "f2": f2}


def _fmt(x: float) -> str:
    return "" if x != x else f"{x:.3f}"


def table(name: str, ours_rows: dict, base_rows: dict) -> str:
    lines = [f"#### {name}", "",
             "| type | gold spans | recall | recall (any char) | predicted | precision | F2 | scrubadub alone: recall | precision | F2 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    keys = [k for k in ours_rows if k != "ALL"] + [k for k in base_rows if k not in ours_rows and k != "ALL"] + ["ALL"]
    for k in keys:
        o = ours_rows.get(k) or _row(0, 0, 0, 0, 0)
        b = base_rows.get(k) or _row(0, 0, 0, 0, 0)
        gold = int(o["gold"] or b["gold"])
        lines.append(f"| {k} | {gold or ''} | {_fmt(o['recall'])} | {_fmt(o['recall_any'])} | {int(o['predicted'])} | "
                     f"{_fmt(o['precision'])} | {_fmt(o['f2'])} | {_fmt(b['recall'])} | {_fmt(b['precision'])} | {_fmt(b['f2'])} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Throughput
# --------------------------------------------------------------------------------------
def throughput(texts: list[str], processes: int, repeats: int = 3) -> dict[str, float]:
    """Best of ``repeats`` interleaved rounds (ours in one process, ours in ``processes``, scrubadub alone), so
    that load from other jobs on the machine hits every system alike; the best round is the least disturbed."""
    from intent_assets.privacy.pii import redact_many

    redact_many(texts[:200])  # warm-up: word lists, scrubadub, regex compilation
    scrubadub_alone(texts[0])
    best: dict[str, float] = {}

    def timed(name: str, fn) -> None:
        t0 = time.perf_counter()
        fn()
        best[name] = max(best.get(name, 0.0), len(texts) / (time.perf_counter() - t0))

    for _ in range(repeats):
        timed("ours_1", lambda: redact_many(texts, processes=1))
        if processes > 1:
            timed(f"ours_{processes}", lambda: redact_many(texts, processes=processes))
        timed("scrubadub_1", lambda: [scrubadub_alone(t) for t in texts])
    return best


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), cpu)
    except OSError:
        model = cpu
    return f"{model}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
    parser.add_argument("--splits", nargs="+", default=["train", "dev"], choices=["train", "dev"])
    parser.add_argument("--multidogo-limit", type=int, help="Evenly sampled subset of MultiDoGO turns.")
    parser.add_argument("--processes", type=int, default=2, help="Worker processes for the throughput figure.")
    parser.add_argument("--repeats", type=int, default=3, help="Throughput rounds (best of).")
    parser.add_argument("--throughput-only", action="store_true")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--json", type=Path, help="Also write every figure as JSON.")
    args = parser.parse_args()

    import intent_assets

    print(f"machine: {machine()}; intent_assets from {Path(intent_assets.__file__).parent}")
    print(f"command: python {' '.join(sys.argv)}\n")
    results: dict = {}
    mdg, skipped = load_multidogo(args.data / "multidogo", tuple(args.splits), args.multidogo_limit)
    if not args.throughput_only:
        presidio = load_presidio(args.data / "pii" / "synth_dataset_v2.json")
        for name, examples in ((f"presidio-research synth_dataset_v2 ({len(presidio)} sentences)", presidio),
                               (f"MultiDoGO turn level {'+'.join(args.splits)} ({len(mdg)} customer turns, "
                                f"{skipped} skipped for a label/token mismatch)", mdg)):
            t0 = time.perf_counter()
            o = score(examples, ours)
            t1 = time.perf_counter()
            b = score(examples, scrubadub_alone)
            t2 = time.perf_counter()
            results[name] = {"intent_assets.privacy.pii": o, "scrubadub": b}
            print(table(name, o, b))
            print(f"\n(scored in {t1 - t0:.1f} s ours, {t2 - t1:.1f} s scrubadub)\n", flush=True)
    if not args.no_throughput:
        texts = [e.text for e in mdg]
        tp = throughput(texts, args.processes, args.repeats)
        results["throughput_messages_per_s"] = tp
        print(f"throughput on {len(texts)} MultiDoGO turns (messages/s, best of {args.repeats} rounds): "
              + ", ".join(f"{k} {v:,.0f}" for k, v in tp.items()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
