"""PII detector on inputs nobody tuned it on: neighbours, lengths, separators, seams, base64."""

from __future__ import annotations

import base64
import itertools
import json
import string
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aegis_proxy.classify.detector import PiiDetector

DETECTOR = PiiDetector()


def found(text: str) -> list[tuple[str, str]]:
    """Each match as (entity type, the original text it covers)."""
    return [(m.entity_type, text[m.start : m.end]) for m in DETECTOR.scan_text(text)]


def counts(messages: list[Any]) -> dict[str, int]:
    return dict(DETECTOR.scan_messages(messages).entity_counts)


def luhn_complete(body: str) -> str:
    """``body`` with the check digit that makes its Luhn sum valid (written here, not imported)."""
    total = 0
    for index, char in enumerate(reversed(body)):
        value = int(char) * (2 if index % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return body + str((10 - total % 10) % 10)


def make_iban(country: str, bban: str) -> str:
    numeric = "".join(str(int(char, 36)) for char in bban + country + "00")
    return f"{country}{98 - int(numeric) % 97:02d}{bban}"


# -- 1. a number next to a value does not hide it ----------------------------------------------
NEIGHBOURS = [
    ("1. 4111 1111 1111 1111", [("CREDIT_CARD", "4111 1111 1111 1111")]),
    ("2) 4111-1111-1111-1111 was charged", [("CREDIT_CARD", "4111-1111-1111-1111")]),
    ("1) 536-22-8421", [("US_SSN", "536-22-8421")]),
    ("3. 536 22 8421", [("US_SSN", "536 22 8421")]),
    ("Refund 100.00 4111 1111 1111 1111", [("CREDIT_CARD", "4111 1111 1111 1111")]),
    ("Refund 1000.00 4111 1111 1111 1111", [("CREDIT_CARD", "4111 1111 1111 1111")]),
    ("exp 12/29 4111 1111 1111 1111", [("CREDIT_CARD", "4111 1111 1111 1111")]),
    ("8.8.4.4 1.1.1.1", [("IP_ADDRESS", "8.8.4.4"), ("IP_ADDRESS", "1.1.1.1")]),
    ("hosts 10.0.0.1 10.0.0.2 10.0.0.3", [("IP_ADDRESS", "10.0.0.1"), ("IP_ADDRESS", "10.0.0.2"),
                                          ("IP_ADDRESS", "10.0.0.3")]),
    ("1. 020 7946 0958", [("PHONE", "020 7946 0958")]),
    ("Ref 2024_4111_1111_1111_1111", [("CREDIT_CARD", "4111_1111_1111_1111")]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), NEIGHBOURS)
def test_a_neighbouring_number_does_not_hide_a_value(
    text: str, expected: list[tuple[str, str]]
) -> None:
    """List markers, amounts, dates and a first address before a value leave it found, exactly."""
    assert found(text) == expected


# -- 2. cards of every issued length ----------------------------------------------------------
MAESTRO_12 = luhn_complete("50181234567")
JCB_15 = luhn_complete("21310000000000")
UATP_15 = luhn_complete("10000000000000")
UNIONPAY_19 = luhn_complete("621234567890123456")
MIR_16 = luhn_complete("220012345678901")
PLAIN_12 = luhn_complete("12345678901")


MAESTRO_GROUPED = f"{MAESTRO_12[:4]} {MAESTRO_12[4:8]} {MAESTRO_12[8:]}"
UNIONPAY_GROUPED = " ".join(UNIONPAY_19[i : i + 4] for i in range(0, 19, 4))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (f"card {MAESTRO_12}", MAESTRO_12),
        (f"maestro {MAESTRO_GROUPED}", MAESTRO_GROUPED),
        (f"ref {JCB_15} on file", JCB_15),
        (f"card {UATP_15}", UATP_15),
        (f"unionpay {UNIONPAY_19}", UNIONPAY_19),
        (f"paid with {UNIONPAY_GROUPED}", UNIONPAY_GROUPED),
        (f"ref {MIR_16}", MIR_16),
        (f"card number {PLAIN_12}", PLAIN_12),
    ],
)
def test_cards_of_12_to_19_digits_are_found(text: str, value: str) -> None:
    """Maestro from 12 digits, JCB and UATP at 15, UnionPay at 19, Mir: each is one card."""
    assert found(text) == [("CREDIT_CARD", value)]


@pytest.mark.parametrize(
    "text",
    [
        f"order {PLAIN_12} shipped",
        f"invoice {luhn_complete('77777777777777')} is due",
        f"Bestellnummer {luhn_complete('98765432101234')}",
        f"epoch {luhn_complete('171456789012')}",
    ],
)
def test_short_luhn_numbers_without_a_card_word_or_known_issuer_are_no_cards(text: str) -> None:
    """A 12-15 digit number that passes Luhn by chance is no card without a card word or IIN."""
    assert found(text) == []


# -- 3. separators -----------------------------------------------------------------------------
SEPARATORS = ["\t", "\n", ",", "_", "*", "/", "  ", "   ", "\u00a0", "\u202f", "\u2009", "\u3000"]


@pytest.mark.parametrize("sep", SEPARATORS, ids=repr)
def test_any_separator_between_card_groups(sep: str) -> None:
    """Tab, newline, comma, underscore, star, slash, several spaces, Unicode spaces: one card."""
    value = sep.join(["4111", "1111", "1111", "1111"])
    assert found(f"card {value} thanks") == [("CREDIT_CARD", value)]


def test_whitespace_of_any_kind_is_one_card_separator() -> None:
    """A card whose groups are split by spaces and a line break is one card."""
    assert found("4111 1111\n1111 1111") == [("CREDIT_CARD", "4111 1111\n1111 1111")]


@pytest.mark.parametrize("sep", ["\u00a0", "\u202f", "\u2009", "\u2007"], ids=repr)
def test_unicode_spaces_inside_card_groups(sep: str) -> None:
    """A no-break or thin space placed inside a digit group does not split the card."""
    value = f"41{sep}11 1111 11{sep}11 1111"
    assert found(f"pay {value}") == [("CREDIT_CARD", value)]


IBANS = [
    "DE 89 3704 0044 0532 0130 00",
    "DE89.3704.0044.0532.0130.00",
    "DE89/3704/0044/0532/0130/00",
    "DE89  3704  0044  0532  0130  00",
    "De89 3704 0044 0532 0130 00",
    "de89-3704-0044-0532-0130-00",
    "DE89\u00a03704\u00a00044\u00a00532\u00a00130\u00a000",
    "DE89_3704_0044_0532_0130_00",
    "GB82 west 1234 5698 7654 32",
]


@pytest.mark.parametrize("value", IBANS, ids=repr)
def test_iban_separators_and_case(value: str) -> None:
    """Dots, slashes, double spaces, a space in the check digits and mixed case: one IBAN."""
    assert found(f"IBAN {value} bitte") == [("IBAN", value)]


@pytest.mark.parametrize(
    "value",
    ["+44\t20\t7946\t0958", "020_7946_0958", "+44 20\u00a07946\u00a00958", "020*7946*0958",
     "+33 6 12 34 56 78".replace(" ", "  ")],
    ids=repr,
)  # fmt: skip
def test_phone_separators(value: str) -> None:
    """A phone with odd separators between its groups is one phone."""
    assert found(f"tel {value} ok") == [("PHONE", value)]


@pytest.mark.parametrize(
    "value",
    ["536_22_8421", "536/22/8421", "536  22  8421", "536.22.8421", "53\u00a06-22-8421",
     "536\u00a022\u00a08421", "536\t22\t8421"],
    ids=repr,
)  # fmt: skip
def test_ssn_separators(value: str) -> None:
    """An SSN with any one separator used twice (or a Unicode space inside a group) is found."""
    assert found(f"number {value} here") == [("US_SSN", value)]


# -- 4. how people write about phones -------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("call me on 555 0134", "555 0134"),
        ("no answer at 64-21-90-37", "64-21-90-37"),
        ("texts to 612 448 903", "612 448 903"),
        ("Ring me at 5550134 tonight", "5550134"),
        ("reach us at 555-0134 anytime", "555-0134"),
        ("whatsapp me 612 448 903", "612 448 903"),
        ("contact me on 0171 12345", "0171 12345"),
        ("ruf mich an unter 555 0134", "555 0134"),
        ("rappeler au 64 21 90 37", "64 21 90 37"),
        ("llamar al 612 448 903", "612 448 903"),
        ("chiamare al 612 448 903", "612 448 903"),
        ("bel me op 612 448 903", "612 448 903"),
        ("ligue para 612 448 903", "612 448 903"),
    ],
)
def test_short_local_numbers_after_conversational_context(text: str, value: str) -> None:
    """A short local number right after call/ring/reach/text/answer words is a phone."""
    assert found(text) == [("PHONE", value)]


@pytest.mark.parametrize(
    "text",
    [
        "call 123 returned 12345678 rows",
        "ring buffer size 1234567 bytes",
        "the answer is 1234567 in total",
        "text block 1234 5678 in the manual",
        "we reached 5550134 users",
    ],
)
def test_conversational_words_away_from_a_number_are_no_context(text: str) -> None:
    """A call/ring/answer word counts only directly before the number, small words between."""
    assert found(text) == []


# -- 5. obfuscated emails ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("write to jane at example dot com", "jane at example dot com"),
        ("jane [at] example [dot] com", "jane [at] example [dot] com"),
        ("jane (at) example (dot) com", "jane (at) example (dot) com"),
        ("mail jane @ example.com please", "jane @ example.com"),
        ("mail jane@ example.com please", "jane@ example.com"),
        ('write "jane doe"@example.com', '"jane doe"@example.com'),
        ("j.doe at mail dot example dot co dot uk", "j.doe at mail dot example dot co dot uk"),
        ("JANE AT EXAMPLE DOT ORG", "JANE AT EXAMPLE DOT ORG"),
        ("mail jane[@]example.com", "jane[@]example.com"),
        ("mail jane <at> example <dot> com", "jane <at> example <dot> com"),
        ("mail wet.hal-9l$@example.travel", "wet.hal-9l$@example.travel"),
    ],
)
def test_obfuscated_emails(text: str, value: str) -> None:
    """Emails with at/dot words, brackets, spaces around '@' or a quoted local part are found."""
    assert found(text) == [("EMAIL", value)]


@pytest.mark.parametrize(
    "text",
    [
        "y = weights @ inputs.data",
        "look at this dot product",
        "meet at noon dot",
        "result = a @ b.T",
        "arrive at gate dot matrix display",
    ],
)
def test_email_look_alikes_in_prose_and_code(text: str) -> None:
    """Matrix products and at/dot prose that end in no known domain are no emails."""
    assert found(text) == []


# -- 6. seams and base64 -------------------------------------------------------------------------
def test_a_card_split_across_two_text_parts_is_found() -> None:
    """Two adjacent text parts of one message are also read as one text."""
    parts = [
        {"type": "text", "text": "My card is 4111 1111"},
        {"type": "text", "text": "1111 1111"},
    ]
    assert counts([{"role": "user", "content": parts}]) == {"CREDIT_CARD": 1}


def test_a_phone_split_across_two_messages_is_found() -> None:
    """The end of one message and the start of the next are read together."""
    messages = [
        {"role": "user", "content": "call me on +44 20"},
        {"role": "user", "content": "7946 0958"},
    ]
    assert counts(messages) == {"PHONE": 1}


def test_values_wholly_inside_parts_are_not_counted_twice_at_a_seam() -> None:
    """Two emails in neighbouring parts stay two, though their joined text reads differently."""
    messages = [{"role": "user", "content": "a@b.com"}, {"role": "user", "content": "c@d.com"}]
    assert counts(messages) == {"EMAIL": 2}


def test_scan_across_takes_strings_in_order() -> None:
    """scan_across counts only the values that cross a seam of the given strings."""
    assert dict(DETECTOR.scan_across(["mail jane@exam", "ple.com", "SSN 123-45-", "6789"])) == {
        "EMAIL": 1,
        "US_SSN": 1,
    }


def test_base64_text_in_a_tool_argument_is_decoded() -> None:
    """A base64 run that decodes to UTF-8 text is scanned as that text."""
    blob = base64.b64encode(b"card 4111 1111 1111 1111, mail jane@example.com").decode()
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": json.dumps(
        {"blob": blob})}}  # fmt: skip
    assert counts([{"role": "assistant", "tool_calls": [call]}]) == {"CREDIT_CARD": 1, "EMAIL": 1}


def test_url_safe_base64_without_padding_is_decoded() -> None:
    """URL-safe base64 with its padding stripped decodes too."""
    blob = base64.urlsafe_b64encode(b"SSN 123-45-6789 ok??>>").decode().rstrip("=")
    assert counts([{"role": "user", "content": f"token={blob}"}]) == {"US_SSN": 1}


def test_base64_of_binary_data_is_not_text() -> None:
    """A base64 run of binary bytes (an image) decodes to no text, so nothing is found."""
    blob = base64.b64encode(bytes(range(256)) * 4).decode()
    assert counts([{"role": "user", "content": f"raw {blob}"}]) == {}


# -- 7. near misses ---------------------------------------------------------------------------
NEAR_MISSES = [
    "Order #4111111 shipped, order 20240105-778812 pending",
    "invoice INV-2024-000123456 and INV/2024/778812",
    "2024-03-05T14:22:31.123456Z request took 1234567 us",
    "version 10.0.19041.3693 and 4.7.2.1044",
    "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "uuid 550e8400-e29b-41d4-a716-446655440000",
    "git 1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b",
    "readings 12.5, 13.1, 12.9, 14.2, 13.8, 12.7 mm",
    "pixels = [255, 128, 64, 32, 16, 8, 4, 2, 1]",
    "for i in range(1000000): total += i * 31337",
    "matrix 1 0 0 0 1 0 0 0 1",
    "lat 48.858844, lon 2.294351",
]


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_near_misses_are_not_flagged(text: str) -> None:
    """Order numbers, ids, timestamps, versions, hashes, UUIDs, measurements and code are clean."""
    assert found(text) == []


# -- properties ----------------------------------------------------------------------------------
CARD_PREFIXES = ["4", "51", "55", "2221", "2720", "34", "37", "6011", "65", "3528", "36", "62"]
CARD_LENGTHS = {"34": 15, "37": 15, "36": 14}
NEIGHBOUR = st.sampled_from(
    ["", "1.", "2)", "Refund 100.00", "exp 12/29", "#12", "qty 3", "2024-01-05", "ref 77"]
)
SEPARATOR = st.sampled_from([" ", "-", "\t", "_", "*", "/", "  ", "\u00a0", "\u2009", "\n"])


def _overlaps(text: str, kind: str, value: str) -> bool:
    start = text.index(value)
    end = start + len(value)
    return any(
        m.entity_type == kind and m.start < end and start < m.end for m in DETECTOR.scan_text(text)
    )


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from(CARD_PREFIXES),
    body=st.text(string.digits, min_size=20, max_size=20),
    neighbour=NEIGHBOUR,
    sep=SEPARATOR,
    word=st.sampled_from(["card", "", "paid with", "Karte"]),
)
def test_a_valid_card_is_found_whatever_stands_next_to_it(
    prefix: str, body: str, neighbour: str, sep: str, word: str
) -> None:
    """A valid card with random neighbours and a random separator is always found."""
    length = CARD_LENGTHS.get(prefix, 16)
    number = luhn_complete((prefix + body)[: length - 1])
    cuts = (0, 4, 10, length) if length < 16 else (*range(0, length, 4), length)  # 4-6-5, 4-6-4
    value = sep.join(number[start:end] for start, end in itertools.pairwise(cuts))
    text = f"{word} {neighbour} {value} thanks".strip()
    assert _overlaps(text, "CREDIT_CARD", value), text


IBAN_LAYOUTS = {
    "DE": "n" * 18,
    "FR": "n" * 10 + "c" * 11 + "nn",
    "GB": "aaaa" + "n" * 14,
    "NL": "aaaa" + "n" * 10,
    "ES": "n" * 20,
    "IT": "a" + "n" * 10 + "c" * 12,
}


@settings(max_examples=200, deadline=None)
@given(
    country=st.sampled_from(sorted(IBAN_LAYOUTS)),
    seed=st.randoms(use_true_random=False),
    sep=st.sampled_from([" ", "", "-", ".", "/", "  ", "\u00a0", "_"]),
    lower=st.booleans(),
    neighbour=NEIGHBOUR,
)
def test_a_valid_iban_is_found_with_any_separator(
    country: str, seed: Any, sep: str, lower: bool, neighbour: str
) -> None:
    """A valid IBAN in groups of four, any separator, either case, after a neighbour is found."""
    pools = {"n": string.digits, "a": string.ascii_uppercase, "c": string.digits + "ABCXYZ"}
    bban = "".join(seed.choice(pools[kind]) for kind in IBAN_LAYOUTS[country])
    iban = make_iban(country, bban)
    value = sep.join(iban[i : i + 4] for i in range(0, len(iban), 4))
    value = value.lower() if lower else value
    text = f"{neighbour} IBAN {value} ok".strip()
    assert _overlaps(text, "IBAN", value), text


@settings(max_examples=200, deadline=None)
@given(
    area=st.integers(1, 899).filter(lambda area: area != 666),
    group=st.integers(1, 99),
    serial=st.integers(1, 9999),
    sep=st.sampled_from(["-", " ", "_", "/", ".", "  "]),
    neighbour=NEIGHBOUR,
)
def test_a_valid_ssn_is_found_with_any_separator(
    area: int, group: int, serial: int, sep: str, neighbour: str
) -> None:
    """An SSN that follows the SSA rules, one separator used twice, is always found."""
    value = f"{area:03d}{sep}{group:02d}{sep}{serial:04d}"
    text = f"{neighbour} {value} on file".strip()
    assert _overlaps(text, "US_SSN", value), text


@settings(max_examples=300, deadline=None)
@given(
    miss=st.one_of(
        st.uuids().map(str),
        st.binary(min_size=16, max_size=32).map(bytes.hex),
        st.tuples(st.integers(0, 30), st.integers(0, 99), st.integers(0, 999)).map(
            lambda v: "v{}.{}.{}".format(*v)
        ),
        st.datetimes().map(lambda moment: moment.isoformat()),
        st.lists(st.integers(0, 999), min_size=3, max_size=12).map(
            lambda values: ", ".join(map(str, values))
        ),
    ),
)
@example(miss="be657298-1618-dc6a-8842-9b7ac4828126")  # hex that passed mod-97 as BE
@example(miss="01000000000a00000000000000000000")  # a phone-shaped run glued to hex
def test_near_misses_are_never_flagged(miss: str) -> None:
    """UUIDs, hex digests, version strings, ISO timestamps and number lists are never PII."""
    assert found(f"see {miss} in the log") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("we hope to reach 1000000 users", []),
        ("message 1234567 was delivered", []),
        ("call 5550134 tonight", [("PHONE", "5550134")]),
        ("text me at 5550134", [("PHONE", "5550134")]),
    ],
)
def test_a_bare_number_needs_a_call_word_or_a_small_word_between(
    text: str, expected: list[tuple[str, str]]
) -> None:
    """After reach/message/text a bare digit run is a count or an id unless "me at" follows."""
    assert found(text) == expected
