"""The patterns, context words and checksums behind ``aegis_proxy.pii``.

Why a separate module: the detector reads as a pipeline (fold, find candidates, validate,
map offsets back); the expressions and checksums it relies on read better as one table,
and compiling them here keeps the work out of every call.

Two kinds of pattern live here, and what must hold for each:
- Candidate patterns (``*_SHAPE``/``*_WORDS``, bytes) run over a string made of the text
  encoded one byte per character (non-ASCII becomes ``?``) and translated: ``SHAPE``
  turns digits into ``0`` and letters into ``A``/``a``; ``WORDS`` turns digits (and
  commas) into ``0``, lowercases letters and makes every bracket ``()``. Offsets are
  therefore the text's own. Each pattern starts with a literal, with any look-behind
  placed after it, so ``re`` skips ahead with its fast literal search instead of testing
  a class at every position: that is what keeps a scan cheap. They may over-match; they
  must never miss a value that the value patterns and validators would accept.
- Value patterns (``str``) and validators then decide on the few candidates: Luhn for
  cards, ISO 7064 mod-97 for IBANs, SSA rules for SSNs, ``ipaddress`` for IPv6, calendar
  sanity for dates, a context word for dates of birth and ID numbers.
"""

from __future__ import annotations

import ipaddress
import re


def _table(*pairs: tuple[bytes, bytes]) -> bytes:
    table = bytearray(range(256))
    for sources, targets in pairs:
        for source, target in zip(sources, targets * len(sources), strict=False):
            table[source] = target
    return bytes(table)


_DIGITS, _UPPER = b"0123456789", bytes(range(65, 91))
SHAPE_TABLE = _table((_DIGITS, b"0"), (_UPPER, b"A"), (_UPPER.lower(), b"a"))
WORDS_TABLE = _table((_DIGITS + b",", b"0"), (_UPPER, _UPPER.lower()), (b"[{", b"("), (b"]}", b")"))


def trie(words: list[str]) -> str:
    """One regular expression matching any of ``words``, factored by common prefixes."""
    tree: dict[str, dict[str, object]] = {}
    for word in words:
        node = tree
        for char in word:
            node = node.setdefault(char, {})  # type: ignore[assignment]  # nested trie
        node[""] = {}
    return _emit(tree)


def _emit(node: dict[str, object]) -> str:
    branches = [re.escape(c) + _emit(child) for c, child in sorted(node.items()) if c]  # type: ignore[arg-type]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return f"(?:{body})?" if "" in node else body


# -- candidates over the SHAPE / WORDS strings --------------------------------------------
NUMERIC_SHAPE = re.compile(  # a digit starting a token, followed by 5+ digit-ish bytes
    rb"0(?=[0 .\-/()]{5})(?<![\w.]0)(?<!\w-0)"
    rb"(?:(?P<date>(?:000[-/.]00?[-/.]00?|0?[-/.]00?[-/.](?:0000|00))(?!0|[-/. ]0))"
    rb"|(?:[ .\-/()]{0,2}0){5,}|0{0,2}(?:\.0{1,3}){3})"
)
_MONTH_ENDS = (  # last three letters of the month names in TEXT_DATE ('?' = non-ASCII)
    b"ary|rch|ril|may|une|uly|ust|ber|jan|feb|mar|apr|jun|jul|aug|sep|ept|oct|nov|dec|ier"
    b"|ars|mai|uin|let|o\\?t|out|bre|uar|\\?rz|uni|uli|ero|rzo|ayo|nio|lio|sto|aio|ile|gno"
    b"|okt|dez|de\\."
)
YEAR_WORDS = re.compile(  # the year of "March 14, 1985", "14 March 1985", "14-Mar-1985"
    rb"[ \-]0000(?!0)(?:(?<=(?:" + _MONTH_ENDS + rb")[ \-]0000)|(?<=[^0]0[ \-]0000)"
    rb"|(?<=[^0]00[ \-]0000)|(?<=0, 0000)|(?<=0[a-z]{2} 0000)|(?<=0[a-z]{2}, 0000))"
)
IBAN_SHAPES = (
    re.compile(rb"AA00(?<!\wAA00)(?: ?[A0]){11,32}"),
    re.compile(rb"aa00(?<!\waa00)(?: ?[a0]){11,32}"),
)
ID_SHAPE = re.compile(rb"A0[A0]{3,10}(?!\w)")  # "X1234567": letters are added back later
STREET_NUMBER_FIRST_SHAPE = re.compile(rb" A(?:(?<=0 A)|(?<=0[Aa] A))")
STREET_FRENCH_WORDS = re.compile(  # "12 rue de Rivoli", "5, avenue Foch"
    rb"0 (?:rue|avenue|av\.|boulevard|bd|chemin|all(?:e|\?)e|impasse|quai|place d)[ '?]"
)
STREET_NUMBER_LAST_REVERSED = re.compile(  # over reversed WORDS: "Hauptstrasse 5", "Via Roma 3"
    rb"0 (?:e(?:ssarts|\?arts|ssag|ella|essuahc)|\.rts|gew|ztalp|mmad|refu|giets|jev"
    rb"|t(?:aarts|hcarg)|naal|nielp|natag"
    rb"|[a-z?'\-]{2,20}+ (?:[a-z?'\-]{2,20}+ )?+(?:ellac|aiv|aur|azzaip|adineva|oesap|azalp)"
    rb"(?![a-z?]))"
)
OBFUSCATED_AT_WORDS = re.compile(rb"\( ?at ?\)")
IPV6_SHAPE = re.compile(r":[0-9A-Fa-f]{0,4}:")

# -- values over the normalized text ------------------------------------------------------
NUMBER_VALUE = re.compile(
    r"(?P<ip>[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?![.]?[0-9]))"
    r"|(?P<card>[0-9]{4}(?P<s>[ -]?)[0-9]{4}(?P=s)[0-9]{4}(?P=s)[0-9]{4}(?:(?P=s)[0-9]{3})?"
    r"(?![0-9])|[0-9]{4}(?P<t>[ -]?)[0-9]{6}(?P=t)[0-9]{4,5}(?![0-9])|[0-9]{13,19}(?![0-9]))"
    r"|(?P<ssn>[0-9]{3}(?P<u>[- ])[0-9]{2}(?P=u)[0-9]{4}(?![0-9]))"
)
PHONE_INTERNATIONAL = re.compile(r"(?:\+|00)[1-9][0-9 ().\-/]*[0-9]")
PHONE_NATIONAL = re.compile(
    r"\([0-9]{2,5}\)[ .\-]?[0-9]{2,5}(?:[ .\-]?[0-9]{2,5}){0,3}(?![0-9])"  # (415) 555-0132
    r"|[2-9][0-9]{2}(?P<a>[-. ])[0-9]{3}(?P=a)[0-9]{4}(?![0-9])"  # 415-555-0132
    r"|0[1-9][0-9]{0,4}(?P<b>[ ./-])[0-9]{2,8}(?:(?P=b)[0-9]{2,8}){0,4}(?![0-9])"  # 020 7946 0958
    r"|[6-9][0-9]{2}(?P<c>[ .-])[0-9]{2}(?P=c)[0-9]{2}(?P=c)[0-9]{2}(?![0-9])"  # 612 34 56 78
)
NUMERIC_DATE = re.compile(
    r"(?P<y>[0-9]{4})[-/.](?P<m>[0-9]{1,2})[-/.](?P<d>[0-9]{1,2})"
    r"|(?P<d2>[0-9]{1,2})[-/.](?P<m2>[0-9]{1,2})[-/.](?P<y2>[0-9]{4}|[0-9]{2})(?![0-9])"
)
_MONTHS = trie(
    "january jan february feb march mar april apr may june jun july jul august aug september"
    " sep sept october oct november nov december dec janvier fevrier février mars avril mai"
    " juin juillet aout août septembre octobre novembre decembre décembre januar jänner"
    " februar märz maerz juni juli oktober okt dezember dez enero febrero marzo abril mayo"
    " junio julio agosto septiembre setiembre octubre noviembre diciembre gennaio febbraio"
    " aprile maggio giugno luglio settembre ottobre dicembre".split()
)
TEXT_DATE = re.compile(
    rf"(?i:\b(?:{_MONTHS})\.?\s+[0-9]{{1,2}}(?:st|nd|rd|th)?,?\s+[0-9]{{4}}"
    rf"|\b[0-9]{{1,2}}(?:st|nd|rd|th|er)?\.?\s+(?:of\s+|de\s+)?(?:{_MONTHS})\.?,?\s+(?:de\s+)?"
    rf"[0-9]{{4}}|\b[0-9]{{1,2}}-(?:{_MONTHS})-[0-9]{{4}})(?![0-9])"
)
STREET_EN = re.compile(
    r"[0-9]{1,5}[A-Za-z]?\s+(?:[A-ZÀ-ÖØ-Þ][\w'’.\-]*\s+){1,4}?"
    r"(?i:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|terrace"
    r"|place|pl|way|highway|hwy|parkway|pkwy|square|sq|crescent|circle|trail)\b\.?"
)
STREET_TYPE_FIRST = re.compile(r"(?:Calle|Via|Rua|Piazza|Avenida|Paseo|Plaza)\s+[A-ZÀ-ÖØ-Þ]")
STREET_NAME_TAIL = re.compile(r"[\w'’\-]*(?:\s+[\w'’\-]+)?")
EMAIL_LOCAL = re.compile(r"[\w.+%'\-]{1,64}\Z")
EMAIL_DOMAIN = re.compile(r"(?:[^\W_](?:[\w\-]{0,61}[^\W_])?\.)+[^\W\d_]{2,63}(?![\w\-]|\.[^\W_])")
EMAIL_OBFUSCATED = re.compile(
    r"(?i)[\w.+\-]+\s*[(\[{]\s*at\s*[)\]}]\s*[\w\-]+"
    r"(?:(?:\s*[(\[{]\s*dot\s*[)\]}]\s*|\s+dot\s+|\.)[\w\-]+)+"
)
IPV6_TOKEN = re.compile(
    r"(?:[0-9A-Fa-f]{0,4}:)+(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?![.0-9])|[0-9A-Fa-f]{0,4})"
)

# -- context words, searched in a short lowercased window around a candidate --------------
_CONTEXT_WORDS = {
    "dob": "born, birth, birthday, birthdate, dob, d.o.b, né, née, geboren, geburt, geburtsdatum,"
    " geburtstag, nacimiento, naissance, nascita, nato, nata, nascimento",
    "ssn": "ssn, social security",
    "phone": "phone, tel, telephone, téléphone, telefon, telefono, teléfono, mobile, mobil, cell,"
    " cellphone, fax, whatsapp, handy, portable, móvil",
    "id": "passport, passeport, reisepass, pasaporte, passaporto, id number, id no, id nr, id card,"
    " id-nr, id-card, id#, identity, identification, identité, identidad, national id, tax id,"
    " tax number, taxpayer, tin, driver's license, drivers license, driver license,"
    " driver's licence, driving licence, driving license, licence no, license no,"
    " licence number, license number, licencia, national insurance, social insurance,"
    " insurance number, ausweis, personalausweis, ausweisnummer, dni, nie, nif, nir, bsn,"
    " pesel, aadhaar, pan card, codice fiscale, steuer-id, steuerid, steuernummer,"
    " steueridentifikationsnummer, numéro fiscal, sin, nhs number, nhs no, medicare,"
    " führerschein, permis de conduire, carte d'identité",
}
CONTEXT_FAMILY = {
    word.strip(): family for family, words in _CONTEXT_WORDS.items() for word in words.split(",")
}
"""Context word -> the family it vouches for: dob, ssn, phone or id."""
CONTEXT = {
    name: re.compile(
        "(?:" + trie([w for w, f in CONTEXT_FAMILY.items() if name in ("any", f)]) + r")(?![^\W\d_])"
    )
    for name in ("dob", "id", "any")
}
CONTEXT_BEFORE, CONTEXT_AFTER = 40, 20

# -- validators -----------------------------------------------------------------------------
_IBAN_LENGTHS = {
    item[:2]: int(item[2:])
    for item in (
        "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 "
        "DJ27 DK18 DO28 EE20 EG29 ES24 FI18 FK18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HN28 "
        "HR21 HU28 IE22 IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 LY25 "
        "MC27 MD24 ME22 MK19 MN20 MR27 MT31 MU30 NI28 NL18 NO15 OM23 PK24 PL28 PS29 PT25 QA29 "
        "RO24 RS22 RU33 SA24 SC31 SD18 SE24 SI19 SK24 SM27 SO23 ST25 SV28 TL23 TN24 TR26 UA29 "
        "VA22 VG24 XK20 YE30"
    ).split()
}


def luhn_valid(digits: str) -> bool:
    """Whether a digit string passes the Luhn checksum."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        total += (value * 2 - 9 if value > 4 else value * 2) if index % 2 else value
    return total % 10 == 0


def card_valid(digits: str) -> bool:
    """A payment card: 13-19 digits, a major-industry prefix 2-6 and a valid Luhn sum."""
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_valid(digits)


def iban_length(text: str) -> int | None:
    """The IBAN length of the country ``text`` starts with, or None if it has none."""
    return _IBAN_LENGTHS.get(text[:2].upper())


def iban_valid(compact: str) -> bool:
    """Whether an IBAN without spaces has its country's length and passes mod-97."""
    iban = compact.upper()
    if iban_length(iban) != len(iban) or not iban[2:4].isdigit() or not iban.isalnum():
        return False
    return int("".join(str(int(char, 36)) for char in iban[4:] + iban[:4])) % 97 == 1


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """The SSA rules: area not 000, 666 or 9xx; group not 00; serial not 0000."""
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def ipv4_valid(address: str) -> bool:
    """Each octet of a dotted quad is 0-255."""
    return all(int(octet) <= 255 for octet in address.split("."))


def ipv6_valid(token: str) -> bool:
    """A real IPv6 address holding a digit (so not ``::``, nor ``a::b`` in C++ code)."""
    if not any(char.isdigit() for char in token):
        return False
    try:
        ipaddress.IPv6Address(token)
    except ValueError:  # not an address: this is the validation itself, not an error
        return False
    return True


def date_plausible(year: str, month: str, day: str) -> bool:
    """Whether the parts name a calendar day (two-digit years allowed)."""
    y, m, d = int(year), int(month), int(day)
    return 1 <= m <= 12 and 1 <= d <= 31 and (len(year) == 2 or 1900 <= y <= 2100)
