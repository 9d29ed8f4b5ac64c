"""Readings of a request that no single string shows: seams between parts, and base64.

Why it exists: a value can be split across two text parts of one message ("My card is
4111 1111" + "1111 1111"), across two consecutive messages, or encoded in base64 inside a
tool argument. ``PiiDetector`` scans each string on its own (``classify.walk`` yields them);
this module gives it the other readings, and keeps that logic out of the walk, so that
the rules of which strings are walked can change without touching it.

What must always hold:
- ``text_parts`` returns the text of every message in order: a string ``content``, and
  the ``text`` of each content part, for mappings, pydantic models and plain objects;
- ``could_cross`` is false only where no value can cross the seam, so the caller may
  skip it: a split value leaves digits within ``SEAM_NEAR`` characters on both sides,
  or an '@' on one;
- ``seams`` yields, for each pair of neighbouring parts, the last ``SEAM_WINDOW``
  characters of the first joined to the first ``SEAM_WINDOW`` of the second, with no
  separator and with a space, plus where the seam lies; only values that cross a seam
  are new, so the caller counts only those;
- ``base64_texts`` decodes every run of at least ``MIN_BASE64`` base64 characters that
  decodes to UTF-8 text (printable), at most ``MAX_BASE64_RUNS`` runs and
  ``MAX_BASE64_BYTES`` characters per string: binary payloads (images) are skipped.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from itertools import pairwise
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

SEAM_WINDOW = 64
"""Characters read on each side of a seam: longer than any structured value."""
SEAM_NEAR = 24
"""Characters beside a seam that must hold a digit (or an '@') for a value to cross it."""
JOINERS = ("", " ")
MIN_BASE64, MAX_BASE64_RUNS, MAX_BASE64_BYTES = 16, 32, 1 << 18
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_"
_B64_TABLE = bytes(120 if byte in _B64_ALPHABET else 32 for byte in range(256))
_B64_MARKS = b"x" * MIN_BASE64
_HEX = re.compile(r"[0-9A-Fa-f\-]+")


def text_parts(messages: Sequence[object]) -> list[str]:
    """The text of every message, in order: string contents and text content parts."""
    parts: list[str] = []
    for message in messages:
        content = _field(message, "content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, (list, tuple)):
            for part in content:
                text = _field(part, "text")
                if isinstance(text, str):
                    parts.append(text)
    return parts


def _field(item: object, name: str) -> object:
    if isinstance(item, Mapping):
        return item.get(name)
    return getattr(item, name, None)


Reading = tuple[str, int, int]


def seams(parts: Sequence[str]) -> Iterator[tuple[str, str, list[Reading]]]:
    """For each pair of neighbours: the tail, the head, and (joined, seam start, seam end)
    for each joiner."""
    for before, after in pairwise(parts):
        if before and after:
            tail, head = before[-SEAM_WINDOW:], after[:SEAM_WINDOW]
            readings = [
                (tail + joiner + head, len(tail), len(tail) + len(joiner)) for joiner in JOINERS
            ]
            yield tail, head, readings


def could_cross(tail: str, head: str) -> bool:
    """Whether a value could run across this seam: digits on both sides, or an '@' near it.

    Every structured value split in two leaves digits on both sides (cards, phones, SSNs,
    IBANs, addresses) or an '@' on one side (emails); prose meeting prose needs no scan.
    """
    near_tail, near_head = tail[-SEAM_NEAR:], head[:SEAM_NEAR]
    if "@" in near_tail or "@" in near_head:
        return True
    return any(char.isdigit() for char in near_tail) and any(char.isdigit() for char in near_head)


def base64_texts(text: str) -> list[str]:
    """The UTF-8 texts that base64 runs of ``text`` decode to."""
    if len(text) < MIN_BASE64:
        return []
    marks = text.encode("ascii", "replace").translate(_B64_TABLE)  # "x" in a run, else " "
    found: list[str] = []
    budget, pos = MAX_BASE64_BYTES, marks.find(_B64_MARKS)
    while pos != -1 and budget > 0 and len(found) < MAX_BASE64_RUNS:
        end = marks.find(b" ", pos)
        end = len(marks) if end == -1 else end
        run = text[pos : min(end, pos + budget)]
        if not _HEX.fullmatch(run):  # hashes, UUIDs and git SHAs are hex, never text
            decoded = _decode(run)
            if decoded is not None:
                found.append(decoded)
        budget -= end - pos
        pos = marks.find(_B64_MARKS, end)
    return found


def _decode(run: str) -> str | None:
    """The text a base64 run (standard or URL-safe, padding optional) holds, or None."""
    run = run.rstrip("=")
    run = run[: len(run) - len(run) % 4] if len(run) % 4 == 1 else run
    padded = run + "=" * (-len(run) % 4)
    altchars = b"-_" if ("-" in run or "_" in run) else None
    try:
        data = base64.b64decode(padded, altchars=altchars, validate=True)
        text = data.decode("utf-8")
    except (binascii.Error, ValueError):  # not base64 text after all: nothing to scan
        return None
    printable = sum(char.isprintable() or char in "\t\n\r" for char in text)
    return text if text and printable >= 0.95 * len(text) else None
