"""The config's ``providers``: where each one lives, and what its models cost.

What must always hold, once ``resolve_providers`` has run at load:

- every model a route can send to (each provider's default and each route entry's
  ``model``) has a price: the configured ``price``, $0 for a local provider, else LiteLLM's
  cost map; a paid model with none is a ``ConfigError`` naming its key, never a silent $0;
- a provider whose ``${VAR}`` is unset is unavailable (``unavailable_reason``), not an error;
- ``sdk`` is an any-llm provider id, read from its package folders without importing it;
- the API key is a ``SecretStr``: it never shows in a repr, a log line or an error.
"""

from __future__ import annotations

import importlib.util
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, PrivateAttr, SecretStr, ValidationInfo, field_validator

from aegis_proxy.config.routing import routes_of
from aegis_proxy.config.sections import StrictModel
from aegis_proxy.decide.params import ESCAPE_HATCHES
from aegis_proxy.errors import ConfigError
from aegis_proxy.reserve.pricing import Price, lookup_price

if TYPE_CHECKING:
    from collections.abc import Mapping

    from aegis_proxy.config.routing import RoutingConfig


class PriceConfig(StrictModel):
    """A price in USD per million tokens."""

    input_per_mtok: Decimal = Field(ge=0)
    output_per_mtok: Decimal = Field(ge=0)
    cached_input_per_mtok: Decimal | None = Field(default=None, ge=0)

    def to_price(self) -> Price:
        return Price(self.input_per_mtok, self.output_per_mtok, self.cached_input_per_mtok)


class ProviderConfig(StrictModel):
    """One provider: an any-llm SDK id, where it lives, its model, price and budget."""

    sdk: str
    model: str = Field(min_length=1)
    api_base: str | None = None
    api_key: SecretStr | None = None
    # OpenAI-protocol SDKs only: the OpenAI-Organization / OpenAI-Project headers. Unset,
    # none is sent (never OPENAI_ORG_ID / OPENAI_PROJECT_ID from the environment).
    organization: str | None = Field(default=None, min_length=1)
    project: str | None = Field(default=None, min_length=1)
    local: bool = False
    vision: bool = False
    price: PriceConfig | None = None
    monthly_budget_usd: Decimal | None = Field(default=None, ge=0)
    daily_budget_usd: Decimal | None = Field(default=None, ge=0)
    timeout_s: float | None = Field(default=None, gt=0)
    # Parameters beyond the OpenAI chat API this provider takes (DashScope's enable_thinking):
    # scanned and bounded like the rest; never one that would bypass the checked payload.
    allow_params: list[str] = Field(default_factory=list)
    _unavailable_reason: str | None = PrivateAttr(default=None)
    _prices: dict[str, Price] = PrivateAttr(default_factory=dict)

    @field_validator("organization", "project")
    @classmethod
    def _openai_protocol_only(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("sdk") == "ollama":
            raise ValueError("the ollama SDK sends no OpenAI organization or project")
        return value

    @field_validator("allow_params")
    @classmethod
    def _no_escape_hatch(cls, names: list[str]) -> list[str]:
        for name in names:
            if name in ESCAPE_HATCHES:
                raise ValueError(f"{name!r} would bypass the checked request: it cannot be allowed")
        return names

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


def check_sdks(providers: Mapping[str, ProviderConfig], name: str) -> None:
    """Every provider's ``sdk`` is a known any-llm provider id."""
    known = known_sdks()
    for provider_name, provider in providers.items():
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


def resolve_providers(
    providers: Mapping[str, ProviderConfig],
    routing: RoutingConfig,
    name: str,
    missing: Mapping[str, list[str]],
) -> None:
    """Mark providers with unset variables unavailable; price every routed model."""
    for provider_name, provider in providers.items():
        _resolve_provider(provider, provider_name, name, missing.get(provider_name, []))
    for key, route in routes_of(routing):
        for j, entry in enumerate(route):
            provider = providers[entry.provider]
            if entry.model and entry.model not in provider._prices:
                price = _price(provider, entry.model, f"{key}[{j}].model", name)
                provider._prices[entry.model] = price


def _resolve_provider(provider: ProviderConfig, key: str, name: str, unset: list[str]) -> None:
    if unset:
        provider._unavailable_reason = f"environment variable {unset[0]} is not set"
    provider._prices[provider.model] = _price(
        provider, provider.model, f"providers.{key}.price", name
    )


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
