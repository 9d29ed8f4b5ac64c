"""Routing policy: a task and the config's ordered rules decide the candidate providers.

What must always hold:
- the decision is a value (``Route``) computed without any network or SDK import, so
  ``aegis-proxy route`` can explain it and tests can table it;
- rules are tried in order and the first whose every condition holds wins; no match
  falls to ``routing.default``;
- the privacy invariant sits outside the rules: ``restrict_to_local`` removes every
  non-local provider from a route for a request that holds or declares PII, fallbacks
  included, and raises ``PrivacyViolationError`` when nothing is left. No rule can undo it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from aegis_proxy.config.routing import Complexity, DataClassification, Quality, RouteEntry
from aegis_proxy.errors import PrivacyViolationError
from aegis_proxy.reserve.money import limit_micros

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from aegis_proxy.config.providers import ProviderConfig
    from aegis_proxy.config.routing import RoutingConfig, RoutingRule, RuleWhen


class LLMTask(BaseModel):
    """What the caller says about a request; every field is optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_type: str = "general"
    quality: Quality = "standard"
    complexity: Complexity = "medium"
    batch_size: int = Field(default=1, ge=1)
    data_classification: DataClassification = "internal"
    user_id: str | None = None
    agent: str | None = None
    tags: list[str] = []
    complexity_score: int | None = Field(default=None, ge=1, le=10)


DEFAULT_RULE = "default"


@dataclass(frozen=True, slots=True)
class Route:
    """The ordered candidates for a request, the rule that chose them and why."""

    candidates: tuple[RouteEntry, ...]
    rule: str
    reason: str
    removed: tuple[str, ...] = ()  # providers taken out by the privacy invariant
    max_cost_micros: int | None = None  # the rule's per-request cost ceiling
    cache_ttl_s: float | None = None

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(entry.provider for entry in self.candidates)


def decide_route(routing: RoutingConfig, task: LLMTask, traffic_key: str = "") -> Route:
    """Return the route of the first rule matching ``task``, else the default route.

    ``traffic_key`` (the query hash) places the request in a ``percent`` split when the
    task has no ``user_id``; a user always lands on the same side of a split.
    """
    for rule in routing.rules:
        if rule_matches(rule.when, task, traffic_key):
            micros = limit_micros(rule.max_cost_usd)
            return Route(tuple(rule.route), rule.name, _explain(rule), (), micros, rule.cache_ttl_s)
    return Route(tuple(routing.default), DEFAULT_RULE, "no rule matched: default route")


def rule_matches(when: RuleWhen, task: LLMTask, traffic_key: str = "") -> bool:
    """Whether every condition given in ``when`` holds for ``task`` (stops at the first miss)."""
    score = task.complexity_score
    return (
        (when.quality is None or task.quality in when.quality)
        and (when.complexity is None or task.complexity in when.complexity)
        and (when.task_type is None or task.task_type in when.task_type)
        and (
            when.data_classification is None or task.data_classification in when.data_classification
        )
        and (when.agent is None or task.agent in when.agent)
        and (when.tags is None or set(when.tags) <= set(task.tags))
        and (when.min_batch_size is None or task.batch_size >= when.min_batch_size)
        and (when.max_batch_size is None or task.batch_size <= when.max_batch_size)
        and (when.min_complexity_score is None or (score or 0) >= when.min_complexity_score)
        and (when.max_complexity_score is None or (score or 11) <= when.max_complexity_score)
        and (when.percent is None or _bucket(task.user_id or traffic_key) < when.percent)
    )


def _bucket(key: str) -> float:
    """A stable position in [0, 100) for a traffic key."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest) % 10_000 / 100


def _explain(rule: RoutingRule) -> str:
    conditions = rule.when.model_dump(exclude_none=True)
    shown = ", ".join(f"{key}={_show(value)}" for key, value in conditions.items())
    return f"rule {rule.name} matched ({shown or 'always'})"


def _show(value: object) -> str:
    if isinstance(value, list) and len(value) == 1:
        return str(value[0])
    return str(value)


def restrict_to_local(
    route: Route,
    providers: Mapping[str, ProviderConfig],
    entity_types: Sequence[str],
) -> Route:
    """Keep only local providers for a PII request; raise if the config has none.

    The route's own local entries keep their order; a route with none falls back to every
    local provider of the config, in config order.
    """
    kept = tuple(entry for entry in route.candidates if providers[entry.provider].local)
    removed = tuple(e.provider for e in route.candidates if not providers[e.provider].local)
    kinds = ", ".join(entity_types) or "declared pii"
    reason = f"{route.reason}; personal data ({kinds}): local providers only"
    if not kept:
        kept = tuple(RouteEntry(provider=n) for n, p in providers.items() if p.local)
        reason = f"{reason}, none in this route: every local provider of the config"
    if not kept:
        raise PrivacyViolationError(entity_types, removed)
    return replace(route, candidates=kept, reason=reason, removed=removed)
