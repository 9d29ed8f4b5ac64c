"""Plan a request before anything leaves: validate, classify, decide the route, protect.

What must always hold: a plan is made without any network call or ledger row; a malformed
request raises ``RequestValidationError``, a request that must not go out raises
``PrivacyViolationError`` (carrying its audit ``refusal``); a plan's ``messages`` and
``params`` are the payload providers receive (a plain-JSON deep copy of the caller's,
``decide.payload``; redacted when the decision is ``redact``), every string of both was
scanned, and ``local_only`` is true whenever they hold personal data (images and binary
parts included, unless the privacy config allows them to a cloud).

The query hash: a plan is made before (and without) the ledger, so ``Plan.query_hash`` is
the plain SHA-256 of the validated messages, in memory only: it places the request in a
``percent`` split. The ledger never stores it as is: each row and refusal gets
``HMAC-SHA256(ledger key, digest)`` when written (``aegis_proxy.settle.records``), with a
key generated once per ledger (migration m005) and never logged, so a templated prompt's
phone number cannot be brute-forced from the ledger. The same messages give the same
stored hash within one ledger, different ones across ledgers. The response cache keys on
the messages themselves (``aegis_proxy.call.cache``), not on this hash; replay and simulate
read the stored (keyed) hash as a split's traffic key, so they split the same share of
user-less requests, though not necessarily the same ones as when they were served.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aegis_proxy.classify.detector import BINARY, IMAGE
from aegis_proxy.decide.payload import has_binary, has_images
from aegis_proxy.decide.privacy import protect, refusal_of, scan_request
from aegis_proxy.decide.request import query_hash, validate_messages, validate_task
from aegis_proxy.decide.rules import LLMTask, decide_route
from aegis_proxy.decide.values import plain_copy
from aegis_proxy.errors import PrivacyViolationError
from aegis_proxy.observe.logs import get_logger

if TYPE_CHECKING:
    from aegis_proxy.classify.redaction import Redaction
    from aegis_proxy.decide.rules import Route
    from aegis_proxy.runtime import Runtime
    from aegis_proxy.settle.records import PrivacyDecision

log = get_logger("aegis_proxy")


@dataclass(slots=True)
class Plan:
    """Everything decided before the first network call."""

    messages: list[dict[str, Any]]  # as sent: redacted when the request is redacted
    task: LLMTask
    route: Route
    pii_entities: dict[str, int]
    contains_pii: bool
    images: bool
    query_hash: str  # plain digest of the messages, in memory only: the ledger keys it
    params: dict[str, Any] = field(default_factory=dict)  # as sent, like messages
    redaction: Redaction | None = None
    privacy: PrivacyDecision | None = None  # None: no personal data
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def local_only(self) -> bool:
        """Whether only local providers may receive this request's messages."""
        return self.contains_pii and self.redaction is None


def plan_request(
    rt: Runtime,
    messages: object,
    task: object,
    params: dict[str, Any] | None = None,
) -> Plan:
    """Validate, scan for PII, route and apply the privacy action, without any network call.

    ``params`` must have passed ``decide.params.validate_params``.
    """
    checked = validate_messages(messages)
    sent = {name: plain_copy(value, name) for name, value in (params or {}).items()}
    task = validate_task(task)
    entities = scan_request(rt, (checked, sent))
    images = has_images(checked)
    privacy = rt.config.privacy
    if images and privacy.images == "local_only":
        entities[IMAGE] = entities.get(IMAGE, 0) + 1
    if privacy.binary_parts == "local_only" and has_binary(checked):
        entities[BINARY] = entities.get(BINARY, 0) + 1
    contains_pii = bool(entities) or task.data_classification == "pii"
    digest = query_hash(checked)
    route = decide_route(rt.config.routing, task, digest)
    try:
        protection = protect(rt, (checked, sent), task, entities, route)
    except PrivacyViolationError as exc:
        raise exc.with_refusal(refusal_of(exc, entities, route.rule, task, digest)) from None
    route = protection.route
    plan = Plan(protection.messages, task, route, entities, contains_pii, images, digest,
                protection.params, protection.redaction, protection.decision)  # fmt: skip
    log.info(
        "route_decided",
        request_id=plan.request_id,
        rule=route.rule,
        providers=list(route.providers),
        removed=list(route.removed),
        contains_pii=contains_pii,
        pii_entities=sorted(entities),
    )
    return plan
