"""Classify a request: which personal data it holds, and whether it may be redacted.

What must always hold (fail closed): a detector that raises means the request holds PII
(``DETECTION_FAILED``); a redaction that raises, or leaves anything a second scan still
finds, means the request stays local. Declared ``pii``, images and detector failures are
never redacted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from aegis_proxy.redaction import Redaction

if TYPE_CHECKING:
    from aegis_proxy.policy import LLMTask
    from aegis_proxy.runtime import Runtime

log = structlog.get_logger("aegis_proxy")

DETECTION_FAILED = "DETECTION_FAILED"
IMAGE = "IMAGE"  # an image part: unscannable, so personal data unless images: allow_cloud


def try_redact(
    rt: Runtime, messages: list[dict[str, Any]], entities: dict[str, int], task: LLMTask
) -> tuple[Redaction, list[dict[str, Any]]] | None:
    """Redact for ``pii_action: redact``; None when the request must stay local instead.

    Declared ``pii``, images and detector failures cannot be redacted; and a redacted copy
    that still scans as PII (a value in a part we do not rewrite) stays local.
    """
    unredactable = {IMAGE, DETECTION_FAILED} & entities.keys()
    if rt.config.privacy.pii_action != "redact" or unredactable:
        return None
    if task.data_classification == "pii":
        return None
    redaction = Redaction(rt.detector)
    try:
        outgoing = redaction.redact_messages(messages)
    except Exception as exc:  # fail closed: stay local
        log.error("pii_redaction_failed", error_type=type(exc).__name__)
        return None
    return None if scan_request(rt, outgoing) else (redaction, outgoing)


def scan_request(rt: Runtime, messages: list[dict[str, Any]]) -> dict[str, int]:
    """Entity counts of every part of the request; a detector failure counts as PII."""
    try:
        return dict(rt.detector.scan_messages(messages).entity_counts)
    except Exception as exc:  # fail closed: a detector that cannot tell means PII
        log.error("pii_detection_failed", error_type=type(exc).__name__)
        return {DETECTION_FAILED: 1}
