"""The recognizers behind ``aegis_proxy.pii``: one section per kind of value.

Why a separate module: ``pii`` reads as the pipeline (fold, scan, resolve, walk a
request); this module holds what each value looks like and how it is proven, grouped by
entity, so that a pattern, its finder and its checksum sit together.

How a scan stays cheap, and what must hold for it to stay correct:
- ``Scan`` encodes the folded text one byte per character (non-ASCII becomes ``?``) and
  translates it once: ``shape`` turns digits into ``0`` and letters into ``A``/``a``;
  ``words`` turns digits (and commas) into ``0``, lowercases letters and makes every
  bracket ``()``. Offsets are therefore the text's own.
- Candidate patterns (bytes) run over those strings. Each starts with a literal, any
  look-behind placed after it, so ``re`` skips ahead with its fast literal search instead
  of testing a character class at every position. They may over-match; they must never
  miss a value that the value patterns and validators below would accept.
- Value patterns (``str``) and validators decide on the few candidates: Luhn, ISO 7064
  mod-97, SSA rules, ``ipaddress``, calendar sanity. Dates of birth, bare SSNs and phones,
  and ID numbers also need a context word nearby; those candidates wait in
  ``Scan.pending`` and are settled together: one search per kind over their joined
  windows, since nearly always no window holds a context word at all.
- Every pattern is linear on any input (possessive repeats, anchored starts): the text is
  untrusted, and ``tests/test_pii.py`` feeds it the usual ReDoS shapes.
"""

from __future__ import annotations

import ipaddress
import re
from bisect import bisect_right
from functools import lru_cache
from itertools import accumulate
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable


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
    if value and (span := number_span(value)):
        scan.add(_NUMBER_TYPES.get(str(value.lastgroup), "PHONE"), *span)
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


def ipv4_valid(address: str) -> bool:
    """Each octet of a dotted quad is 0-255."""
    return all(int(octet) <= 255 for octet in address.split("."))


def luhn_valid(number: str) -> bool:
    """Whether a digit string passes the Luhn checksum."""
    total = 0
    for index, char in enumerate(reversed(number)):
        value = ord(char) - 48
        total += (value * 2 - 9 if value > 4 else value * 2) if index % 2 else value
    return total % 10 == 0


def card_valid(number: str) -> bool:
    """A payment card: 13-19 digits, a known issuer prefix and a valid Luhn sum."""
    issuer = number[:1] in ("3", "4", "5", "6") or "2221" <= number[:4] <= "2720"
    return 13 <= len(number) <= 19 and issuer and luhn_valid(number)


def card_length(number: str) -> int:
    """Length of the longest run of leading digit groups that is a valid card, else 0."""
    for group in reversed(list(re.finditer(r"[0-9]+", number))):
        if card_valid(digits(number[: group.end()])):
            return group.end()
    return 0


def ssn_valid(number: str) -> bool:
    """The SSA rules for 9 digits: area not 000, 666 or 9xx; group not 00; serial not 0000."""
    area, group, serial = number[:3], number[3:5], number[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def e164_length(number: str) -> int:
    """Length of the longest run of leading digit groups holding 8-15 digits, or 0."""
    if number.isdigit() and len(number) < 12:  # "0012345678": an ID more likely than a phone
        return 0
    count, length = -(2 if number.startswith("00") else 0) - number.count("(0)"), 0
    for group in re.finditer(r"[0-9]+", number):
        count += len(group.group())
        if count > 15:
            break
        length = group.end() if count >= 8 else length
    return length


# -- IBAN -----------------------------------------------------------------------------------
IBAN_SHAPE = re.compile(  # found from its check digits: "00" is rarer than a letter
    rb"00(?:(?<=AA00)(?<!\wAA00)(?:[ \-]?[A0]){11,32}|(?<=aa00)(?<!\waa00)(?:[ \-]?[a0]){11,32})"
)
_IBAN_TABLE = (  # country code + IBAN length
    "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 "
    "DJ27 DK18 DO28 EE20 EG29 ES24 FI18 FK18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HN28 "
    "HR21 HU28 IE22 IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 LY25 "
    "MC27 MD24 ME22 MK19 MN20 MR27 MT31 MU30 NI28 NL18 NO15 OM23 PK24 PL28 PS29 PT25 QA29 "
    "RO24 RS22 RU33 SA24 SC31 SD18 SE24 SI19 SK24 SM27 SO23 ST25 SV28 TL23 TN24 TR26 UA29 "
    "VA22 VG24 XK20 YE30"
)
_IBAN_LENGTHS = {item[:2]: int(item[2:]) for item in _IBAN_TABLE.split()}


def find_ibans(scan: Scan) -> None:
    for match in IBAN_SHAPE.finditer(scan.shape):
        start = match.start() - 2
        length, kept = _IBAN_LENGTHS.get(scan.text[start : start + 2].upper()), 0
        for index in range(start, match.end()):  # the candidate may run on past the IBAN
            kept += scan.text[index] not in " -"
            if kept == length:
                if iban_valid(scan.text[start : index + 1]):
                    scan.add("IBAN", start, index + 1)
                break


def iban_valid(iban: str) -> bool:
    """Whether an IBAN (spaces or dashes allowed) has its country's length and passes mod-97."""
    iban = iban.replace(" ", "").replace("-", "").upper()
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban[2:4].isdigit() or not iban.isalnum():
        return False
    return int("".join(str(int(char, 36)) for char in iban[4:] + iban[:4])) % 97 == 1


# -- context values: DATE_OF_BIRTH, ID_NUMBER, bare US_SSN and PHONE ------------------------
_MONTH_NAMES = (
    "january jan february feb march mar april apr may june jun july jul august aug september"
    " sep sept october oct november nov december dec janvier fevrier février mars avril mai"
    " juin juillet aout août septembre octobre novembre decembre décembre januar jänner"
    " februar märz maerz juni juli oktober okt dezember dez enero febrero marzo abril mayo"
    " junio julio agosto septiembre setiembre octubre noviembre diciembre gennaio febbraio"
    " aprile maggio giugno luglio settembre ottobre dicembre"
)
_MONTH_ENDS = trie({name[-3:].encode("ascii", "replace").decode() for name in _MONTH_NAMES.split()})
YEAR_WORDS = re.compile(  # the year of "March 14, 1985", "14 March 1985", "14-Mar-1985"
    rb" 0000(?!0)(?:(?<=[^0]0 0000)|(?<=[^0]00 0000)|(?<=[^0]000 0000)|(?<=0[a-z]{2} 0000)"
    rb"|(?<=0[a-z]{2}0 0000)|(?<=(?:" + _MONTH_ENDS.encode() + rb"| de) 0000))"
)  # over WORDS, where ',' is '0' and '-' is ' '
_MONTHS = trie(_MONTH_NAMES.split())
TEXT_DATE = re.compile(
    rf"(?i:\b(?:{_MONTHS})\.?\s+[0-9]{{1,2}}(?:st|nd|rd|th)?,?\s+[0-9]{{4}}"
    rf"|\b[0-9]{{1,2}}(?:st|nd|rd|th|er)?\.?\s+(?:of\s+|de\s+)?(?:{_MONTHS})\.?,?\s+(?:de\s+)?"
    rf"[0-9]{{4}}|\b[0-9]{{1,2}}-(?:{_MONTHS})-[0-9]{{4}})(?![0-9])"
)
NUMERIC_DATE = re.compile(
    r"(?P<y>[0-9]{4})[-/.](?P<m>[0-9]{1,2})[-/.](?P<d>[0-9]{1,2})"
    r"|(?P<d2>[0-9]{1,2})[-/.](?P<m2>[0-9]{1,2})[-/.](?P<y2>[0-9]{4}|[0-9]{2})(?![0-9])"
)
ID_SHAPE = re.compile(rb"A0(?:[A0]|-(?=[A0])){3,20}+(?![\w-])")  # "X1234567", "D123-4567-8901"
_CONTEXT_WORDS = {
    "dob": "born, birth, birthday, birthdate, dob, d.o.b, né, née, geboren, geburt, geburtsdatum,"
    " geburtstag, nacimiento, naissance, nascita, nato, nata, nascimento",
    "ssn": "ssn, social security",
    "phone": "phone, tel, telephone, téléphone, telefon, telefono, teléfono, mobile, mobil, cell,"
    " cellphone, fax, whatsapp, handy, portable, móvil, llámame, chiamami, appelez, anrufen",
    "id": "passport, passeport, reisepass, pasaporte, passaporto, id number, id no, id nr, id card,"
    " id-nr, id-card, id#, identity, identification, identité, identidad, national id, tax id,"
    " tax number, taxpayer, tin, driver's license, drivers license, driver license,"
    " driver's licence, driving licence, driving license, licence no, license no,"
    " licence number, license number, licencia, national insurance, social insurance,"
    " insurance number, ausweis, personalausweis, ausweisnummer, dni, nie, nif, nir, bsn,"
    " pesel, aadhaar, pan card, codice fiscale, steuer-id, steuerid, steuernummer,"
    " steueridentifikationsnummer, numéro fiscal, sin, nhs number, nhs no, medicare,"
    " führerschein, permis de conduire, carte d'identité, passnummer, reisepassnummer,"
    " sécurité sociale, securite sociale, seguridad social, previdenza sociale",
}
CONTEXT_FAMILY = {
    word.strip(): family for family, words in _CONTEXT_WORDS.items() for word in words.split(",")
}
"""Context word -> the family it vouches for: dob, ssn, phone or id."""
_CONTEXT_OF_KIND = {"date": "dob", "text_date": "dob", "token": "id", "number": ""}
CONTEXT = {  # per kind of candidate: a date needs only the (cheaper) birth words
    kind: re.compile(
        f"(?:{trie(w for w, f in CONTEXT_FAMILY.items() if family in ('', f))})(?![^\\W\\d_])"
    )
    for kind, family in _CONTEXT_OF_KIND.items()
}
CONTEXT_BEFORE, CONTEXT_AFTER = 32, 16  # "date of birth (as on file): 1985-03-14 (DOB)"


def find_text_dates(scan: Scan) -> None:
    for year in YEAR_WORDS.finditer(scan.words):
        scan.pending.append(("text_date", max(0, year.start() - 24), year.end()))


def find_ids(scan: Scan) -> None:
    text = scan.text
    for match in ID_SHAPE.finditer(scan.shape):
        start, end = match.span()
        while start and text[start - 1].isalpha() and match.start() - start < 3:
            start -= 1
        size = end - start - text.count("-", start, end)  # the leading letters added back
        if 6 <= size <= 18 and not text[start - 1 : start].isalnum():
            scan.pending.append(("token", start, end))


def settle_context(scan: Scan) -> None:
    """Decide the pending candidates: one search per kind over their joined windows."""
    by_kind: dict[str, list[tuple[int, int]]] = {}
    for kind, start, end in scan.pending:
        by_kind.setdefault(kind, []).append((start, end))
    for kind, spans in by_kind.items():
        for (start, end), near in zip(spans, _context_words(scan.text, kind, spans), strict=True):
            if near:
                _decide(scan, kind, start, end, near)


def _context_words(text: str, kind: str, spans: list[tuple[int, int]]) -> list[set[str]]:
    """For each span, the families of the context words in its window."""
    windows = [text[max(0, start - CONTEXT_BEFORE) : end + CONTEXT_AFTER] for start, end in spans]
    windows = [window.lower() for window in windows]  # one by one: lower() may change lengths
    joined, pattern = "\n".join(windows), CONTEXT[kind]
    near: list[set[str]] = [set() for _ in windows]
    if pattern.search(joined):  # usually there is none at all
        ends = list(accumulate(len(window) + 1 for window in windows))
        for word in pattern.finditer(joined):
            if not joined[word.start() - 1 : word.start()].isalpha():
                near[bisect_right(ends, word.start())].add(CONTEXT_FAMILY[word.group()])
    return near


def _decide(scan: Scan, kind: str, start: int, end: int, near: set[str]) -> None:
    text = scan.text
    if kind == "token":
        if "id" in near:
            scan.add("ID_NUMBER", start, end)
    elif kind == "text_date":
        if "dob" in near:
            for date in TEXT_DATE.finditer(text, start, end):
                scan.add("DATE_OF_BIRTH", *date.span())
    elif "dob" in near and (date_end := _date_end(text, start)):
        scan.add("DATE_OF_BIRTH", start, date_end)
    elif kind == "number":
        found = digits(text[start:end])
        if "ssn" in near and len(found) == 9 and ssn_valid(found):
            scan.add("US_SSN", start, end)
        elif "phone" in near and 7 <= len(found) <= 15:
            scan.add("PHONE", start, end)
        elif "id" in near and 6 <= len(found) <= 18:
            scan.add("ID_NUMBER", start, end)


def _date_end(text: str, start: int) -> int | None:
    """End of a calendar date written with digits at ``start`` (day or month first)."""
    if not (date := NUMERIC_DATE.match(text, start)):
        return None
    year, month, day = date["y"] or date["y2"], date["m"] or date["m2"], date["d"] or date["d2"]
    low, high = sorted((int(month), int(day)))
    plausible = (len(year) == 2 or 1900 <= int(year) <= 2100) and 1 <= low <= 12 and high <= 31
    return date.end() if plausible else None


# -- STREET_ADDRESS -------------------------------------------------------------------------
_STREET_TYPES = "street st avenue ave road rd boulevard blvd lane ln drive dr court ct terrace"
_STREET_TYPES += " place pl way highway hwy parkway pkwy square sq crescent circle trail loop close"
_STREET_TYPES += " mews row walk grove gardens alley"
STREET_NUMBER_FIRST_SHAPE = re.compile(rb" A(?:(?<=0 A)|(?<=0[Aa] A))")  # "221B Baker Street"
STREET_PLAIN_WORDS = (  # lowercase "123 main st": found from the type word, checked before it
    re.compile(rb" st(?:reet)?\.?(?![a-z?])"),
    re.compile(rb" ave(?:nue)?\.?(?![a-z?])"),
)
STREET_FRENCH_WORDS = re.compile(  # "12 rue de Rivoli", "5, avenue Foch"
    rb"0 (?:rue|avenue|av\.|boulevard|bd|chemin|all(?:e|\?)e|impasse|quai|place d)[ '][a-z?]"
)
STREET_NUMBER_LAST_REVERSED = re.compile(  # over reversed WORDS: "Hauptstrasse 5", "Via Roma 3"
    rb"0 (?:(?P<suffix>e(?:ssarts|\?arts|ssag|ella|essuahc)|\.rts|gew|ztalp|mmad|refu|giets"
    rb"|jev|t(?:aarts|hcarg)|naal|nielp|natag)"
    rb"|(?P<type_first>[a-z?'\-]{2,20}+ (?:[a-z?'\-]{2,20}+ )??"
    rb"(?:ellac|aiv|aur|azzaip|adineva|oesap|azalp)(?![a-z?])))"
)
STREET_EN = re.compile(  # number, 1-4 name words, street type
    r"[0-9]{1,5}[A-Za-z]?\s+(?P<name>(?:[\w'\u2019.\-]++\s+){1,4}?)"
    rf"(?i:(?P<type>{trie(_STREET_TYPES.split())}))\b\.?"
)
HOUSE_NUMBER = re.compile(r"(?<![\w.,$])[0-9]{1,5}[A-Za-z]?\s")
STREET_TYPE_FIRST = re.compile(r"(?:Calle|Via|Rua|Piazza|Avenida|Paseo|Plaza)\s+[A-ZÀ-ÖØ-Þ]")
STREET_NAME_TAIL = re.compile(r"[\w'\u2019\-]*(?:\s+[\w'\u2019\-]+)?")
STREET_PLAIN_TYPES = frozenset(("street", "st", "avenue", "ave", "road", "rd", "boulevard", "blvd"))
"""Types that name a street even in lowercase text ("123 main st"); "way", "place"... don't."""
_STOP_WORDS = (
    "the a an and or of to in on at by for from with per down up across along into my our your"
    " his her their this that these those each every more other miles mile km blocks block"
    " minutes mins hours times steps lanes lane way ways"
)
STREET_STOP_WORDS = frozenset(_STOP_WORDS.split())


def find_streets(scan: Scan) -> None:
    text, words = scan.text, scan.words
    for match in STREET_NUMBER_FIRST_SHAPE.finditer(scan.shape):
        _add_street(scan, _number_start(text, match.start() - 1))
    for plain in STREET_PLAIN_WORDS:
        for match in plain.finditer(words):
            number = HOUSE_NUMBER.search(text, max(0, match.start() - 48), match.start())
            if number and (not scan.found or number.start() >= scan.found[-1][2]):
                _add_street(scan, number.start())  # the first number a few words before
    for match in STREET_FRENCH_WORDS.finditer(words):
        tail = STREET_NAME_TAIL.match(text, match.end())
        start = _number_start(text, match.start() + 1)
        scan.add("STREET_ADDRESS", start, tail.end() if tail else match.end())
    size = len(words)
    for match in STREET_NUMBER_LAST_REVERSED.finditer(words[::-1]):
        start, end = size - match.end(), size - match.start()
        if match.lastgroup == "type_first" and not STREET_TYPE_FIRST.match(text, start):
            continue  # "sent via email 3 times" is no address
        while start and (text[start - 1].isalpha() or text[start - 1] in "-'"):
            start -= 1  # the rest of "Hauptstrasse"
        while end < len(text) and text[end].isalnum():
            end += 1
        scan.add("STREET_ADDRESS", start, end)


def _add_street(scan: Scan, start: int) -> None:
    """A number-first English street: capitalized names, or a plain type and no filler."""
    if not (street := STREET_EN.match(scan.text, start)):
        return
    names = street["name"].split()
    plain = street["type"].lower() in STREET_PLAIN_TYPES
    if all(name[0].isupper() for name in names) or (
        plain and not any(name.lower() in STREET_STOP_WORDS for name in names)
    ):
        scan.add("STREET_ADDRESS", start, street.end())


def _number_start(text: str, end: int) -> int:
    """Start of the house number ending at ``end`` ("221B", "12,")."""
    start = end
    while start and (text[start - 1].isalnum() or text[start - 1] == ","):
        start -= 1
    return start


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
        if token and _standalone(text, start, end) and ipv6_valid(token.group()):
            scan.add("IP_ADDRESS", start, end)


def _standalone(text: str, start: int, end: int) -> bool:
    """Not glued to a word (``std::map``) and not a slice step (``items[::2]``)."""
    before, after = text[start - 1 : start], text[end : end + 1]
    if (before.isalnum() or before == "_") or (after.isalnum() or after == "_"):
        return False
    return not (before == "[" and after == "]" and re.match(r"[\w)\]]", text[start - 2 : start]))


@lru_cache(maxsize=1024)  # a text repeating one address costs one parse
def ipv6_valid(token: str) -> bool:
    """A real IPv6 address holding a digit (so not ``::``, nor ``a::b`` in C++ code)."""
    if not any(char.isdigit() for char in token):
        return False
    try:
        ipaddress.IPv6Address(token)
    except ValueError:  # not an address: this is the validation itself, not an error
        return False
    return True


_DIGIT_RUN_TYPES = frozenset(_NUMBER_TYPES.values()) | {"PHONE", "DATE_OF_BIRTH", "ID_NUMBER"}

# -- the passes, in the order they run ---------------------------------------------------------
PASSES: tuple[tuple[frozenset[str], bool, Callable[[Scan], None]], ...] = (
    (frozenset({"EMAIL"}), False, find_emails),
    (frozenset({"EMAIL"}), False, find_obfuscated_emails),
    (
        frozenset(_NUMBER_TYPES.values()) | {"PHONE", "DATE_OF_BIRTH", "ID_NUMBER"},
        True,
        find_numbers,
    ),
    (frozenset({"DATE_OF_BIRTH"}), True, find_text_dates),
    (frozenset({"ID_NUMBER"}), True, find_ids),
    (frozenset({"IBAN"}), True, find_ibans),
    (frozenset({"STREET_ADDRESS"}), True, find_streets),
    (frozenset({"IP_ADDRESS"}), True, find_ipv6),
)
"""(entity types it can find, whether it needs a digit in the text, the pass)."""
