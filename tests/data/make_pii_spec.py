"""Generate ``pii_spec.jsonl``: a labelled set written from the public specifications only.

Why it exists: ``make_pii_labelled.py`` was written beside the detector, so a recall of
1.000 there proves little. This generator knows nothing of the detector's patterns: each
value is built from a written rule, quoted below, and placed in a sentence the way people
write it. ``bench/bench_pii_accuracy.py`` reports recall on it apart from the other sets.

- cards, ISO/IEC 7812-1: the first digit is the major industry identifier, the first six
  to eight the issuer identification number; the last digit is the Luhn check digit
  (ISO/IEC 7812-1 annex B). IIN ranges and lengths as the networks publish them.
- phones, ITU-T E.164: "+" country code, then the national significant number, at most
  15 digits in all; national formats as each country's numbering plan writes them.
- IBAN, ISO 13616 and the SWIFT IBAN registry: country code, two check digits (ISO 7064
  MOD 97-10: the rearranged number mod 97 is 1), the BBAN in the registry's notation
  ("8n,10n": n digits, a capital letters, c letters or digits).
- SSN, the Social Security Administration: area 001-899 but not 666, group 01-99, serial
  0001-9999 (randomized assignment since 2011).
- email, RFC 5322 section 3.4.1: dot-atom local parts of atext, or a quoted string; a
  domain of LDH labels (RFC 1035).
- IP, RFC 791 dotted quads (not 127/8 or 0.0.0.0) and RFC 4291 / 5952 IPv6 text.

Deterministic: seeded ``random.Random``; run it twice, get the same bytes.

    python tests/data/make_pii_spec.py   # rewrites tests/data/pii_spec.jsonl
"""

from __future__ import annotations

import ipaddress
import json
import random
import string
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("pii_spec.jsonl")
RNG = random.Random(7812)
Row = dict[str, Any]

# -- ISO/IEC 7812: (network, IIN low, IIN high, lengths, grouping) -----------------------------
NETWORKS = [
    ("Visa", 4, 4, (13, 16, 19), "4"),
    ("Mastercard", 51, 55, (16,), "4"),
    ("Mastercard 2-series", 2221, 2720, (16,), "4"),
    ("American Express", 34, 34, (15,), "465"),
    ("American Express", 37, 37, (15,), "465"),
    ("Discover", 6011, 6011, (16, 19), "4"),
    ("Discover", 644, 649, (16,), "4"),
    ("Discover", 65, 65, (16,), "4"),
    ("Diners Club International", 36, 36, (14,), "464"),
    ("Diners Club", 300, 305, (16,), "4"),
    ("JCB", 3528, 3589, (16, 19), "4"),
    ("UnionPay", 62, 62, (16, 17, 18, 19), "4"),
    ("Maestro", 6759, 6759, (12, 13, 15, 16, 19), "4"),
    ("Maestro", 5018, 5018, (12, 16, 18), "4"),
    ("UATP", 1, 1, (15,), "456"),
    ("Mir", 2200, 2204, (16,), "4"),
]
CARD_SENTENCES = [
    "Please charge my card {} for the order.",
    "card number: {}",
    "Visa/MC {} exp 08/28",
    "My credit card is {} and the CVV is on the back.",
    "Kreditkarte {} bitte belasten.",
    "Numéro de carte bancaire : {}",
    "Pagar con la tarjeta {}.",
    "Paid with {} yesterday.",
    "PAN {} (test)",
    "1. {}",
]


def luhn_check_digit(payload: str) -> str:
    """ISO/IEC 7812-1 annex B: double every second digit from the right of the payload."""
    total = 0
    for position, char in enumerate(reversed(payload)):
        value = int(char)
        if position % 2 == 0:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return str((10 - total % 10) % 10)


def spec_card() -> tuple[str, str]:
    name, low, high, lengths, grouping = RNG.choice(NETWORKS)
    iin = str(RNG.randint(low, high))
    length = RNG.choice(lengths)
    payload = iin + "".join(RNG.choice(string.digits) for _ in range(length - len(iin) - 1))
    number = payload + luhn_check_digit(payload)
    form = RNG.random()
    if form < 0.3:
        return name, number
    sizes = [4] * (length // 4) + ([length % 4] if length % 4 else []) if grouping == "4" else []
    if grouping != "4":
        sizes = [int(size) for size in grouping]
    sizes[-1] += length - sum(sizes)
    parts, cursor = [], 0
    for size in sizes:
        parts.append(number[cursor : cursor + size])
        cursor += size
    return name, ("-" if form > 0.8 else " ").join(parts)


# -- ITU-T E.164 national plans: (country code, [(national format, international format)]) ------
def d(count: int) -> str:
    return "".join(RNG.choice(string.digits) for _ in range(count))


def nz(count: int) -> str:  # a leading digit 2-9, as most plans require
    return str(RNG.randint(2, 9)) + d(count - 1)


PHONE_PLANS = [
    lambda: f"({nz(3)}) {nz(3)}-{d(4)}",
    lambda: f"{nz(3)}-{nz(3)}-{d(4)}",
    lambda: f"+1 {nz(3)} {nz(3)} {d(4)}",
    lambda: f"+1-{nz(3)}-{nz(3)}-{d(4)}",
    lambda: f"020 {nz(4)} {d(4)}",
    lambda: f"+44 20 {nz(4)} {d(4)}",
    lambda: f"07{d(3)} {d(6)}",
    lambda: f"+44 7{d(3)} {d(6)}",
    lambda: f"+49 30 {nz(8)}",
    lambda: f"+49 151 {d(8)}",
    lambda: f"0151 {d(8)}",
    lambda: f"+33 6 {d(2)} {d(2)} {d(2)} {d(2)}",
    lambda: f"06 {d(2)} {d(2)} {d(2)} {d(2)}",
    lambda: f"01.{d(2)}.{d(2)}.{d(2)}.{d(2)}",
    lambda: f"+34 6{d(2)} {d(3)} {d(3)}",
    lambda: f"+34 9{d(2)} {d(3)} {d(3)}",
    lambda: f"+39 06 {d(4)} {d(4)}",
    lambda: f"+39 3{d(2)} {d(3)} {d(4)}",
    lambda: f"+31 6 {d(4)} {d(4)}",
    lambda: f"06-{d(8)}",
    lambda: f"+81 3-{d(4)}-{d(4)}",
    lambda: f"090-{d(4)}-{d(4)}",
    lambda: f"+61 4{d(2)} {d(3)} {d(3)}",
    lambda: f"(02) {d(4)} {d(4)}",
    lambda: f"+91 9{d(4)} {d(5)}",
    lambda: f"+55 11 9{d(4)}-{d(4)}",
    lambda: f"+86 13{d(1)} {d(4)} {d(4)}",
    lambda: f"+52 55 {d(4)} {d(4)}",
    lambda: f"+41 44 {d(3)} {d(2)} {d(2)}",
    lambda: f"+46 8 {d(3)} {d(3)} {d(2)}",
    lambda: f"+48 {nz(3)} {d(3)} {d(3)}",
    lambda: f"+351 21 {d(3)} {d(4)}",
    lambda: f"+353 1 {d(3)} {d(4)}",
    lambda: f"+32 2 {d(3)} {d(2)} {d(2)}",
    lambda: f"+43 1 {d(7)}",
    lambda: f"+45 {d(2)} {d(2)} {d(2)} {d(2)}",
    lambda: f"+47 {d(3)} {d(2)} {d(3)}",
    lambda: f"+27 21 {d(3)} {d(4)}",
    lambda: f"+65 {nz(4)} {d(4)}",
    lambda: f"+82 10-{d(4)}-{d(4)}",
    lambda: f"+7 495 {d(3)}-{d(2)}-{d(2)}",
    lambda: f"+90 212 {d(3)} {d(2)} {d(2)}",
]
PHONE_SENTENCES = [
    "Call me at {}.",
    "Phone: {}",
    "You can reach me on {} after six.",
    "Tel. {}",
    "Mobile {} (whatsapp too)",
    "contact number {}",
    "Ring {} for the front desk.",
    "Rufen Sie mich unter {} an.",
    "Appelez-moi au {}.",
    "Llámame al {}.",
]

# -- the SWIFT IBAN registry: country, BBAN structure -------------------------------------------
IBAN_REGISTRY = {
    "AD": "4n,4n,12c", "AT": "5n,11n", "BE": "3n,7n,2n", "BG": "4a,4n,2n,8c", "CH": "5n,12c",
    "CY": "3n,5n,16c", "CZ": "4n,6n,10n", "DE": "8n,10n", "DK": "4n,9n,1n", "EE": "2n,2n,11n,1n",
    "ES": "4n,4n,1n,1n,10n", "FI": "3n,11n", "FR": "5n,5n,11c,2n", "GB": "4a,6n,8n",
    "GR": "3n,4n,16c", "HR": "7n,10n", "HU": "3n,4n,1n,15n,1n", "IE": "4a,6n,8n",
    "IS": "4n,2n,6n,10n", "IT": "1a,5n,5n,12c", "LT": "5n,11n", "LU": "3n,13c", "LV": "4a,13c",
    "MT": "4a,5n,18c", "NL": "4a,10n", "NO": "4n,6n,1n", "PL": "8n,16n", "PT": "4n,4n,11n,2n",
    "RO": "4a,16c", "SE": "3n,16n,1n", "SI": "5n,8n,2n", "SK": "4n,6n,10n", "SA": "2n,18c",
    "TR": "5n,1n,16c", "AE": "3n,16n", "BR": "8n,5n,10n,1a,1c", "IL": "3n,3n,13n",
}  # fmt: skip
IBAN_SENTENCES = [
    "Please wire it to IBAN {}.",
    "Bank account {}",
    "IBAN: {} (BIC on request)",
    "Überweisung bitte auf {}.",
    "RIB / IBAN {}",
    "Cuenta {} a nombre de la empresa.",
]


def bban(structure: str) -> str:
    pools = {
        "n": string.digits,
        "a": string.ascii_uppercase,
        "c": string.ascii_uppercase + string.digits,
    }
    out = []
    for field in structure.split(","):
        out.append("".join(RNG.choice(pools[field[-1]]) for _ in range(int(field[:-1]))))
    return "".join(out)


def spec_iban() -> str:
    country = RNG.choice(sorted(IBAN_REGISTRY))
    body = bban(IBAN_REGISTRY[country])
    rearranged = "".join(str(int(char, 36)) for char in body + country + "00")
    check = 98 - int(rearranged) % 97  # ISO 7064 MOD 97-10
    iban = f"{country}{check:02d}{body}"
    if RNG.random() < 0.5:  # the paper format: groups of four, separated by a space
        iban = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    return iban


# -- SSA rules, RFC 5322 addresses, IP text forms -------------------------------------------------
SSN_SENTENCES = ["SSN {}", "Social Security number {}.", "ssn: {}", "My SSN is {}", "SSN# {}"]
ATEXT = string.ascii_lowercase + string.digits + "!#$%&'*+-/=?^_`{|}~"
EMAIL_SENTENCES = ["Email me at {}.", "{} wrote:", "Contact: {}", "send it to <{}> please"]
IP_SENTENCES = ["Login from {} failed.", "server at {}", "client_ip={}", "ping {} timed out"]


def spec_ssn() -> str:
    area = RNG.choice([value for value in range(1, 900) if value != 666])
    value = f"{area:03d}-{RNG.randint(1, 99):02d}-{RNG.randint(1, 9999):04d}"
    return value.replace("-", " ") if RNG.random() < 0.2 else value


def spec_email() -> str:
    words = [
        "".join(RNG.choice(string.ascii_lowercase) for _ in range(RNG.randint(2, 8)))
        for _ in range(RNG.randint(1, 3))
    ]
    local = ".".join(words)
    if RNG.random() < 0.15:
        local += RNG.choice("+-_") + "".join(RNG.choice(ATEXT) for _ in range(3)).strip(".")
    if RNG.random() < 0.05:
        local = f'"{words[0]} {words[-1]}"'
    labels = [
        "".join(
            RNG.choice(string.ascii_lowercase + string.digits) for _ in range(RNG.randint(2, 10))
        )
        for _ in range(RNG.randint(1, 3))
    ]
    tld = RNG.choice(["com", "org", "net", "de", "fr", "co.uk", "io", "info", "museum", "travel"])
    return f"{local}@{'.'.join(labels)}.{tld}"


def spec_ip() -> str:
    if RNG.random() < 0.7:
        while True:
            address = ipaddress.IPv4Address(RNG.randint(1 << 24, (224 << 24) - 1))
            if not address.is_loopback:
                return str(address)
    groups = [RNG.randint(0, 0xFFFF) if RNG.random() < 0.7 else 0 for _ in range(8)]
    address = ipaddress.IPv6Address(bytes.fromhex("".join(f"{group:04x}" for group in groups)))
    if address.is_loopback or address.is_unspecified:
        address = ipaddress.IPv6Address("2001:db8::" + f"{RNG.randint(1, 0xFFFF):x}")
    return address.compressed if RNG.random() < 0.8 else address.exploded


def row(kind: str, sentences: list[str], value: str) -> Row:
    text = RNG.choice(sentences).format(value)
    return {"text": text, "entities": [{"type": kind, "value": value}]}


def negatives() -> list[Row]:
    """Values that break their specification: they must not count."""
    out = []
    for _ in range(40):
        _, card = spec_card()
        last = card[-1]
        wrong = card[:-1] + str((int(last) + RNG.randint(1, 9)) % 10)
        out.append({"text": f"reference {wrong}".replace("card", ""), "entities": []})
        out.append(
            {"text": f"id {RNG.choice(['000', '666', '9' + d(2)])}-{d(2)}-{d(4)}", "entities": []}
        )
        out.append(
            {"text": f"host {RNG.randint(256, 999)}.{RNG.randint(0, 255)}.1.2", "entities": []}
        )
    return out


def build() -> list[Row]:
    rows = [row("CREDIT_CARD", CARD_SENTENCES, spec_card()[1]) for _ in range(200)]
    rows += [row("PHONE", PHONE_SENTENCES, RNG.choice(PHONE_PLANS)()) for _ in range(200)]
    rows += [row("IBAN", IBAN_SENTENCES, spec_iban()) for _ in range(150)]
    rows += [row("US_SSN", SSN_SENTENCES, spec_ssn()) for _ in range(100)]
    rows += [row("EMAIL", EMAIL_SENTENCES, spec_email()) for _ in range(150)]
    rows += [row("IP_ADDRESS", IP_SENTENCES, spec_ip()) for _ in range(100)]
    return rows + negatives()


def main() -> None:
    rows = build()
    OUT.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in rows), "utf-8")
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main()
