"""Benchmark the PII detector: what one request pays, and what a naive detector would pay.

Prints median and p95 scan time of a realistic 4 KB prompt (English prose with numbers,
dates, prices and a code snippet) without PII and with PII, throughput on 1 MB of text,
and the same figures for a baseline measured in the same run: one naive combined regular
expression of the same entity patterns (the first design, ~205 us on 1.7 KB).

When ``presidio-analyzer`` is installed (the ``ner`` extra) it also measures, on the same
texts, Presidio's ``AnalyzerEngine`` (all its default recognizers, language en) and our
``PresidioDetector`` (``privacy.ner: presidio``: the regex detector plus Presidio's
PERSON/LOCATION), both on a spaCy pipeline built here: ``spacy.blank("en")`` and an
``entity_ruler`` (no trained model can be installed here). A trained model such as
``en_core_web_lg`` adds its own inference time, so Presidio's figures are a lower bound.
Presidio reads the 1 MB text in the same 100,000-character windows as ``pii_ner`` (spaCy
refuses over 1,000,000 characters); ``--presidio-whole`` also times one call on all of it.

    python bench/bench_pii.py [--runs 2000] [--clock cpu|wall] [--presidio-runs 30]
                              [--no-presidio] [--presidio-whole]

Times are per-thread CPU time by default, so that other processes on a busy machine do
not inflate them; ``--clock wall`` measures wall-clock time instead (equal when idle).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aegis_proxy.classify.checksums import card_valid, iban_valid
from aegis_proxy.classify.detector import PiiDetector

PROSE = """\
You are a senior analyst helping our operations team. Please summarise the quarterly report \
below, point out anything unusual, and suggest three follow-up questions for the finance lead. \
Keep the answer under 300 words and use plain English.

Quarterly report, Q3 2024 (July 1 to September 30, 2024)

Revenue grew 12.4% quarter over quarter to $4.82 million, driven mostly by the enterprise tier, \
which now accounts for 61% of bookings. The average contract value rose from $18,400 to \
$21,950. We closed 37 new enterprise accounts and lost 4, for a net gain of 33. Churn in the \
self-serve tier stayed flat at 2.1% per month. The marketing budget for the period was \
$640,000, of which $212,500 went to paid search and $98,000 to events (the Berlin conference \
on 2024-09-18 alone cost $41,300).

Headcount increased from 118 to 131. Engineering shipped release 4.7.2 on August 14 and the \
hotfix 4.7.3 two weeks later; the mobile app moved to version 2.18.0. Median API latency fell \
from 212 ms to 148 ms after the database migration that ran between 02:00 and 04:30 UTC on \
2024-08-03. Uptime for the quarter was 99.97%, with one incident on September 9 that lasted \
41 minutes (ticket INC-20240909-3).

Inventory: warehouse B holds 12,480 units of SKU 88-1042 and 3,115 units of SKU 88-1077. The \
reorder point is 2,500 units and the lead time is 21 days. Shipping costs per order averaged \
$7.35, up from $6.90, because of the fuel surcharge introduced on 15/07/2024. Orders #100245 \
through #104988 went through the new fulfilment pipeline.

Customer satisfaction was 4.6 out of 5 across 2,914 survey responses, and NPS rose from 41 to \
47. Support handled 8,230 tickets with a first-response time of 1 h 12 min. The top three \
issues were billing questions (28%), SSO configuration (17%) and export timeouts (11%).

Forecast for Q4: revenue between $5.1 and $5.4 million, assuming 3 + 4 = 7 new regional \
partners sign before November 30. Gross margin should stay near 78.5%. Capital expenditure \
will be about $350k for new servers (2 x 64-core nodes, 512 GB RAM each).

The data team attached this snippet that produced the churn table; is the logic right?

```python
import pandas as pd

def monthly_churn(df: pd.DataFrame, start: str = "2024-07-01") -> pd.Series:
    active = df[df["created_at"] >= start]
    grouped = active.groupby(active["created_at"].dt.to_period("M"))
    rate = (grouped["cancelled"].sum() / grouped["account_id"].nunique()).round(4) * 100
    return rate[::-1]  # newest first, e.g. 2.10, 2.05, 1.98

print(monthly_churn(pd.read_csv("exports/churn_2024q3.csv")).head(12))
# 2024-10-02T09:15:27Z INFO job=churn rows=48213 took=3.42s
```

Known risks: the EUR/USD rate moved from 1.08 to 1.12 during the quarter, which inflated \
European revenue by roughly 3.7%. Two large renewals (worth $310,000 and $275,000) are due on \
2024-12-15 and 2025-01-31. The board meets at 10:30 on December 3. Legacy build 1.2.3.4.5 \
still runs on 3 edge nodes. The commit that changed the churn logic is \
9f86d081884c7d659a2feaa0c55ad015a3bf4f1b and the dataset UUID is \
3f2504e0-4f89-11d3-9a0c-0305e82c3301. Compare with Q2 2024, when revenue was $4.29 million.
"""
PII_LINES = """
Escalation contact: Jane Doe <jane.doe+ops@example.co.uk>, phone +44 20 7946 0958 or \
(415) 555-0132, office at 221B Baker Street. Refund card 4111 1111 1111 1111 to IBAN \
DE89 3704 0044 0532 0130 00. Her date of birth: 14/03/1985, passport number X1234567, \
SSN 123-45-6789, last login from 192.168.10.23 and 2001:db8::8a2e:370:7334.
"""


def four_kb(text: str) -> str:
    """``text`` repeated and cut to exactly 4096 characters."""
    return (text * (4096 // len(text) + 1))[:4096]


CLEAN_4K = four_kb(PROSE)
PII_4K = PII_LINES + CLEAN_4K[: 4096 - len(PII_LINES)]
TEXT_1M = ((PROSE + PII_LINES) * (2**20 // len(PROSE + PII_LINES) + 1))[: 2**20]

REQUEST = [  # what the proxy scans: a 4 KB user prompt inside a small conversation
    {"role": "system", "content": "You are a careful analyst. Answer in plain English."},
    {"role": "user", "content": CLEAN_4K},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
        "function": {"name": "lookup", "arguments": '{"quarter": "2024-Q3", "limit": 20}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"rows": 48213, "took_s": 3.42}'},
]  # fmt: skip

# -- the baseline: one combined regular expression, validated the same way -----------------
NAIVE = re.compile(
    r"(?P<EMAIL>[\w.+-]+@[\w-]+(?:\.[\w-]+)+)"
    r"|(?P<PHONE>(?:\+|00)?\d{0,3}[\s.-]?\(?\d{2,5}\)?[\s./-]?\d{2,5}(?:[\s.-]?\d{2,5}){1,3})"
    r"|(?P<CREDIT_CARD>\b(?:\d[ -]?){12,18}\d\b)"
    r"|(?P<IBAN>\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b)"
    r"|(?P<US_SSN>\b\d{3}[- ]\d{2}[- ]\d{4}\b)"
    r"|(?P<IP_ADDRESS>\b(?:\d{1,3}\.){3}\d{1,3}\b|\b(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}\b)"
    r"|(?P<DATE_OF_BIRTH>(?i:born|birth|dob)\W{1,20}\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4})"
    r"|(?P<STREET_ADDRESS>\b\d{1,5}\s+(?:[A-Z]\w+\s+){1,3}(?:Street|St|Avenue|Ave|Road|Rd)\b)"
)


def naive_scan(text: str) -> list[tuple[str, int, int]]:
    found = []
    for match in NAIVE.finditer(text):
        kind, value = str(match.lastgroup), match.group()
        digits = re.sub(r"\D", "", value)
        if kind == "CREDIT_CARD" and not card_valid(digits):
            continue
        if kind == "IBAN" and not iban_valid(value.replace(" ", "")):
            continue
        found.append((kind, *match.span()))
    return found


# -- measuring ------------------------------------------------------------------------------
CLOCKS = {"cpu": time.thread_time_ns, "wall": time.perf_counter_ns}


def timings_us(
    scan: Callable[[Any], object], text: object, runs: int, clock: Callable[[], int]
) -> list[float]:
    for _ in range(min(runs, 200)):  # warm caches and branch predictors
        scan(text)
    gc.collect()
    gc.disable()
    try:
        samples = []
        for _ in range(runs):
            start = clock()
            scan(text)
            samples.append((clock() - start) / 1000)
        return samples
    finally:
        gc.enable()


def median_p95(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.95)]


def throughput_mb_s(
    scan: Callable[[str], object], text: str, clock: Callable[[], int], runs: int = 5
) -> float:
    best = min(timings_us(scan, text, runs, clock))
    return len(text.encode()) / best  # bytes per microsecond == MB/s


ROW = "{:<18}{:>16}{:>12}{:>16}{:>12}{:>9}"


# -- Presidio beside it (when the 'ner' extra is installed) -----------------------------------
RULER_PATTERNS = [  # PII_LINES' name and place; the prose's places (Berlin) stay unknown,
    # so that the text without PII stays without PII for both detectors
    {"label": "PERSON", "pattern": [{"LOWER": "jane"}, {"LOWER": "doe"}]},
    {"label": "LOC", "pattern": [{"LOWER": "baker"}, {"LOWER": "street"}]},
    {"label": "GPE", "pattern": [{"LOWER": "lisbon"}]},
]


@contextmanager
def ruler_pipeline() -> Iterator[str]:
    """The folder of a saved spaCy pipeline: a blank English one with an entity ruler."""
    import spacy

    with tempfile.TemporaryDirectory() as folder:
        nlp = spacy.blank("en")
        ruler: Any = nlp.add_pipe("entity_ruler")  # spaCy types it as a plain callable
        ruler.add_patterns(RULER_PATTERNS)
        nlp.to_disk(folder)
        yield folder


def presidio_engine(model: str) -> Any:
    """Presidio's default ``AnalyzerEngine`` (every built-in recognizer) on ``model``."""
    # Presidio's email recognizer asks tldextract, which would fetch the public suffix
    # list over the network on first use; an empty URL list makes it use its snapshot.
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    models = [{"lang_code": "en", "model_name": model}]
    provider = NlpEngineProvider(nlp_configuration={"nlp_engine_name": "spacy", "models": models})
    return AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])


def presidio_figures(
    runs: int, clock: Callable[[], int], whole: bool = False
) -> dict[str, Any] | None:
    """Presidio's analyzer and our NER backend on this file's texts; None if not installed."""
    if importlib.util.find_spec("presidio_analyzer") is None:
        return None
    from aegis_proxy.classify.detector import PiiDetector
    from aegis_proxy.classify.ner import WINDOW, PresidioDetector, text_windows

    with ruler_pipeline() as model:
        engine = presidio_engine(model)
        ours_ner = PresidioDetector(PiiDetector(), model=model)

        def presidio(text: str) -> object:
            return [engine.analyze(part, language="en") for _, part in text_windows(text)]

        figures: dict[str, Any] = {"window_chars": WINDOW}
        for label, text in (("clean_4k", CLEAN_4K), ("pii_4k", PII_4K)):
            figures[label] = {
                "presidio_us": median_p95(timings_us(presidio, text, runs, clock)),
                "detector_ner_us": median_p95(timings_us(ours_ner.scan_text, text, runs, clock)),
                "presidio_finds": sorted({r.entity_type for r in engine.analyze(text, "en")}),
            }
        figures["mb_s_1mb"] = {
            "presidio": throughput_mb_s(presidio, TEXT_1M, clock, runs=1),
            "detector_ner": throughput_mb_s(ours_ner.scan_text, TEXT_1M, clock, runs=1),
        }
        if whole:
            engine.nlp_engine.get_nlp("en").max_length = len(TEXT_1M) + 1
            began = clock()
            engine.analyze(TEXT_1M, language="en")
            figures["presidio_whole_1mb_s"] = (clock() - began) / 1e9
    return figures


def print_presidio(figures: dict[str, Any] | None, ours: dict[str, float]) -> None:
    """Presidio's rows, with how many times our detector's time each takes."""
    if figures is None:
        print("\nPresidio: not installed (the 'ner' extra): no Presidio figures in this run")
        return
    print("\nPresidio on a blank spaCy 'en' pipeline + entity ruler (a trained model is slower)")
    for label, name in (("pii_4k", "with"), ("clean_4k", "without")):
        print(f"4 KB {name} PII: Presidio finds {', '.join(figures[label]['presidio_finds'])}")
    print(ROW.format("", "Presidio median", "p95", "ner: presidio", "p95", "x ours"))
    for label, name in (("clean_4k", "4 KB, no PII"), ("pii_4k", "4 KB, with PII")):
        row = figures[label]
        cells = [f"{value:.1f} us" for value in (*row["presidio_us"], *row["detector_ner_us"])]
        print(ROW.format(name, *cells, f"{row['presidio_us'][0] / ours[label]:.0f}x"))
    rates = figures["mb_s_1mb"]
    cells = [f"{rates['presidio']:.3f} MB/s", "", f"{rates['detector_ner']:.2f} MB/s", ""]
    print(ROW.format("1 MB mixed text", *cells, f"{ours['mb_s'] / rates['presidio']:.0f}x"))
    if "presidio_whole_1mb_s" in figures:
        print(f"Presidio on the 1 MB text in one call: {figures['presidio_whole_1mb_s']:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    parser.add_argument("--presidio-runs", type=int, default=30)
    parser.add_argument("--no-presidio", action="store_true", help="skip Presidio's rows")
    parser.add_argument("--presidio-whole", action="store_true", help="also 1 MB in one call")
    args = parser.parse_args()
    runs, clock = args.runs, CLOCKS[args.clock]
    detector = PiiDetector()
    found = sorted({m.entity_type for m in detector.scan_text(PII_4K)})
    print(f"4 KB with PII: the detector finds {', '.join(found)}")
    print(f"4 KB without PII: the detector finds {detector.scan_text(CLEAN_4K) or 'nothing'}")
    load = os.getloadavg()[0]
    print(f"clock: {args.clock}; load average {load:.1f} on {os.cpu_count()} CPUs\n")
    print(ROW.format("", "detector median", "p95", "naive median", "p95", "speedup"))
    ours: dict[str, float] = {}
    for label, name, text in (
        ("clean_4k", "4 KB, no PII", CLEAN_4K),
        ("pii_4k", "4 KB, with PII", PII_4K),
    ):
        mine = median_p95(timings_us(detector.scan_text, text, runs, clock))
        naive = median_p95(timings_us(naive_scan, text, max(runs // 4, 50), clock))
        cells = [f"{value:.1f} us" for value in (*mine, *naive)]
        print(ROW.format(name, *cells, f"{naive[0] / mine[0]:.1f}x"))
        ours[label] = mine[0]
    request = median_p95(timings_us(detector.scan_messages, REQUEST, runs, clock))
    print(ROW.format("request, no PII", *(f"{value:.1f} us" for value in request), "", "", ""))
    ours_mb = throughput_mb_s(detector.scan_text, TEXT_1M, clock)
    naive_mb = throughput_mb_s(naive_scan, TEXT_1M, clock)
    ours_cell, naive_cell = f"{ours_mb:.1f} MB/s", f"{naive_mb:.1f} MB/s"
    speedup = f"{ours_mb / naive_mb:.1f}x"
    print(ROW.format("1 MB mixed text", ours_cell, "", naive_cell, "", speedup))
    if not args.no_presidio:
        ours["mb_s"] = ours_mb
        print_presidio(presidio_figures(args.presidio_runs, clock, args.presidio_whole), ours)


if __name__ == "__main__":
    main()
