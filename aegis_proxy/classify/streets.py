"""Street addresses: English number-first, French, and name-first European forms.

Why it exists: addresses have no checksum, so their recognizer is the most heuristic one
and the longest; it lives apart so that its word lists and guards can be read in one
place ("3 blocks down the street" and "sent via email 3 times" are no addresses).

What must always hold:
- a candidate is found from a rare shape or word in ``Scan.shape`` / ``Scan.words``
  ("0 A", " st", "0 rue", a street suffix in the reversed words) and only then checked
  with ``str`` patterns on the text, so prose without such a shape costs one search each;
- an English number-first street counts only with capitalized name words, or with a
  plain street type ("123 main st") and no filler word ("12 miles down the road");
- every pattern is linear on any input (possessive repeats, bounded word counts).
"""

from __future__ import annotations

import re

from aegis_proxy.classify.scan import Scan, trie

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
