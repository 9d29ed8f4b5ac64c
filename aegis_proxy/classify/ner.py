"""An optional NER backend: Microsoft Presidio finds what regexes cannot (names, places).

Why it exists: the regex detector (``classify.detector``) finds structured values fast and
needs nothing; person names and locations need a language model. Users who install the
``ner`` extra (``presidio-analyzer``, which brings spaCy) set ``privacy.ner: presidio``
and either install a spaCy English package or point ``privacy.ner_model`` at one: a
package name (``en_core_web_lg``) or the folder of a saved pipeline (``nlp.to_disk``).

What must always hold:
- the regex detector still runs on every string: the NER backend only adds PERSON and
  LOCATION, where a regex match and an NER match overlap the regex match is kept;
- if ``privacy.ner: presidio`` is configured but Presidio or the spaCy model cannot load,
  or the model sets neither names nor places, building the detector raises
  ``ConfigError`` naming ``privacy.ner`` (or ``privacy.ner_model`` when the configured
  model is the problem): never a silent downgrade to weaker detection;
- a model is never downloaded at run time (Presidio would otherwise fetch a missing one);
- texts longer than spaCy accepts are analysed in overlapping windows, never refused;
- like the regex detector, any error while scanning propagates (the caller fails closed),
  and nothing here logs text or matched values.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
from bisect import bisect_right
from collections import Counter
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from aegis_proxy.classify.detector import PiiDetector, PiiMatch, PiiReport
from aegis_proxy.classify.walk import SKIPPED_KEYS, iter_strings
from aegis_proxy.errors import ConfigError
from aegis_proxy.observe.logs import get_logger

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

log = get_logger("aegis_proxy")

NER_ENTITIES = ("PERSON", "LOCATION")
SPACY_MODELS = ("en_core_web_lg", "en_core_web_md", "en_core_web_sm", "en_core_web_trf")
"""English spaCy packages tried in this order when no model is configured."""
LANGUAGE = "en"
WINDOW = 100_000
"""Characters per analysis: spaCy refuses texts over ``nlp.max_length`` (1,000,000 by
default) and its memory grows with length, so longer texts go in overlapping windows."""
OVERLAP = 200
"""Characters two windows share, so that a name cut by one window's edge is whole in the next."""
_LETTER = re.compile(r"[^\W\d_]")


class Analyzer(Protocol):
    """The part of Presidio's ``AnalyzerEngine`` used here."""

    def analyze(self, text: str, language: str, entities: list[str]) -> list[Any]: ...


class PresidioDetector:
    """The regex detector plus PERSON and LOCATION from Presidio's analyzer.

    ``model`` is a spaCy package name or pipeline folder (``privacy.ner_model``); without
    it the first installed package of ``SPACY_MODELS`` is used.
    """

    def __init__(
        self,
        regex: PiiDetector,
        *,
        source: str = "",
        model: str | None = None,
        analyzer: Analyzer | None = None,
    ) -> None:
        self.regex = regex
        self.entities = regex.entities | frozenset(NER_ENTITIES)
        self._analyzer = analyzer if analyzer is not None else load_analyzer(source, model)

    def scan_text(self, text: str) -> list[PiiMatch]:
        """Regex matches, plus NER matches that overlap none of them, in text order."""
        found = self.regex.scan_text(text)
        return sorted([*found, *self._ner_outside(text, found)], key=_position)

    def scan_messages(self, messages: Sequence[Mapping[str, Any]]) -> PiiReport:
        """The regex report, plus NER entity counts over every string of every message."""
        counts: Counter[str] = Counter(self.regex.scan_messages(messages).entity_counts)
        for text in iter_strings(messages, SKIPPED_KEYS):
            found = self.regex.scan_text(text)
            counts.update(match.entity_type for match in self._ner_outside(text, found))
        return PiiReport(MappingProxyType(dict(counts)))

    def _ner_outside(self, text: str, found: list[PiiMatch]) -> list[PiiMatch]:
        """NER matches in ``text`` that overlap none of ``found`` (a regex match is sharper)."""
        if not _LETTER.search(text):
            return []  # no letter, no name
        covered = _union(found)
        ends = [end for _, end in covered]
        kept = []
        for match in self._ner(text):
            index = bisect_right(ends, match.start)  # the first covered span ending after it
            if index == len(covered) or covered[index][0] >= match.end:
                kept.append(match)
        return kept

    def _ner(self, text: str) -> list[PiiMatch]:
        """PERSON and LOCATION spans, window by window; a span cut by an edge is joined."""
        spans: list[PiiMatch] = []
        for offset, window in text_windows(text):
            results = self._analyzer.analyze(window, language=LANGUAGE, entities=[*NER_ENTITIES])
            spans.extend(
                PiiMatch(str(result.entity_type), offset + result.start, offset + result.end)
                for result in results
            )
        return _joined(spans)


def _position(match: PiiMatch) -> tuple[int, int]:
    return match.start, match.end


def text_windows(text: str) -> Iterator[tuple[int, str]]:
    """``(offset, window)`` pairs covering ``text``, each ``WINDOW`` long, sharing ``OVERLAP``."""
    for offset in range(0, max(len(text) - OVERLAP, 1), WINDOW - OVERLAP):
        yield offset, text[offset : offset + WINDOW]


def _joined(spans: list[PiiMatch]) -> list[PiiMatch]:
    """Overlapping spans of one type joined into one; of two types, the earlier one kept."""
    kept: list[PiiMatch] = []
    for span in sorted(spans, key=lambda span: (span.start, -span.end)):
        last = kept[-1] if kept else None
        if last is None or span.start >= last.end:
            kept.append(span)
        elif span.entity_type == last.entity_type and span.end > last.end:
            kept[-1] = PiiMatch(last.entity_type, last.start, span.end)
    return kept


def _union(matches: list[PiiMatch]) -> list[tuple[int, int]]:
    """The ``[start, end)`` ranges that ``matches`` cover, sorted and disjoint."""
    covered: list[tuple[int, int]] = []
    for match in sorted(matches, key=_position):
        if covered and match.start < covered[-1][1]:
            covered[-1] = (covered[-1][0], max(covered[-1][1], match.end))
        else:
            covered.append((match.start, match.end))
    return covered


# -- loading ----------------------------------------------------------------------------------
def load_analyzer(source: str = "", model: str | None = None) -> Analyzer:
    """Presidio's analyzer on ``model`` (else the first installed package), or ConfigError."""
    if importlib.util.find_spec("presidio_analyzer") is None:
        raise ConfigError(source, "privacy.ner", _missing("presidio-analyzer is not installed"))
    key, name = _chosen_model(source, model)
    try:
        engine = _analyzer_engine(name)
    except Exception as exc:  # any failure to load must stop startup, whatever its type
        problem = f"presidio could not load spaCy model {name}: {type(exc).__name__}: {exc}"
        raise ConfigError(source, key, problem) from exc
    log.info("ner_backend_loaded", backend="presidio", model=name)
    return engine


def _chosen_model(source: str, model: str | None) -> tuple[str, str]:
    """The config key that chose the model, and the model's name or folder."""
    if model is None:
        name = next((name for name in SPACY_MODELS if _installed(name)), None)
        if name is None:
            problem = _missing("no spaCy English model is installed")
            raise ConfigError(source, "privacy.ner", problem)
        return "privacy.ner", name
    if not (Path(model).exists() or _installed(model)):
        problem = (
            f"spaCy model {model!r} is neither an installed package nor an existing folder "
            "(models are never downloaded at run time)"
        )
        raise ConfigError(source, "privacy.ner_model", problem)
    return "privacy.ner_model", model


def _installed(name: str) -> bool:
    """Whether ``name`` is an installed distribution: Presidio's test before it downloads."""
    try:
        importlib.metadata.distribution(name)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False
    return True


def _analyzer_engine(model: str) -> Analyzer:
    """Presidio's analyzer with only its spaCy recognizer, for English, on ``model``."""
    presidio: Any = importlib.import_module("presidio_analyzer")
    engines: Any = importlib.import_module("presidio_analyzer.nlp_engine")
    nlp_configuration = {
        "nlp_engine_name": "spacy",
        "models": [{"lang_code": LANGUAGE, "model_name": model}],
    }
    nlp_engine = engines.NlpEngineProvider(nlp_configuration=nlp_configuration).create_engine()
    _require_entity_labels(nlp_engine, model)
    registry = presidio.RecognizerRegistry(supported_languages=[LANGUAGE])
    registry.add_nlp_recognizer(nlp_engine=nlp_engine)
    engine: Analyzer = presidio.AnalyzerEngine(
        registry=registry, nlp_engine=nlp_engine, supported_languages=[LANGUAGE]
    )
    return engine


def _require_entity_labels(nlp_engine: Any, model: str) -> None:
    """Refuse a pipeline that can set neither PERSON nor LOCATION (it would find nothing)."""
    mapping = nlp_engine.ner_model_configuration.model_to_presidio_entity_mapping or {}
    labels = {
        str(label)
        for labels in nlp_engine.get_nlp(LANGUAGE).pipe_labels.values()
        for label in labels
    }
    if not {mapping.get(label, label) for label in labels} & set(NER_ENTITIES):
        found = ", ".join(sorted(labels)) or "none"
        raise ValueError(f"pipeline {model} sets no PERSON or LOCATION entities (labels: {found})")


def _missing(what: str) -> str:
    return (
        f"'presidio' is configured but {what}; install the 'ner' extra and a spaCy English "
        "model (python -m spacy download en_core_web_lg) or set privacy.ner_model to a "
        "pipeline folder, or set privacy.ner: none"
    )
