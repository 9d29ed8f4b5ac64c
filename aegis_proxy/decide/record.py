"""The routing record attached to every response as ``resp.aegis``, and its attempts.

What must always hold: the record holds names, numbers and outcomes only: never prompt
text, response text or keys.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from aegis_proxy.decide.plan import Plan

Outcome = Literal[
    "ok", "error", "cancelled", "skipped", "budget_exceeded", "ledger_unavailable", "cache_hit"
]
"""What came of one provider on a request's route."""


class Attempt(BaseModel):
    """One provider the proxy tried or skipped, and what came of it."""

    model_config = ConfigDict(frozen=True)

    provider: str
    model: str
    outcome: Outcome
    breaker: str = "closed"  # the provider's circuit state when tried: closed|open|half_open
    error_type: str | None = None
    reason: str | None = None
    latency_ms: float | None = None


class AegisRecord(BaseModel):
    """The routing record attached to every response as ``resp.aegis``."""

    request_id: str
    provider: str | None = None
    model: str | None = None
    rule: str
    reason: str
    cost_usd: Decimal = Decimal(0)
    input_tokens: int = 0
    output_tokens: int = 0
    tokens_counted: bool = False
    contains_pii: bool
    pii_entities: dict[str, int] = {}
    removed_providers: list[str] = []
    privacy_action: str = "none"  # none | route_local | redact (see privacy.pii_action)
    attempts: list[Attempt] = []

    @classmethod
    def from_plan(cls, plan: Plan) -> AegisRecord:
        """The record of a planned request, before any attempt."""
        return cls(
            request_id=plan.request_id,
            rule=plan.route.rule,
            reason=plan.route.reason,
            contains_pii=plan.contains_pii,
            pii_entities=plan.pii_entities,
            removed_providers=list(plan.route.removed),
            privacy_action=plan.privacy.action if plan.privacy else "none",
        )
