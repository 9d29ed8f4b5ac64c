"""What config adds to the default detector: extra regex recognizers and an allow-list.

Why it exists: ``privacy.recognizers`` and ``privacy.allow`` let a user find entity types
of their own (an employee number, with context words) and exempt values that are not
personal (company domains, test card numbers). Both are compiled once, when the detector
is built, so that a bad pattern fails at startup and a scan pays only for matching.

What must always hold:
- a bad pattern is a ``ValueError`` naming the recognizer (or ``allow``), raised while
  the detector is built, never during a scan;
- a recognizer with context words reports a match only when one of them, as a whole word
  and in any case, is within ``context_window`` characters of it; an empty match is never
  reported;
- an allow-list entry exempts only a value equal to it (after the normalization
  ``AllowList`` describes) or fully matched by its glob or regex: a value that merely
  contains an allowed one still counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable


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


class CompiledRecognizer:
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
