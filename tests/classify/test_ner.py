"""The Presidio NER backend against the real Presidio analyzer and a real spaCy pipeline.

No official spaCy model can be installed here, so the pipeline is built in the test:
``spacy.blank("en")`` plus an ``entity_ruler`` that knows a few names and places, saved
with ``nlp.to_disk`` and loaded by Presidio from that folder like any trained model.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "presidio_analyzer",
    reason="LOUD: the 'ner' extra (presidio-analyzer) is not installed: NER tests did NOT run",
)

import spacy

from aegis_proxy import AegisLLMProxy, LLMTask
from aegis_proxy.classify.detector import PiiDetector
from aegis_proxy.classify.ner import OVERLAP, SPACY_MODELS, WINDOW, PresidioDetector
from aegis_proxy.config import load_config
from aegis_proxy.config.sections import PrivacyConfig
from aegis_proxy.errors import ConfigError
from aegis_proxy.runtime import build_runtime
from tests.conftest import Rig
from tests.logcapture import capture_events

CRITICAL = LLMTask(task_type="extraction", quality="critical", complexity="high")
NAME, PLACE = "Margarethe Okonkwo", "Lisbon"
PATTERNS = [
    {"label": "PERSON", "pattern": [{"LOWER": "margarethe"}, {"LOWER": "okonkwo"}]},
    {"label": "PERSON", "pattern": [{"LOWER": "jane"}, {"LOWER": "doe"}]},
    {"label": "GPE", "pattern": [{"LOWER": "lisbon"}]},
    {"label": "LOC", "pattern": [{"LOWER": "mont"}, {"LOWER": "blanc"}]},
]
HAS_CONFIG_KEY = "ner_model" in PrivacyConfig.model_fields


def found(detector: Any, text: str) -> list[tuple[str, str]]:
    return [(m.entity_type, text[m.start : m.end]) for m in detector.scan_text(text)]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved spaCy pipeline whose entity ruler knows two people and two places."""
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns(PATTERNS)
    path = tmp_path_factory.mktemp("spacy") / "ruler_en"
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="module")
def detector(pipeline: Path) -> PresidioDetector:
    return PresidioDetector(PiiDetector(), model=str(pipeline))


def _rows(rig: Rig) -> list[dict[str, Any]]:
    with sqlite3.connect(rig.tmp_path / "ledger.db") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY id")]


def _proxy(rig: Rig, pipeline: Path, how: str, **privacy: Any) -> AegisLLMProxy:
    """A proxy on the rig whose detector is the NER backend, configured or handed over."""
    data = rig.config_data()
    if how == "configured":
        if not HAS_CONFIG_KEY:
            pytest.skip("LOUD: config has no privacy.ner_model yet: configured NER did NOT run")
        data["privacy"] = {"ner": "presidio", "ner_model": str(pipeline), **privacy}
        return AegisLLMProxy.from_config(rig.write_config(data))
    data["privacy"] = privacy
    detector = PresidioDetector(PiiDetector(), model=str(pipeline))
    return AegisLLMProxy(load_config(rig.write_config(data)), detector=detector)


# -- detection --------------------------------------------------------------------------------
def test_names_and_places_join_the_regex_matches(detector: PresidioDetector) -> None:
    """PERSON and LOCATION from the spaCy pipeline come back beside an email, in text order."""
    text = f"{NAME} flies from {PLACE} to Mont Blanc; write to m.okonkwo@example.org"
    assert found(detector, text) == [
        ("PERSON", NAME),
        ("LOCATION", PLACE),
        ("LOCATION", "Mont Blanc"),
        ("EMAIL", "m.okonkwo@example.org"),
    ]


def test_structured_pii_is_still_found_by_the_regex_detector(detector: PresidioDetector) -> None:
    """Without names, the backend finds exactly what the regex detector underneath finds."""
    text = (
        "Refund card 4111 1111 1111 1111 to IBAN DE89 3704 0044 0532 0130 00, "
        "call +44 20 7946 0958, SSN 123-45-6789, from 192.168.10.23."
    )
    expected = found(PiiDetector(), text)
    assert {kind for kind, _ in expected} >= {"CREDIT_CARD", "IBAN", "PHONE", "US_SSN"}
    assert found(detector, text) == expected


def test_request_counts_add_names_to_regex_counts(detector: PresidioDetector) -> None:
    """scan_messages counts NER types beside regex types, in every message and tool result."""
    messages = [
        {"role": "system", "content": "You help Jane Doe."},
        {"role": "user", "content": f"Book {NAME} a room in {PLACE}: jane@example.org"},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"city": "Lisbon"}'},
    ]
    report = detector.scan_messages(messages)
    assert dict(report.entity_counts) == {"PERSON": 2, "LOCATION": 2, "EMAIL": 1}


def test_a_regex_match_wins_over_an_overlapping_name(detector: PresidioDetector) -> None:
    """Where a name lies inside an email address, the email is the one match reported."""
    text = "jane.doe@example.org and Jane Doe"
    assert found(detector, text) == [("EMAIL", "jane.doe@example.org"), ("PERSON", "Jane Doe")]


def _filler(size: int) -> str:
    """``size`` characters of plain words, ending with a space."""
    words = "the quarterly figures were reviewed again "
    return (words * (size // len(words) + 1))[: size - 1] + " "


def test_text_longer_than_spacy_accepts_is_analysed_in_windows(
    detector: PresidioDetector,
) -> None:
    """Past spaCy's limit nothing is refused; a name in two windows counts once, a cut one whole."""
    shared = WINDOW - OVERLAP + 20  # "Jane Doe" lies in both the first and the second window
    cut = WINDOW - 5  # NAME straddles the end of the first window
    text = _filler(shared) + "Jane Doe " + _filler(cut - shared - 9) + NAME + " "
    text += _filler(1_000_000) + PLACE
    assert len(text) > 1_000_000
    assert text.index(NAME) == cut
    assert found(detector, text) == [("PERSON", "Jane Doe"), ("PERSON", NAME), ("LOCATION", PLACE)]


# -- routing ----------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["configured", "injected"])
async def test_a_name_keeps_the_request_local(rig: Rig, pipeline: Path, how: str) -> None:
    """A person and a place in a user message route to the local provider; clouds get nothing."""
    messages = [{"role": "user", "content": f"Draft a letter to {NAME}, who lives in {PLACE}."}]
    async with _proxy(rig, pipeline, how) as proxy:
        resp = await proxy.acompletion(messages, CRITICAL)
    assert resp.aegis.provider == "local_ollama"
    assert resp.aegis.pii_entities == {"PERSON": 1, "LOCATION": 1}
    assert set(resp.aegis.removed_providers) == {"openai", "ollama_cloud"}
    assert not rig.openai.chat_requests()
    assert not rig.cheap.chat_requests()
    assert len(rig.local.chat_requests()) == 1
    assert [row["contains_pii"] for row in _rows(rig)] == [1]


@pytest.mark.parametrize("how", ["configured", "injected"])
async def test_redact_mode_sends_placeholders_for_names(rig: Rig, pipeline: Path, how: str) -> None:
    """In redact mode the cloud receives <PERSON_1> and <LOCATION_1>; the caller gets the values."""
    rig.openai.reply_text = "Dear <PERSON_1>, greetings to <LOCATION_1>"
    messages = [{"role": "user", "content": f"Draft a letter to {NAME}, who lives in {PLACE}."}]
    async with _proxy(rig, pipeline, how, pii_action="redact") as proxy:
        resp = await proxy.acompletion(messages, CRITICAL)
    raw = rig.openai.chat_requests()[0].raw.decode()
    assert "Okonkwo" not in raw
    assert PLACE not in raw
    assert "<PERSON_1>" in raw
    assert "<LOCATION_1>" in raw
    assert resp.choices[0].message.content == f"Dear {NAME}, greetings to {PLACE}"


async def test_no_name_or_place_reaches_the_logs(
    rig: Rig, pipeline: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither our structlog events nor Presidio's and spaCy's stdlib logs hold a name or place."""
    caplog.set_level(logging.DEBUG)
    messages = [{"role": "user", "content": f"Draft a letter to {NAME}, who lives in {PLACE}."}]
    with capture_events() as logs:
        async with _proxy(rig, pipeline, "injected") as proxy:
            await proxy.acompletion(messages, CRITICAL)
    assert any(event["event"] == "ner_backend_loaded" for event in logs)
    everything = repr(logs) + caplog.text
    for value in ("Margarethe", "Okonkwo", PLACE):
        assert value not in everything


# -- failing closed ---------------------------------------------------------------------------
@pytest.mark.skipif(
    any(spacy.util.is_package(name) for name in SPACY_MODELS),
    reason="a spaCy English model is installed here",
)
def test_configured_ner_without_a_model_fails_startup(rig: Rig) -> None:
    """privacy.ner: presidio with Presidio but no spaCy model stops startup naming privacy.ner."""
    data = rig.config_data()
    data["privacy"] = {"ner": "presidio"}
    path = rig.write_config(data)
    with pytest.raises(ConfigError) as caught:
        build_runtime(load_config(path))
    assert (caught.value.key, caught.value.path) == ("privacy.ner", str(path))
    assert "no spaCy English model is installed" in caught.value.problem


def _blank_pipeline(tmp_path: Path) -> str:
    path = tmp_path / "blank_en"
    spacy.blank("en").to_disk(path)
    return str(path)


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        (lambda tmp: str(tmp / "missing"), "neither an installed package nor an existing folder"),
        (lambda tmp: "en_core_web_xl", "never downloaded"),
        (lambda tmp: str(tmp), "could not load spaCy model"),  # a folder, but no pipeline
        (_blank_pipeline, "sets no PERSON or LOCATION entities"),
    ],
    ids=["missing-folder", "not-installed", "not-a-pipeline", "no-entity-labels"],
)
def test_a_model_that_cannot_serve_fails_startup(tmp_path: Path, model: Any, problem: str) -> None:
    """A configured model that is absent, not a pipeline, or finds no names is a ConfigError."""
    with pytest.raises(ConfigError) as caught:
        PresidioDetector(PiiDetector(), source="aegis.yaml", model=model(tmp_path))
    assert (caught.value.key, caught.value.path) == ("privacy.ner_model", "aegis.yaml")
    assert problem in caught.value.problem
