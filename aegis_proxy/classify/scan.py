"""The state of one scan: the folded text, its byte shapes, what was found, what waits.

Why it exists: every recognizer module (``classify.patterns``, ``classify.context``,
``classify.streets``) reads the same translated views of the text and writes to the same
lists; this module holds that shared state and the helpers that build patterns for it,
so that no recognizer module imports another just for the plumbing.

What must always hold:
- ``Scan.raw`` has one byte per character of the folded text (non-ASCII becomes ``?``),
  and so do ``shape`` and ``words``: an offset in any of them is an offset in the text;
- ``shape`` turns digits into ``0`` and letters into ``A``/``a``; ``words`` turns digits
  (and commas) into ``0``, lowercases letters, makes every bracket ``()`` and every dash
  a space. Candidate patterns are written against these exact tables;
- ``Scan.add`` drops an entity type the detector was not asked for, so a recognizer may
  report whatever it finds.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Iterable


def _table(*pairs: tuple[bytes, bytes]) -> bytes:
    table = bytearray(range(256))
    for sources, targets in pairs:
        for source, target in zip(sources, targets * len(sources), strict=False):
            table[source] = target
    return bytes(table)


_DIGITS, _UPPER = b"0123456789", bytes(range(65, 91))
SHAPE_TABLE = _table((_DIGITS, b"0"), (_UPPER, b"A"), (_UPPER.lower(), b"a"))
WORDS_TABLE = _table(
    (_DIGITS + b",", b"0"), (_UPPER, _UPPER.lower()), (b"[{", b"("), (b"]}", b")"), (b"-", b" ")
)
_Node: TypeAlias = "dict[str, _Node]"
_FREQUENT = "etaoinsrhldcumfpgwybvkxjqz"


def trie(words: Iterable[str]) -> str:
    """A regular expression for any of ``words``, factored by prefix, common letters first."""
    root: _Node = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}
    return _emit(root)


def _emit(node: _Node) -> str:
    chars = sorted((char for char in node if char), key=lambda c: (_FREQUENT.find(c) % 99, c))
    branches = [re.escape(char) + _emit(node[char]) for char in chars]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return f"(?:{body})?" if "" in node else body


class Scan:
    """One folded text, its byte shapes, what was found and what awaits a context word."""

    def __init__(self, text: str, enabled: frozenset[str]) -> None:
        self.text = text
        self.raw = text.encode("ascii", "replace")  # one byte per character
        self.shape = self.raw.translate(SHAPE_TABLE)
        self.enabled = enabled
        self.found: list[tuple[str, int, int]] = []
        self.pending: list[tuple[str, int, int]] = []  # (kind, start, end)
        self.runs: list[tuple[int, int]] = []  # digit runs of 9+ digits, for pii_windows
        self._words = b""

    @property
    def words(self) -> bytes:
        if not self._words:
            self._words = self.raw.translate(WORDS_TABLE)
        return self._words

    def add(self, entity_type: str, start: int, end: int) -> None:
        if entity_type in self.enabled:
            self.found.append((entity_type, start, end))


def digits(text: str) -> str:
    """The digits of ``text``, in order."""
    return "".join(char for char in text if char.isdigit())
