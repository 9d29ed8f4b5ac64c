"""An optional NER backend: Microsoft Presidio finds what regexes cannot (names, places).

Why it exists: the regex detector (``aegis_proxy.pii``) finds structured values fast and
needs nothing; person names and locations need a language model. Users who install
``presidio-analyzer`` and a spaCy English model set ``privacy.ner: presidio``.

What must always hold:
- the regex detector still runs on every string: the NER backend only adds PERSON and
  LOCATION, where a regex match and an NER match overlap the regex match is kept;
- if ``privacy.ner: presidio`` is configured but Presidio or a spaCy model cannot load,
  building the detector raises ``ConfigError`` naming ``privacy.ner``: never a silent
  downgrade to weaker detection;
- like the regex detector, any error while scanning propagates (the caller fails closed).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections import Counter
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from aegis_proxy.errors import ConfigError
from aegis_proxy.pii import PiiDetector, PiiMatch, PiiReport, iter_strings

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

NER_ENTITIES = ("PERSON", "LOCATION")
SPACY_MODELS = ("en_core_web_lg", "en_core_web_md", "en_core_web_sm", "en_core_web_trf")
"""English spaCy models tried in this order; the first one installed is used."""
_SKIPPED_KEYS = frozenset({"role", "type", "tool_call_id", "id"})


class Analyzer(Protocol):
    """The part of Presidio's ``AnalyzerEngine`` used here."""

    def analyze(self, text: str, language: str, entities: list[str]) -> list[Any]: ...


class PresidioDetector:
    """The regex detector plus PERSON and LOCATION from Presidio's analyzer."""

    def __init__(
        self, regex: PiiDetector, *, source: str = "", analyzer: Analyzer | None = None
    ) -> None:
        self.regex = regex
        self.entities = regex.entities | frozenset(NER_ENTITIES)
        self._analyzer = analyzer if analyzer is not None else load_analyzer(source)

    def scan_text(self, text: str) -> list[PiiMatch]:
        """Regex matches, plus NER matches that overlap none of them, in text order."""
        found = self.regex.scan_text(text)
        for result in self._analyzer.analyze(text, language="en", entities=list(NER_ENTITIES)):
            start, end = int(result.start), int(result.end)
            if not any(start < match.end and match.start < end for match in found):
                found.append(PiiMatch(str(result.entity_type), start, end))
        return sorted(found, key=lambda match: (match.start, match.end))

    def scan_messages(self, messages: Sequence[Mapping[str, Any]]) -> PiiReport:
        """The regex report, plus NER entity counts over every string of every message."""
        counts: Counter[str] = Counter(self.regex.scan_messages(messages).entity_counts)
        for text in iter_strings(messages, _SKIPPED_KEYS):
            for result in self._analyzer.analyze(text, language="en", entities=list(NER_ENTITIES)):
                counts[str(result.entity_type)] += 1
        return PiiReport(MappingProxyType(dict(counts)))


def load_analyzer(source: str = "") -> Analyzer:
    """Presidio's ``AnalyzerEngine`` on the first installed spaCy model, else ConfigError."""
    if importlib.util.find_spec("presidio_analyzer") is None:
        raise ConfigError(source, "privacy.ner", _missing("presidio-analyzer is not installed"))
    model = next((name for name in SPACY_MODELS if importlib.util.find_spec(name)), None)
    if model is None:
        raise ConfigError(source, "privacy.ner", _missing("no spaCy English model is installed"))
    try:
        presidio: Any = importlib.import_module("presidio_analyzer")
        nlp: Any = importlib.import_module("presidio_analyzer.nlp_engine")
        models = [{"lang_code": "en", "model_name": model}]
        provider = nlp.NlpEngineProvider(
            nlp_configuration={"nlp_engine_name": "spacy", "models": models}
        )
        engine: Analyzer = presidio.AnalyzerEngine(nlp_engine=provider.create_engine())
    except Exception as exc:  # any failure to load must stop startup, whatever its type
        problem = f"presidio could not load spaCy model {model}: {type(exc).__name__}: {exc}"
        raise ConfigError(source, "privacy.ner", problem) from exc
    return engine


def _missing(what: str) -> str:
    return (
        f"'presidio' is configured but {what}; install presidio-analyzer and a spaCy "
        "English model (python -m spacy download en_core_web_lg), or set privacy.ner: none"
    )
