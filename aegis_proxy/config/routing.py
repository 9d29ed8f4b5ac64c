"""The config's ``routing`` section: rules (first match wins), their conditions and routes.

What must always hold: a route entry is a provider name or ``{provider, model}`` and
names a provider the config defines; rule names are unique (the ledger and the reports
count by rule). ``check_routes`` raises ``ConfigError`` naming the key of the first entry
that breaks this, in file order.
"""

from __future__ import annotations

import difflib
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from aegis_proxy.config.sections import StrictModel
from aegis_proxy.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

Quality = Literal["standard", "high", "critical"]
Complexity = Literal["low", "medium", "high"]
DataClassification = Literal["public", "internal", "confidential", "pii"]


class RuleWhen(StrictModel):
    """Conditions of a routing rule; all given ones must hold (lists mean any-of)."""

    quality: list[Quality] | None = None
    complexity: list[Complexity] | None = None
    task_type: list[str] | None = None
    data_classification: list[DataClassification] | None = None
    agent: list[str] | None = None
    tags: list[str] | None = None  # every listed tag must be on the task
    min_batch_size: int | None = Field(default=None, ge=1)
    max_batch_size: int | None = Field(default=None, ge=1)
    # the seeds' 1-10 scale (LLMTask.complexity_score), for tiers of models
    min_complexity_score: int | None = Field(default=None, ge=1, le=10)
    max_complexity_score: int | None = Field(default=None, ge=1, le=10)
    # a deterministic share of the matching traffic (canaries, A/B), stable per user_id,
    # else per query hash
    percent: float | None = Field(default=None, ge=0, le=100)

    @field_validator(
        "quality", "complexity", "task_type", "data_classification", "agent", "tags", mode="before"
    )
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class RouteEntry(StrictModel):
    """One candidate of a route: a provider and, optionally, a model other than its default."""

    provider: str
    model: str | None = None


def _route_entries(value: Any) -> Any:
    if isinstance(value, list):
        return [{"provider": item} if isinstance(item, str) else item for item in value]
    return value


class RoutingRule(StrictModel):
    name: str = Field(min_length=1)
    when: RuleWhen = RuleWhen()
    route: list[RouteEntry] = Field(min_length=1)
    max_cost_usd: Decimal | None = Field(default=None, gt=0)  # per request, upper bound
    cache_ttl_s: float | None = Field(default=None, ge=0)  # response cache TTL for this rule

    _entries = field_validator("route", mode="before")(_route_entries)


class RoutingConfig(StrictModel):
    deadline_s: float | None = Field(default=60.0, gt=0)
    rules: list[RoutingRule] = Field(default_factory=list)
    default: list[RouteEntry] = Field(min_length=1)

    _entries = field_validator("default", mode="before")(_route_entries)


def routes_of(routing: RoutingConfig) -> list[tuple[str, list[RouteEntry]]]:
    """Every route of the section with its key: each rule's, then the default."""
    routes = [(f"routing.rules[{i}].route", r.route) for i, r in enumerate(routing.rules)]
    routes.append(("routing.default", routing.default))
    return routes


def check_routes(routing: RoutingConfig, providers: Mapping[str, object], name: str) -> None:
    """Unique rule names, and routes naming only the config's providers."""
    rule_names: set[str] = set()
    for i, rule in enumerate(routing.rules):
        if rule.name in rule_names:
            raise ConfigError(
                name, f"routing.rules[{i}].name", f"duplicate rule name {rule.name!r}"
            )
        rule_names.add(rule.name)
        _check_route(providers, name, f"routing.rules[{i}].route", rule.route)
    _check_route(providers, name, "routing.default", routing.default)


def _check_route(
    providers: Mapping[str, object], name: str, key: str, route: list[RouteEntry]
) -> None:
    for j, entry in enumerate(route):
        if entry.provider not in providers:
            known = ", ".join(sorted(providers))
            close = difflib.get_close_matches(entry.provider, list(providers), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                name, f"{key}[{j}]", f"unknown provider {entry.provider!r} ({hint}known: {known})"
            )
