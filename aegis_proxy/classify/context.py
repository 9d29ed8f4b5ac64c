"""Values that count only beside a context word: dates of birth, ID numbers, bare numbers.

Why it exists: a date, an alphanumeric token or a run of nine digits is personal data only
when the text says what it is ("born", "passport", "SSN", "phone"). Those candidates wait
in ``Scan.pending`` while the other recognizers run, and are settled here together, so the
costly part (looking for context words) runs once per kind of candidate, not per value.

What must always hold:
- a pending candidate becomes a match only if a context word of its family (dob, ssn,
  phone, id) stands, as a whole word, within ``CONTEXT_BEFORE`` characters before it or
  ``CONTEXT_AFTER`` after it; without one it is dropped;
- one search per kind runs over the joined windows, since nearly always no window holds a
  context word at all: windows are joined with a newline, which no context word contains;
- a date counts only if it is a plausible calendar date (month 1-12, day 1-31, year
  1900-2100 or two digits); a bare 9-digit SSN only if it passes the SSA rules.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from itertools import accumulate
from typing import TYPE_CHECKING

from aegis_proxy.classify.checksums import ssn_valid
from aegis_proxy.classify.scan import WORDS_TABLE, Scan, digits, trie

if TYPE_CHECKING:
    from collections.abc import Iterable

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
ID_LEAD = 8
"""Letters or digits an ID may hold before its first letter-digit pair: "RSSMRA85T10A562S"."""
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
_CALL_WORDS = (
    "call, calls, called, calling, ring, ringing, reach, reachable, text, texts,"
    " texting, message, messages, sms, answer, answers, answering, contact, dial, voicemail,"
    " signal, telegram, viber, anruf, ruf, rufen, erreichbar, erreichen, simsen, appelle,"
    " appeler, appelez-moi, joindre, joignable, rappeler, rappelez, llama, llamar, llámeme,"
    " llamame, marca, marcar, contactar, escríbeme, chiama, chiamare, chiamatemi, contattami,"
    " scrivimi, bel, bellen, belt, ligue, ligar, liga, ligue-me, contacto, contato"
)
"""How people write about calling: they vouch for a short number right after them only."""
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
_FILLERS = (
    "me us him her them back on at to via under or the my our his their number no nr num"
    " anytime please pls directly now today tomorrow later instead also au le al am an unter"
    " op a ao su auf mich uns moi nous me mi ci para pelo por per machine service"
)
_CALL_STRONG = (
    "call calls called calling dial ring anruf anrufen appelle appeler llama llamar chiama"
    " chiamare bel bellen ligue ligar"
)
"""Conversational words that do not precede counts: a bare digit run right after one is a
phone ("call 9630154"), where "reach 1000000 users" or "message 1234567" is no phone."""


def _call_before(words: Iterable[str], fillers: int) -> re.Pattern[str]:
    """A conversational word, then ``fillers`` to 4 small words, then the end of the text."""
    return re.compile(
        f"(?<![^\\W\\d_])(?:{trie(words)})(?:[ \\t]+(?:{trie(_FILLERS.split())})\\.?)"
        f"{{{fillers},4}}[ \\t]*[:#]?[ \\t]*\\(?\\Z"
    )


_ALL_CALL_WORDS = [word.strip() for word in _CALL_WORDS.split(",")]
CALL_JUST_BEFORE = _call_before(_ALL_CALL_WORDS, 0)
"""A conversational word, a few small words, then the number: short local numbers count."""
CALL_BARE_BEFORE = (_call_before(_CALL_STRONG.split(), 0), _call_before(_ALL_CALL_WORDS, 1))
"""What a bare digit run needs: a strong word, or any word and one small word at least."""
ID_WORDS = re.compile(
    trie(
        word.encode("ascii", "replace").translate(WORDS_TABLE).decode()
        for word, family in CONTEXT_FAMILY.items()
        if family == "id"
    ).encode()
)
"""The ID words as they read in ``Scan.words``: a quick test, which may over-match."""


def find_text_dates(scan: Scan) -> None:
    for year in YEAR_WORDS.finditer(scan.words):
        scan.pending.append(("text_date", max(0, year.start() - 24), year.end()))


def find_ids(scan: Scan) -> None:
    """Letter-and-digit tokens of 6-18 characters ("X1234567", "15AB12345") await context."""
    text = scan.text
    for match in ID_SHAPE.finditer(scan.shape):
        start, end = match.span()
        while start and text[start - 1].isalnum() and match.start() - start < ID_LEAD:
            start -= 1
        size = end - start - text.count("-", start, end)
        if 6 <= size <= 18 and not text[start - 1 : start].isalnum():
            scan.pending.append(("token", start, end))


def id_word_just_before(scan: Scan, start: int) -> bool:
    """Whether the last context word before ``start`` names an ID, with no digit after it.

    Decides a number shaped like a phone that the text calls an ID: "NHS number 943 476
    5919", "SIN 046 454 286". A phone word after the ID word, or another value between
    them ("passport X1234567, 415-555-0132"), leaves it a phone.
    """
    begin = max(0, start - CONTEXT_BEFORE)
    if not ID_WORDS.search(scan.words, begin, start):  # nearly always: no ID word at all
        return False
    window = scan.text[begin:start].lower()
    last = None
    for word in CONTEXT["number"].finditer(window):
        if not window[word.start() - 1 : word.start()].isalpha():
            last = word
    if last is None or CONTEXT_FAMILY[last.group()] != "id":
        return False
    return not any(char.isdigit() for char in window[last.end() :])


def settle_context(scan: Scan) -> None:
    """Decide the pending candidates: one search per kind over their joined windows."""
    by_kind: dict[str, list[tuple[int, int]]] = {}
    for kind, start, end in scan.pending:
        by_kind.setdefault(kind, []).append((start, end))
    for kind, spans in by_kind.items():
        for (start, end), near in zip(spans, _context_words(scan.text, kind, spans), strict=True):
            if near:
                _decide(scan, kind, start, end, near)
            elif kind == "number" and _short_number_after_call(scan, start, end):
                _decide(scan, kind, start, end, {"phone"})  # "call me on 555 0134"


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
        elif "ssn" in near and (group := _nine_digits(text, start, end)):
            scan.add("US_SSN", *group)  # "SSN qty: 4 530999095": the SSN is one group
        elif (
            7 <= len(found) <= 15
            and not DOTTED_VERSION.fullmatch(text, start, end)
            and "phone" in near
        ):
            scan.add("PHONE", start, end)
        elif "id" in near and 6 <= len(found) <= 18:
            scan.add("ID_NUMBER", start, end)


DOTTED_VERSION = re.compile(r"[0-9]{1,4}(?:\.[0-9]{1,6})*\.[0-9]\.[0-9]{1,6}(?:\.[0-9]{1,6})*")
"""A dotted number with a one-digit inner group ("75.2.703956"): a version, not a phone."""


_GROUP = re.compile(r"[0-9]+")


def _nine_digits(text: str, start: int, end: int) -> tuple[int, int] | None:
    """The span of a group of exactly nine digits in ``[start, end)`` passing the SSA rules."""
    for group in _GROUP.finditer(text, start, end):
        if len(group.group()) == 9 and ssn_valid(group.group()):
            return group.span()
    return None


def _short_number_after_call(scan: Scan, start: int, end: int) -> bool:
    """7-15 digits right after a conversational word and a few small words."""
    if not 7 <= scan.shape.count(b"0", start, end) <= 15:
        return False
    window = scan.text[max(0, start - CONTEXT_BEFORE - 16) : start].lower()
    if scan.shape.count(b"0", start, end) == end - start:  # a bare run: "5550134"
        return any(pattern.search(window) for pattern in CALL_BARE_BEFORE)
    return CALL_JUST_BEFORE.search(window) is not None


def _date_end(text: str, start: int) -> int | None:
    """End of a calendar date written with digits at ``start`` (day or month first)."""
    if not (date := NUMERIC_DATE.match(text, start)):
        return None
    year, month, day = date["y"] or date["y2"], date["m"] or date["m2"], date["d"] or date["d2"]
    low, high = sorted((int(month), int(day)))
    plausible = (len(year) == 2 or 1900 <= int(year) <= 2100) and 1 <= low <= 12 and high <= 31
    return date.end() if plausible else None
