"""Classify a request: which personal data it holds, and whether it may be redacted.

What must always hold (fail closed): a detector that raises means the request holds PII
(``DETECTION_FAILED``); a redaction that raises, or leaves anything a second scan still
finds, means the request stays local. Declared ``pii``, images and detector failures are
never redacted.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from aegis_proxy.classify.detector import DETECTION_FAILED, UNREDACTABLE
from aegis_proxy.classify.redaction import Redaction
from aegis_proxy.decide.rules import restrict_to_local
from aegis_proxy.errors import PrivacyViolationError
from aegis_proxy.observe.logs import get_logger
from aegis_proxy.settle.records import PrivacyDecision, PrivacyRefusal

if TYPE_CHECKING:
    from collections.abc import Mapping

    from aegis_proxy.config.sections import PrivacyConfig
    from aegis_proxy.decide.rules import LLMTask, Route
    from aegis_proxy.runtime import Runtime

log = get_logger("aegis_proxy")

_STRICTNESS = ("redact", "route_local", "block")
Payload = tuple[list[dict[str, Any]], dict[str, Any]]
"""A request's messages and its chat parameters: everything that would be sent."""


@dataclass(frozen=True, slots=True)
class Protection:
    """A request after its privacy action: what is sent, where it may go, and why."""

    decision: PrivacyDecision | None  # None: no personal data
    route: Route
    messages: list[dict[str, Any]]  # redacted when the decision is redact
    params: dict[str, Any]  # likewise
    redaction: Redaction | None = None


def privacy_action(privacy: PrivacyConfig, entities: Mapping[str, int], declared: bool) -> str:
    """The action for a request's personal data: the strictest of its entity types' actions.

    A type takes its ``entity_actions`` entry, else ``pii_action``; declared ``pii`` takes
    ``pii_action`` but cannot be redacted (it stays local). 'none' without personal data.
    """
    actions = {privacy.entity_actions.get(kind, privacy.pii_action) for kind in entities}
    if declared:
        actions.add("block" if privacy.pii_action == "block" else "route_local")
    return max(actions, key=_STRICTNESS.index, default="none")


def protect(
    rt: Runtime,
    payload: Payload,
    task: LLMTask,
    entities: dict[str, int],
    route: Route,
) -> Protection:
    """Apply the privacy action to the payload (messages, parameters).

    ``PrivacyViolationError`` when the request must not go out.
    """
    messages, params = payload
    action = privacy_action(rt.config.privacy, entities, task.data_classification == "pii")
    if action == "none":
        return Protection(None, route, messages, params)
    if action == "block":
        raise PrivacyViolationError(sorted(entities), route.providers, blocked=True)
    counts = tuple(sorted(entities.items()))
    redacted = try_redact(rt, payload, entities) if action == "redact" else None
    if redacted is not None:
        redaction, (messages, params) = redacted
        route = replace(route, reason=f"{route.reason}; personal data redacted")
        return Protection(PrivacyDecision(counts, "redact"), route, messages, params, redaction)
    route = restrict_to_local(route, rt.config.providers, sorted(entities))
    decision = PrivacyDecision(counts, "route_local", route.removed)
    return Protection(decision, route, messages, params)


def refusal_of(
    exc: PrivacyViolationError,
    entities: dict[str, int],
    rule: str,
    task: LLMTask,
    query_hash: str,
) -> PrivacyRefusal:
    """The audit record of a refused request (entity types and counts, never values)."""
    action = "block" if exc.blocked else "route_local"
    decision = PrivacyDecision(tuple(sorted(entities.items())), action, exc.removed)
    return PrivacyRefusal(
        request_id=uuid.uuid4().hex,
        query_hash=query_hash,
        rule=rule,
        task_type=task.task_type,
        data_classification=task.data_classification,
        decision=decision,
        reason="blocked" if exc.blocked else "no_local_provider",
        user_id=task.user_id,
        agent=task.agent,
    )


def try_redact(
    rt: Runtime, payload: Payload, entities: dict[str, int]
) -> tuple[Redaction, Payload] | None:
    """Redact the payload (messages and parameters); None when it must stay local instead.

    Images, binary parts and detector failures cannot be redacted (nor declared ``pii``,
    whose action is never redact); a redacted copy that still scans as PII (a value in a
    part we do not rewrite, a key) stays local.
    """
    if UNREDACTABLE & entities.keys():
        return None
    redaction = Redaction(rt.detector)
    try:
        outgoing = (redaction.redact_messages(payload[0]), redaction.redact_params(payload[1]))
    except Exception as exc:  # fail closed: stay local
        log.error("pii_redaction_failed", error_type=type(exc).__name__)
        return None
    return None if scan_request(rt, outgoing) else (redaction, outgoing)


def scan_request(rt: Runtime, payload: object) -> dict[str, int]:
    """Entity counts of every string of ``payload`` (the walk: ``classify.walk``).

    A detector failure counts as PII.
    """
    try:
        return dict(rt.detector.scan_messages(_as_sequence(payload)).entity_counts)
    except Exception as exc:  # fail closed: a detector that cannot tell means PII
        log.error("pii_detection_failed", error_type=type(exc).__name__)
        return {DETECTION_FAILED: 1}


def _as_sequence(payload: object) -> list[Any]:
    """The payload as the detector's ``scan_messages`` takes it: one list to walk."""
    if isinstance(payload, tuple):
        messages, params = payload
        return [*messages, params] if params else list(messages)
    return payload if isinstance(payload, list) else [payload]
