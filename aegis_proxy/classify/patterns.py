"""The recognizers behind ``aegis_proxy.classify.detector``, and the order in which they run.

Why it exists: ``pii`` reads as the pipeline (fold, scan, resolve, walk a request); this
module holds what each structured value looks like (email, digit runs, IBAN, IPv6) and
``PASSES``, the list the detector runs. The pieces it builds on each have a module:

- ``pii_scan``: the ``Scan`` state and its byte shapes;
- ``pii_checksums``: the proofs (Luhn, mod-97, SSA rules, address validity);
- ``pii_context``: values that need a context word (dates of birth, IDs, bare numbers);
- ``pii_streets``: street addresses.

How a scan stays cheap, and what must hold for it to stay correct:
- candidate patterns (bytes) run over ``Scan.shape`` / ``Scan.words`` (see ``pii_scan``).
  Each starts with a literal, any look-behind placed after it, so ``re`` skips ahead with
  its fast literal search instead of testing a character class at every position. They
  may over-match; they must never miss a value that the value patterns and validators
  would accept;
- value patterns (``str``) and validators decide on the few candidates; what needs a
  context word waits in ``Scan.pending`` for ``pii_context.settle_context``;
- every pattern is linear on any input (possessive repeats, anchored starts): the text is
  untrusted, and ``tests/test_pii.py`` feeds it the usual ReDoS shapes.

``card_valid`` and ``iban_valid`` stay importable from here (``bench/bench_pii.py``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from aegis_proxy.classify.checksums import (
    IBAN_LENGTHS,
    card_length,
    e164_length,
    iban_valid,
    ipv4_this_host,
    ipv4_valid,
    ipv6_this_host,
    ipv6_valid,
    ssn_valid,
)
from aegis_proxy.classify.context import find_ids, find_text_dates, id_word_just_before
from aegis_proxy.classify.scan import Scan, digits
from aegis_proxy.classify.streets import find_streets

if TYPE_CHECKING:
    from collections.abc import Callable

# -- EMAIL --------------------------------------------------------------------------------
EMAIL_AT_DOMAIN = re.compile(  # from the '@', so text without one costs a single fast search
    r"@(?:[^\W_](?:[\w\-]{0,61}[^\W_])?\.)+[^\W\d_]{2,63}(?![\w\-]|\.[^\W_])"
)
EMAIL_LOCAL = re.compile(r"[\w.+%'\-]{1,64}+\Z")
OBFUSCATED_AT_WORDS = re.compile(rb"\( ?at ?\)")  # "[at]", "(at)", "{ at }" in any case
EMAIL_OBFUSCATED = re.compile(  # possessive, from the start of a word: linear on any input
    r"(?i)(?<![\w.+\-])[\w.+\-]++\s*[(\[{]\s*at\s*[)\]}]\s*[\w\-]++"
    r"(?:(?:\s*[(\[{]\s*dot\s*[)\]}]\s*|\s+dot\s+|\.)[\w\-]++)+"
)


def find_emails(scan: Scan) -> None:
    text = scan.text
    for domain in EMAIL_AT_DOMAIN.finditer(text):
        local = EMAIL_LOCAL.search(text, max(0, domain.start() - 64), domain.start())
        if local and local.group().strip("."):
            scan.add("EMAIL", local.start(), domain.end())


def find_obfuscated_emails(scan: Scan) -> None:
    if OBFUSCATED_AT_WORDS.search(scan.words):
        for match in EMAIL_OBFUSCATED.finditer(scan.text):
            scan.add("EMAIL", *match.span())


# -- digit runs: IPv4, CREDIT_CARD, US_SSN, PHONE (and dates, IDs for the context step) ---
NUMERIC_SHAPE = re.compile(  # a digit that starts a token, then 5+ digit-ish bytes
    rb"0(?=[0 .\-/()]{5})(?<![\w.]0)(?<!\w-0)"
    rb"(?:(?P<date>(?:000[-/.]00?[-/.]00?|0?[-/.]00?[-/.](?:0000|00))(?!0|[-/. ]0))"
    rb"|(?:[ .\-/()]{0,2}0){5,}|0{0,2}(?:\.0{1,3}){3})"
)
NUMBER_VALUE = re.compile(  # at a digit run, or at the '+' / '(' just before it
    r"(?P<ip>[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?![.]?[0-9]))"
    r"|(?P<intl>(?:\+|00)[1-9][0-9 ().\-/]*[0-9])"  # +44 20 7946 0958, 0049 30 1234567
    r"|(?P<card>(?=(?:[0-9][ .-]? ?){12}[0-9])[0-9]{4,8}(?:[ .-]? ?[0-9]{3,8}){0,4}(?![0-9]))"
    r"|(?P<ssn>[0-9]{3}(?P<u>[- ])[0-9]{2}(?P=u)[0-9]{4}(?![0-9]))"
    r"|(?P<national>\([0-9]{2,5}\)[ .\-]?[0-9]{2,5}(?:[ .\-]?[0-9]{2,5}){0,3}(?![0-9])"
    r"|(?:1[-. ])?[2-9][0-9]{2}(?P<a>[-. ])[0-9]{3}(?P=a)[0-9]{4}(?![0-9])"  # 1-800-555-0199
    r"|0[1-9][0-9]{0,4}(?P<b>[ ./-])[0-9]{2,8}(?:(?P=b)[0-9]{2,8}){0,4}(?![0-9])"  # 06 12 34 56 78
    r"|[6-9][0-9]{2}(?P<c>[ .-])[0-9]{2}(?P=c)[0-9]{2}(?P=c)[0-9]{2}(?![0-9])"  # 612 34 56 78
    r"|[89][1-8] [0-9]{3} [0-9]{2} [0-9]{2}(?![0-9])"  # 91 123 45 67: a Spanish landline
    r"|0[1-9][0-9]{8,9}(?![0-9]))"  # 0612345678
)
_NUMBER_TYPES = {"ip": "IP_ADDRESS", "card": "CREDIT_CARD", "ssn": "US_SSN"}
VERSION_OPERATORS = frozenset({">=", "<=", "==", "~=", "!=", "v."})
"""Before a dotted quad, these make it a version ("pkg>=1.2.0.0"), not an address."""


def find_numbers(scan: Scan) -> None:
    for match in NUMERIC_SHAPE.finditer(scan.shape):
        if match.lastgroup == "date":
            scan.pending.append(("date", *match.span()))
        else:
            _classify_number(scan, *match.span())


def _classify_number(scan: Scan, start: int, end: int) -> None:
    """An IPv4 address, a card, an SSN or a phone; anything else waits for context."""
    text = scan.text
    begin = start - (text[start - 1 : start] == "(")
    begin -= text[begin - 1 : begin] == "+" and not text[begin - 2 : begin - 1].isalnum()
    value = NUMBER_VALUE.match(text, begin)
    if begin < start and not (value and value.lastgroup in ("intl", "national")):
        value = NUMBER_VALUE.match(text, start)
    if value and value.lastgroup == "ip" and ipv4_this_host(value.group()):
        return  # 127.0.0.1, 0.0.0.0: an address, but of this machine, not of a person
    if value and (span := number_span(value)):
        kind = str(value.lastgroup)
        if kind == "national" and id_word_just_before(scan, value.start()):
            scan.add("ID_NUMBER", *span)  # a phone the text calls an ID: "NHS number ..."
        else:
            scan.add(_NUMBER_TYPES.get(kind, "PHONE"), *span)
    else:
        scan.pending.append(("number", start, end))


def number_span(value: re.Match[str]) -> tuple[int, int] | None:
    """The span of a ``NUMBER_VALUE`` match that passes its type's check, else None."""
    kind, text, (start, end) = value.lastgroup, value.group(), value.span()
    if kind == "ip":
        version = value.string[start - 2 : start] in VERSION_OPERATORS
        return (start, end) if ipv4_valid(text) and not version else None
    if kind == "ssn":
        return (start, end) if ssn_valid(digits(text)) else None
    if kind == "national":
        found = digits(text)
        return (start, end) if 9 <= len(found) <= 12 and found not in "01234567890" else None
    length = card_length(text) if kind == "card" else e164_length(text)
    return (start, start + length) if length else None


# -- IBAN -----------------------------------------------------------------------------------
IBAN_SHAPE = re.compile(  # found from its check digits: "00" is rarer than a letter
    rb"00(?:(?<=AA00)(?<!\wAA00)(?:[ \-]?[A0]){11,32}|(?<=aa00)(?<!\waa00)(?:[ \-]?[a0]){11,32})"
)


def find_ibans(scan: Scan) -> None:
    for match in IBAN_SHAPE.finditer(scan.shape):
        start = match.start() - 2
        length, kept = IBAN_LENGTHS.get(scan.text[start : start + 2].upper()), 0
        for index in range(start, match.end()):  # the candidate may run on past the IBAN
            kept += scan.text[index] not in " -"
            if kept == length:
                if iban_valid(scan.text[start : index + 1]):
                    scan.add("IBAN", start, index + 1)
                break


# -- IPv6 (IPv4 is a digit run above) ---------------------------------------------------------
IPV6_SHAPE = re.compile(rb":[0-9A-Fa-f]{0,4}:")  # over the raw bytes: "::", "db8:0:"
IPV6_TOKEN = re.compile(
    r"(?:[0-9A-Fa-f]{0,4}:)+(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?![.0-9])|[0-9A-Fa-f]{0,4})"
)
_HEX_COLON = frozenset("0123456789abcdefABCDEF:")


def find_ipv6(scan: Scan) -> None:
    text, resume = scan.text, 0
    for match in IPV6_SHAPE.finditer(scan.raw):
        start = match.start()
        if start < resume:
            continue
        while start and text[start - 1] in _HEX_COLON and match.start() - start < 40:
            start -= 1
        token = IPV6_TOKEN.match(text, start)
        resume = end = token.end() if token else match.end()
        if token and _standalone(text, start, end) and _ipv6_counts(token.group()):
            scan.add("IP_ADDRESS", start, end)


def _ipv6_counts(token: str) -> bool:
    """A real address that names another machine (``::1`` and ``::`` do not)."""
    return ipv6_valid(token) and not ipv6_this_host(token)


def _standalone(text: str, start: int, end: int) -> bool:
    """Not glued to a word (``std::map``) and not a slice step (``items[::2]``)."""
    before, after = text[start - 1 : start], text[end : end + 1]
    if (before.isalnum() or before == "_") or (after.isalnum() or after == "_"):
        return False
    return not (before == "[" and after == "]" and re.match(r"[\w)\]]", text[start - 2 : start]))


# -- the passes, in the order they run ---------------------------------------------------------
_DIGIT_RUN_TYPES = frozenset(_NUMBER_TYPES.values()) | {"PHONE", "DATE_OF_BIRTH", "ID_NUMBER"}
PASSES: tuple[tuple[frozenset[str], bool, Callable[[Scan], None]], ...] = (
    (frozenset({"EMAIL"}), False, find_emails),
    (frozenset({"EMAIL"}), False, find_obfuscated_emails),
    (_DIGIT_RUN_TYPES, True, find_numbers),
    (frozenset({"DATE_OF_BIRTH"}), True, find_text_dates),
    (frozenset({"ID_NUMBER"}), True, find_ids),
    (frozenset({"IBAN"}), True, find_ibans),
    (frozenset({"STREET_ADDRESS"}), True, find_streets),
    (frozenset({"IP_ADDRESS"}), True, find_ipv6),
)
"""(entity types it can find, whether it needs a digit in the text, the pass)."""
