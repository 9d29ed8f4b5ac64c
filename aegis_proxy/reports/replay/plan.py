"""The replay's decisions: where a recorded (or declared) request would go under a config.

``aegis-proxy simulate`` replays thousands of requests that share a few distinct sets of
routing inputs, so each set (a ``Key``) is decided once and the decision is kept with its
candidates' prices as integers. What must always hold:

- a decision is the one the proxy makes: ``policy.decide_route`` for the route, then the
  privacy action of ``classify.privacy_action`` (from the recorded entity types; rows
  recorded before migration m004 and workload lines carry none, and take ``pii_action``),
  with ``policy.restrict_to_local`` for ``route_local``. A redaction is assumed to succeed,
  except for the entity types the proxy never redacts (images, a failed detection);
- a candidate's cost is ``pricing.cost_micros`` to the micro-dollar (rounded up), computed
  with integers only: rates are scaled by one power of ten, exactly;
- a decision never holds a provider the projection treats as unavailable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import ValidationError

from aegis_proxy.classify.detector import UNREDACTABLE
from aegis_proxy.decide.privacy import privacy_action
from aegis_proxy.decide.rules import LLMTask, decide_route, restrict_to_local
from aegis_proxy.errors import PrivacyViolationError
from aegis_proxy.reserve.money import limit_micros

if TYPE_CHECKING:
    from aegis_proxy.config import AegisConfig
    from aegis_proxy.config.routing import RouteEntry
    from aegis_proxy.decide.rules import Route
    from aegis_proxy.reserve.pricing import Price

Key = str
"""JSON array of what a decision depends on, after the rule that actually fired (null for
a workload): [rule, task_type, quality, complexity, batch_size, data_classification,
agent, tags (JSON text), contains_pii, pii_entities (JSON text, '{}' when unrecorded)] and,
when a rule splits traffic, [user_id, query_hash]. Few distinct values, so each is decided
once. The stored query_hash is keyed (``settle.records.keyed_hash``): a user-less split
lands the same share of requests on each side as live, not necessarily the same ones."""
Entry = tuple[str, Key, int, int, int]
"""One request to replay: (UTC ISO timestamp, key, input, output, cached input tokens)."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A route entry with integer prices: cost = ceil(tokens x rates / scale)."""

    name: str
    local: bool
    rates: tuple[int, int, int]  # input, output, cached input
    scale: int
    monthly: int | None
    daily: int | None
    budgeted: bool

    def cost(self, tokens_in: int, tokens_out: int, cached: int) -> int:
        uncached = tokens_in - cached if cached <= tokens_in else tokens_in
        rate_in, rate_out, rate_cached = self.rates
        exact = uncached * rate_in + cached * rate_cached + tokens_out * rate_out
        return -(-exact // self.scale)


@dataclass(frozen=True, slots=True)
class Decision:
    rule: str
    candidates: tuple[Candidate, ...]
    refusal: str  # why nothing served when every candidate was refused (or none was left)
    free: bool = False  # served by its first candidate at $0 whatever the budgets


def _decision(rule: str, candidates: tuple[Candidate, ...], refusal: str) -> Decision:
    free = bool(candidates) and not any(candidates[0].rates)
    return Decision(rule, candidates, refusal, free)


class Planner:
    """Decisions of one config, computed once per distinct key."""

    def __init__(self, config: AegisConfig, assume_available: bool) -> None:
        self.config = config
        self.decisions: dict[Key, Decision] = {}
        self.local = frozenset(name for name, p in config.providers.items() if p.local)
        self.unavailable = {
            name: p.unavailable_reason
            for name, p in config.providers.items()
            if p.unavailable_reason is not None and not assume_available
        }
        # A rule with a traffic share (``when.percent``) decides by user: keep it in the key.
        rules = config.routing.rules
        self.by_identity = any(r.when.percent is not None for r in rules)

    def decide(self, key: Key) -> Decision:
        decision = self.decisions[key] = self._decide(key)
        return decision

    def _decide(self, key: Key) -> Decision:
        values = json.loads(key)
        _, task_type, quality, complexity, batch, classification, agent, tags, pii = values[:9]
        user_id = values[10] if len(values) > 10 else None
        try:
            task = LLMTask(task_type=task_type, quality=quality, complexity=complexity,
                           batch_size=batch, data_classification=classification, agent=agent,
                           tags=json.loads(tags), user_id=user_id)  # fmt: skip
            entities = dict(json.loads(values[9]))
        except (ValidationError, ValueError, TypeError):
            return _decision("(invalid inputs)", (), "invalid_inputs")
        traffic_key = values[11] if len(values) > 11 else ""  # the query hash, for splits
        route = decide_route(self.config.routing, task, traffic_key or "")
        if pii:
            action = self._privacy_action(entities, classification == "pii")
            if action == "block":
                return _decision(route.rule, (), "pii_blocked")
            if action == "route_local":
                try:
                    route = restrict_to_local(route, self.config.providers, ())
                except PrivacyViolationError:
                    return _decision(route.rule, (), "no_local_provider")
        return self._decided(route)

    def _privacy_action(self, entities: dict[str, int], declared: bool) -> str:
        """The action for a request that held PII: by its entity types when recorded."""
        privacy = self.config.privacy
        if not entities and not declared:  # recorded before m004, or a workload line
            return privacy.pii_action
        action = privacy_action(privacy, entities, declared)
        return "route_local" if action == "redact" and UNREDACTABLE & entities.keys() else action

    def _decided(self, route: Route) -> Decision:
        entries = [e for e in route.candidates if e.provider not in self.unavailable]
        candidates = tuple(self._candidate(entry) for entry in entries)
        return _decision(route.rule, candidates, "budget" if entries else "unavailable")

    def _candidate(self, entry: RouteEntry) -> Candidate:
        provider = self.config.providers[entry.provider]
        rates, scale = integer_rates(provider.price_of(entry.model or provider.model))
        monthly = limit_micros(provider.monthly_budget_usd)
        daily = limit_micros(provider.daily_budget_usd)
        budgeted = monthly is not None or daily is not None
        return Candidate(entry.provider, provider.local, rates, scale, monthly, daily, budgeted)


def integer_rates(price: Price) -> tuple[tuple[int, int, int], int]:
    """(input, output, cached) rates as integers over one power of ten, exactly."""
    cached = price.cached_input_per_mtok
    rates = (price.input_per_mtok, price.output_per_mtok,
             price.input_per_mtok if cached is None else cached)  # fmt: skip
    places = max(max(0, -int(rate.as_tuple().exponent)) for rate in rates)
    scaled = tuple(int(rate.scaleb(places)) for rate in rates)
    return (scaled[0], scaled[1], scaled[2]), 10**places
