"""Fold text before a scan, so look-alike characters cannot hide a value.

Why it exists: a card number in full-width or Arabic-Indic digits, an email with a
full-width at sign, or a card with zero-width spaces between its groups is the same value
as its plain ASCII form. The recognizers are written for ASCII digits and punctuation;
this module brings the text to that form first and remembers how to map every position
back.

What must always hold:
- ``fold(text).text`` is NFKC-normalized, holds no invisible character from
  ``_INVISIBLE``, and has every decimal digit (Arabic-Indic, full-width...) as its ASCII
  digit, every dash look-alike as ``-`` and ideographic full stops as ``.``;
- ``Folded.original(pos)`` maps any position of the folded text to the position in the
  original text of the character it came from; a combining mark stays with its base
  letter, so a cluster is folded as a whole and never split;
- every Unicode space (no-break, narrow no-break, thin, ideographic, line separator...)
  is an ASCII space, except where it cuts a digit group of at most four digits in two,
  where it is dropped: "41\u202f11 1111" reads "4111 1111", as a reader sees it;
- ASCII text is returned as it is, at the cost of one ``isascii`` call: the fast path.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

_INVISIBLE = frozenset(
    "\u00ad\u034f\u180e\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff"
)
_DASHES = frozenset("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63")
_DOTS = frozenset("\u3002\uff61")  # ideographic full stops: IDNA reads them as "."
_SPACES = frozenset(
    "\u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)
_FOLD_NEEDED = re.compile("[" + "".join(sorted(_INVISIBLE | _DASHES | _DOTS | _SPACES)) + r"]|\d")
_NON_ASCII_RUN = re.compile(rb"\?+")  # over text.encode("ascii", "replace")


@dataclass(frozen=True, slots=True)
class Folded:
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

    def build(self) -> Folded:
        return Folded("".join(self.pieces), tuple(self.starts), tuple(self.deltas))


def fold(text: str) -> Folded:
    """NFKC-fold, strip invisible characters and map look-alike digits and dashes."""
    if text.isascii():
        return Folded(text)
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
            if cluster in _SPACES and _between_digits(text, origin):
                continue  # a space inside a digit group: "41\u00a011 1111 1111 1111"
            builder.add(_fold_cluster(cluster), origin)
        pos = end
    if pos == 0:
        return Folded(text)
    builder.add(text[pos:], pos)
    return builder.build()


def _between_digits(text: str, index: int) -> bool:
    """Whether the Unicode spaces around ``index`` split one digit group of at most four.

    "41\u00a011 1111" and "4111 11\u00a011" are groups cut in two (a disguise); "530\u00a099
    \u00a09095" and "12\u202f480" keep their spaces, which separate groups a reader sees.
    """
    before, after = index - 1, index + 1
    while before >= 0 and text[before] in _SPACES:
        before -= 1
    while after < len(text) and text[after] in _SPACES:
        after += 1
    left = right = 0
    while before - left >= 0 and left < 5 and text[before - left].isdigit():
        left += 1
    while after + right < len(text) and right < 5 and text[after + right].isdigit():
        right += 1
    return left > 0 and right > 0 and left + right <= 4


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
    if char in _DASHES or char in _DOTS or char in _SPACES:
        return "-" if char in _DASHES else "." if char in _DOTS else " "
    digit = unicodedata.decimal(char, None)
    return char if digit is None else str(digit)
