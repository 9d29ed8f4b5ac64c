"""Per-entity recall and precision of the default PII detector on three labelled sets.

- ``tests/data/pii_labelled.jsonl`` (``make_pii_labelled.py``): each line a text and the
  values it holds, written beside the detector, hard cases included;
- ``tests/data/pii_spec.jsonl`` (``make_pii_spec.py``): written from the specifications
  only (ISO/IEC 7812, ITU-T E.164 plans, the IBAN registry, SSA rules, RFC 5322), by a
  generator that knows nothing of the detector's patterns;
- ``tests/data/pii_near_misses.jsonl``: texts without PII that look like it (order
  numbers, invoice ids, timestamps, versions, hashes, UUIDs, git SHAs, measurement lists,
  code); what counts there is the share of texts flagged.

A detected span is a true positive when its type matches a labelled value of that type
and the two overlap; a labelled value is recalled when some detected span of its type
overlaps it. ``tests/test_pii_accuracy.py`` asserts the thresholds with the same functions.

    python bench/bench_pii_accuracy.py [--misses]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aegis_proxy.classify.detector import PiiDetector, PiiMatch

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
LABELLED = DATA / "pii_labelled.jsonl"
SPEC = DATA / "pii_spec.jsonl"
NEAR_MISSES = DATA / "pii_near_misses.jsonl"


class Scanner(Protocol):
    def scan_text(self, text: str) -> list[PiiMatch]: ...


@dataclass
class Tally:
    """Counts for one entity type, plus the misses and false alarms to show."""

    labelled: int = 0
    recalled: int = 0
    detected: int = 0
    correct: int = 0
    missed: list[str] = field(default_factory=list)
    false_alarms: list[str] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.recalled / self.labelled if self.labelled else 1.0

    @property
    def precision(self) -> float:
        return self.correct / self.detected if self.detected else 1.0


def load(path: Path = LABELLED) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def labelled_spans(row: dict[str, Any]) -> list[tuple[str, int, int]]:
    """Each labelled value's (type, start, end); repeated values take successive places."""
    spans, cursor = [], {}
    for entity in row["entities"]:
        value = entity["value"]
        start = row["text"].index(value, cursor.get(value, 0))
        cursor[value] = start + len(value)
        spans.append((entity["type"], start, start + len(value)))
    return spans


def score(detector: Scanner, rows: list[dict[str, Any]]) -> dict[str, Tally]:
    """Per entity type: labelled, recalled, detected and correct counts over ``rows``."""
    tallies: dict[str, Tally] = {}
    for row in rows:
        text, truth = row["text"], labelled_spans(row)
        found = [(m.entity_type, m.start, m.end) for m in detector.scan_text(text)]
        for kind, start, end in truth:
            tally = tallies.setdefault(kind, Tally())
            tally.labelled += 1
            if any(_overlap(kind, start, end, other) for other in found):
                tally.recalled += 1
            else:
                tally.missed.append(f"{text[start:end]!r} in {text!r}")
        for kind, start, end in found:
            tally = tallies.setdefault(kind, Tally())
            tally.detected += 1
            if any(_overlap(kind, start, end, other) for other in truth):
                tally.correct += 1
            else:
                tally.false_alarms.append(f"{text[start:end]!r} in {text!r}")
    return tallies


def _overlap(kind: str, start: int, end: int, other: tuple[str, int, int]) -> bool:
    return other[0] == kind and start < other[2] and other[1] < end


def overall_precision(tallies: dict[str, Tally]) -> float:
    detected = sum(tally.detected for tally in tallies.values())
    return sum(tally.correct for tally in tallies.values()) / detected if detected else 1.0


def flagged(detector: Scanner, rows: list[dict[str, Any]]) -> list[str]:
    """The texts without labelled PII in which the detector finds something."""
    return [row["text"] for row in rows if not row["entities"] and detector.scan_text(row["text"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--misses", action="store_true", help="list misses and false alarms")
    args = parser.parse_args()
    detector = PiiDetector()
    for title, path in (("labelled set", LABELLED), ("set from the specifications", SPEC)):
        print(f"== {title}: {path.name}")
        rows = load(path)
        report(rows, score(detector, rows), args.misses)
    misses = load(NEAR_MISSES)
    wrong = flagged(detector, misses)
    print(f"== near misses: {NEAR_MISSES.name}")
    print(f"{len(misses)} texts without PII, {len(wrong)} flagged ({len(wrong) / len(misses):.1%})")
    for text in wrong if args.misses else ():
        print(f"FLAGGED: {text!r}")


def report(rows: list[dict[str, Any]], tallies: dict[str, Tally], misses: bool) -> None:
    clean = [row for row in rows if not row["entities"]]
    detector = PiiDetector()
    print(
        f"{len(rows)} snippets, {len(clean)} without PII, {len(flagged(detector, clean))} flagged"
    )
    print(f"{'entity':<16}{'labelled':>9}{'recall':>9}{'detected':>10}{'precision':>11}")
    for kind, tally in sorted(tallies.items()):
        print(
            f"{kind:<16}{tally.labelled:>9}{tally.recall:>9.3f}"
            f"{tally.detected:>10}{tally.precision:>11.3f}"
        )
    print(f"{'overall':<16}{'':>9}{'':>9}{'':>10}{overall_precision(tallies):>11.3f}\n")
    if misses:
        for kind, tally in sorted(tallies.items()):
            for line in tally.missed:
                print(f"MISS {kind}: {line}")
            for line in tally.false_alarms:
                print(f"FALSE {kind}: {line}")


if __name__ == "__main__":
    main()
