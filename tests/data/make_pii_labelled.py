"""Generate ``pii_labelled.jsonl``: the labelled set behind the detector's recall/precision.

Why it exists: issue 5 asks for per-entity recall and precision of the default detector on
at least 500 labelled snippets in several languages' formats. The set is generated, not
hand-typed, so that every card passes Luhn, every IBAN passes mod-97, and every near miss
fails its checksum on purpose; hand-written hard cases (hiding tricks, look-alikes, JSON
tool results) sit beside the generated ones.

What must always hold: the output is deterministic (seeded ``random.Random``; run it twice,
get the same bytes), and every labelled ``value`` appears verbatim in its ``text``.

    python tests/data/make_pii_labelled.py   # rewrites tests/data/pii_labelled.jsonl
"""

# ruff: noqa: RUF001  # look-alike characters (full-width digits, invisible marks) are the point

from __future__ import annotations

import json
import random
import string
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("pii_labelled.jsonl")
RNG = random.Random(20240605)
Snippet = dict[str, Any]
ZW = "\u200b"


def snip(text: str, *entities: tuple[str, str]) -> Snippet:
    for _, value in entities:
        assert value in text, (value, text)
    return {"text": text, "entities": [{"type": kind, "value": value} for kind, value in entities]}


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def digits(count: int) -> str:
    return "".join(RNG.choice(string.digits) for _ in range(count))


# -- checksummed values ---------------------------------------------------------------------
def luhn_digit(body: str) -> str:
    total = 0
    for index, char in enumerate(reversed(body)):
        value = int(char) * (2 if index % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return str((10 - total % 10) % 10)


CARD_PREFIXES = [
    ("4", 16),
    ("4", 13),
    ("51", 16),
    ("55", 16),
    ("2221", 16),
    ("2720", 16),
    ("34", 15),
    ("37", 15),
    ("6011", 16),
    ("65", 16),
    ("35", 16),
    ("36", 14),
    ("4", 19),
]


def card(valid: bool = True) -> str:
    prefix, length = RNG.choice(CARD_PREFIXES)
    body = prefix + digits(length - len(prefix) - 1)
    check = luhn_digit(body)
    if not valid:
        check = str((int(check) + RNG.randint(1, 9)) % 10)
    return body + check


def group_card(number: str, sep: str) -> str:
    if len(number) in (14, 15):  # Amex 4-6-5, Diners 4-6-4
        parts = [number[:4], number[4:10], number[10:]]
    elif len(number) == 13:  # the old 13-digit Visa: 4-3-3-3
        parts = [number[:4], number[4:7], number[7:10], number[10:]]
    else:
        parts = [number[i : i + 4] for i in range(0, len(number), 4)]
    return sep.join(parts)


IBAN_FORMATS = {  # country: BBAN layout (n digit, a upper letter, c alnum)
    "DE": "n" * 18,
    "FR": "n" * 10 + "c" * 11 + "nn",
    "GB": "aaaa" + "n" * 14,
    "ES": "n" * 20,
    "IT": "a" + "n" * 10 + "c" * 12,
    "NL": "aaaa" + "n" * 10,
    "BE": "n" * 12,
    "CH": "n" * 5 + "c" * 12,
    "AT": "n" * 16,
    "PL": "n" * 24,
    "PT": "n" * 21,
    "SE": "n" * 20,
    "NO": "n" * 11,
    "DK": "n" * 14,
    "IE": "aaaa" + "n" * 14,
    "LU": "nnn" + "c" * 13,
    "FI": "n" * 14,
    "CZ": "n" * 20,
    "GR": "n" * 7 + "c" * 16,
    "RO": "aaaa" + "c" * 16,
    "HU": "n" * 24,
    "SA": "nn" + "c" * 18,
    "TR": "n" * 5 + "0" + "c" * 16,
    "BR": "n" * 23 + "a" + "c",
}


IBAN_LENGTHS = {
    "DE": 22,
    "FR": 27,
    "GB": 22,
    "ES": 24,
    "IT": 27,
    "NL": 18,
    "BE": 16,
    "CH": 21,
    "AT": 20,
    "PL": 28,
    "PT": 25,
    "SE": 24,
    "NO": 15,
    "DK": 18,
    "IE": 22,
    "LU": 20,
    "FI": 18,
    "CZ": 24,
    "GR": 27,
    "RO": 24,
    "HU": 28,
    "SA": 24,
    "TR": 26,
    "BR": 29,
}
"""The registry's IBAN length per country (SWIFT IBAN registry), to check the layouts."""


def iban(country: str, valid: bool = True) -> str:
    pools = {"n": string.digits, "a": string.ascii_uppercase, "c": string.digits + "ABCDEFXYZ"}
    bban = "".join(RNG.choice(pools[k]) if k in pools else k for k in IBAN_FORMATS[country])
    numeric = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    check = 98 - numeric % 97
    if not valid:
        check = (check + RNG.randint(1, 90)) % 97 or 2
        check = max(check, 2)
    assert len(bban) + 4 == IBAN_LENGTHS[country], country
    return f"{country}{check:02d}{bban}"


def group4(value: str) -> str:
    return " ".join(value[i : i + 4] for i in range(0, len(value), 4))


def ssn() -> str:
    while True:
        area = RNG.randint(1, 899)
        if area != 666:
            return f"{area:03d}-{RNG.randint(1, 99):02d}-{RNG.randint(1, 9999):04d}"


def ipv4() -> str:
    return ".".join(str(RNG.randint(1, 254)) for _ in range(4))


def ipv6() -> str:
    groups = [f"{RNG.randint(0, 0xFFFF):x}" for _ in range(8)]
    form = RNG.randint(0, 2)
    if form == 0:
        return ":".join(groups)
    if form == 1:
        return f"2001:db8:{groups[2]}::{groups[6]}:{RNG.randint(1, 9)}"
    return f"fe80::{groups[4]}:{groups[5]}:{RNG.randint(1, 99)}"


def n(count: int) -> str:
    return str(RNG.randint(1, 9)) + digits(count - 1)


PHONES = [  # one formatter per country format
    lambda: f"+1 ({n(3)}) {n(3)}-{digits(4)}",
    lambda: f"({n(3)}) {n(3)}-{digits(4)}",
    lambda: f"{n(3)}-{n(3)}-{digits(4)}",
    lambda: f"{n(3)}.{n(3)}.{digits(4)}",
    lambda: f"1-800-{n(3)}-{digits(4)}",
    lambda: f"+1{n(10)}",
    lambda: f"+44 20 {n(4)} {digits(4)}",
    lambda: f"020 {n(4)} {digits(4)}",
    lambda: f"07{n(3)} {n(6)}",
    lambda: f"+44 7{n(3)} {n(6)}",
    lambda: f"+49 30 {n(8)}",
    lambda: f"030 {n(7)}",
    lambda: f"0049 89 {n(7)}",
    lambda: f"+49 (0)30 {n(7)}",
    lambda: f"0151 {n(8)}",
    lambda: f"+33 1 {n(2)} {digits(2)} {digits(2)} {digits(2)}",
    lambda: f"06 {n(2)} {digits(2)} {digits(2)} {digits(2)}",
    lambda: f"06.{n(2)}.{digits(2)}.{digits(2)}.{digits(2)}",
    lambda: f"+34 6{n(2)} {digits(2)} {digits(2)} {digits(2)}",
    lambda: f"6{n(2)} {digits(2)} {digits(2)} {digits(2)}",
    lambda: f"+39 06 {n(4)} {digits(4)}",
    lambda: f"+39 3{n(2)} {n(3)} {digits(4)}",
    lambda: f"+31 20 {n(3)} {digits(4)}",
    lambda: f"06-{n(8)}",
    lambda: f"+91 9{n(4)} {n(5)}",
    lambda: f"+81 3-{n(4)}-{digits(4)}",
    lambda: f"03-{n(4)}-{digits(4)}",
    lambda: f"+55 11 9{n(4)}-{digits(4)}",
    lambda: f"(11) 9{n(4)}-{digits(4)}",
    lambda: f"+61 2 {n(4)} {digits(4)}",
    lambda: f"04{n(2)} {n(3)} {digits(3)}",
    lambda: f"+86 13{n(1)} {n(4)} {digits(4)}",
    lambda: f"+41 44 {n(3)} {digits(2)} {digits(2)}",
    lambda: f"044 {n(3)} {digits(2)} {digits(2)}",
    lambda: f"+48 {n(3)} {n(3)} {digits(3)}",
    lambda: f"+52 55 {n(4)} {digits(4)}",
    lambda: f"+7 495 {n(3)}-{digits(2)}-{digits(2)}",
    lambda: f"+46 8 {n(3)} {digits(3)} {digits(2)}",
    lambda: f"+27 21 {n(3)} {digits(4)}",
    lambda: f"+353 1 {n(3)} {digits(4)}",
    lambda: f"+32 2 {n(3)} {digits(2)} {digits(2)}",
    lambda: f"+43 1 {n(7)}",
    lambda: f"+351 21 {n(3)} {digits(4)}",
    lambda: f"+45 {n(2)} {digits(2)} {digits(2)} {digits(2)}",
    lambda: f"+47 {n(3)} {digits(2)} {digits(3)}",
    lambda: f"+65 {n(4)} {digits(4)}",
    lambda: f"+82 2-{n(4)}-{digits(4)}",
    lambda: f"+90 212 {n(3)} {digits(2)} {digits(2)}",
]

FIRST = [
    "anna",
    "john",
    "maria",
    "li",
    "sven",
    "pierre",
    "jose",
    "ana",
    "giulia",
    "kenji",
    "olga",
    "ravi",
    "fatima",
    "noah",
    "emma",
]
LAST = [
    "smith",
    "muller",
    "dupont",
    "garcia",
    "rossi",
    "tanaka",
    "kowalski",
    "silva",
    "nguyen",
    "jensen",
    "oconnor",
]
DOMAINS = [
    "example.com",
    "mail.example.co.uk",
    "corp.example.de",
    "example.fr",
    "ejemplo.es",
    "esempio.it",
    "voorbeeld.nl",
    "sub.dept.example.org",
    "example.com.br",
    "example.io",
    "uni-example.ac.jp",
    "example.travel",
]


def email() -> str:
    first, last = RNG.choice(FIRST), RNG.choice(LAST)
    local = RNG.choice(
        [
            f"{first}.{last}",
            f"{first}{RNG.randint(1, 99)}",
            f"{first}+{last}",
            f"{first[0]}_{last}",
            f"{first}.{last}+invoices",
            f"{last}-{first}",
            first.capitalize() + "." + last.capitalize(),
        ]
    )
    return f"{local}@{RNG.choice(DOMAINS)}"


# -- sentence templates, several languages ------------------------------------------------------
TEMPLATES = {
    "EMAIL": [
        "Please write to {} about the invoice.",
        "Schreiben Sie an {} bis Freitag.",
        "Contactez-moi à {} pour le devis.",
        "Mi correo es {}, gracias.",
        "Scrivimi a {} domani.",
        "Stuur een mail naar {} aub.",
        "cc: {}",
        "From: Customer <{}>",
        "Reply-To: {}",
        "O e-mail dela é {}.",
    ],
    "CREDIT_CARD": [
        "Charge card {} for the renewal.",
        "Kartennummer: {}, gültig bis 09/27.",
        "Numéro de carte {} expirant 11/26.",
        "Tarjeta {} con CVV aparte.",
        "Carta di credito {} per il rinnovo.",
        "Payment failed for {} again.",
        "pls refund {} asap",
        "Creditcard {} vervalt in maart.",
    ],
    "IBAN": [
        "Please transfer to IBAN {} by Monday.",
        "Bankverbindung: {}",
        "Virement sur le compte {} svp.",
        "Transferencia a {} antes del lunes.",
        "Bonifico su {} entro venerdì.",
        "Rekeningnummer {} (ING).",
        "Pay supplier account {} now.",
        "IBAN: {} BIC: COBADEFFXXX",
    ],
    "US_SSN": [
        "SSN {} on the W-2.",
        "Her social security number is {}.",
        "Employee SSN: {}",
        "ssn {} (verify)",
        "Applicant {} per the form, SSN.",
    ],
    "PHONE": [
        "Call me at {} after 5pm.",
        "Tel.: {}",
        "Rufen Sie {} an.",
        "Appelez le {} svp.",
        "Llámame al {} mañana.",
        "Chiamami al {} domani.",
        "Bel me op {}.",
        "WhatsApp: {}",
        "Mobile {} (work)",
        "Phone: {}",
        "ring {} when you land",
    ],
    "IP_ADDRESS": [
        "Login from {} was blocked.",
        "Server {} is unreachable.",
        "Zugriff von {} verweigert.",
        "Connexion depuis {} refusée.",
        "ssh admin@bastion -J {}",
        "X-Forwarded-For: {}",
        "peer={} state=UP",
    ],
}


def positive(kind: str, value: str) -> Snippet:
    return snip(RNG.choice(TEMPLATES[kind]).format(value), (kind, value))


def card_positives() -> list[Snippet]:
    out = []
    for index in range(70):
        number = card()
        sep = ["", " ", "-", " ", "-", ""][index % 6]
        out.append(positive("CREDIT_CARD", group_card(number, sep) if sep else number))
    return out


def iban_positives() -> list[Snippet]:
    out = []
    for index, country in enumerate(list(IBAN_FORMATS) * 3):
        value = iban(country)
        value = group4(value) if index % 2 else value
        out.append(positive("IBAN", value.lower() if index % 11 == 5 else value))
    return out


def ssn_positives() -> list[Snippet]:
    out = []
    for index in range(45):
        value = ssn()
        if index % 5 == 3:
            value = value.replace("-", " ")
        if index % 7 == 6:
            value = value.replace("-", "")  # bare 9 digits: the templates all say SSN
            out.append(snip(f"SSN {value} on file.", ("US_SSN", value)))
            continue
        out.append(positive("US_SSN", value))
    return out


def phone_positives() -> list[Snippet]:
    out = [positive("PHONE", make()) for make in PHONES]
    out += [positive("PHONE", RNG.choice(PHONES)()) for _ in range(60)]
    return out


def ip_positives() -> list[Snippet]:
    out = [positive("IP_ADDRESS", ipv4()) for _ in range(40)]
    out += [positive("IP_ADDRESS", ipv6()) for _ in range(20)]
    return out


def email_positives() -> list[Snippet]:
    return [positive("EMAIL", email()) for _ in range(70)]


OTHERS = [
    snip("Date of birth: 14/03/1985", ("DATE_OF_BIRTH", "14/03/1985")),
    snip("DOB 1979-11-02, admitted yesterday.", ("DATE_OF_BIRTH", "1979-11-02")),
    snip("Patient born on March 3, 1962 in Ohio.", ("DATE_OF_BIRTH", "March 3, 1962")),
    snip("geboren am 02.05.1990 in Köln", ("DATE_OF_BIRTH", "02.05.1990")),
    snip("Geburtsdatum: 7. Juli 1971", ("DATE_OF_BIRTH", "7. Juli 1971")),
    snip("née le 21 septembre 1988 à Lyon", ("DATE_OF_BIRTH", "21 septembre 1988")),
    snip("fecha de nacimiento: 5 de mayo de 1993", ("DATE_OF_BIRTH", "5 de mayo de 1993")),
    snip("data di nascita 12/12/1950", ("DATE_OF_BIRTH", "12/12/1950")),
    snip("birthday: 1990/12/31", ("DATE_OF_BIRTH", "1990/12/31")),
    snip("DOB: 03/14/85", ("DATE_OF_BIRTH", "03/14/85")),
    snip("Passport number X1234567 expires 2030.", ("ID_NUMBER", "X1234567")),
    snip(
        "Reisepass C01X00T47, Personalausweis L01X00T48",
        ("ID_NUMBER", "C01X00T47"),
        ("ID_NUMBER", "L01X00T48"),
    ),
    snip("driver's license D123-4567-8901", ("ID_NUMBER", "D123-4567-8901")),
    snip("DNI 12345678Z del titular", ("ID_NUMBER", "12345678Z")),
    snip("tax id: 12-3456789", ("ID_NUMBER", "12-3456789")),
    snip("NHS number 943 476 5919", ("ID_NUMBER", "943 476 5919")),
    snip("passeport n° 15AB12345", ("ID_NUMBER", "15AB12345")),
    snip("codice fiscale RSSMRA85T10A562S", ("ID_NUMBER", "RSSMRA85T10A562S")),
    snip("Ship to 221B Baker Street, London.", ("STREET_ADDRESS", "221B Baker Street")),
    snip("Office: 1600 Pennsylvania Avenue NW", ("STREET_ADDRESS", "1600 Pennsylvania Avenue")),
    snip("Lieferadresse Hauptstraße 5, 10115 Berlin", ("STREET_ADDRESS", "Hauptstraße 5")),
    snip("Adresse : 12 rue de Rivoli, Paris", ("STREET_ADDRESS", "12 rue de Rivoli")),
    snip("Vivo en Calle Mayor 10, Madrid", ("STREET_ADDRESS", "Calle Mayor 10")),
    snip("Abito in Via Roma 3, Milano", ("STREET_ADDRESS", "Via Roma 3")),
    snip("send it to 42 Elm Road please", ("STREET_ADDRESS", "42 Elm Road")),
    snip("Kerkstraat 12, Amsterdam", ("STREET_ADDRESS", "Kerkstraat 12")),
    snip("meet at 350 Fifth Avenue lobby", ("STREET_ADDRESS", "350 Fifth Avenue")),
]


def uuid() -> str:
    hexes = "".join(RNG.choice("0123456789abcdef") for _ in range(32))
    return f"{hexes[:8]}-{hexes[8:12]}-4{hexes[13:16]}-a{hexes[17:20]}-{hexes[20:]}"


def near_misses() -> list[Snippet]:
    makers = [
        lambda: f"Order #{n(6)} shipped on {RNG.randint(1, 28)} May.",
        lambda: f"Bestellnummer {n(8)} wurde storniert.",
        lambda: f"Commande n° {n(3)}-{n(4)}-{n(4)} en cours.",
        lambda: f"Invoice INV-2024-{n(5)} is overdue.",
        lambda: f"Tracking: 1Z{n(3)}AA{n(10)}",
        lambda: f"card {group_card(card(valid=False), ' ')} was rejected (bad number)",
        lambda: f"ref {card(valid=False)} does not validate",
        lambda: f"IBAN {group4(iban(RNG.choice(list(IBAN_FORMATS)), valid=False))} (typo)",
        lambda: f"version {RNG.randint(1, 30)}.{RNG.randint(0, 20)}.{RNG.randint(0, 99)}",
        lambda: f"pip install pkg=={RNG.randint(1, 9)}.{RNG.randint(0, 9)}.{RNG.randint(0, 9)}",
        lambda: f"Build {RNG.randint(10, 19)}.0.{RNG.randint(10000, 22000)}.{RNG.randint(1, 999)}",
        lambda: f"requires openssl>={RNG.randint(1, 3)}.{RNG.randint(0, 9)}.{RNG.randint(0, 9)}.0",
        lambda: f"v{RNG.randint(1, 9)}.{RNG.randint(0, 9)}.{RNG.randint(0, 9)}.{RNG.randint(0, 9)}",
        lambda: (
            f"2024-{RNG.randint(1, 12):02d}-{RNG.randint(1, 28):02d}T{RNG.randint(0, 23):02d}"
            f":{RNG.randint(0, 59):02d}:{RNG.randint(0, 59):02d}Z job finished"
        ),
        lambda: f"ts={RNG.randint(1_500_000_000, 1_800_000_000)} level=info",
        lambda: f"epoch_ms {RNG.randint(1_500_000_000_000, 1_800_000_000_000)}",
        lambda: f"meeting on {RNG.randint(1, 28)}/{RNG.randint(1, 12)}/2024 at 10:30",
        lambda: f"dataset {uuid()} loaded",
        lambda: f"request-id: {uuid()}",
        lambda: f"Total: ${RNG.randint(1, 999)},{RNG.randint(100, 999)},{RNG.randint(100, 999)}.00",
        lambda: f"Preis: {RNG.randint(1, 99)}.{RNG.randint(100, 999)},{RNG.randint(10, 99)} €",
        lambda: (
            f"Revenue grew {RNG.randint(1, 40)}.{RNG.randint(0, 9)}% to ${RNG.randint(1, 9)}.2M"
        ),
        lambda: f"SSN {RNG.choice(['000', '666', '912'])}-{n(2)}-{digits(4)} is not valid",
        lambda: f"host {RNG.randint(256, 999)}.{RNG.randint(0, 255)}.1.1 is no address",
        lambda: f"commit {''.join(RNG.choice('0123456789abcdef') for _ in range(40))}",
        lambda: f"ISBN 978-{n(1)}-{n(2)}-{n(6)}-{RNG.randint(0, 9)}",
        lambda: f"SKU {n(2)}-{n(4)} qty {RNG.randint(1, 500)}",
        lambda: f"Coordinates {RNG.randint(-89, 89)}.{n(4)}, {RNG.randint(-179, 179)}.{n(4)}",
        lambda: f"{RNG.randint(2, 9)} x {RNG.randint(10, 99)} = {RNG.randint(100, 999)}",
        lambda: f"Room {RNG.randint(100, 999)}, floor {RNG.randint(1, 30)}",
        lambda: f"ticket INC-2024{n(4)}-{RNG.randint(1, 9)}",
        lambda: f"mount -o size={n(5)}k /dev/sda{RNG.randint(1, 9)}",
        lambda: f"std::vector<int> v; v[::2]; a::b::c {RNG.randint(1, 99)}",
        lambda: f"Section {RNG.randint(1, 20)}.{RNG.randint(1, 20)}.{RNG.randint(1, 20)} applies",
        lambda: f"Kontostand {n(2)}.{n(3)},{digits(2)} EUR",
        lambda: f"score {RNG.randint(0, 100)}/{RNG.randint(100, 200)} after {n(5)} rounds",
        lambda: f"user@localhost has {RNG.randint(2, 99)} jobs",
        lambda: f"see @{RNG.choice(FIRST)} on the thread",
        lambda: f"file report_{n(8)}_{n(6)}.csv",
        lambda: f"CVE-20{RNG.randint(10, 24)}-{n(5)}",
        lambda: f"call {n(3)} returned {n(8)} rows",
        lambda: f"ring buffer size {n(7)} bytes",
    ]
    return [snip(make()) for make in makers for _ in range(4)]


def this_host() -> list[Snippet]:
    """Loopback and unspecified addresses name this machine: never PII, also beside PII.

    Fixed text, no ``RNG`` draws, so adding them leaves every generated row as it was.
    """
    misses = [
        "curl http://127.0.0.1:8080/health returns 502",
        "export OLLAMA_HOST=127.0.0.1:11434",
        "requests.get('http://127.0.0.1:5000/api/users') hangs",
        "psql -h 127.0.0.1 -p 5432 -U postgres",
        "/etc/hosts: 127.0.1.1 devbox",
        "the health check hits 127.255.255.254 on the loopback range",
        "uvicorn main:app --host 0.0.0.0 --port 8000",
        "EXPOSE 8080; server listens on 0.0.0.0:8080",
        "ingress 0.0.0.0/0 on port 22 is too open",
        "nginx: listen [::]:80 default_server;",
        "listen [::1]:443 ssl;",
        "ping6 ::1 works but the LAN does not",
        "ip -6 addr shows 0:0:0:0:0:0:0:1/128",
        "mapped loopback ::ffff:127.0.0.1 in the access log",
        "tel 127.0.0.1 is what the phone field held (test data)",
        "docker run -p 127.0.0.1:6379:6379 redis",
    ]
    positives = [
        snip("redis on 127.0.0.1, db on 10.20.30.40", ("IP_ADDRESS", "10.20.30.40")),
        snip("bind 0.0.0.0; peer 192.168.178.21 up", ("IP_ADDRESS", "192.168.178.21")),
        snip("[::1]:8080 or 172.20.0.3:8080", ("IP_ADDRESS", "172.20.0.3")),
        snip("from 127.0.0.1 via 172.31.255.254", ("IP_ADDRESS", "172.31.255.254")),
    ]
    return [snip(text) for text in misses] + positives


def id_numbers() -> list[Snippet]:
    """ID numbers in several countries' formats, and ID words beside no ID (fixed text)."""
    ids = [
        ("SIN: {} (Canada)", "046 454 286"),
        ("NHS no {} on the referral", "485 777 3456"),
        ("Personalausweis-Nr. {}", "T22000129"),
        ("pasaporte {} vigente", "AAA123456"),
        ("BSN {} van de klant", "123456782"),
        ("PESEL {}", "44051401359"),
        ("Aadhaar {} linked", "2345 6789 0123"),
        ("Steuer-ID {} bitte angeben", "12 345 678 901"),
        ("national insurance number {}", "QQ123456C"),
    ]
    misses = [
        "passport renewal takes 6 to 8 weeks",
        "driver's license class B, valid until 2031",
        "ID card photo 640x480 pixels",
        "tax id form W-9 (rev. 2024)",
        "identity check passed in 3.2 s",
    ]
    return [snip(text.format(value), ("ID_NUMBER", value)) for text, value in ids] + [
        snip(text) for text in misses
    ]


def hard_cases() -> list[Snippet]:
    zw_card = ZW.join(group_card("4111111111111111", " ").split(" "))
    fw_phone, fw_card = fullwidth("+44 20 7946 0958"), fullwidth("5555 5555 5555 4444")
    fw_iban = fullwidth("DE89 3704 0044 0532 0130 00")
    tool = json.dumps(
        {
            "customer": {
                "email": "k.tanaka@example.jp",
                "phone": "+81 3-1234-5678",
                "iban": "NL91ABNA0417164300",
            }
        }
    )
    return [
        snip(f"card {zw_card} thanks", ("CREDIT_CARD", zw_card)),
        snip(f"Karte {fw_card}", ("CREDIT_CARD", fw_card)),
        snip(f"call {fw_phone}", ("PHONE", fw_phone)),
        snip(f"IBAN {fw_iban}", ("IBAN", fw_iban)),
        snip("SSN １２３-４５-６７８９", ("US_SSN", "１２３-４５-６７８９")),
        snip("host １９２．１６８．１．１", ("IP_ADDRESS", "１９２．１６８．１．１")),
        snip(
            "card 4111\u20131111\u20131111\u20131111",
            ("CREDIT_CARD", "4111\u20131111\u20131111\u20131111"),
        ),
        snip(
            "card 4111\u00ad1111\u20601111\ufeff1111",
            ("CREDIT_CARD", "4111\u00ad1111\u20601111\ufeff1111"),
        ),
        snip("mail jo\u200bhn@exa\u200dmple.com", ("EMAIL", "jo\u200bhn@exa\u200dmple.com")),
        snip("mail john＠example．com", ("EMAIL", "john＠example．com")),
        snip("mail john [at] example [dot] com", ("EMAIL", "john [at] example [dot] com")),
        snip(
            "contact: a.b+tag+more@eu.mail.example.co.uk",
            ("EMAIL", "a.b+tag+more@eu.mail.example.co.uk"),
        ),
        snip("MAILTO:SUPPORT@EXAMPLE.COM", ("EMAIL", "SUPPORT@EXAMPLE.COM")),
        snip("écrire à josé.garcía@ejemplo.es", ("EMAIL", "josé.garcía@ejemplo.es")),
        snip("ping user@bücher.de today", ("EMAIL", "user@bücher.de")),
        snip(
            '<a href="mailto:sales@shop.example.com?subject=hi">',
            ("EMAIL", "sales@shop.example.com"),
        ),
        snip("call 415\u2011555\u20110132", ("PHONE", "415\u2011555\u20110132")),
        snip(
            "call 06\u200b12\u200b34\u200b56\u200b78 soon",
            ("PHONE", "06\u200b12\u200b34\u200b56\u200b78"),
        ),
        snip("amex 3782 822463 10005 exp 01/29", ("CREDIT_CARD", "3782 822463 10005")),
        snip("diners 3056 930902 5904", ("CREDIT_CARD", "3056 930902 5904")),
        snip("card 4111 1111 1111 1111 cvv 123", ("CREDIT_CARD", "4111 1111 1111 1111")),
        snip("iban de89370400440532013000", ("IBAN", "de89370400440532013000")),
        snip("IBAN GB82 WEST 1234 5698 7654 32.", ("IBAN", "GB82 WEST 1234 5698 7654 32")),
        snip("url http://[2001:db8::1]:8080/", ("IP_ADDRESS", "2001:db8::1")),
        snip("mapped ::ffff:192.0.2.1", ("IP_ADDRESS", "::ffff:192.0.2.1")),
        snip("connect to 10.1.2.3:8080", ("IP_ADDRESS", "10.1.2.3")),
        snip("subnet 172.16.0.1/12", ("IP_ADDRESS", "172.16.0.1")),
        snip(
            tool,
            ("EMAIL", "k.tanaka@example.jp"),
            ("PHONE", "+81 3-1234-5678"),
            ("IBAN", "NL91ABNA0417164300"),
        ),
        snip(
            '{"rows": [{"ip": "203.0.113.9", "ssn": "078-05-1120"}]}',
            ("IP_ADDRESS", "203.0.113.9"),
            ("US_SSN", "078-05-1120"),
        ),
        snip(
            "name,email,phone\nJane,jane@example.org,+33 6 12 34 56 78",
            ("EMAIL", "jane@example.org"),
            ("PHONE", "+33 6 12 34 56 78"),
        ),
        snip("Hi! Card is 5105105105105100,exp 10/28", ("CREDIT_CARD", "5105105105105100")),
        snip("my phone number is 4155550132", ("PHONE", "4155550132")),
        snip("social security number: 078051120", ("US_SSN", "078051120")),
        snip("Tel. 030/1234567", ("PHONE", "030/1234567")),
        snip("Handy 0171 1234567", ("PHONE", "0171 1234567")),
        snip("звоните +7 495 123-45-67", ("PHONE", "+7 495 123-45-67")),
        snip("電話: +81 90-1234-5678", ("PHONE", "+81 90-1234-5678")),
        snip(
            "card 4111  1111  1111  1111 (typed twice-spaced)",
            ("CREDIT_CARD", "4111  1111  1111  1111"),
        ),
        snip("IBAN DE89-3704-0044-0532-0130-00 bitte", ("IBAN", "DE89-3704-0044-0532-0130-00")),
        snip("llámame al 91 123 45 67", ("PHONE", "91 123 45 67")),
        snip("call 91 123 45 67 (Madrid office)", ("PHONE", "91 123 45 67")),
        snip("tel +44 (0) 20 7946 0958", ("PHONE", "+44 (0) 20 7946 0958")),
        snip("call +1 415 555 0132 ext. 12", ("PHONE", "+1 415 555 0132")),
        snip("Tel: 555-0132", ("PHONE", "555-0132")),
        snip("ip 2001:DB8:0:0:8:800:200C:417A", ("IP_ADDRESS", "2001:DB8:0:0:8:800:200C:417A")),
        snip("host 10.0.0.1,10.0.0.2", ("IP_ADDRESS", "10.0.0.1"), ("IP_ADDRESS", "10.0.0.2")),
        snip(
            "mail first.last@mail-eu-2.corp.example.com",
            ("EMAIL", "first.last@mail-eu-2.corp.example.com"),
        ),
        snip("WhatsApp +971 50 123 4567", ("PHONE", "+971 50 123 4567")),
        snip("call +62 812-3456-7890", ("PHONE", "+62 812-3456-7890")),
        snip("tel. +420 601 234 567", ("PHONE", "+420 601 234 567")),
        snip("SSN: 123 45 6789", ("US_SSN", "123 45 6789")),
        snip("E-Mail：ｍａｘ＠ｂｅｉｓｐｉｅｌ．ｄｅ", ("EMAIL", "ｍａｘ＠ｂｅｉｓｐｉｅｌ．ｄｅ")),
    ]


def mixed() -> list[Snippet]:
    out = []
    for _ in range(30):
        mail, phone, number = email(), RNG.choice(PHONES)(), group_card(card(), " ")
        account = group4(iban(RNG.choice(list(IBAN_FORMATS))))
        text = (
            f"Customer {mail} (tel {phone}) paid with {number}; refund to {account}. "
            f"Release 4.7.2 shipped on 2024-08-03, order #{n(6)}."
        )
        out.append(
            snip(
                text, ("EMAIL", mail), ("PHONE", phone), ("CREDIT_CARD", number), ("IBAN", account)
            )
        )
    return out


# -- issue 17: what text nobody here wrote looks like ---------------------------------------------
ODD_SEPARATORS = ["\t", "\n", ",", "_", "*", "/", "  ", "\u00a0", "\u202f", "\u2009", "\u3000"]
NUMBER_NEIGHBOURS = ["1.", "2)", "Refund 100.00", "exp 12/29", "qty 3", "#12", "2024-01-05"]
CARD_WORDS_17 = ["card", "Karte", "carte", "tarjeta", "visa", "paid with", "cc", "pan"]


def luhn_card(prefix: str, length: int) -> str:
    body = prefix + digits(length - len(prefix) - 1)
    return body + luhn_digit(body)


def neighbour_cases() -> list[Snippet]:
    """A number before the value: list markers, amounts, dates, a first address."""
    out = []
    for index in range(40):
        before = NUMBER_NEIGHBOURS[index % len(NUMBER_NEIGHBOURS)]
        number = group_card(card(), RNG.choice([" ", "-"]))
        out.append(snip(f"{before} {number} please", ("CREDIT_CARD", number)))
        value = ssn()
        out.append(snip(f"{index % 9 + 1}) {value}", ("US_SSN", value)))
    for _ in range(20):
        first, second = ipv4(), ipv4()
        out.append(snip(f"{first} {second}", ("IP_ADDRESS", first), ("IP_ADDRESS", second)))
    return out


def card_length_cases() -> list[Snippet]:
    """Every length the networks issue: Maestro 12-19, JCB and UATP at 15, UnionPay at 19."""
    layouts = [
        ("5018", 12), ("6759", 13), ("5020", 15), ("2131", 15), ("1800", 15), ("1", 15),
        ("62", 19), ("62", 17), ("2200", 16), ("3528", 18), ("4", 19), ("81", 16),
    ]  # fmt: skip
    out = []
    for index in range(60):
        prefix, length = layouts[index % len(layouts)]
        number = luhn_card(prefix, length)
        word = CARD_WORDS_17[index % len(CARD_WORDS_17)]
        out.append(snip(f"{word} {number} on file", ("CREDIT_CARD", number)))
    return out


def separator_cases() -> list[Snippet]:
    """Tab, newline, comma, underscore, star, slash, double and Unicode spaces."""
    out = []
    for index in range(44):
        sep = ODD_SEPARATORS[index % len(ODD_SEPARATORS)]
        number = sep.join(group_card(card(), " ").split(" "))
        out.append(snip(f"card {number} thanks", ("CREDIT_CARD", number)))
        country = list(IBAN_FORMATS)[index % len(IBAN_FORMATS)]
        account = sep.join(group4(iban(country)).split(" ")) if sep != "," else iban(country)
        account = account.lower() if index % 5 == 2 else account
        out.append(snip(f"IBAN {account} bitte", ("IBAN", account)))
        value = ssn().replace("-", sep if sep.strip() or len(sep) > 1 else "-")
        out.append(snip(f"SSN {value}", ("US_SSN", value)))
    for sep in ["\t", "_", "*", "  ", "\u00a0"]:
        for _ in range(4):
            phone = f"+44{sep}20{sep}{n(4)}{sep}{digits(4)}"
            out.append(snip(f"tel {phone}", ("PHONE", phone)))
    spaced = [("DE 89 3704 0044 0532 0130 00"), ("De89 3704 0044 0532 0130 00"),
              ("DE89.3704.0044.0532.0130.00"), ("DE89/3704/0044/0532/0130/00")]  # fmt: skip
    out += [snip(f"IBAN {value}", ("IBAN", value)) for value in spaced]
    return out


def conversational_phone_cases() -> list[Snippet]:
    """Short local numbers right after how people write about calling."""
    makers = [
        lambda: f"{n(3)} {digits(4)}",
        lambda: f"{n(2)}-{digits(2)}-{digits(2)}-{digits(2)}",
        lambda: f"{n(3)} {digits(3)} {digits(3)}",
        lambda: f"{n(3)}-{digits(4)}",
        lambda: f"{n(7)}",
    ]
    starts = ["call me on", "no answer at", "texts to", "ring me at", "reach us at",
              "text me at", "message me on", "whatsapp me", "contact me on", "answering machine at",
              "ruf mich an unter", "rappeler au", "llamar al", "chiamare al", "bel me op",
              "ligue para", "call", "Call us on"]  # fmt: skip
    out = []
    for index in range(54):
        phone = makers[index % len(makers)]()
        out.append(snip(f"{starts[index % len(starts)]} {phone} tonight", ("PHONE", phone)))
    return out


def obfuscated_email_cases() -> list[Snippet]:
    """At/dot words, brackets, spaces around '@', quoted local parts."""
    out = []
    for index in range(50):
        first, last = RNG.choice(FIRST), RNG.choice(LAST)
        domain, tld = (
            RNG.choice(["example", "mail", "acme", "corp"]),
            RNG.choice(["com", "org", "de"]),
        )
        value = [
            f"{first} at {domain} dot {tld}",
            f"{first}.{last} [at] {domain} [dot] {tld}",
            f"{first} (at) {domain} (dot) {tld}",
            f"{first} @ {domain}.{tld}",
            f'"{first} {last}"@{domain}.{tld}',
            f"{first.upper()} AT {domain.upper()} DOT {tld.upper()}",
            f"{first}@ {domain}.{tld}",
        ][index % 7]
        out.append(snip(f"write to {value} today", ("EMAIL", value)))
    return out


def issue17_cases() -> list[Snippet]:
    """Appended last, so that every row generated before stays as it was."""
    parts = [neighbour_cases(), card_length_cases(), separator_cases(),
             conversational_phone_cases(), obfuscated_email_cases()]  # fmt: skip
    return [item for part in parts for item in part]


NEAR_MISSES_OUT = Path(__file__).with_name("pii_near_misses.jsonl")


def near_miss_set() -> list[Snippet]:
    """Values that look like PII and are not: a set of its own, for the false-positive rate."""
    hexes = "0123456789abcdef"
    makers = [
        lambda: f"Order #{n(7)} shipped; order {n(8)}-{n(6)} pending",
        lambda: f"invoice INV-{RNG.randint(2019, 2026)}-{digits(9)} and INV/{n(4)}/{n(6)}",
        lambda: f"Rechnung Nr. {n(10)} vom {RNG.randint(1, 28)}.{RNG.randint(1, 12)}.2024",
        lambda: (
            f"{RNG.randint(2000, 2030)}-{RNG.randint(1, 12):02d}-{RNG.randint(1, 28):02d}T"
            f"{RNG.randint(0, 23):02d}:{RNG.randint(0, 59):02d}:{RNG.randint(0, 59):02d}."
            f"{digits(6)}Z took {n(7)} us"
        ),
        lambda: f"ts {RNG.randint(1_500_000_000, 1_900_000_000)}.{digits(6)} pid {n(5)}",
        lambda: (
            f"version {RNG.randint(1, 20)}.{RNG.randint(0, 9)}.{RNG.randint(0, 99999)}."
            f"{RNG.randint(0, 9999)}"
        ),
        lambda: (
            f"release v{RNG.randint(1, 9)}.{RNG.randint(0, 30)}.{RNG.randint(0, 30)}-rc."
            f"{RNG.randint(1, 9)}"
        ),
        lambda: f"sha256 {''.join(RNG.choice(hexes) for _ in range(64))}",
        lambda: f"md5 {''.join(RNG.choice(hexes) for _ in range(32))}",
        lambda: f"uuid {uuid()}",
        lambda: f"git {''.join(RNG.choice(hexes) for _ in range(40))} merged",
        lambda: f"short sha {''.join(RNG.choice(hexes) for _ in range(7))}",
        lambda: (
            "readings " + ", ".join(f"{RNG.randint(10, 99)}.{RNG.randint(0, 9)}" for _ in range(8))
        ),
        lambda: "samples: " + " ".join(str(RNG.randint(0, 255)) for _ in range(12)),
        lambda: "[" + ", ".join(str(RNG.randint(0, 9999)) for _ in range(10)) + "]",
        lambda: f"for i in range({n(7)}): total += i * {n(5)}",
        lambda: f"x = np.zeros(({n(3)}, {n(3)})) @ w.T  # {n(4)} params",
        lambda: f"SELECT * FROM t WHERE id IN ({n(6)}, {n(6)}, {n(6)})",  # noqa: S608  # text
        lambda: f"lat {RNG.randint(-80, 80)}.{digits(6)}, lon {RNG.randint(-170, 170)}.{digits(6)}",
        lambda: f"matrix {' '.join(RNG.choice('01') for _ in range(16))}",
        lambda: f"ISBN 978-{n(1)}-{n(3)}-{n(5)}-{RNG.randint(0, 9)}",
        lambda: f"tracking 1Z{n(6)}{n(10)} via UPS",
        lambda: f"Total: {RNG.randint(1, 999)},{digits(3)},{digits(3)}.{digits(2)} USD",
        lambda: f"step {n(4)}/{n(5)} loss {RNG.random():.6f} lr 3e-4",
        lambda: f"phone model SM-G{n(3)}F build {n(2)}.{n(1)}.{n(6)}",
    ]
    return [snip(make()) for make in makers for _ in range(12)]


def build() -> list[Snippet]:
    parts = [
        email_positives(),
        card_positives(),
        iban_positives(),
        ssn_positives(),
        phone_positives(),
        ip_positives(),
        OTHERS,
        hard_cases(),
        mixed(),
        near_misses(),
        this_host(),
        id_numbers(),
        issue17_cases(),
    ]
    return [item for part in parts for item in part]


def main() -> None:
    rows = build()
    OUT.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), "utf-8")
    misses = near_miss_set()
    NEAR_MISSES_OUT.write_text(
        "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in misses), "utf-8"
    )
    print(f"wrote {len(misses)} near misses to {NEAR_MISSES_OUT}")
    print(f"wrote {len(rows)} snippets to {OUT}")


if __name__ == "__main__":
    main()
