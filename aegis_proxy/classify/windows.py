"""Cards, SSNs and phones inside any run of digit groups, whatever stands next to them.

Why it exists: the digit-run pass (``classify.patterns.find_numbers``) reads a number from the
start of each group with fixed separators. A value can hide behind a neighbour that
merges into its run ("Ref 2024_4111_1111_1111_1111"), behind separators people type
(tab, newline, comma, underscore, ``*``, ``/``, several spaces), or in a length no fixed
pattern expects (Maestro from 12 digits, JCB and UATP at 15). This pass splits each run at
every boundary between groups and validates every window of groups: Luhn and the IIN
tables for cards, the SSA rules for SSNs, the national phone formats on a copy of the
window whose separators are made plain.

What must always hold:
- a window counts as a card only with a valid Luhn sum and either a known issuer for its
  length (``card_valid``, with a usual grouping and one separator throughout) or a card
  word (``CARD_WORDS``) within ``CARD_BEFORE`` characters before the run or
  ``CARD_AFTER`` after it; so order numbers and number lists do not become cards;
- an SSN window is exactly 3-2-4 digits with the same separator twice and passes the
  SSA rules; a phone window must pass the same patterns and checks as in ``find_numbers``;
- runs are found with one possessive search over ``Scan.shape`` needing nine digits, so
  prose pays one fast search; the work per run is bounded by 19 digits per window.
"""

from __future__ import annotations

import re
from bisect import bisect_right

from aegis_proxy.classify.checksums import card_plausible, card_valid, ssn_valid
from aegis_proxy.classify.patterns import NUMBER_VALUE, number_span
from aegis_proxy.classify.scan import Scan, digits, trie

RUN_SHAPE = re.compile(rb"0(?<![Aa0]0)(?:[ \t\n\r,_*/.\-]{0,3}+0){8,}+")
"""Nine digits or more, in groups with up to three separator bytes between them."""
_GROUP = re.compile(rb"0+")
_RUN_BYTES = frozenset(b"0 \t\n\r,_*/.-")
_COMMA_GAP = re.compile(rb"0, ?0000")
"""Where a comma joins digit groups of four: runs ``find_numbers`` does not read."""
_CARD_WORDS = (
    "card cards credit debit visa mastercard master amex american express discover diners"
    " jcb maestro unionpay union pay uatp mir rupay cc ccn pan cvv cvc exp expiry expires"
    " expiration karte kreditkarte kartennummer carte bancaire tarjeta carta kaart"
    " creditcard cartão cartao payment pay paid charge charged billing"
)
CARD_WORDS = re.compile(f"(?<![^\\W\\d_])(?:{trie(_CARD_WORDS.split())})(?![^\\W\\d_])")
CARD_BEFORE, CARD_AFTER = 40, 24
MAX_GROUPS = 10
"""Groups one card window may span: "41 11 11 11 11 11 11 11" is eight."""
_PLAIN = frozenset((" ", "-", ".", "/"))  # separators the phone patterns already read
_ODD = frozenset("\t\n\r_*")
_FIRM = frozenset({"CREDIT_CARD", "IBAN", "US_SSN", "IP_ADDRESS"})
"""Values found by earlier passes whose digits need no second look (a phone may be an SSN)."""


def find_windows(scan: Scan) -> None:
    runs = scan.runs + _odd_runs(scan.shape)
    if not runs:
        return
    covered = sorted((start, end) for kind, start, end in scan.found if kind in _FIRM)
    phones = sorted((start, end) for kind, start, end in scan.found if kind == "PHONE")
    for start, end in sorted(set(runs)):
        if _inside(covered, start, end):
            continue  # nearly always: the run is one value found already
        if _inside(phones, start, end):  # a phone holds no card, but may be an SSN
            _ssns(scan, [(start, end)])
            continue
        groups = [group.span() for group in _GROUP.finditer(scan.shape, start, end)]
        if covered:
            groups = [group for group in groups if not _inside(covered, *group)]
        for part in _parts(groups):
            _window_part(scan, part)


def _odd_runs(shape: bytes) -> list[tuple[int, int]]:
    """Runs of 9+ digits joined by commas ("4111,1111,..."); the others come from
    ``find_numbers``, whose runs may hold tabs, newlines, underscores and stars."""
    runs: list[tuple[int, int]] = []
    for gap in _COMMA_GAP.finditer(shape):
        hit = gap.start()
        if runs and hit < runs[-1][1]:
            continue
        start = hit
        while start > 0 and shape[start - 1] in _RUN_BYTES and hit - start < 64:
            start -= 1
        run = RUN_SHAPE.search(shape, start, hit + 96)
        if run and run.start() <= hit < run.end():
            runs.append(run.span())
    return runs


def _window_part(scan: Scan, groups: list[tuple[int, int]]) -> None:
    start, end = groups[0][0], groups[-1][1]
    ssns = _ssns(scan, groups)
    if sum(group_end - group_start for group_start, group_end in groups) >= 12:
        _cards(scan, groups, start, end, ssns)
    if any(char in _ODD for char in scan.text[start:end]) or "  " in scan.text[start:end]:
        _phones(scan, groups)


def _inside(covered: list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether ``[start, end)`` lies inside a value found already."""
    index = bisect_right(covered, (start, 1 << 62)) - 1
    return index >= 0 and covered[index][0] <= start and end <= covered[index][1]


def _parts(groups: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """The groups split where a found value (or a wide gap) stood between them."""
    parts: list[list[tuple[int, int]]] = []
    for group in groups:
        if parts and group[0] - parts[-1][-1][1] <= 3:
            parts[-1].append(group)
        else:
            parts.append([group])
    return [part for part in parts if sum(end - start for start, end in part) >= 9]


def _cards(
    scan: Scan, groups: list[tuple[int, int]], start: int, end: int, ssns: list[tuple[int, int]]
) -> None:
    """Card windows; one that counts only by a card word must not swallow an SSN."""
    text, windows = scan.text, []
    near = _card_word_near(text, start, end)
    for first, (begin, finish) in enumerate(groups):
        if not near and not 4 <= finish - begin <= 8:
            continue  # without a card word, a card starts with a group of 4-8 digits
        number, separators, layout = "", set(), True
        for last in range(first, min(len(groups), first + MAX_GROUPS)):
            group_start, group_end = groups[last]
            if last > first:
                separator = text[groups[last - 1][1] : group_start]
                separators.add(" " if separator.isspace() else separator)  # "\n" is a space
                layout = layout and _layout_goes_on(separators, group_end - group_start, number)
            number += text[group_start:group_end]
            if len(number) > 19 or not (layout or near):
                break
            if len(number) < 12:
                continue
            if layout and card_valid(number) and _alone(text, groups, first, last):
                windows.append((False, -len(number), begin, group_end))
            elif near and card_plausible(number) and not _overlaps(ssns, begin, group_end):
                windows.append((True, -len(number), begin, group_end))  # an SSN stays one
    taken: list[tuple[int, int]] = []
    for _, _, begin, finish in sorted(windows):
        if all(finish <= other[0] or begin >= other[1] for other in taken):
            taken.append((begin, finish))
            scan.add("CREDIT_CARD", begin, finish)


def _overlaps(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    return any(other_start < end and start < other_end for other_start, other_end in spans)


def _layout_goes_on(separators: set[str], size: int, number: str) -> bool:
    """Whether a card written the usual way goes on with a group of ``size`` digits.

    One separator throughout; groups of 3-8 digits, the last may be short once 12 digits
    stand ("6289 6227 2359 3590 63"); a comma only between groups of exactly four
    ("4111,1111,..."), since "[1445, 3401, 6031]" is a list of numbers.
    """
    if len(separators) != 1 or not 1 <= size <= 8 or (size < 3 and len(number) < 12):
        return False
    (separator,) = separators
    return "," not in separator or (separator == "," and size == 4 and len(number) % 4 == 0)


IBAN_HEAD = re.compile(r"[A-Za-z]{2}[0-9]{2}[ \-./_*]{0,2}\Z")


def _alone(text: str, groups: list[tuple[int, int]], first: int, last: int) -> bool:
    """No group follows with the same separator (the card would be longer) and no IBAN
    head ("DE89 ") stands before: a card window of its own, not a piece of a value."""
    if last + 1 < len(groups) and (
        text[groups[last][1] : groups[last + 1][0]] == text[groups[first][1] : groups[first + 1][0]]
        if first < last
        else groups[last + 1][0] - groups[last][1] <= 1
    ):
        return False
    begin = groups[first][0]
    return IBAN_HEAD.search(text, max(0, begin - 8), begin) is None


def _card_word_near(text: str, start: int, end: int) -> bool:
    window = text[max(0, start - CARD_BEFORE) : start].lower() + "\n" + text[end : end + CARD_AFTER]
    return CARD_WORDS.search(window.lower()) is not None


SSN_SHAPE = re.compile(rb"(?<!0)000(?P<gap>[ \t,_*/.\-]{1,3})00(?P=gap)0000(?!0)")
"""Three, two and four digits with the same separator twice, over ``Scan.shape``."""


def _ssns(scan: Scan, groups: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """3-2-4 windows with one separator twice that pass the SSA rules; their spans."""
    text, spans = scan.text, []
    for match in SSN_SHAPE.finditer(scan.shape, groups[0][0], groups[-1][1]):
        start, end = match.span()
        if text[start - 1 : start] == "+" or match["gap"].strip(b" ") not in _SSN_GAPS:
            continue
        if ssn_valid(digits(text[start:end])):
            scan.add("US_SSN", start, end)
            spans.append((start, end))
    return spans


_SSN_GAPS = frozenset((b"", b"-", b".", b"/", b"_", b"*", b",", b"\t"))


def _phones(scan: Scan, groups: list[tuple[int, int]]) -> None:
    """Phone patterns on a copy of the run whose odd separators became one space."""
    text = scan.text
    begin = groups[0][0]
    if text[begin - 1 : begin] in ("+", "("):
        begin -= 1
    pieces, origins = [], []  # the plain copy, and where each of its characters came from
    if begin < groups[0][0]:
        pieces.append(text[begin])
        origins.append(begin)
    for index, (start, end) in enumerate(groups):
        if index:
            separator = text[groups[index - 1][1] : start]
            plain = separator if separator in _PLAIN else " "
            pieces.append(plain)
            origins.extend([groups[index - 1][1]] * len(plain))
        pieces.append(text[start:end])
        origins.extend(range(start, end))
    copy = "".join(pieces)
    starts = [0] + [i + 1 for i, char in enumerate(copy) if char == " " and i + 1 < len(copy)]
    for pos in starts:
        value = NUMBER_VALUE.match(copy, pos)
        if value and value.lastgroup in ("intl", "national") and (span := number_span(value)):
            scan.add("PHONE", origins[span[0]], origins[span[1] - 1] + 1)
