"""What a config turns into at run time, swapped whole on reload.

What must always hold: a request uses one ``Runtime`` from start to end (the one current
when it started), so a reload never changes the rules, prices or clients under a request
in flight. A reload reuses the clients and circuit breakers of providers whose config did
not change (their connections and failure counts carry over); replaced clients are kept
until the proxy closes, because requests in flight may still use them.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aegis_proxy.call.client import ProviderClient
from aegis_proxy.call.resilience import CircuitBreaker, RetryPolicy
from aegis_proxy.classify.custom import Recognizer
from aegis_proxy.classify.detector import DETECTION_FAILED, ENTITY_TYPES, IMAGE, PiiDetector
from aegis_proxy.config import load_config
from aegis_proxy.errors import ConfigError
from aegis_proxy.observe.logs import get_logger
from aegis_proxy.settle.budget import budget_limits
from aegis_proxy.settle.records import BudgetLimit

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from aegis_proxy.classify.detector import PiiMatch, PiiReport
    from aegis_proxy.config import AegisConfig


log = get_logger("aegis_proxy")


class PiiScanner(Protocol):
    """What the proxy needs of a detector (``PiiDetector``, or a NER-backed one)."""

    def scan_messages(self, messages: Sequence[Mapping[str, Any]]) -> PiiReport: ...

    def scan_text(self, text: str) -> list[PiiMatch]: ...


@dataclass(frozen=True, slots=True)
class Runtime:
    config: AegisConfig
    clients: dict[str, ProviderClient]
    breakers: dict[str, CircuitBreaker]
    budgets: dict[str, BudgetLimit | None]
    retry: RetryPolicy
    detector: PiiScanner
    allowed_params: frozenset[str] = frozenset()
    """Parameters beyond the OpenAI chat API that some provider lists in allow_params."""


def build_runtime(
    config: AegisConfig, previous: Runtime | None = None, detector: PiiScanner | None = None
) -> Runtime:
    """A runtime for ``config``, reusing what ``previous`` had for unchanged providers."""
    check_entity_actions(config)
    old_clients = previous.clients if previous else {}
    old_breakers = previous.breakers if previous else {}
    clients, breakers = {}, {}
    res = config.resilience
    for name, provider in config.providers.items():
        old = old_clients.get(name)
        clients[name] = old if old and old.config == provider else ProviderClient(name, provider)
        breaker = old_breakers.get(name)
        if breaker is None or (breaker.failures, breaker.cooldown_s) != (
            res.breaker_failures,
            res.breaker_cooldown_s,
        ):
            breaker = CircuitBreaker(name, res.breaker_failures, res.breaker_cooldown_s)
        breakers[name] = breaker
    return Runtime(
        config=config,
        clients=clients,
        breakers=breakers,
        budgets=budget_limits(config),
        retry=RetryPolicy(res.retries, res.backoff_s, res.max_backoff_s),
        detector=detector or _detector(config, previous),
        allowed_params=frozenset(p for c in config.providers.values() for p in c.allow_params),
    )


def reload_runtime(old: Runtime, detector: PiiScanner | None = None) -> Runtime | None:
    """A runtime for the config file as it is now; None (logged) when the file is bad."""
    source = old.config.source
    try:
        config = load_config(source)
        runtime = build_runtime(config, old, detector)
    except ConfigError as exc:
        log.error("config_reload_failed", path=exc.path, config_entry=exc.key, problem=exc.problem)
        return None
    if config.ledger != old.config.ledger:
        log.warning("config_reload_ledger_change_ignored")
    log.info("config_reloaded", path=source, rules=len(config.routing.rules))
    return runtime


async def watch_file(
    path: Callable[[], str], interval_s: float, changed: Callable[[], object]
) -> None:
    """Call ``changed`` whenever the file at ``path()`` changes (polled every ``interval_s``)."""
    stamp = _mtime(path())
    while True:
        await asyncio.sleep(interval_s)
        current = _mtime(path())
        if current != stamp:
            stamp = current
            changed()


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def _detector(config: AegisConfig, previous: Runtime | None) -> PiiScanner:
    privacy = config.privacy
    if previous is not None and previous.config.privacy.model_dump(
        include=_DETECTOR_KEYS
    ) == privacy.model_dump(include=_DETECTOR_KEYS):
        return previous.detector
    recognizers = [
        Recognizer(item.name, item.pattern, tuple(item.context), item.context_window)
        for item in privacy.recognizers
    ]
    entities = set(privacy.entities) if privacy.entities is not None else None
    try:
        detector = PiiDetector(entities=entities, allow=privacy.allow, recognizers=recognizers)
    except ValueError as exc:  # an unknown entity type
        raise ConfigError(config.source, "privacy.entities", str(exc)) from None
    if privacy.ner == "presidio":
        from aegis_proxy.classify.ner import PresidioDetector  # an optional extra: load on demand

        return PresidioDetector(detector, source=config.source, model=privacy.ner_model)
    return detector


_DETECTOR_KEYS = {"entities", "allow", "recognizers", "ner", "ner_model"}


def check_entity_actions(config: AegisConfig) -> None:
    """Raise ConfigError for an ``entity_actions`` key no detector of this config reports."""
    privacy = config.privacy
    known = {*ENTITY_TYPES, IMAGE, DETECTION_FAILED, *(r.name for r in privacy.recognizers)}
    if privacy.ner == "presidio":
        from aegis_proxy.classify.ner import NER_ENTITIES  # Presidio itself loads only when used

        known.update(NER_ENTITIES)
    for name in privacy.entity_actions:
        if name not in known:
            problem = f"unknown entity type {name!r}; known: {', '.join(sorted(known))}"
            raise ConfigError(config.source, f"privacy.entity_actions.{name}", problem)
