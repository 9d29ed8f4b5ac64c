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

How it stays fast: the text is translated once into a byte *shape string* (digits become
``0``) and each candidate pattern starts with a literal, so ``re`` skips ahead with its
fast search; only the few candidates are validated in Python (see ``pii_patterns``).
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
import unicodedata
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from aegis_proxy import pii_patterns as pat

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

_PRIORITY = (
    "EMAIL", "IBAN", "CREDIT_CARD", "US_SSN", "IP_ADDRESS",
    "PHONE", "DATE_OF_BIRTH", "ID_NUMBER", "STREET_ADDRESS",
)  # fmt: skip
ENTITY_TYPES = frozenset(_PRIORITY)
"""Every entity type the detector knows; overlapping matches keep the earlier one here."""
_RANK = {name: rank for rank, name in enumerate(_PRIORITY)}
_CONTEXT_TYPES = frozenset({"DATE_OF_BIRTH", "ID_NUMBER", "US_SSN", "PHONE"})


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
_FOLD_NEEDED = re.compile("[" + "".join(sorted(_INVISIBLE | _DASHES)) + r"]|\d")
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
    if char in _DASHES:
        return "-"
    digit = unicodedata.decimal(char, None)
    return char if digit is None else str(digit)


# -- scanning -----------------------------------------------------------------------------
class _Scan:
    """One normalized text, its byte shapes, and the ``(type, start, end)`` found so far."""

    def __init__(self, text: str, enabled: frozenset[str]) -> None:
        self.text = text
        self.raw = text.encode("ascii", "replace")  # one byte per character
        self.shape = self.raw.translate(pat.SHAPE_TABLE)
        self.enabled = enabled
        self.found: list[tuple[str, int, int]] = []
        self._words = b""

    @property
    def words(self) -> bytes:
        if not self._words:
            self._words = self.raw.translate(pat.WORDS_TABLE)
        return self._words

    def add(self, entity_type: str, start: int, end: int) -> None:
        if entity_type in self.enabled:
            self.found.append((entity_type, start, end))

    def near(self, start: int, end: int, family: str = "any") -> set[str]:
        """The context families (dob, ssn, phone, id) with a word near ``[start, end)``."""
        window = self.text[max(0, start - pat.CONTEXT_BEFORE) : end + pat.CONTEXT_AFTER].lower()
        return {
            pat.CONTEXT_FAMILY[match.group()]
            for match in pat.CONTEXT[family].finditer(window)
            if not window[match.start() - 1 : match.start()].isalpha()
        }


def _digits(text: str) -> str:
    return "".join(char for char in text if char.isdigit())


def _find_emails(scan: _Scan) -> None:
    text = scan.text
    at = text.find("@")
    while at != -1:
        local = pat.EMAIL_LOCAL.search(text, max(0, at - 64), at)
        domain = pat.EMAIL_DOMAIN.match(text, at + 1)
        if local and domain and local.group().strip("."):
            scan.add("EMAIL", local.start(), domain.end())
        at = text.find("@", at + 1)


def _find_obfuscated_emails(scan: _Scan) -> None:
    if pat.OBFUSCATED_AT_WORDS.search(scan.words):
        for match in pat.EMAIL_OBFUSCATED.finditer(scan.text):
            scan.add("EMAIL", *match.span())


def _find_numbers(scan: _Scan) -> None:
    for match in pat.NUMERIC_SHAPE.finditer(scan.shape):
        start, end = match.span()
        if match.lastgroup != "date":
            _classify_number(scan, start, end)
        elif "dob" in scan.near(start, end, "dob") and (date_end := _date_end(scan.text, start)):
            scan.add("DATE_OF_BIRTH", start, date_end)


def _classify_number(scan: _Scan, start: int, end: int) -> None:
    """A digit run: an IPv4 address, a card, an SSN or a phone; else maybe a context value."""
    text = scan.text
    value = pat.NUMBER_VALUE.match(text, start)
    if value and _number_valid(value.lastgroup, value.group()):
        return scan.add(_NUMBER_TYPES[str(value.lastgroup)], start, value.end())
    phone_start = start - (text[start - 1 : start] == "(")
    phone_start -= text[phone_start - 1 : phone_start] == "+"
    if phone_end := _phone_end(text, phone_start):
        return scan.add("PHONE", phone_start, phone_end)
    if near := scan.near(start, end):
        _check_context_number(scan, near, start, end)


_NUMBER_TYPES = {"ip": "IP_ADDRESS", "card": "CREDIT_CARD", "ssn": "US_SSN"}


def _number_valid(kind: str | None, value: str) -> bool:
    if kind == "ip":
        return pat.ipv4_valid(value)
    if kind == "card":
        return pat.card_valid(_digits(value))
    return pat.ssn_valid(value[:3], value[4:6], value[7:])


def _phone_end(text: str, start: int) -> int | None:
    """Where a phone number starting at ``start`` ends, if it has a phone's shape."""
    if text.startswith(("+", "00"), start):
        match = pat.PHONE_INTERNATIONAL.match(text, start)
        return _e164_end(start, match.group()) if match else None
    match = pat.PHONE_NATIONAL.match(text, start)
    return match.end() if match and 9 <= len(_digits(match.group())) <= 12 else None


def _e164_end(start: int, number: str) -> int | None:
    """End of the longest run of digit groups holding 8-15 digits (E.164)."""
    count = -(2 if number.startswith("00") else 0) - number.count("(0)")
    end = None
    for group in re.finditer(r"[0-9]+", number):
        count += len(group.group())
        if count > 15:
            break
        end = start + group.end() if count >= 8 else end
    return end


def _check_context_number(scan: _Scan, near: set[str], start: int, end: int) -> None:
    """A number that is PII only next to a context word: DOB, SSN, phone or ID."""
    digits = _digits(scan.text[start:end])
    if "dob" in near and (date_end := _date_end(scan.text, start)):
        scan.add("DATE_OF_BIRTH", start, date_end)
    elif "ssn" in near and len(digits) == 9 and pat.ssn_valid(digits[:3], digits[3:5], digits[5:]):
        scan.add("US_SSN", start, end)
    elif "phone" in near and 7 <= len(digits) <= 15:
        scan.add("PHONE", start, end)
    elif "id" in near and 6 <= len(digits) <= 12:
        scan.add("ID_NUMBER", start, end)


def _date_end(text: str, start: int) -> int | None:
    """End of a plausible numeric date starting at ``start``."""
    if not (date := pat.NUMERIC_DATE.match(text, start)):
        return None
    year, month, day = date["y"] or date["y2"], date["m"] or date["m2"], date["d"] or date["d2"]
    return date.end() if pat.date_plausible(year, month, day) else None


def _find_text_dates(scan: _Scan) -> None:
    for year in pat.YEAR_WORDS.finditer(scan.words):
        start, end = max(0, year.start() - 24), year.end()
        if "dob" in scan.near(start, end, "dob"):
            for date in pat.TEXT_DATE.finditer(scan.text, start, end):
                scan.add("DATE_OF_BIRTH", *date.span())


def _find_ids(scan: _Scan) -> None:
    text = scan.text
    for match in pat.ID_SHAPE.finditer(scan.shape):
        start, end = match.span()
        while start and text[start - 1].isalpha() and match.start() - start < 3:
            start -= 1
        if 6 <= end - start <= 12 and not text[start - 1 : start].isalnum():
            if "id" in scan.near(start, end, "id"):
                scan.add("ID_NUMBER", start, end)


def _find_ibans(scan: _Scan) -> None:
    for pattern in pat.IBAN_SHAPES:
        for match in pattern.finditer(scan.shape):
            _check_iban(scan, *match.span())


def _check_iban(scan: _Scan, start: int, end: int) -> None:
    candidate, length, kept = scan.text[start:end], pat.iban_length(scan.text[start:end]), 0
    for index, char in enumerate(candidate):
        kept += char != " "
        if kept == length:
            if pat.iban_valid(candidate[: index + 1].replace(" ", "")):
                scan.add("IBAN", start, start + index + 1)
            return


def _find_streets(scan: _Scan) -> None:
    text, words = scan.text, scan.words
    for match in pat.STREET_NUMBER_FIRST_SHAPE.finditer(scan.shape):
        start = _number_start(text, match.start() - 1)
        if street := pat.STREET_EN.match(text, start):
            scan.add("STREET_ADDRESS", start, street.end())
    for match in pat.STREET_FRENCH_WORDS.finditer(words):
        start, end = _number_start(text, match.start()), match.end()
        scan.add("STREET_ADDRESS", start, pat.STREET_NAME_TAIL.match(text, end).end())
    size = len(words)
    for match in pat.STREET_NUMBER_LAST_REVERSED.finditer(words[::-1]):
        start, end = size - match.end(), size - match.start()
        if text[start].islower() and not pat.STREET_TYPE_FIRST.match(text, start):
            while start and (text[start - 1].isalpha() or text[start - 1] in "-'"):
                start -= 1  # the rest of "Hauptstrasse"
        elif not text[start].islower() and not pat.STREET_TYPE_FIRST.match(text, start):
            continue
        while end < len(text) and text[end].isalnum():
            end += 1
        scan.add("STREET_ADDRESS", start, end)


def _number_start(text: str, end: int) -> int:
    """Start of the house number ending at ``end`` ("221B", "12,")."""
    start = end
    while start and (text[start - 1].isalnum() or text[start - 1] == ","):
        start -= 1
    return start


_HEX_COLON = frozenset("0123456789abcdefABCDEF:")


def _find_ipv6(scan: _Scan) -> None:
    text, resume = scan.text, 0
    for match in pat.IPV6_SHAPE.finditer(text):
        start = match.start()
        if start < resume:
            continue
        while start and text[start - 1] in _HEX_COLON and match.start() - start < 40:
            start -= 1
        token = pat.IPV6_TOKEN.match(text, start)
        resume = end = token.end() if token else match.end()
        if token and _standalone(text, start, end) and pat.ipv6_valid(token.group()):
            scan.add("IP_ADDRESS", start, end)


def _standalone(text: str, start: int, end: int) -> bool:
    """Not glued to a word (``std::map``) and not a slice step (``items[::2]``)."""
    before, after = text[start - 1 : start], text[end : end + 1]
    if (before.isalnum() or before == "_") or (after.isalnum() or after == "_"):
        return False
    return not (before == "[" and after == "]" and re.match(r"[\w)\]]", text[start - 2 : start]))


def _resolve(found: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Keep the higher-priority match where two overlap; return them in text order."""
    kept: list[tuple[str, int, int]] = []
    for kind, start, end in sorted(found, key=lambda item: (_RANK[item[0]], item[1])):
        if all(end <= other_start or start >= other_end for _, other_start, other_end in kept):
            kept.append((kind, start, end))
    return sorted(kept, key=lambda item: (item[1], item[2]))


# -- detector -----------------------------------------------------------------------------
_NUMERIC_TYPES = frozenset(
    {"CREDIT_CARD", "US_SSN", "IP_ADDRESS", "PHONE", "DATE_OF_BIRTH", "ID_NUMBER"}
)
_PASSES: tuple[tuple[frozenset[str], Callable[[_Scan], None]], ...] = (
    (frozenset({"EMAIL"}), _find_obfuscated_emails),
    (_NUMERIC_TYPES, _find_numbers),
    (frozenset({"DATE_OF_BIRTH"}), _find_text_dates),
    (frozenset({"ID_NUMBER"}), _find_ids),
    (frozenset({"IBAN"}), _find_ibans),
    (frozenset({"STREET_ADDRESS"}), _find_streets),
    (frozenset({"IP_ADDRESS"}), _find_ipv6),
)
"""Passes run only when the text holds a digit (an obfuscated email needs none)."""


class PiiDetector:
    """Finds personal data; ``entities`` limits which types count (default: all)."""

    def __init__(self, entities: Iterable[str] | None = None) -> None:
        chosen = ENTITY_TYPES if entities is None else frozenset(entities)
        if unknown := chosen - ENTITY_TYPES:
            known = ", ".join(sorted(ENTITY_TYPES))
            raise ValueError(f"unknown PII entity type(s) {sorted(unknown)}; known: {known}")
        self.entities = chosen
        self._passes = tuple(run for types, run in _PASSES if types & chosen)

    def scan_text(self, text: str) -> list[PiiMatch]:
        """Every value found in ``text``, in order, with offsets into ``text`` itself."""
        folded = fold(text)
        scan = _Scan(folded.text, self.entities)
        if "EMAIL" in self.entities and "@" in scan.text:
            _find_emails(scan)
        has_digit = b"0" in scan.shape
        for run in self._passes:
            if has_digit or run is _find_obfuscated_emails:
                run(scan)
        return [
            PiiMatch(kind, folded.original(start), folded.original(end - 1) + 1)
            for kind, start, end in _resolve(scan.found)
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


def iter_strings(value: object, skipped_keys: frozenset[str] = frozenset()) -> Iterator[str]:
    """Every string in a nested structure: keys, values, numbers, model dumps, objects."""
    stack, seen = [value], set()
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
        elif id(item) in seen:
            continue
        else:
            seen.add(id(item))
            stack.extend(_children(item, skipped_keys))


def _children(item: object, skipped_keys: frozenset[str]) -> Iterator[object]:
    if isinstance(item, dict) or (hasattr(item, "items") and hasattr(item, "keys")):
        for key, child in item.items():  # type: ignore[attr-defined]  # any mapping
            if key not in _FIELD_NAMES:
                yield key
            if not (key in skipped_keys and isinstance(child, str)):
                yield child
    elif isinstance(item, (list, tuple, set, frozenset)):
        yield from item
    elif callable(getattr(item, "model_dump", None)):
        yield item.model_dump()  # type: ignore[attr-defined]  # a pydantic model
    elif dataclasses.is_dataclass(item) and not isinstance(item, type):
        yield dataclasses.asdict(item)
    elif hasattr(item, "__dict__"):
        yield vars(item)
    else:
        yield str(item)


def _decoded_views(text: str) -> Iterator[list[str]]:
    """Other readings of ``text`` that could hide a value: JSON, %-encoding, HTML."""
    if _JSON_START.match(text):
        try:
            decoded = json.loads(text)
        except ValueError:  # not JSON after all: the text itself was scanned already
            pass
        else:
            yield list(iter_strings(decoded))
    if "%" in text and (unquoted := unquote(text)) != text:
        yield [unquoted]
    if "&" in text and (unescaped := html.unescape(text)) != text:
        yield [unescaped]


def _without_base64_payload(text: str) -> str:
    """A ``data:...;base64,`` URL without its payload (images are not text)."""
    if text.startswith("data:"):
        comma = text.find(",", 0, 256)
        if comma != -1 and text[:comma].lower().endswith(";base64"):
            return text[:comma]
    return text
