"""What a proxy event means, as bounded metric label values.

The Prometheus observer (``aegis_proxy.observe.metrics``) labels every series with these, so they
are kept apart from any metrics library and can be read and tested as plain functions.
What must always hold: every value comes from the config (provider, model and rule
names) or from a fixed set (outcomes, reasons, skip categories); an error kind that is not
a short snake_case word becomes ``other``. No user id, request id, prompt, response or key
is ever returned.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from aegis_proxy.decide.rules import DEFAULT_RULE

if TYPE_CHECKING:
    from collections.abc import Sequence

    from aegis_proxy.config import AegisConfig
    from aegis_proxy.decide.record import AegisRecord, Attempt
    from aegis_proxy.observe.events import RequestEvent

NONE = "none"  # the provider/model label of a request no provider served
_ERROR_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")
_SKIP_CATEGORIES = (  # a fragment of Attempt.reason -> its category, first match wins
    ("circuit breaker", "breaker"),
    ("personal data", "privacy"),
    ("max_cost_usd", "budget"),
    ("deadline", "deadline"),
)


def skip_category(reason: str | None) -> str:
    """The category of a skipped candidate's reason: breaker, privacy, budget, deadline or
    unavailable (missing key or SDK, no vision)."""
    text = (reason or "").lower()
    for fragment, category in _SKIP_CATEGORIES:
        if fragment in text:
            return category
    return "unavailable"


def reason_of(attempt: Attempt) -> str:
    """Why an attempt did not serve: an error kind, a skip category, or '' when it did."""
    if attempt.outcome in ("ok", "cache_hit"):
        return ""
    if attempt.outcome == "budget_exceeded":
        return "budget"
    if attempt.outcome == "skipped":
        return skip_category(attempt.reason)
    if attempt.outcome == "cancelled":
        return "cancelled"
    kind = attempt.error_type or ""
    return kind if _ERROR_KIND.fullmatch(kind) else "other"


def fallback_reason(attempt: Attempt) -> str:
    """budget, error, breaker, privacy, deadline or unavailable."""
    if attempt.outcome == "budget_exceeded":
        return "budget"
    if attempt.outcome == "skipped":
        return skip_category(attempt.reason)
    return "error"


def request_outcome(event: RequestEvent) -> str:
    """ok, no_provider, or how the served stream ended (error, cancelled)."""
    if event.error is None:
        return "ok"
    if event.error == "NoProviderAvailableError":
        return "no_provider"
    attempts = event.record.attempts
    last = attempts[-1].outcome if attempts else "error"
    return last if last in ("error", "cancelled") else "error"


def served_by(record: AegisRecord, outcome: str) -> tuple[str, str]:
    """(provider, model) that served the request, or whose stream failed; else none."""
    if outcome == "ok":
        return record.provider or NONE, record.model or NONE
    if outcome in ("error", "cancelled") and record.attempts:
        return record.attempts[-1].provider, record.attempts[-1].model
    return NONE, NONE


def fallbacks(record: AegisRecord, route: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(provider, reason) of each provider a served request passed over.

    A retry that ends at the same provider is no fallback. Providers the privacy
    invariant removed count when they came before the serving one in the rule's ``route``
    (all of them when the route is unknown).
    """
    passed: dict[str, str] = {}
    for attempt in record.attempts:
        if attempt.provider != record.provider:
            passed[attempt.provider] = fallback_reason(attempt)  # the last reason wins
    removed = record.removed_providers
    if route is not None and record.provider in route:
        ahead = set(route[: route.index(record.provider)])
        removed = [name for name in removed if name in ahead]
    for name in removed:
        passed.setdefault(name, "privacy")
    return list(passed.items())


def route_orders(config: AegisConfig) -> dict[str, tuple[str, ...]]:
    """Each rule's providers in route order (the default route under 'default')."""
    routes = {rule.name: tuple(e.provider for e in rule.route) for rule in config.routing.rules}
    routes[DEFAULT_RULE] = tuple(e.provider for e in config.routing.default)
    return routes
