"""The proofs behind structured PII: checksums, numbering rules, address validity.

Why it exists: a candidate pattern only says "this could be a card"; these functions
decide. They are pure functions of a string, with no regular expression state and no
knowledge of the text around the value, so each can be read and tested on its own, and
``bench/bench_pii.py`` reuses ``card_valid`` and ``iban_valid`` for its naive baseline.

What must always hold:
- each function accepts exactly what its docstring says and never raises on a string its
  candidate pattern can produce (digits only where it says digits);
- an address that names this host (loopback 127.0.0.0/8 and ``::1``, unspecified
  ``0.0.0.0`` and ``::``, also IPv4-mapped) is valid but is no personal data: coding
  prompts are full of them, and counting them would keep such prompts local for nothing.
  Private ranges (10/8, 172.16/12, 192.168/16) still count: they identify a network.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

# -- cards ----------------------------------------------------------------------------------
_DOUBLED = str.maketrans("0123456789", "0246813579")  # 2d, minus 9 when over 9


def luhn_valid(number: str) -> bool:
    """Whether a digit string passes the Luhn checksum."""
    kept, doubled = number[-1::-2], number[-2::-2].translate(_DOUBLED)
    return (sum(map(int, kept)) + sum(map(int, doubled))) % 10 == 0


_NETWORKS = (  # IIN ranges (ISO/IEC 7812 numbering, the networks' published tables)
    ("4", "4", "13 16 19"),  # Visa, Visa Electron
    ("51", "55", "16"), ("2221", "2720", "16"),  # Mastercard
    ("34", "34", "15"), ("37", "37", "15"),  # American Express
    ("300", "305", "14 15 16 17 18 19"), ("36", "36", "14 15 16 17 18 19"),  # Diners Club
    ("38", "39", "14 15 16 17 18 19"), ("3095", "3095", "14 15 16 17 18 19"),
    ("3528", "3589", "16 17 18 19"), ("1800", "1800", "15"), ("2131", "2131", "15"),  # JCB
    ("1", "1", "15"),  # UATP
    ("6011", "6011", "16 17 18 19"), ("644", "649", "16 17 18 19"),  # Discover
    ("65", "65", "16 17 18 19"),
    ("62", "62", "16 17 18 19"),  # UnionPay
    ("2200", "2204", "16 17 18 19"),  # Mir
    ("5018", "5018", "12 13 14 15 16 17 18 19"), ("5020", "5020", "12 13 14 15 16 17 18 19"),
    ("5038", "5038", "12 13 14 15 16 17 18 19"), ("5893", "5893", "12 13 14 15 16 17 18 19"),
    ("6304", "6304", "12 13 14 15 16 17 18 19"), ("6759", "6759", "12 13 14 15 16 17 18 19"),
    ("6761", "6763", "12 13 14 15 16 17 18 19"),  # Maestro
)  # fmt: skip
NETWORK_PREFIXES = tuple(
    (low, high, frozenset(map(int, sizes.split()))) for low, high, sizes in _NETWORKS
)
"""(lowest prefix, highest prefix, the lengths the network issues) for each known IIN range."""


_PREFIXES_BY_LENGTH = {
    size: frozenset(
        str(prefix).zfill(len(low))
        for low, high, sizes in NETWORK_PREFIXES
        if size in sizes
        for prefix in range(int(low), int(high) + 1)
    )
    for size in range(12, 20)
}
"""Card length -> every IIN prefix (1-4 digits) a known network issues at that length."""


def known_network(number: str) -> bool:
    """Whether a digit string has the prefix and length of a known card network."""
    prefixes = _PREFIXES_BY_LENGTH.get(len(number))
    return prefixes is not None and any(number[:size] in prefixes for size in (1, 2, 3, 4))


def card_valid(number: str) -> bool:
    """A payment card on its own: a valid Luhn sum and a known issuer for its length.

    16-19 digits need a major industry digit of a card issuer (2221-2720, 3, 4, 5, 6) or
    a known network (Mir 2200-2204); 12-15 digits need a known network's prefix and length
    (Amex 34/37 at 15, Diners at 14, Visa at 13, JCB 1800/2131 and UATP 1 at 15, Maestro
    from 12).
    Shorter ones, and other prefixes, count only beside a card word (``classify.windows``).
    """
    if not 12 <= len(number) <= 19:
        return False
    major = len(number) >= 16 and (number[0] in "3456" or "2221" <= number[:4] <= "2720")
    return (major or known_network(number)) and luhn_valid(number)  # the cheap test first


def card_plausible(number: str) -> bool:
    """A payment card beside a card word: 12-19 digits and a valid Luhn sum."""
    return 12 <= len(number) <= 19 and number.strip("0") != "" and luhn_valid(number)


def card_length(number: str) -> int:
    """Length of the longest run of leading digit groups that is a valid card, else 0.

    A run shorter than 16 digits counts only as the whole candidate: "5018 3466 2758 7090"
    fails Luhn, and its first 12 digits are no Maestro card for passing it by chance.
    """
    groups = list(re.finditer(r"[0-9]+", number))
    found = "".join(group.group() for group in groups)
    size = len(found)
    for index in range(len(groups) - 1, -1, -1):
        if (size >= 16 or index == len(groups) - 1) and card_valid(found[:size]):
            return groups[index].end()
        size -= len(groups[index].group())
    return 0


# -- US SSN and phone numbers ----------------------------------------------------------------
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
_IBAN_TABLE = (  # country code + IBAN length
    "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 "
    "DJ27 DK18 DO28 EE20 EG29 ES24 FI18 FK18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HN28 "
    "HR21 HU28 IE22 IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 LY25 "
    "MC27 MD24 ME22 MK19 MN20 MR27 MT31 MU30 NI28 NL18 NO15 OM23 PK24 PL28 PS29 PT25 QA29 "
    "RO24 RS22 RU33 SA24 SC31 SD18 SE24 SI19 SK24 SM27 SO23 ST25 SV28 TL23 TN24 TR26 UA29 "
    "VA22 VG24 XK20 YE30"
)
IBAN_LENGTHS = {item[:2]: int(item[2:]) for item in _IBAN_TABLE.split()}
"""Country code -> IBAN length, from the SWIFT IBAN registry."""
NUMERIC_BBAN = frozenset({
    "AT", "BA", "BE", "CZ", "DE", "DK", "EE", "ES", "FI", "FO", "GL", "HR", "HU", "IL",
    "IS", "LT", "ME", "NO", "PL", "PT", "RS", "SE", "SI", "SK", "TL", "TN", "XK",
})  # fmt: skip
"""Countries whose account part (BBAN) is digits only, in the same registry."""


def iban_valid(iban: str) -> bool:
    """Whether an IBAN (spaces or dashes allowed) has its country's length and BBAN digits
    where the registry says so, and passes mod-97."""
    iban = iban.replace(" ", "").replace("-", "").upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban[2:4].isdigit() or not iban.isalnum():
        return False
    if iban[:2] in NUMERIC_BBAN and not iban[4:].isdigit():
        return False  # a hex id that happens to pass mod-97 (a UUID's "be65 7298 ...")
    return int("".join(str(int(char, 36)) for char in iban[4:] + iban[:4])) % 97 == 1


# -- IP addresses -----------------------------------------------------------------------------
def ipv4_valid(address: str) -> bool:
    """Each octet of a dotted quad is 0-255."""
    return all(int(octet) <= 255 for octet in address.split("."))


def ipv4_this_host(address: str) -> bool:
    """A dotted quad in 127.0.0.0/8 (loopback) or 0.0.0.0 (unspecified): this machine."""
    return address.startswith("127.") or not address.strip("0.")


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


@lru_cache(maxsize=1024)
def ipv6_this_host(token: str) -> bool:
    """A valid IPv6 address that is loopback or unspecified, also as IPv4-mapped."""
    address = ipaddress.IPv6Address(token)
    mapped = address.ipv4_mapped
    if mapped is not None:
        return mapped.is_loopback or mapped.is_unspecified
    return address.is_loopback or address.is_unspecified
