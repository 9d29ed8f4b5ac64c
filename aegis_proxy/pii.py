"""Find personal data in text and in OpenAI chat requests before a request leaves.

Why it exists: a request holding personal data must never reach a provider that is not
``local: true`` (CONTRACT invariant 1). ``PiiDetector.scan_messages`` makes that call on
every request, so it must read every part of a request, keep false positives low and
cost little.

What must always hold:
- every string reachable from a message is scanned: content strings and parts, tool
  results, tool-call arguments, names, legacy ``function_call``, unknown keys; JSON text
  also through its decoded values, URLs also percent-decoded, HTML entities unescaped;
  only the base64 payload of a ``data:`` URL is skipped;
- look-alike digits, full-width forms and invisible characters cannot hide a value: text
  is NFKC-folded and stripped first, and every ``PiiMatch`` offset refers to the original;
- structured values count only when they validate (Luhn, mod-97, SSA rules, ipaddress,
  calendar); dates and ID numbers count only next to a context word;
- nothing is swallowed: any error while scanning propagates, and the caller treats a
  failed scan as PII (fail closed).

How it stays fast: ASCII text skips folding; the text is translated once into byte
*shape strings* (digits become ``0``) and each candidate pattern starts with a literal,
so ``re`` skips ahead with its fast search; only the few candidates are validated in
Python. The recognizers, one section per entity, live in ``pii_patterns``.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
import unicodedata
from bisect import bisect_right
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from aegis_proxy import pii_patterns as pat

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

_PRIORITY = (
    "EMAIL", "IBAN", "CREDIT_CARD", "US_SSN", "IP_ADDRESS",
    "PHONE", "DATE_OF_BIRTH", "ID_NUMBER", "STREET_ADDRESS",
)  # fmt: skip
ENTITY_TYPES = frozenset(_PRIORITY)
"""Every entity type the detector knows; overlapping matches keep the earlier one here."""
_RANK = {name: rank for rank, name in enumerate(_PRIORITY)}


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


# -- normalization ------------------------------------------------------------------------
_INVISIBLE = frozenset(
    "\u00ad\u034f\u180e\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff"
)
_DASHES = frozenset("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63")
_DOTS = frozenset("\u3002\uff61")  # ideographic full stops: IDNA reads them as "."
_FOLD_NEEDED = re.compile("[" + "".join(sorted(_INVISIBLE | _DASHES | _DOTS)) + r"]|\d")
_NON_ASCII_RUN = re.compile(rb"\?+")  # over text.encode("ascii", "replace")


@dataclass(frozen=True, slots=True)
class _Folded:
    """Normalized text plus the offsets where it stops lining up with the original."""

    text: str
    starts: tuple[int, ...] = (0,)
    deltas: tuple[int, ...] = (0,)

    def original(self, pos: int) -> int:
        return pos + self.deltas[bisect_right(self.starts, pos) - 1]


class _FoldBuilder:
    """Collects folded pieces and records an offset delta wherever it changes."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.length = 0
        self.starts, self.deltas = [0], [0]

    def add(self, piece: str, origin: int) -> None:
        """Append ``piece``, whose first character comes from ``origin`` in the original."""
        delta = origin - self.length
        if delta != self.deltas[-1]:
            if self.starts[-1] == self.length:
                self.deltas[-1] = delta
            else:
                self.starts.append(self.length)
                self.deltas.append(delta)
        self.pieces.append(piece)
        self.length += len(piece)

    def build(self) -> _Folded:
        return _Folded("".join(self.pieces), tuple(self.starts), tuple(self.deltas))


def fold(text: str) -> _Folded:
    """NFKC-fold, strip invisible characters and map look-alike digits and dashes."""
    if text.isascii():
        return _Folded(text)
    builder, pos = _FoldBuilder(), 0
    for run in _NON_ASCII_RUN.finditer(text.encode("ascii", "replace")):
        start, end = run.span()
        if start and unicodedata.combining(text[start]):
            start -= 1  # keep a combining mark with its base letter
        chunk = text[start:end]
        if unicodedata.is_normalized("NFKC", chunk) and not _FOLD_NEEDED.search(chunk):
            continue
        builder.add(text[pos:start], pos)
        for origin, cluster in _clusters(chunk, start):
            builder.add(_fold_cluster(cluster), origin)
        pos = end
    if pos == 0:
        return _Folded(text)
    builder.add(text[pos:], pos)
    return builder.build()


def _clusters(chunk: str, offset: int) -> Iterator[tuple[int, str]]:
    """Split ``chunk`` into base characters with their combining marks."""
    begin = 0
    for index in range(1, len(chunk) + 1):
        if index == len(chunk) or not unicodedata.combining(chunk[index]):
            yield offset + begin, chunk[begin:index]
            begin = index


@lru_cache(maxsize=4096)
def _fold_cluster(cluster: str) -> str:
    kept = "".join(char for char in cluster if char not in _INVISIBLE)
    return "".join(_fold_char(char) for char in unicodedata.normalize("NFKC", kept))


def _fold_char(char: str) -> str:
    if char.isascii():
        return char
    if char in _DASHES or char in _DOTS:
        return "-" if char in _DASHES else "."
    digit = unicodedata.decimal(char, None)
    return char if digit is None else str(digit)


@dataclass(frozen=True, slots=True)
class Recognizer:
    """An extra regex recognizer (from config); ``name`` is the entity type it reports.

    With ``context`` words, a match counts only when one of them (case-insensitive, whole
    word) appears within ``context_window`` characters before or after it.
    """

    name: str
    pattern: str
    context: tuple[str, ...] = ()
    context_window: int = 40


class _Compiled:
    """A ``Recognizer`` ready to run: its pattern and context words compiled once."""

    def __init__(self, recognizer: Recognizer) -> None:
        try:
            self.pattern = re.compile(recognizer.pattern)
        except re.error as exc:
            raise ValueError(f"recognizer {recognizer.name!r}: bad pattern: {exc}") from exc
        words = "|".join(re.escape(word.lower()) for word in recognizer.context)
        self.context = re.compile(rf"(?<!\w)(?:{words})(?!\w)") if words else None
        self.name, self.window = recognizer.name, recognizer.context_window

    def run(self, text: str, found: list[tuple[str, int, int]]) -> None:
        for match in self.pattern.finditer(text):
            start, end = match.span()
            if end == start:
                continue
            window = text[max(0, start - self.window) : end + self.window].lower()
            if self.context is None or self.context.search(window):
                found.append((self.name, start, end))


class AllowList:
    """Values that never count: exact values, ``*`` globs, or ``re:<regex>`` (full match).

    Exact values compare digits only when they hold no letter (so "4111-1111-1111-1111"
    allows "4111 1111 1111 1111"), else case-insensitively without spaces and dashes.
    """

    def __init__(self, entries: Iterable[str]) -> None:
        self.exact: set[str] = set()
        patterns: list[str] = []
        for entry in entries:
            if entry.startswith("re:"):
                patterns.append(f"(?:{entry[3:]})")
            elif "*" in entry:
                patterns.append("(?i:" + ".*".join(map(re.escape, entry.split("*"))) + ")")
            else:
                self.exact.add(_allow_key(entry))
        try:
            self.pattern = re.compile("|".join(patterns)) if patterns else None
        except re.error as exc:
            raise ValueError(f"allow: bad pattern: {exc}") from exc

    def allows(self, value: str) -> bool:
        if _allow_key(value) in self.exact:
            return True
        return self.pattern is not None and self.pattern.fullmatch(value) is not None


def _allow_key(value: str) -> str:
    if not any(char.isalpha() for char in value):
        return "".join(char for char in value if char.isdigit())
    return "".join(value.split()).replace("-", "").casefold()


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
        self._passes = tuple((digit, run) for types, digit, run in pat.PASSES if types & chosen)
        allow = tuple(allow)
        self._allow = AllowList(allow) if allow else None
        self._recognizers = tuple(_Compiled(recognizer) for recognizer in recognizers)

    def scan_text(self, text: str) -> list[PiiMatch]:
        """Every value found in ``text``, in order, with offsets into ``text`` itself."""
        folded = fold(text)
        scan = pat.Scan(folded.text, self.entities)
        has_digit = b"0" in scan.shape
        for needs_digit, run in self._passes:
            if has_digit or not needs_digit:
                run(scan)
        if scan.pending:
            pat.settle_context(scan)
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
        for text in iter_strings(messages, _SKIPPED_KEYS):
            counts.update(self._count(text, 0))
        return PiiReport(MappingProxyType(dict(counts)))

    def _count(self, text: str, depth: int) -> Counter[str]:
        """Counts in ``text``, or in a decoded view of it (JSON, URL, HTML) if higher."""
        text = _without_base64_payload(text)
        counts = Counter(match.entity_type for match in self.scan_text(text))
        if depth < _MAX_DECODE_DEPTH:
            for view in _decoded_views(text):
                view_counts: Counter[str] = Counter()
                for part in view:
                    view_counts.update(self._count(part, depth + 1))
                counts |= view_counts
        return counts


def _resolve(found: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Where two matches overlap, keep the higher-priority type; return them in text order."""
    kept: list[tuple[str, int, int]] = []
    for item in sorted(found, key=lambda item: (item[1], _rank(item[0]))):
        if kept and item[1] < kept[-1][2]:
            if _rank(item[0]) < _rank(kept[-1][0]):
                kept[-1] = item
            continue
        kept.append(item)
    return kept


def _rank(entity_type: str) -> int:
    return _RANK.get(entity_type, len(_RANK))  # a config recognizer yields to the built-ins


# -- walking a request ----------------------------------------------------------------------
_SKIPPED_KEYS = frozenset({"role", "type", "tool_call_id", "id"})
"""Keys whose string values are protocol tokens, not content (walked if not strings)."""
_FIELD_NAMES = frozenset(
    {"role", "content", "name", "tool_calls", "function", "arguments", "type", "text",
     "image_url", "url", "detail", "tool_call_id", "id", "function_call", "refusal"}
)  # fmt: skip
"""OpenAI field names: keys not worth scanning as text (every other key is scanned)."""
_MAX_DECODE_DEPTH = 3
_JSON_START = re.compile(r"\s*[\[{\"]")
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")  # "12.4%" alone is no escape
_HTML_ENTITY = re.compile(r"&(?:#[0-9]+|#[xX][0-9A-Fa-f]+|[A-Za-z][A-Za-z0-9]*);?")


def iter_strings(value: object, skipped_keys: frozenset[str] = frozenset()) -> Iterator[str]:
    """Every string in a nested structure: keys, values, numbers, model dumps, objects."""
    stack: list[object] = [value]
    seen: dict[int, object] = {}  # holds each container, so no id is reused during the walk
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, (bool, float)) or item is None:
            continue
        elif isinstance(item, int):
            yield str(item)
        elif isinstance(item, (bytes, bytearray)):
            yield bytes(item).decode("utf-8", "replace")
        elif id(item) not in seen:
            seen[id(item)] = item
            stack.extend(_children(item, skipped_keys))


def _children(item: object, skipped_keys: frozenset[str]) -> Iterator[object]:
    if type(item) is list:  # the usual shapes first: ABC checks are slow
        yield from item
    elif type(item) is dict or isinstance(item, Mapping):
        for key, child in item.items():
            if key not in _FIELD_NAMES:
                yield key
            if not (key in skipped_keys and isinstance(child, str)):
                yield child
    elif isinstance(item, Collection):  # list, tuple, set, deque, dict views...
        yield from item
    elif callable(getattr(item, "model_dump", None)):
        yield item.model_dump()  # type: ignore[attr-defined]  # a pydantic model
    elif dataclasses.is_dataclass(item) and not isinstance(item, type):
        yield dataclasses.asdict(item)
    elif isinstance(item, type) or callable(item):
        return  # code, not data
    elif hasattr(item, "__dict__"):
        yield vars(item)
    else:
        yield str(item)


def _decoded_views(text: str) -> Iterator[list[str]]:
    """Other readings of ``text`` that could hide a value: JSON, %-encoding, HTML.

    JSON is decoded only when it holds a backslash: without an escape, every decoded
    string and number appears verbatim in the text, which was scanned already.
    """
    if "\\" in text and _JSON_START.match(text):
        try:
            decoded = json.loads(text)
        except ValueError:  # not JSON after all: the text itself was scanned already
            pass
        else:
            yield list(iter_strings(decoded))
    if _PERCENT_ESCAPE.search(text):
        yield [unquote(text)]
    if _HTML_ENTITY.search(text):
        yield [html.unescape(text)]


def _without_base64_payload(text: str) -> str:
    """A ``data:...;base64,`` URL without its payload (images are not text)."""
    if text.startswith("data:"):
        comma = text.find(",", 0, 256)
        if comma != -1 and text[:comma].lower().endswith(";base64"):
            return text[:comma]
    return text
