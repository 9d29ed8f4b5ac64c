"""Load and validate the YAML config into typed objects, once.

What must always hold:
- every bad input raises ``ConfigError`` naming the file and the dotted key
  (``providers.openai.timeout_s``, ``routing.rules[1].route[0]``), YAML syntax errors with
  their line;
- ``${VAR}`` (or ``${VAR:-default}``) is read from the environment; a provider whose
  variable is unset is *unavailable* (``ProviderConfig.unavailable_reason``), not an error;
- a paid (non-local) provider whose model has no price, neither ``price`` nor LiteLLM's
  cost map, is a ``ConfigError``: never a silent $0;
- API keys are ``SecretStr``: they never show in a repr, a log line or an error message.
"""

from __future__ import annotations

import importlib.util
import os
import re
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
)

from aegis_proxy.errors import ConfigError
from aegis_proxy.pricing import Price, lookup_price

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Quality = Literal["standard", "high", "critical"]
Complexity = Literal["low", "medium", "high"]
DataClassification = Literal["public", "internal", "confidential", "pii"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PriceConfig(_Strict):
    """A price in USD per million tokens."""

    input_per_mtok: Decimal = Field(ge=0)
    output_per_mtok: Decimal = Field(ge=0)
    cached_input_per_mtok: Decimal | None = Field(default=None, ge=0)

    def to_price(self) -> Price:
        return Price(self.input_per_mtok, self.output_per_mtok, self.cached_input_per_mtok)


class ProviderConfig(_Strict):
    """One provider: an any-llm SDK id, where it lives, its model, price and budget."""

    sdk: str
    model: str = Field(min_length=1)
    api_base: str | None = None
    api_key: SecretStr | None = None
    local: bool = False
    vision: bool = False
    price: PriceConfig | None = None
    monthly_budget_usd: Decimal | None = Field(default=None, ge=0)
    daily_budget_usd: Decimal | None = Field(default=None, ge=0)
    timeout_s: float | None = Field(default=None, gt=0)
    _unavailable_reason: str | None = PrivateAttr(default=None)
    _prices: dict[str, Price] = PrivateAttr(default_factory=dict)

    @property
    def unavailable_reason(self) -> str | None:
        """Why this provider cannot be called (an unset ``${VAR}``), or None."""
        return self._unavailable_reason

    @property
    def resolved_price(self) -> Price:
        """The price of the default model ($0 for an unpriced local provider)."""
        return self.price_of(self.model)

    def price_of(self, model: str) -> Price:
        """The price of ``model`` at this provider (resolved at load for every routed model)."""
        return self._prices.get(model, Price.ZERO)

    @property
    def budgeted(self) -> bool:
        return self.monthly_budget_usd is not None or self.daily_budget_usd is not None


class RuleWhen(_Strict):
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


class RouteEntry(_Strict):
    """One candidate of a route: a provider and, optionally, a model other than its default."""

    provider: str
    model: str | None = None


def _route_entries(value: Any) -> Any:
    if isinstance(value, list):
        return [{"provider": item} if isinstance(item, str) else item for item in value]
    return value


class RoutingRule(_Strict):
    name: str = Field(min_length=1)
    when: RuleWhen = RuleWhen()
    route: list[RouteEntry] = Field(min_length=1)
    max_cost_usd: Decimal | None = Field(default=None, gt=0)  # per request, upper bound
    cache_ttl_s: float | None = Field(default=None, ge=0)  # response cache TTL for this rule

    _entries = field_validator("route", mode="before")(_route_entries)


class RoutingConfig(_Strict):
    deadline_s: float | None = Field(default=60.0, gt=0)
    rules: list[RoutingRule] = []
    default: list[RouteEntry] = Field(min_length=1)

    _entries = field_validator("default", mode="before")(_route_entries)


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from exc
    return pattern


class RecognizerConfig(_Strict):
    """An extra regex recognizer; with ``context``, a match counts only near one of its words."""

    name: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")  # the entity type it reports
    pattern: str = Field(min_length=1)
    context: list[str] = []
    context_window: int = Field(default=40, ge=1, le=1000)

    _valid = field_validator("pattern")(_compiles)


def _allow_entries(entries: list[str]) -> list[str]:
    """``re:<regex>`` must compile; plain values and ``*`` globs are taken as written."""
    for index, entry in enumerate(entries):
        if entry.startswith("re:"):
            try:
                _compiles(entry[3:])
            except ValueError as exc:
                raise ValueError(f"entry {index} ({entry!r}): {exc}") from None
    return entries


PiiAction = Literal["route_local", "redact", "block"]


class PrivacyConfig(_Strict):
    pii_action: PiiAction = "route_local"
    # Per entity type, an action other than pii_action ({CREDIT_CARD: block, EMAIL: redact});
    # a request with several types takes the strictest: block > route_local > redact.
    entity_actions: dict[str, PiiAction] = {}
    # Images cannot be scanned: by default they count as personal data (local only).
    images: Literal["local_only", "allow_cloud"] = "local_only"
    entities: list[str] | None = None  # None: every supported entity type counts
    # Values that never count: exact values, "*" globs ("*@ourcompany.example"), "re:<regex>".
    allow: list[str] = []
    recognizers: list[RecognizerConfig] = []
    ner: Literal["none", "presidio"] = "none"  # "presidio": aegis_proxy.pii_ner, fail closed

    _allow = field_validator("allow")(_allow_entries)


class LedgerConfig(_Strict):
    path: str = "data/cost_tracking.db"
    url: str | None = None  # sqlite:///PATH or postgresql://...; wins over path

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(
            ("sqlite://", "postgresql://", "postgres://")
        ):
            raise ValueError("must start with sqlite:// or postgresql://")
        return value


class BudgetsConfig(_Strict):
    default_max_tokens: int = Field(default=1024, ge=1)
    warn_share: float = Field(default=0.8, gt=0, le=1)
    reservation_ttl_s: float = Field(default=900.0, gt=0)


class ResilienceConfig(_Strict):
    retries: int = Field(default=1, ge=0, le=10)  # extra attempts at one provider on 429/5xx
    backoff_s: float = Field(default=0.25, ge=0)
    max_backoff_s: float = Field(default=8.0, ge=0)
    breaker_failures: int = Field(default=5, ge=1)  # consecutive failures that open it
    breaker_cooldown_s: float = Field(default=30.0, ge=0)


class DiscoveryConfig(_Strict):
    """The start-up check that each local server has the models the routes name."""

    check_local_models: Literal["off", "warn", "fail"] = "off"
    timeout_s: float = Field(default=2.0, gt=0)

    @field_validator("check_local_models", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false


class CacheConfig(_Strict):
    """The response cache: off unless enabled, since it keeps response text (the ledger does not).

    ``ttl_s`` applies to every route; a rule's ``cache_ttl_s`` overrides it (0: not cached).
    ``path`` defaults to ``response_cache.db`` in the ledger file's folder.
    """

    enabled: bool = False
    ttl_s: float = Field(default=3600.0, ge=0)
    path: str | None = None


class AegisConfig(_Strict):
    providers: dict[str, ProviderConfig] = Field(min_length=1)
    routing: RoutingConfig
    privacy: PrivacyConfig = PrivacyConfig()
    ledger: LedgerConfig = LedgerConfig()
    budgets: BudgetsConfig = BudgetsConfig()
    resilience: ResilienceConfig = ResilienceConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()
    cache: CacheConfig = CacheConfig()
    source: str = "<memory>"


def load_config(path: str | os.PathLike[str]) -> AegisConfig:
    """Read, interpolate and validate a config file; raise ConfigError naming file and key."""
    name = str(path)
    raw = _read_yaml(name)
    missing: dict[str, list[str]] = {}
    data = _interpolate(raw, name, "", missing)
    if not isinstance(data, dict):
        raise ConfigError(name, "", "the top level must be a mapping")
    data["source"] = name
    try:
        config = AegisConfig.model_validate(data)
    except ValidationError as exc:
        raise _config_error(name, exc) from None
    _check_references(config, name)
    _check_sdks(config, name)
    for provider_name, provider in config.providers.items():
        _resolve_provider(provider, provider_name, name, missing.get(provider_name, []))
    _resolve_route_models(config, name)
    return config


def _read_yaml(name: str) -> Any:
    try:
        text = Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(name, "", f"cannot read file: {exc.strerror}") from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(name, "", f"YAML syntax error at {line}{problem}") from None


def _interpolate(value: Any, name: str, key: str, missing: dict[str, list[str]]) -> Any:
    """Replace ${VAR} in every string; an unset VAR under providers.<p> marks p unavailable."""
    if isinstance(value, dict):
        return {k: _interpolate(v, name, _join(key, str(k)), missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, name, f"{key}[{i}]", missing) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    unset = [m.group(1) for m in _ENV_PATTERN.finditer(value) if _env(m) is None]
    if not unset:
        return _ENV_PATTERN.sub(lambda m: _env(m) or "", value)
    parts = key.split(".")
    if parts[0] != "providers" or len(parts) < 3:
        raise ConfigError(name, key, f"environment variable {unset[0]} is not set")
    missing.setdefault(parts[1], []).extend(unset)
    return None


def _env(match: re.Match[str]) -> str | None:
    return os.environ.get(match.group(1), match.group(2))


def _join(key: str, part: str) -> str:
    return f"{key}.{part}" if key else part


def _config_error(name: str, exc: ValidationError) -> ConfigError:
    first = exc.errors()[0]
    key = ""
    for part in first["loc"]:
        key = f"{key}[{part}]" if isinstance(part, int) else _join(key, str(part))
    problem = first["msg"]
    if first["type"] == "extra_forbidden":
        problem = "unknown key"
    return ConfigError(name, key, problem)


def _check_references(config: AegisConfig, name: str) -> None:
    rule_names: set[str] = set()
    for i, rule in enumerate(config.routing.rules):
        if rule.name in rule_names:
            raise ConfigError(
                name, f"routing.rules[{i}].name", f"duplicate rule name {rule.name!r}"
            )
        rule_names.add(rule.name)
        _check_route(config, name, f"routing.rules[{i}].route", rule.route)
    _check_route(config, name, "routing.default", config.routing.default)


def _check_route(config: AegisConfig, name: str, key: str, route: list[RouteEntry]) -> None:
    for j, entry in enumerate(route):
        if entry.provider not in config.providers:
            known = ", ".join(sorted(config.providers))
            raise ConfigError(
                name, f"{key}[{j}]", f"unknown provider {entry.provider!r} (known: {known})"
            )


def _check_sdks(config: AegisConfig, name: str) -> None:
    known = known_sdks()
    for provider_name, provider in config.providers.items():
        if provider.sdk not in known:
            raise ConfigError(
                name, f"providers.{provider_name}.sdk", f"unknown any-llm provider {provider.sdk!r}"
            )


@cache
def known_sdks() -> frozenset[str]:
    """The any-llm provider ids, read from its package folders without importing it."""
    spec = importlib.util.find_spec("any_llm")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    folder = Path(next(iter(spec.submodule_search_locations))) / "providers"
    return frozenset(p.name for p in folder.iterdir() if (p / "__init__.py").exists())


def _resolve_provider(provider: ProviderConfig, key: str, name: str, unset: list[str]) -> None:
    if unset:
        provider._unavailable_reason = f"environment variable {unset[0]} is not set"
    provider._prices[provider.model] = _price(
        provider, provider.model, f"providers.{key}.price", name
    )


def _resolve_route_models(config: AegisConfig, name: str) -> None:
    routes = [(f"routing.rules[{i}].route", r.route) for i, r in enumerate(config.routing.rules)]
    routes.append(("routing.default", config.routing.default))
    for key, route in routes:
        for j, entry in enumerate(route):
            provider = config.providers[entry.provider]
            if entry.model and entry.model not in provider._prices:
                price = _price(provider, entry.model, f"{key}[{j}].model", name)
                provider._prices[entry.model] = price


def _price(provider: ProviderConfig, model: str, key: str, name: str) -> Price:
    """The configured price; else $0 for a local provider; else LiteLLM's map, or an error."""
    if provider.price is not None:
        return provider.price.to_price()
    if provider.local:
        return Price.ZERO
    price = lookup_price(provider.sdk, model)
    if price is not None:
        return price
    raise ConfigError(
        name,
        key,
        f"paid provider model {model!r} has no price in the LiteLLM cost map; "
        "set price: {input_per_mtok, output_per_mtok}",
    )
