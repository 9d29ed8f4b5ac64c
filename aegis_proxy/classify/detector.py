"""Find personal data in text and in OpenAI chat requests before a request leaves.

Why it exists: a request holding personal data must never reach a provider that is not
``local: true`` (CONTRACT invariant 1). ``PiiDetector.scan_messages`` makes that call on
every request, so it must read every part of a request, keep false positives low and
cost little. This module is the pipeline: fold, run the passes, settle context, add the
config's recognizers, resolve overlaps, drop allowed values, map offsets back.

What must always hold:
- every string reachable from a message is scanned (``classify.walk``): content strings and
  parts, tool results, tool-call arguments, names, legacy ``function_call``, unknown
  keys; JSON text also through its decoded values, URLs also percent-decoded, HTML
  entities unescaped, base64 runs that hold UTF-8 text decoded (``classify.join``); only the
  base64 payload of a genuine ``data:`` URL where an image or a file travels is skipped
  (``walk``);
- a value split across neighbouring text parts or consecutive messages is found:
  ``scan_across`` reads each seam (``classify.join.seams``) and counts only what crosses it;
- a number next to a value cannot hide it: every group of a digit run is tried
  (``classify.patterns``), and windows of groups with any separator are validated
  (``classify.windows``);
- look-alike digits, full-width forms and invisible characters cannot hide a value: text
  is folded first (``classify.fold``), and every ``PiiMatch`` offset refers to the original;
- structured values count only when they validate (Luhn, mod-97, SSA rules, ipaddress,
  calendar; ``classify.checksums``); dates and ID numbers count only next to a context word
  (``classify.context``); addresses of this host (127.0.0.0/8, ``::1``, ``0.0.0.0``, ``::``)
  never count;
- where two matches overlap, one is kept: the type earlier in ``_PRIORITY``, and for the
  same type and start, the longer one, so a redacted value leaves no tail behind;
- nothing is swallowed: any error while scanning propagates, and the caller treats a
  failed scan as PII (fail closed).

How it stays fast: a detector remembers what it found in the last ``MEMO_SIZE`` strings
it walked, by a 128-bit BLAKE2b digest of each (never the text): a pipeline's system
prompts, parameter names and the egress guard's second look at the same body cost a hash
each. The memo is exact: a detector's passes, allow list and recognizers are fixed when it
is made, so a string's counts are a function of the string. ASCII text skips folding;
the text is translated once into byte *shape strings* (digits become ``0``) and each
candidate pattern starts with a literal, so ``re`` skips ahead with its fast search; only
the few candidates are validated in Python. The recognizers and the order they run in
are in ``classify.patterns``.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from aegis_proxy.classify.context import settle_context
from aegis_proxy.classify.custom import AllowList, CompiledRecognizer, Recognizer
from aegis_proxy.classify.fold import fold
from aegis_proxy.classify.join import base64_texts, could_cross, seams, text_parts
from aegis_proxy.classify.patterns import PASSES
from aegis_proxy.classify.scan import Scan
from aegis_proxy.classify.walk import (
    MAX_DECODE_DEPTH,
    SKIPPED_KEYS,
    decoded_views,
    iter_strings,
)
from aegis_proxy.classify.windows import find_windows

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

_PRIORITY = (
    "EMAIL", "IBAN", "CREDIT_CARD", "US_SSN", "IP_ADDRESS",
    "PHONE", "DATE_OF_BIRTH", "ID_NUMBER", "STREET_ADDRESS",
)  # fmt: skip
_PASSES = (*PASSES, (frozenset({"CREDIT_CARD", "US_SSN", "PHONE"}), True, find_windows))
ENTITY_TYPES = frozenset(_PRIORITY)
"""Every entity type the detector knows; overlapping matches keep the earlier one here."""
_RANK = {name: rank for rank, name in enumerate(_PRIORITY)}
DETECTION_FAILED = "DETECTION_FAILED"
"""Counted when the detector itself fails: the request is then treated as personal data."""
IMAGE = "IMAGE"
"""An image part: unscannable, so personal data unless ``privacy.images: allow_cloud``."""
BINARY = "BINARY_PART"
"""A file, audio or unknown part: personal data unless ``privacy.binary_parts: allow_cloud``."""
UNREDACTABLE = frozenset({IMAGE, BINARY, DETECTION_FAILED})
"""What no placeholder can stand for."""
MEMO_SIZE = 4096
"""Strings whose counts a detector remembers (by digest; the oldest is forgotten first)."""
_CLEAN: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class PiiMatch:
    """One value found: its type and its ``[start, end)`` offsets in the original text."""

    entity_type: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class PiiReport:
    """What a request holds: how many values of each entity type."""

    entity_counts: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def contains_pii(self) -> bool:
        return any(self.entity_counts.values())

    @property
    def entity_types(self) -> tuple[str, ...]:
        return tuple(sorted(name for name, count in self.entity_counts.items() if count))


class PiiDetector:
    """Finds personal data; ``entities`` limits which types count (default: all).

    ``allow`` lists values that never count (see ``AllowList``); ``recognizers`` add
    entity types of their own, which always count.
    """

    def __init__(
        self,
        entities: Iterable[str] | None = None,
        *,
        allow: Iterable[str] = (),
        recognizers: Iterable[Recognizer] = (),
    ) -> None:
        chosen = ENTITY_TYPES if entities is None else frozenset(entities)
        if unknown := chosen - ENTITY_TYPES:
            known = ", ".join(sorted(ENTITY_TYPES))
            raise ValueError(f"unknown PII entity type(s) {sorted(unknown)}; known: {known}")
        self.entities = chosen
        self._passes = tuple((digit, run) for types, digit, run in _PASSES if types & chosen)
        allow = tuple(allow)
        self._allow = AllowList(allow) if allow else None
        self._recognizers = tuple(CompiledRecognizer(recognizer) for recognizer in recognizers)
        self._memo: dict[bytes, Mapping[str, int]] = {}
        self._memo_lock = threading.Lock()

    def scan_text(self, text: str) -> list[PiiMatch]:
        """Every value found in ``text``, in order, with offsets into ``text`` itself."""
        folded = fold(text)
        scan = Scan(folded.text, self.entities)
        has_digit = b"0" in scan.shape
        for needs_digit, run in self._passes:
            if has_digit or not needs_digit:
                run(scan)
        if scan.pending:
            settle_context(scan)
        for recognizer in self._recognizers:
            recognizer.run(folded.text, scan.found)
        kept = _resolve(scan.found)
        if self._allow is not None:
            kept = [item for item in kept if not self._allow.allows(folded.text[item[1] : item[2]])]
        return [
            PiiMatch(kind, folded.original(start), folded.original(end - 1) + 1)
            for kind, start, end in kept
        ]

    def scan_messages(self, messages: Sequence[Mapping[str, Any]]) -> PiiReport:
        """Count the values in every string of every message (see the module docstring)."""
        counts: Counter[str] = Counter()
        for text in iter_strings(messages, SKIPPED_KEYS):
            counts.update(self._remembered(text))
        counts.update(self.scan_across(text_parts(messages)))
        return PiiReport(MappingProxyType(dict(counts)))

    def scan_across(self, parts: Sequence[str]) -> Counter[str]:
        """The values that cross a seam between neighbouring strings of ``parts``, in order.

        ``parts`` are the text parts of one message, or of consecutive messages, in the
        order a reader meets them; a value wholly inside one part is not counted here.
        """
        counts: Counter[str] = Counter()
        for tail, head, readings in seams(parts):
            if not could_cross(tail, head):
                continue
            seam_counts: Counter[str] = Counter()
            sides: tuple[list[PiiMatch], list[PiiMatch]] | None = None
            for joined, seam_start, seam_end in readings:
                crossing = [
                    match
                    for match in self.scan_text(joined)
                    if match.start < seam_start and match.end > seam_end
                ]
                if crossing and sides is None:  # values wholly inside one side are no news
                    sides = (self.scan_text(tail), self.scan_text(head))
                inside = _spans(sides, seam_end)
                seam_counts |= Counter(
                    match.entity_type
                    for match in crossing
                    if not any(start < match.end and match.start < end for start, end in inside)
                )
            counts.update(seam_counts)
        return counts

    def _remembered(self, text: str) -> Mapping[str, int]:
        """``_count(text, 0)``, from the memo when this string was counted before."""
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        counts = self._memo.get(key)
        if counts is None:
            found = self._count(text, 0)  # an error propagates and nothing is remembered
            counts = MappingProxyType(dict(found)) if found else _CLEAN
            with self._memo_lock:
                if len(self._memo) >= MEMO_SIZE:
                    del self._memo[next(iter(self._memo))]
                self._memo[key] = counts
        return counts

    def _count(self, text: str, depth: int) -> Counter[str]:
        """Counts in ``text``, or in a decoded view of it (JSON, URL, HTML) if higher."""
        counts = Counter(match.entity_type for match in self.scan_text(text))
        if depth < MAX_DECODE_DEPTH:
            for view in (*decoded_views(text), base64_texts(text)):
                view_counts: Counter[str] = Counter()
                for part in view:
                    view_counts.update(self._count(part, depth + 1))
                counts |= view_counts
        return counts


def _spans(
    sides: tuple[list[PiiMatch], list[PiiMatch]] | None, shift: int
) -> list[tuple[int, int]]:
    """The spans of the values inside the tail and the head, in the joined text's offsets."""
    if sides is None:
        return []
    return [(m.start, m.end) for m in sides[0]] + [
        (m.start + shift, m.end + shift) for m in sides[1]
    ]


def _resolve(found: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Where two matches overlap, keep the higher-priority type; return them in text order."""
    kept: list[tuple[str, int, int]] = []
    for item in sorted(found, key=lambda item: (item[1], _rank(item[0]), -item[2])):
        if kept and item[1] < kept[-1][2]:
            if _rank(item[0]) < _rank(kept[-1][0]):
                kept[-1] = item
            continue
        kept.append(item)
    return kept


def _rank(entity_type: str) -> int:
    return _RANK.get(entity_type, len(_RANK))  # a config recognizer yields to the built-ins
