"""Privacy config: allow-lists, extra regex recognizers, the NER backend that fails closed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from aegis_proxy.classify.custom import Recognizer
from aegis_proxy.classify.detector import PiiDetector
from aegis_proxy.classify.ner import PresidioDetector
from aegis_proxy.config import load_config
from aegis_proxy.errors import ConfigError
from aegis_proxy.runtime import build_runtime


def found(detector: Any, text: str) -> list[tuple[str, str]]:
    return [(m.entity_type, text[m.start : m.end]) for m in detector.scan_text(text)]


def _config(tmp_path: Path, privacy: dict[str, Any]) -> Path:
    data = {
        "providers": {"local": {"sdk": "ollama", "model": "llama3.2:3b", "local": True}},
        "routing": {"rules": [], "default": ["local"]},
        "privacy": privacy,
    }
    path = tmp_path / "aegis.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# -- allow-lists ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("allow", "text", "left"),
    [
        (["4111 1111 1111 1111"], "test card 4111-1111-1111-1111", []),
        (["4111111111111111"], "card 4111 1111 1111 1111 and 5555 5555 5555 4444",
         [("CREDIT_CARD", "5555 5555 5555 4444")]),
        (["*@ourcompany.example"], "mail bob@ourcompany.example or bob@gmail.example",
         [("EMAIL", "bob@gmail.example")]),
        (["*@ourcompany.example"], "mail BOB@OurCompany.Example", []),
        (["*@ourcompany.example"], "mail bob@ourcompany.example.evil.test",
         [("EMAIL", "bob@ourcompany.example.evil.test")]),
        (["re:10\\.\\d+\\.\\d+\\.\\d+"], "hosts 10.0.0.1 and 8.8.8.8", [("IP_ADDRESS", "8.8.8.8")]),
        (["DE89 3704 0044 0532 0130 00"], "IBAN de89370400440532013000", []),
        (["jane@example.com"], "mail jane@example.com.au", [("EMAIL", "jane@example.com.au")]),
    ],
)  # fmt: skip
def test_allow_list_drops_only_the_allowed_values(
    allow: list[str], text: str, left: list[tuple[str, str]]
) -> None:
    """An allowed value never counts; a value that merely contains or resembles one still does."""
    assert found(PiiDetector(allow=allow), text) == left


def test_allow_list_sees_through_hiding_tricks() -> None:
    """An allowed card hidden with zero-width characters is still the allowed card."""
    assert found(PiiDetector(allow=["4111111111111111"]), "card 4111\u200b1111 1111 1111") == []


def test_allowed_values_do_not_make_a_request_pii() -> None:
    """A request holding only allowed values is not PII; one more value makes it PII."""
    detector = PiiDetector(allow=["*@ourcompany.example"])
    clean = [{"role": "user", "content": "ask ops@ourcompany.example"}]
    assert not detector.scan_messages(clean).contains_pii
    dirty = [{"role": "user", "content": "ask ops@ourcompany.example, cc jo@gmail.example"}]
    assert dict(detector.scan_messages(dirty).entity_counts) == {"EMAIL": 1}


# -- extra recognizers ---------------------------------------------------------------------
EMPLOYEE = Recognizer("EMPLOYEE_ID", r"\bEMP-\d{6}\b")
CONTRACT = Recognizer(
    "CONTRACT_NO", r"\b\d{8}\b", context=("contract", "Vertrag"), context_window=20
)


def test_recognizer_reports_its_own_entity_type() -> None:
    """A config recognizer adds its name as an entity type, beside the built-in ones."""
    text = "badge EMP-004211, mail a@b.example"
    assert found(PiiDetector(recognizers=[EMPLOYEE]), text) == [
        ("EMPLOYEE_ID", "EMP-004211"), ("EMAIL", "a@b.example"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "hits"),
    [
        ("contract 12345678 signed", ["12345678"]),
        ("Vertragsnummer: nein; VERTRAG 12345678", ["12345678"]),
        ("order 12345678 shipped", []),
        ("contract signed long ago, many many words later 12345678", []),
        ("contracts 12345678", []),
    ],
)
def test_recognizer_context_words_and_window(text: str, hits: list[str]) -> None:
    """With context words, a match counts only when a whole word sits within the window."""
    assert [value for _, value in found(PiiDetector(recognizers=[CONTRACT]), text)] == hits


def test_built_in_type_wins_over_an_overlapping_recognizer() -> None:
    """Where a recognizer overlaps a built-in match, the built-in type is kept."""
    greedy = Recognizer("DIGITS", r"\d[\d ]+\d")
    assert found(PiiDetector(recognizers=[greedy]), "card 4111 1111 1111 1111") == [
        ("CREDIT_CARD", "4111 1111 1111 1111")
    ]


def test_bad_recognizer_pattern_is_a_value_error() -> None:
    """A detector built directly with a bad pattern names the recognizer."""
    with pytest.raises(ValueError, match="BROKEN"):
        PiiDetector(recognizers=[Recognizer("BROKEN", "(unclosed")])


# -- config --------------------------------------------------------------------------------
def test_config_settings_reach_the_proxy_detector(tmp_path: Path) -> None:
    """privacy.allow and privacy.recognizers from YAML shape the detector the runtime builds."""
    privacy = {
        "allow": ["*@ourcompany.example"],
        "recognizers": [{"name": "EMPLOYEE_ID", "pattern": r"\bEMP-\d{6}\b", "context": ["badge"]}],
    }
    runtime = build_runtime(load_config(_config(tmp_path, privacy)))
    messages = [{"role": "user", "content": "badge EMP-004211 for ops@ourcompany.example"}]
    assert dict(runtime.detector.scan_messages(messages).entity_counts) == {"EMPLOYEE_ID": 1}


@pytest.mark.parametrize(
    ("privacy", "key"),
    [
        ({"recognizers": [{"name": "X", "pattern": "(unclosed"}]},
         "privacy.recognizers[0].pattern"),
        ({"recognizers": [{"name": "lower", "pattern": "x"}]}, "privacy.recognizers[0].name"),
        ({"recognizers": [{"name": "X", "pattern": "x", "context_window": 0}]},
         "privacy.recognizers[0].context_window"),
        ({"allow": ["ok", "re:[unclosed"]}, "privacy.allow"),
        ({"ner": "spacy"}, "privacy.ner"),
    ],
)  # fmt: skip
def test_bad_privacy_settings_name_their_key(
    tmp_path: Path, privacy: dict[str, Any], key: str
) -> None:
    """A bad regex or value in privacy config is a ConfigError naming the exact key."""
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, privacy))
    assert caught.value.key == key


# -- the NER backend -------------------------------------------------------------------------
_WITHOUT_PRESIDIO = """
import sys
sys.modules["presidio_analyzer"] = None  # this process has no Presidio: its import fails
from aegis_proxy.config import load_config
from aegis_proxy.errors import ConfigError
from aegis_proxy.classify.detector import PiiDetector
from aegis_proxy.classify.ner import PresidioDetector
from aegis_proxy.runtime import build_runtime
def from_file(): return build_runtime(load_config(sys.argv[1]))
def direct(): return PresidioDetector(PiiDetector())
builders = (from_file, direct)
for build in builders:
    try:
        build()
    except ConfigError as exc:
        print(exc.path, exc.key, exc.problem, sep="|")
"""


def test_configured_ner_that_cannot_load_fails_startup(tmp_path: Path) -> None:
    """privacy.ner: presidio in a process without Presidio stops startup; no silent downgrade."""
    path = _config(tmp_path, {"ner": "presidio"})
    out = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PRESIDIO, str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    lines = [line.split("|") for line in out.stdout.splitlines()]
    expected = [[str(path), "privacy.ner"], ["", "privacy.ner"]]  # no file: built directly
    assert [line[:2] for line in lines] == expected, out.stderr
    assert all("presidio-analyzer is not installed" in line[2] for line in lines)


class _Result:
    def __init__(self, entity_type: str, start: int, end: int) -> None:
        self.entity_type, self.start, self.end = entity_type, start, end


class _NameAnalyzer:
    """A stand-in for Presidio's engine (a third-party part): finds the word 'Alice'."""

    def analyze(self, text: str, language: str, entities: list[str]) -> list[Any]:
        start = text.find("Alice")
        return [_Result("PERSON", start, start + 5)] if start != -1 else []


def test_ner_backend_adds_names_beside_regex_matches() -> None:
    """PERSON from the NER engine joins the regex matches, in text and in request counts."""
    detector = PresidioDetector(PiiDetector(), analyzer=_NameAnalyzer())
    assert found(detector, "Alice, a@b.example") == [("PERSON", "Alice"), ("EMAIL", "a@b.example")]
    report = detector.scan_messages([{"role": "user", "content": "ask Alice"}])
    assert dict(report.entity_counts) == {"PERSON": 1}
