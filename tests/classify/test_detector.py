"""PII detector: positives and false-positive traps as tables, every message part, hiding tricks."""

# ruff: noqa: RUF001  # look-alike characters (full-width, Arabic-Indic digits) are the point here

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from aegis_proxy.classify.detector import ENTITY_TYPES, PiiDetector, PiiMatch, PiiReport

DETECTOR = PiiDetector()


def found(text: str, detector: PiiDetector = DETECTOR) -> list[tuple[str, str]]:
    """Each match as (entity type, the original text it covers)."""
    return [(m.entity_type, text[m.start : m.end]) for m in detector.scan_text(text)]


def counts(messages: list[Any]) -> dict[str, int]:
    return dict(DETECTOR.scan_messages(messages).entity_counts)


# -- positives: (entity type, text, the value the match must cover) -----------------------
POSITIVES = [
    ("EMAIL", "mail me at a.b+x@mail.example.co.uk", "a.b+x@mail.example.co.uk"),
    ("EMAIL", "Contact: John.Smith@example.com.", "John.Smith@example.com"),
    ("EMAIL", "<jane_doe99@sub.domain.org>", "jane_doe99@sub.domain.org"),
    ("EMAIL", "écrire à josé.garcía@ejemplo.es", "josé.garcía@ejemplo.es"),
    ("EMAIL", "ping user@bücher.de today", "user@bücher.de"),
    ("EMAIL", "git clone git@github.com:org/repo", "git@github.com"),
    ("PHONE", "call +33 1 23 45 67 89 now", "+33 1 23 45 67 89"),
    ("PHONE", "call +1 (415) 555-0132 now", "+1 (415) 555-0132"),
    ("PHONE", "call 415-555-0132 now", "415-555-0132"),
    ("PHONE", "call (415) 555-0132 now", "(415) 555-0132"),
    ("PHONE", "call 415.555.0132 now", "415.555.0132"),
    ("PHONE", "call +14155550132 now", "+14155550132"),
    ("PHONE", "call +44 20 7946 0958 now", "+44 20 7946 0958"),
    ("PHONE", "call 020 7946 0958 now", "020 7946 0958"),
    ("PHONE", "call +49 30 1234567 now", "+49 30 1234567"),
    ("PHONE", "call 0049 30 1234567 now", "0049 30 1234567"),
    ("PHONE", "Tel. 030/1234567", "030/1234567"),
    ("PHONE", "Handy 0171 1234567", "0171 1234567"),
    ("PHONE", "call +91 98765 43210 now", "+91 98765 43210"),
    ("PHONE", "call +81 3-1234-5678 now", "+81 3-1234-5678"),
    ("PHONE", "appelle le 06 12 34 56 78", "06 12 34 56 78"),
    ("PHONE", "appelle le 06.12.34.56.78", "06.12.34.56.78"),
    ("PHONE", "llama al +34 612 34 56 78", "+34 612 34 56 78"),
    ("PHONE", "llama al 612 34 56 78", "612 34 56 78"),
    ("PHONE", "chiama +39 06 1234 5678", "+39 06 1234 5678"),
    ("PHONE", "ring +61 2 9876 5432", "+61 2 9876 5432"),
    ("PHONE", "ligue +55 11 91234-5678", "+55 11 91234-5678"),
    ("PHONE", "call +86 138 0013 8000", "+86 138 0013 8000"),
    ("PHONE", "звоните +7 495 123-45-67", "+7 495 123-45-67"),
    ("PHONE", "bel +31 20 123 4567", "+31 20 123 4567"),
    ("PHONE", "ring +46 8 123 456 78", "+46 8 123 456 78"),
    ("PHONE", "call +27 21 123 4567", "+27 21 123 4567"),
    ("PHONE", "llama +52 55 1234 5678", "+52 55 1234 5678"),
    ("PHONE", "call 1-800-555-0199 toll free", "1-800-555-0199"),
    ("PHONE", "my phone number is 4155550132", "4155550132"),
    ("PHONE", "call 91 123 45 67 (Madrid office)", "91 123 45 67"),
    ("CREDIT_CARD", "card 4111 1111 1111 1111 exp 12/27", "4111 1111 1111 1111"),
    ("CREDIT_CARD", "card 4111-1111-1111-1111", "4111-1111-1111-1111"),
    ("CREDIT_CARD", "card 4111111111111111", "4111111111111111"),
    ("CREDIT_CARD", "card 4111.1111.1111.1111", "4111.1111.1111.1111"),
    ("CREDIT_CARD", "card 4111 1111 1111 1111 123", "4111 1111 1111 1111"),
    ("CREDIT_CARD", "visa 4012888888881881", "4012888888881881"),
    ("CREDIT_CARD", "visa13 4222222222222", "4222222222222"),
    ("CREDIT_CARD", "mc 5555 5555 5555 4444", "5555 5555 5555 4444"),
    ("CREDIT_CARD", "mc 2223003122003222", "2223003122003222"),
    ("CREDIT_CARD", "amex 3782 822463 10005", "3782 822463 10005"),
    ("CREDIT_CARD", "amex 371449635398431", "371449635398431"),
    ("CREDIT_CARD", "discover 6011 1111 1111 1117", "6011 1111 1111 1117"),
    ("CREDIT_CARD", "jcb 3530111333300000", "3530111333300000"),
    ("CREDIT_CARD", "diners 30569309025904", "30569309025904"),
    ("IBAN", "IBAN DE89 3704 0044 0532 0130 00 please", "DE89 3704 0044 0532 0130 00"),
    ("IBAN", "IBAN GB82 WEST 1234 5698 7654 32.", "GB82 WEST 1234 5698 7654 32"),
    ("IBAN", "IBAN FR14 2004 1010 0505 0001 3M02 606", "FR14 2004 1010 0505 0001 3M02 606"),
    ("IBAN", "IBAN NL91ABNA0417164300", "NL91ABNA0417164300"),
    ("IBAN", "IBAN ES91 2100 0418 4502 0005 1332", "ES91 2100 0418 4502 0005 1332"),
    ("IBAN", "IBAN IT60 X054 2811 1010 0000 0123 456", "IT60 X054 2811 1010 0000 0123 456"),
    ("IBAN", "IBAN CH93 0076 2011 6238 5295 7", "CH93 0076 2011 6238 5295 7"),
    ("IBAN", "IBAN BE68 5390 0754 7034", "BE68 5390 0754 7034"),
    ("IBAN", "iban de89370400440532013000", "de89370400440532013000"),
    ("US_SSN", "SSN 123-45-6789", "123-45-6789"),
    ("US_SSN", "number 123 45 6789 on file", "123 45 6789"),
    ("US_SSN", "my SSN is 123456789", "123456789"),
    ("US_SSN", "social security number: 078051120", "078051120"),
    ("IP_ADDRESS", "host 192.168.1.1 is down", "192.168.1.1"),
    ("IP_ADDRESS", "dns 8.8.8.8", "8.8.8.8"),
    ("IP_ADDRESS", "gateway 10.0.0.1", "10.0.0.1"),
    ("IP_ADDRESS", "mask 255.255.255.255", "255.255.255.255"),
    ("IP_ADDRESS", "subnet 192.168.1.1/24", "192.168.1.1"),
    ("IP_ADDRESS", "connect to 10.1.2.3:8080", "10.1.2.3"),
    ("IP_ADDRESS", "host 172.31.255.254 is down", "172.31.255.254"),
    ("IP_ADDRESS", "lan 192.168.0.10:5432", "192.168.0.10"),
    ("IP_ADDRESS", "v6 2001:db8::8a2e:370:7334", "2001:db8::8a2e:370:7334"),
    ("IP_ADDRESS", "full 2001:0db8:85a3:0000:0000:8a2e:0370:7334",
     "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
    ("IP_ADDRESS", "link fe80::1 up", "fe80::1"),
    ("IP_ADDRESS", "mapped ::ffff:192.0.2.1", "::ffff:192.0.2.1"),
    ("IP_ADDRESS", "url http://[2001:db8::1]:8080/", "2001:db8::1"),
    ("DATE_OF_BIRTH", "born 1985-03-14", "1985-03-14"),
    ("DATE_OF_BIRTH", "Date of birth: 14/03/1985", "14/03/1985"),
    ("DATE_OF_BIRTH", "DOB: 03/14/1985", "03/14/1985"),
    ("DATE_OF_BIRTH", "birthday: 1990/12/31", "1990/12/31"),
    ("DATE_OF_BIRTH", "1985-03-14 (date of birth)", "1985-03-14"),
    ("DATE_OF_BIRTH", "She was born on March 14, 1985.", "March 14, 1985"),
    ("DATE_OF_BIRTH", "born 14 March 1985", "14 March 1985"),
    ("DATE_OF_BIRTH", "date of birth 14th of March 1985", "14th of March 1985"),
    ("DATE_OF_BIRTH", "DOB 14-Mar-1985", "14-Mar-1985"),
    ("DATE_OF_BIRTH", "DOB: March 14th, 1985", "March 14th, 1985"),
    ("DATE_OF_BIRTH", "born on 3/14/85", "3/14/85"),
    ("DATE_OF_BIRTH", "né le 14 mars 1985", "14 mars 1985"),
    ("DATE_OF_BIRTH", "geboren am 14.03.1985", "14.03.1985"),
    ("DATE_OF_BIRTH", "Geburtsdatum: 14. März 1985", "14. März 1985"),
    ("DATE_OF_BIRTH", "fecha de nacimiento: 14 de marzo de 1985", "14 de marzo de 1985"),
    ("ID_NUMBER", "passport number X1234567", "X1234567"),
    ("ID_NUMBER", "passport #: X1234567", "X1234567"),
    ("ID_NUMBER", "Passport No: 123456789", "123456789"),
    ("ID_NUMBER", "ID number: AB1234567", "AB1234567"),
    ("ID_NUMBER", "driver's license D1234567", "D1234567"),
    ("ID_NUMBER", "Personalausweis L01X00T47", "L01X00T47"),
    ("ID_NUMBER", "tax id: 12-3456789", "12-3456789"),
    ("ID_NUMBER", "licence no. 5123456", "5123456"),
    ("ID_NUMBER", "identity card 0012345678", "0012345678"),
    ("ID_NUMBER", "Driver License: D123-4567-8901", "D123-4567-8901"),
    ("ID_NUMBER", "Reisepass-Nr. C01X00T47", "C01X00T47"),
    ("ID_NUMBER", "numéro de sécurité sociale 1 85 03 75 123 456 78", "1 85 03 75 123 456 78"),
    ("ID_NUMBER", "NHS number 943 476 5919", "943 476 5919"),
    ("ID_NUMBER", "SIN: 046 454 286", "046 454 286"),
    ("ID_NUMBER", "passeport n° 15AB12345", "15AB12345"),
    ("ID_NUMBER", "codice fiscale RSSMRA85T10A562S", "RSSMRA85T10A562S"),
    ("ID_NUMBER", "ID number 123456AB1234", "123456AB1234"),
    ("STREET_ADDRESS", "ship to 123 Main Street, Springfield", "123 Main Street"),
    ("STREET_ADDRESS", "at 10 Downing St", "10 Downing St"),
    ("STREET_ADDRESS", "742 Evergreen Terrace", "742 Evergreen Terrace"),
    ("STREET_ADDRESS", "221B Baker Street, London", "221B Baker Street"),
    ("STREET_ADDRESS", "1600 Pennsylvania Avenue NW", "1600 Pennsylvania Avenue"),
    ("STREET_ADDRESS", "42 Old Mill Rd.", "42 Old Mill Rd."),
    ("STREET_ADDRESS", "4 Privet Drive", "4 Privet Drive"),
    ("STREET_ADDRESS", "i live at 123 main street now", "123 main street"),
    ("STREET_ADDRESS", "send it to 42 elm st. please", "42 elm st."),
    ("STREET_ADDRESS", "Hauptstraße 5, Berlin", "Hauptstraße 5"),
    ("STREET_ADDRESS", "Goethestrasse 12a", "Goethestrasse 12a"),
    ("STREET_ADDRESS", "Lindenweg 12", "Lindenweg 12"),
    ("STREET_ADDRESS", "Kalverstraat 92", "Kalverstraat 92"),
    ("STREET_ADDRESS", "j'habite 12 rue de Rivoli", "12 rue de Rivoli"),
    ("STREET_ADDRESS", "5, avenue Foch", "5, avenue Foch"),
    ("STREET_ADDRESS", "vivo en Calle Mayor 10", "Calle Mayor 10"),
    ("STREET_ADDRESS", "abito in Via Roma 3", "Via Roma 3"),
]  # fmt: skip


@pytest.mark.parametrize(("entity_type", "text", "value"), POSITIVES)
def test_positive(entity_type: str, text: str, value: str) -> None:
    """Each value is found once, with its exact type and span."""
    assert found(text) == [(entity_type, value)]


NEGATIVES = [
    "In 2024 we grew 12% over 2023 and 2022.",
    "years 2019 2020 2021",
    "The price is $1,299.00 (was $1,499.99).",
    "Revenue of 4.82 million, 61% of bookings, 12,480 units.",
    "ISO date 2024-05-01 and timestamp 2024-05-01T10:30:00Z",
    "A bare date 14/03/1985 in a report.",
    "March 14, 1985 was a Thursday.",
    "Meeting at 10:30, then 14:45:00.",
    "version 1.2.3, build 10.0.19041",
    "legacy build 1.2.3.4.5 still runs",
    "3 + 4 = 7 and 12 * 12 = 144",
    "pi is 3.14159 and e is 2.71828",
    "the answer is 42",
    "uuid 123e4567-e89b-12d3-a456-426614174000",
    "commit 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
    "card 4111 1111 1111 1112",
    "epoch millis 1714567890123",
    "IBAN DE89 3704 0044 0532 0130 01",
    "IBAN GB82 WEST 1234 5698 7654 33",
    "invalid SSNs 000-12-3456 666-12-3456 900-12-3456 123-00-4567 123-45-0000",
    "nine digits 123456789 without context",
    "order #100245 through #104988 shipped; SKU 88-1042",
    "ISBN 978-3-16-148410-0",
    "[2024-05-01 10:30:00,123] INFO worker=3 pid=48213 took 0.42s",
    "MAC 00:1a:2b:3c:4d:5e",
    "x = arr[::-1]; y = arr[::2]; z = m[::3]",
    "std::vector<int> v; a::b::c",
    "octets 256.1.1.1 and 999.999.999.999",
    "@decorator and user@localhost",
    "look at this dot product",
    "3 blocks down the street",
    "we drove 12 miles down the road",
    "the 5 Star rating",
    "room 101, floor 3, 1,234,567 users",
    "values 12 34 56 78 90",
    "passport renewal takes 6 weeks",
    "pip install brotlicffi>=1.2.0.0 and pandas-stubs==1.1.0.11",
    "digits = '0123456789'",
    "Decimal('1.2345E+12345680')",
    "sent via email 3 times",
    "a 2 way street",
    "AIX 6.1 TL7 bd 1415, 32-bit",
    "Tracking: 1Z999AA10123456784",
    "ticket RSSMRA85T10A562S reopened",
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_negative(text: str) -> None:
    """False-positive traps: years, prices, dates, times, versions, hashes, invalid checksums."""
    assert found(text) == []


# -- addresses of this host ----------------------------------------------------------------
THIS_HOST = [
    "curl http://127.0.0.1:8080/health",
    "OLLAMA_HOST=127.0.0.1:11434 ollama serve",
    "host 127.255.255.254 answers too",
    "uvicorn app:app --host 0.0.0.0 --port 8000",
    "allow 0.0.0.0/0 in the dev security group",
    "listen [::1]:443",
    "ping ::1",
    "ping6 0:0:0:0:0:0:0:1",
    "bind [::]:80 and ::",
    "mapped ::ffff:127.0.0.1",
    "tel 127.0.0.1",
]


@pytest.mark.parametrize("text", THIS_HOST)
def test_loopback_and_unspecified_addresses_do_not_count(text: str) -> None:
    """127.0.0.0/8, ::1, 0.0.0.0 and :: name this machine, so they are no personal data."""
    assert found(text) == []


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("127.0.0.1 and 10.0.0.5", "10.0.0.5"),
        ("redis on 127.0.0.1, db on 172.16.4.2", "172.16.4.2"),
        ("[::1]:8080 or 192.168.1.20:8080", "192.168.1.20"),
        ("bind 0.0.0.0; peer 8.8.4.4", "8.8.4.4"),
    ],
)
def test_other_addresses_beside_loopback_still_count(text: str, value: str) -> None:
    """A loopback address does not hide a private or public one next to it."""
    assert found(text) == [("IP_ADDRESS", value)]


def test_a_coding_prompt_with_only_loopback_is_not_pii() -> None:
    """A request whose only address is loopback reports no PII, so it may leave."""
    report = DETECTOR.scan_messages(
        [{"role": "user", "content": "Why does requests.get('http://127.0.0.1:8000/') hang?"}]
    )
    assert report.contains_pii is False


# -- a phone-shaped number the text calls an ID --------------------------------------------
def test_an_id_word_before_a_phone_shape_makes_it_an_id_only_when_nothing_is_between() -> None:
    """After "passport X1234567," the next number is no longer described by that word."""
    assert found("passport X1234567, 415-555-0132") == [
        ("ID_NUMBER", "X1234567"),
        ("PHONE", "415-555-0132"),
    ]


def test_a_phone_word_after_an_id_word_keeps_the_phone() -> None:
    """The nearest context word decides: "ID card, phone 415-555-0132" is a phone."""
    assert found("ID card holder, phone 415-555-0132") == [("PHONE", "415-555-0132")]


# -- adversarial hiding -----------------------------------------------------------------------
HIDDEN = [
    ("CREDIT_CARD", "card ４１１１ １１１１ １１１１ １１１１",
     "４１１１ １１１１ １１１１ １１１１"),
    ("CREDIT_CARD", "card ٤١١١ ١١١١ ١١١١ ١١١١", "٤١١١ ١١١١ ١١١١ ١١١١"),
    ("CREDIT_CARD", "card ۴۱۱۱۱۱۱۱۱۱۱۱۱۱۱۱", "۴۱۱۱۱۱۱۱۱۱۱۱۱۱۱۱"),
    ("CREDIT_CARD", "card 4111\u200b1111\u200c1111\u200d1111",
     "4111\u200b1111\u200c1111\u200d1111"),
    ("CREDIT_CARD", "card 4111\u00ad1111\u20601111\ufeff1111",
     "4111\u00ad1111\u20601111\ufeff1111"),
    ("CREDIT_CARD", "card 4111\u20131111\u20131111\u20131111",
     "4111\u20131111\u20131111\u20131111"),
    ("EMAIL", "mail john＠example．com", "john＠example．com"),
    ("EMAIL", "mail ｊｏｈｎ＠ｅｘａｍｐｌｅ．ｃｏｍ", "ｊｏｈｎ＠ｅｘａｍｐｌｅ．ｃｏｍ"),
    ("EMAIL", "mail jo\u200bhn@exa\u200dmple.com", "jo\u200bhn@exa\u200dmple.com"),
    ("EMAIL", "mail john\u200b@\u200bexample.com", "john\u200b@\u200bexample.com"),
    ("EMAIL", "mail john@example\u3002com", "john@example\u3002com"),
    ("EMAIL", "mail john [at] example [dot] com", "john [at] example [dot] com"),
    ("EMAIL", "mail john (at) example (dot) com", "john (at) example (dot) com"),
    ("EMAIL", "mail john[at]example.com", "john[at]example.com"),
    ("EMAIL", "mail John [AT] Example [DOT] org", "John [AT] Example [DOT] org"),
    ("PHONE", "call ＋４４ ２０ ７９４６ ０９５８", "＋４４ ２０ ７９４６ ０９５８"),
    ("PHONE", "call 415\u2011555\u20110132", "415\u2011555\u20110132"),
    ("PHONE", "call 06\u200b12\u200b34\u200b56\u200b78 soon", "06\u200b12\u200b34\u200b56\u200b78"),
    ("US_SSN", "SSN １２３-４５-６７８９", "１２３-４５-６７８９"),
    ("IP_ADDRESS", "host １９２．１６８．１．１", "１９２．１６８．１．１"),
    ("IBAN", "IBAN ＤＥ８９ ３７０４ ００４４ ０５３２ ０１３０ ００",
     "ＤＥ８９ ３７０４ ００４４ ０５３２ ０１３０ ００"),
]  # fmt: skip


@pytest.mark.parametrize(("entity_type", "text", "value"), HIDDEN)
def test_hidden_values_are_found(entity_type: str, text: str, value: str) -> None:
    """Look-alike digits, full-width forms, invisible characters and [at] do not hide a value."""
    assert found(text) == [(entity_type, value)]


def test_offsets_refer_to_the_original_text() -> None:
    """Offsets are exact on ASCII text, as the API example says."""
    assert DETECTOR.scan_text("mail me at a.b+x@mail.example.co.uk") == [PiiMatch("EMAIL", 11, 35)]


def test_offsets_survive_stripping_and_expansion() -> None:
    """Stripped zero-width characters and NFKC expansions (ﬁ -> fi) shift no offset."""
    text = "ﬁle ﬁx\u200b\u200b: card 4111\u200b1111 1111 1111, mail ﬁ@ex.com, é\u0301 8.8.8.8"
    matches = DETECTOR.scan_text(text)
    assert [(m.entity_type, m.start, m.end) for m in matches] == [
        ("CREDIT_CARD", text.index("4111"), text.index(", mail")),
        ("EMAIL", text.index("ﬁ@"), text.index(", é")),
        ("IP_ADDRESS", text.index("8.8"), len(text)),
    ]


def test_combining_accents_do_not_break_context_words() -> None:
    """A decomposed 'né' (n, e, U+0301) still reads as a birth context word."""
    assert found("ne\u0301 le 14 mars 1985") == [("DATE_OF_BIRTH", "14 mars 1985")]


# -- entity selection ----------------------------------------------------------------------------
def test_entities_limits_what_counts() -> None:
    """Only the chosen entity types are reported."""
    detector = PiiDetector(entities={"EMAIL", "PHONE"})
    text = "a@b.com, +44 20 7946 0958, 4111 1111 1111 1111, 8.8.8.8"
    assert found(text, detector) == [("EMAIL", "a@b.com"), ("PHONE", "+44 20 7946 0958")]


@pytest.mark.parametrize("entities", [{"EMAIL", "PASSWORD"}, {"email"}, {""}])
def test_unknown_entity_is_rejected(entities: set[str]) -> None:
    """An unknown entity type name is a ValueError naming it."""
    with pytest.raises(ValueError, match="unknown PII entity type"):
        PiiDetector(entities=entities)


def test_entity_types_constant() -> None:
    """ENTITY_TYPES lists exactly the nine supported names."""
    assert frozenset(
        {"EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "IP_ADDRESS", "DATE_OF_BIRTH",
         "ID_NUMBER", "STREET_ADDRESS"}
    ) == ENTITY_TYPES  # fmt: skip


# -- every part of a request -----------------------------------------------------------------
def _tool_call(arguments: str) -> dict[str, Any]:
    return {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": arguments}}


MESSAGE_PARTS = [
    ("system", [{"role": "system", "content": "Escalate to ops@example.com."}], "EMAIL"),
    ("user", [{"role": "user", "content": "Call me on +44 20 7946 0958"}], "PHONE"),
    ("assistant", [{"role": "assistant", "content": "IBAN DE89 3704 0044 0532 0130 00"}], "IBAN"),
    ("content parts", [{"role": "user", "content": [
        {"type": "text", "text": "Describe the image."},
        {"type": "text", "text": "My card is 4111 1111 1111 1111."}]}], "CREDIT_CARD"),
    ("image url query", [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "https://img.example.com/a.png?owner=jane@example.com"}}]}], "EMAIL"),
    ("image url encoded", [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "https://img.example.com/a.png?owner=jane%40example.com"}}]}], "EMAIL"),
    ("tool result json", [{"role": "tool", "tool_call_id": "call_1",
                           "content": json.dumps({"customer": {"ssn": "123-45-6789"}})}], "US_SSN"),
    ("tool result escaped @", [{"role": "tool", "tool_call_id": "call_1",
                                "content": '{"email": "jane\\u0040example.com"}'}], "EMAIL"),
    ("tool result plain", [{"role": "tool", "tool_call_id": "c", "content": "ip 10.1.2.3"}],
     "IP_ADDRESS"),
    ("tool call arguments", [{"role": "assistant", "content": None, "tool_calls": [
        _tool_call(json.dumps({"to": "+1 (415) 555-0132"}))]}], "PHONE"),
    ("tool call arguments escaped", [{"role": "assistant", "tool_calls": [
        _tool_call('{"to": "jane\\u0040example.com"}')]}], "EMAIL"),
    ("legacy function_call", [{"role": "assistant", "function_call": {
        "name": "lookup", "arguments": '{"ssn": "123-45-6789"}'}}], "US_SSN"),
    ("name field", [{"role": "user", "name": "jane@example.com", "content": "hi"}], "EMAIL"),
    ("unknown nested key", [{"role": "user", "content": "hi",
                             "metadata": {"notes": ["ship to 221B Baker Street"]}}],
     "STREET_ADDRESS"),
    ("unknown key holding pii", [{"role": "user", "content": "x", "jane@example.com": 1}], "EMAIL"),
    ("html entity", [{"role": "user", "content": "mail jane&#64;example.com"}], "EMAIL"),
    ("double-encoded json", [{"role": "tool", "tool_call_id": "c",
                              "content": json.dumps(json.dumps({"dob": "born 1985-03-14"}))}],
     "DATE_OF_BIRTH"),
]  # fmt: skip


@pytest.mark.parametrize(("part", "messages", "entity_type"), MESSAGE_PARTS)
def test_every_message_part_is_scanned(
    part: str, messages: list[dict[str, Any]], entity_type: str
) -> None:
    """PII in any part of a request is reported with its type."""
    report = DETECTOR.scan_messages(messages)
    assert (report.contains_pii, report.entity_types) == (True, (entity_type,)), part


def test_counts_add_up_across_messages() -> None:
    """Counts are per value across messages, and a JSON value is not counted twice."""
    messages = [
        {"role": "system", "content": "Escalate to ops@example.com or +44 20 7946 0958."},
        {"role": "user", "content": "I am jane@example.com"},
        {"role": "tool", "tool_call_id": "c", "content": json.dumps({"mail": "bob@example.com"})},
    ]
    assert counts(messages) == {"EMAIL": 3, "PHONE": 1}


def test_clean_request_reports_nothing() -> None:
    """A request without PII reports no entity, and its report says so."""
    report = DETECTOR.scan_messages(
        [
            {"role": "system", "content": "You summarise quarterly reports."},
            {"role": "user", "content": "Q3 2024 revenue was $4.82M, up 12.4% (release 4.7.2)."},
            {"role": "assistant", "tool_calls": [_tool_call('{"quarter": "2024-Q3", "n": 42}')]},
        ]
    )
    assert (report.contains_pii, report.entity_types, dict(report.entity_counts)) == (False, (), {})


def test_protocol_ids_and_base64_payloads_are_not_scanned() -> None:
    """Ids, roles and the base64 payload of a genuine data URL (whole base64) are not content."""
    messages = [
        {"role": "tool", "tool_call_id": "call_4111111111111111", "content": "done"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {
            "url": "data:image/png;base64,iVBORw0KGgo/4111111111111111/AAA"}}]},
    ]  # fmt: skip
    assert counts(messages) == {}


def test_report_shape() -> None:
    """PiiReport exposes counts, a sorted tuple of types and a boolean."""
    report = DETECTOR.scan_messages(
        [{"role": "user", "content": "a@b.com c@d.org 8.8.8.8 +44 20 7946 0958"}]
    )
    assert isinstance(report, PiiReport)
    assert dict(report.entity_counts) == {"EMAIL": 2, "IP_ADDRESS": 1, "PHONE": 1}
    assert report.entity_types == ("EMAIL", "IP_ADDRESS", "PHONE")
    assert report.contains_pii is True


class ChatMessage(BaseModel):
    role: str
    content: str


@dataclass
class LegacyMessage:
    role: str
    content: str


class PlainMessage:
    def __init__(self, content: str) -> None:
        self.role = "user"
        self.content = content


@pytest.mark.parametrize(
    "message",
    [
        ChatMessage(role="user", content="mail jane@example.com"),
        LegacyMessage(role="user", content="mail jane@example.com"),
        PlainMessage("mail jane@example.com"),
    ],
    ids=["pydantic", "dataclass", "object"],
)
def test_message_objects_are_read(message: object) -> None:
    """Pydantic models, dataclasses and plain objects are read like dicts."""
    assert counts([message]) == {"EMAIL": 1}


def test_unknown_structures_do_not_crash() -> None:
    """Odd values are walked (bytes, numbers, tuples, cycles) and still scanned."""
    cyclic: dict[str, Any] = {"note": "card 4111111111111111"}
    cyclic["self"] = cyclic
    messages = [
        {"role": "user", "content": None, "extra": (1, 2.5, True, None, b"ip 10.1.2.3")},
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA"}}]},
        {"role": "user", "content": "x", "meta": cyclic, "n": 4111111111111111},
        {"role": "user", "content": "{not json", "v": "%zz&amp;"},
    ]
    assert counts(messages) == {"IP_ADDRESS": 1, "CREDIT_CARD": 2}


def test_every_object_of_a_long_request_is_read() -> None:
    """Each of many model messages is read (objects made during the walk are not confused)."""
    messages = [ChatMessage(role="user", content=f"mail user{n}@example.com") for n in range(200)]
    assert counts(messages) == {"EMAIL": 200}


def test_text_data_urls_are_read() -> None:
    """A data URL that is not base64 carries text, and that text is scanned."""
    part = {"type": "image_url", "image_url": {"url": "data:text/plain,jane%40example.com"}}
    assert counts([{"role": "user", "content": [part]}]) == {"EMAIL": 1}


def test_entities_limit_context_values() -> None:
    """Context values follow the selection too: only dates of birth here."""
    detector = PiiDetector(entities={"DATE_OF_BIRTH"})
    text = "born 1985-03-14, passport X1234567, phone +44 20 7946 0958"
    assert found(text, detector) == [("DATE_OF_BIRTH", "1985-03-14")]


PATHOLOGICAL = [
    "@" * 50_000, "a@" * 25_000, "a " * 25_000 + "a@b.co", "1 " * 50_000, "1-" * 50_000,
    "(1)" * 20_000, "::" + "1:" * 20_000, "[at] " * 10_000, "1 A " * 10_000, "1 st " * 5_000,
    "born " * 10_000, "x@" + "a." * 25_000, "4\u200b" * 20_000, "e\u0301" * 20_000,
    "[at] " + "a" * 50_000, "1 A" + "a" * 50_000 + " ", "1 rue " + "a" * 50_000,
    "x [at] y" + " [dot] " * 10_000, "1" + " " * 50_000 + "Street",
]  # fmt: skip


def test_pathological_inputs_stay_linear() -> None:
    """Adversarial repetitions (ReDoS shapes) are scanned in well under a second each."""
    for text in PATHOLOGICAL:
        started = time.perf_counter()
        DETECTOR.scan_text(text)
        assert time.perf_counter() - started < 1.0, text[:12]


class BrokenMessage(BaseModel):
    role: str

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("cannot dump")


def test_failures_propagate() -> None:
    """An error inside scanning is raised, never swallowed, so the caller can fail closed."""
    with pytest.raises(RuntimeError, match="cannot dump"):
        DETECTOR.scan_messages([BrokenMessage(role="user")])


@settings(max_examples=200, deadline=None)
@given(
    texts=st.lists(
        st.one_of(
            st.text(max_size=60),
            st.sampled_from(
                ["jane@example.com", "4111 1111 1111 1111", "call 415-555-0132", "plain prose"]
            ),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_the_memo_of_strings_never_changes_a_count(texts: list[str]) -> None:
    """A detector that has seen the strings before counts what a new detector counts."""
    messages = [{"role": "user", "content": text} for text in texts]
    seasoned = PiiDetector()
    first = seasoned.scan_messages(messages)
    again = seasoned.scan_messages(list(reversed(messages)))
    fresh = PiiDetector().scan_messages(list(reversed(messages)))
    assert dict(first.entity_counts) == dict(PiiDetector().scan_messages(messages).entity_counts)
    assert dict(again.entity_counts) == dict(fresh.entity_counts)


def test_the_memo_holds_digests_and_stays_bounded() -> None:
    """The memo keeps no text (16-byte digests only) and forgets the oldest past its size."""
    from aegis_proxy.classify import detector as module

    detector = PiiDetector()
    for n in range(module.MEMO_SIZE + 10):
        detector.scan_messages([{"role": "user", "content": f"note {n} for jane@example.com"}])
    memo = detector._memo
    assert len(memo) == module.MEMO_SIZE
    assert all(isinstance(key, bytes) and len(key) == 16 for key in memo)
    assert all("jane" not in repr(value) for value in memo.values())
    again = detector.scan_messages([{"role": "user", "content": "note 0 for jane@example.com"}])
    assert dict(again.entity_counts) == {"EMAIL": 1}  # forgotten, so counted afresh
