"""The recognizers behind ``aegis_proxy.classify.detector``, and the order in which they run.

Why it exists: ``pii`` reads as the pipeline (fold, scan, resolve, walk a request); this
module holds what each structured value looks like (email, digit runs, IBAN, IPv6) and
``PASSES``, the list the detector runs. The pieces it builds on each have a module:

- ``pii_scan``: the ``Scan`` state and its byte shapes;
- ``classify.checksums``: the proofs (Luhn, mod-97, SSA rules, address validity);
- ``classify.context``: values that need a context word (dates of birth, IDs, bare numbers);
- ``classify.streets``: street addresses;
- ``classify.windows``: cards, SSNs and phones in windows of a digit run (run after these, from
  ``pii``, since it reuses ``NUMBER_VALUE``).

How a scan stays cheap, and what must hold for it to stay correct:
- candidate patterns (bytes) run over ``Scan.shape`` / ``Scan.words`` (see ``pii_scan``).
  Each starts with a literal, any look-behind placed after it, so ``re`` skips ahead with
  its fast literal search instead of testing a character class at every position. They
  may over-match; they must never miss a value that the value patterns and validators
  would accept;
- value patterns (``str``) and validators decide on the few candidates; what needs a
  context word waits in ``Scan.pending`` for ``classify.context.settle_context``;
- every pattern is linear on any input (possessive repeats, anchored starts): the text is
  untrusted, and ``tests/test_pii.py`` feeds it the usual ReDoS shapes.

``card_valid`` and ``iban_valid`` stay importable from here (``bench/bench_pii.py``).
"""

from __future__ import annotations

import re
from bisect import bisect_right
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
    r"@ ?(?:[^\W_](?:[\w\-]{0,61}[^\W_])?\.)+[^\W\d_]{2,63}(?![\w\-]|\.[^\W_])"
)
EMAIL_LOCAL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~\-]{1,64}+\Z")  # RFC 5322 atext and dots
QUOTED_LOCAL = re.compile(r'"[^"\n@]{1,62}"\Z')  # "jane doe"@example.com (RFC 5322)
OBFUSCATED_AT_WORDS = (  # each from a literal, so a text without them costs a fast search
    re.compile(rb"\( ?(?:at|@) ?\)"),  # "[at]", "(at)", "{ at }", "[@]" (WORDS has () only)
    re.compile(rb"< ?at ?>"),
    re.compile(rb" dot "),
)
EMAIL_OBFUSCATED = re.compile(  # possessive, from the start of a word: linear on any input
    r"(?i)(?<![\w.+\-])[\w.+\-]++\s*[(\[{<]\s*(?:at|@)\s*[)\]}>]\s*[\w\-]++"
    r"(?:(?:\s*[(\[{<]\s*dot\s*[)\]}>]\s*|\s+dot\s+|\.)[\w\-]++)+"
)
EMAIL_WORDS = re.compile(  # "jane at example dot com": the words only, ending in a known TLD
    r"(?i)(?<![\w.+\-])[\w.+\-]++[ \t]+at[ \t]+[\w\-]++(?:[ \t]+dot[ \t]+[\w\-]++)+"
)
_TLDS = (
    "com net org edu gov mil int info biz name pro io co ai app dev me tv us uk ca au nz ie de"
    " fr es it nl be ch at se no dk fi pl pt cz sk hu ro bg gr tr ru ua jp cn kr in sg hk tw br"
    " mx ar cl za eu lu li is ee lv lt si hr rs il ae sa xyz online site tech cloud email mail"
)
KNOWN_TLDS = frozenset(_TLDS.split())
"""Top-level domains an email spelled in words, or with spaces around '@', may end in."""


def find_emails(scan: Scan) -> None:
    text = scan.text
    for domain in EMAIL_AT_DOMAIN.finditer(text):
        at = domain.start()
        spaced = text[at + 1 : at + 2] == " " or text[at - 1 : at] == " "
        if spaced and domain.group().rsplit(".", 1)[-1].lower() not in KNOWN_TLDS:
            continue  # "weights @ inputs.data" is Python's matrix product, no address
        end = at - (text[at - 1 : at] == " ")
        local = QUOTED_LOCAL.search(text, max(0, end - 64), end) or EMAIL_LOCAL.search(
            text, max(0, end - 64), end
        )
        if local and local.group().strip('."'):
            scan.add("EMAIL", local.start(), domain.end())


def find_obfuscated_emails(scan: Scan) -> None:
    if any(gate.search(scan.words) for gate in OBFUSCATED_AT_WORDS):
        for match in EMAIL_OBFUSCATED.finditer(scan.text):
            scan.add("EMAIL", *match.span())
        for match in EMAIL_WORDS.finditer(scan.text):
            if match.group().rsplit(None, 1)[-1].lower() in KNOWN_TLDS:
                scan.add("EMAIL", *match.span())


# -- digit runs: IPv4, CREDIT_CARD, US_SSN, PHONE (and dates, IDs for the context step) ---
NUMERIC_SHAPE = re.compile(  # a digit that starts a token, then 5+ digit-ish bytes
    rb"0(?=[0 .\-/()\t\n_*]{5})(?<![\w.]0)(?<!\w-0)"
    rb"(?:(?P<date>(?:000[-/.]00?[-/.]00?|0?[-/.]00?[-/.](?:0000|00))(?!0|[-/. ]0))"
    rb"|(?:[ .\-/()\t\n_*]{0,3}0){5,}|0{0,2}(?:\.0{1,3}){3})"  # tab, newline, _ and * too
)
_IP_VALUE = r"(?P<ip>[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?![.]?[0-9]))"
_CARD_VALUE = (
    r"(?P<card>(?=(?:[0-9][ .-]? ?){12}[0-9])[0-9]{4,8}(?:[ .-]? ?[0-9]{3,8}){0,4}(?![0-9]))"
)
_SSN_VALUE = r"(?P<ssn>[0-9]{3}(?P<u>[- ])[0-9]{2}(?P=u)[0-9]{4}(?![0-9]))"
FIRM_VALUE = re.compile(f"{_IP_VALUE}|{_CARD_VALUE}|{_SSN_VALUE}")
"""``NUMBER_VALUE`` without the phones: what may start inside a run, after a neighbour."""
NUMBER_VALUE = re.compile(  # at a digit run, or at the '+' / '(' just before it
    _IP_VALUE
    + r"|(?P<intl>(?:\+|00)[1-9][0-9 ().\-/]*[0-9])"  # +44 20 7946 0958, 0049 30 1234567
    + f"|{_CARD_VALUE}|{_SSN_VALUE}"
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
    ibans = sorted((start, end) for kind, start, end in scan.found if kind == "IBAN")
    for match in NUMERIC_SHAPE.finditer(scan.shape):
        if ibans and _inside_iban(ibans, *match.span()):
            continue  # the digits of an IBAN found already are no other value
        if scan.shape[match.end() : match.end() + 1].isalpha():
            continue  # digits glued to a letter ("01000000000a0...") are a token: hex, a code
        if match.lastgroup == "date":
            scan.pending.append(("date", *match.span()))
        else:
            _classify_run(scan, *match.span())


def _inside_iban(ibans: list[tuple[int, int]], start: int, end: int) -> bool:
    index = bisect_right(ibans, (start, 1 << 62)) - 1
    return index >= 0 and ibans[index][0] <= start and end <= ibans[index][1]


def _classify_run(scan: Scan, start: int, end: int) -> None:
    """Values in a run of digit groups, tried from each group that follows a space.

    A number just before a value ("1. 4111 ...", "Refund 100.00 4111 ...", "8.8.4.4
    1.1.1.1") must not hide it: where no value starts at a group, the next group after a
    space or bracket is tried. Digits that are no value wait for a context word.
    """
    shape = scan.shape
    if end - start >= 9 and shape.count(b"0", start, end) >= 9:
        scan.runs.append((start, end))  # windows of its groups are tried too (classify.windows)
    if shape.find(b" 0", start, end) == -1 and shape.find(b"(0", start + 1, end) == -1:
        if _classify_number(scan, start) is None:  # one group: the usual case
            scan.pending.append(("number", start, end))
        return
    gap, found_any = start, False
    value_end = _classify_number(scan, start)
    if value_end is not None:
        found_any, gap = True, value_end
    for inner in INNER_START.finditer(shape, start + 1, end):  # groups that could start one
        pos = inner.start()
        if pos < gap:
            continue
        phones = LIST_MARKER.fullmatch(scan.text, start, pos) is not None
        value_end = _classify_number(scan, pos, phones)
        if value_end is not None:
            if pos > gap:
                scan.pending.append(("number", gap, _trim(shape, gap, pos)))
            found_any, gap = True, value_end
    if not found_any:
        scan.pending.append(("number", start, end))
    elif end - gap >= 6:
        scan.pending.append(("number", _next_group(shape, gap, end), end))


LIST_MARKER = re.compile(r"[0-9]{1,3}[.)] +\(?")
"""A numbered list's marker ("1. ", "12) "): a phone may follow it inside one digit run."""
INNER_START = re.compile(rb"(?<=[ \t\n(])(?:000|0{1,3}\.0|00[ .\-/]0)")
"""A group after a space or bracket that could start a value: three digits or more (card,
SSN, phone), an octet and a dot (IPv4), two digits and a separator ("06 12 34 56 78").
"1 1 1 1 ..." has none, so it costs no loop."""


def _next_group(shape: bytes, pos: int, end: int) -> int:
    """The next digit in ``[pos, end)`` that follows a space or an opening bracket, or end."""
    while pos < end:
        found = shape.find(b"0", pos, end)
        if found == -1:
            return end
        if shape[found - 1] in b" (":
            return found
        pos = found + 1
    return end


def _trim(shape: bytes, start: int, end: int) -> int:
    """``end`` moved back over the separators before it."""
    while end > start and shape[end - 1] != 48:  # ord("0")
        end -= 1
    return end


def _classify_number(scan: Scan, start: int, phones: bool = True) -> int | None:
    """An IPv4 address, a card, an SSN or (if ``phones``) a phone at ``start``: its end."""
    text = scan.text
    begin = start - (text[start - 1 : start] == "(")
    begin -= text[begin - 1 : begin] == "+" and not text[begin - 2 : begin - 1].isalnum()
    value = (NUMBER_VALUE if phones else FIRM_VALUE).match(text, begin if phones else start)
    if begin < start and phones and not (value and value.lastgroup in ("intl", "national")):
        value = NUMBER_VALUE.match(text, start)
    if value and value.lastgroup == "ip" and ipv4_this_host(value.group()):
        return value.end()  # 127.0.0.1, 0.0.0.0: an address, but of this machine
    if value and (span := number_span(value)):
        kind = str(value.lastgroup)
        if kind == "national" and id_word_just_before(scan, value.start()):
            scan.add("ID_NUMBER", *span)  # a phone the text calls an ID: "NHS number ..."
        else:
            scan.add(_NUMBER_TYPES.get(kind, "PHONE"), *span)
        return span[1]
    return None


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
IBAN_SHAPES = (  # found from its check digits: "00" is rarer than a letter
    re.compile(rb"00(?<=[Aa][Aa]00)"),  # "DE89", "de89", "De89"
    re.compile(rb"AA 00"),  # "DE 89 3704 ...", in capitals only
)
_IBAN_GAP = r"[ \-./_*\t\n,]{0,2}"
"""What may stand between the characters of an IBAN: one or two separators."""
_IBAN_BODIES: dict[int, re.Pattern[str]] = {}
_NOT_ALNUM = re.compile(r"[^0-9A-Za-z]")


def find_ibans(scan: Scan) -> None:
    for shape in IBAN_SHAPES:
        for match in shape.finditer(scan.shape):
            _iban_at(scan, match.start() - (2 if match.group() == b"00" else 0))


def _iban_at(scan: Scan, start: int) -> None:
    """An IBAN of its country's length at ``start``, separators allowed, if it validates."""
    text = scan.text
    if text[start - 1 : start].isalnum():
        return
    length = IBAN_LENGTHS.get(text[start : start + 2].upper())
    body = _iban_body(length).match(text, start) if length else None
    if body and iban_valid(_NOT_ALNUM.sub("", body.group())):
        scan.add("IBAN", *body.span())


def _iban_body(length: int) -> re.Pattern[str]:
    """An IBAN of ``length`` characters with separators: country, check digits, BBAN."""
    if length not in _IBAN_BODIES:
        _IBAN_BODIES[length] = re.compile(
            rf"[A-Za-z]{{2}}{_IBAN_GAP}[0-9]{{2}}(?:{_IBAN_GAP}[0-9A-Za-z]){{{length - 4}}}"
        )
    return _IBAN_BODIES[length]


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
    (frozenset({"IBAN"}), True, find_ibans),  # before the digit runs, which skip its digits
    (_DIGIT_RUN_TYPES, True, find_numbers),
    (frozenset({"DATE_OF_BIRTH"}), True, find_text_dates),
    (frozenset({"ID_NUMBER"}), True, find_ids),
    (frozenset({"STREET_ADDRESS"}), True, find_streets),
    (frozenset({"IP_ADDRESS"}), True, find_ipv6),
)
"""(entity types it can find, whether it needs a digit in the text, the pass)."""
