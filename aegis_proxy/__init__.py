"""aegis_proxy: a thin, trustworthy policy layer between LLM calls and their providers.

Personal data stays on local providers, budgets are never overspent, and every attempt is
a row in the SQLite ledger. See ``AegisLLMProxy`` and the module-level ``acompletion``.

Names are imported on first use (PEP 562), so ``aegis-proxy report`` and other light
entry points do not pay for the proxy, the PII patterns or pydantic models they never use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aegis_proxy.call.streaming import AegisStream
    from aegis_proxy.config import AegisConfig, load_config
    from aegis_proxy.decide.record import AegisRecord, Attempt
    from aegis_proxy.decide.rules import LLMTask, Route
    from aegis_proxy.default import (
        acompletion,
        close_default_proxy,
        completion,
        get_default_proxy,
    )
    from aegis_proxy.errors import (
        AegisError,
        BudgetExceededError,
        ConfigError,
        LedgerError,
        LedgerUnavailableError,
        ModelNotFoundError,
        NoProviderAvailableError,
        PrivacyViolationError,
        ProviderAuthError,
        ProviderCallError,
        ProviderConnectionError,
        ProviderRejectedError,
        ProviderServerError,
        ProviderTimeoutError,
        ProviderUnavailableError,
        RateLimitedError,
        RequestValidationError,
    )
    from aegis_proxy.proxy import AegisLLMProxy

_ERRORS = [
    "AegisError",
    "BudgetExceededError",
    "ConfigError",
    "LedgerError",
    "LedgerUnavailableError",
    "ModelNotFoundError",
    "NoProviderAvailableError",
    "PrivacyViolationError",
    "ProviderAuthError",
    "ProviderCallError",
    "ProviderConnectionError",
    "ProviderRejectedError",
    "ProviderServerError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "RateLimitedError",
    "RequestValidationError",
]

_HOMES: dict[str, str] = {
    **dict.fromkeys(_ERRORS, "aegis_proxy.errors"),
    **dict.fromkeys(["AegisConfig", "load_config"], "aegis_proxy.config"),
    **dict.fromkeys(
        ["acompletion", "close_default_proxy", "completion", "get_default_proxy"],
        "aegis_proxy.default",
    ),
    **dict.fromkeys(["LLMTask", "Route"], "aegis_proxy.decide.rules"),
    "AegisLLMProxy": "aegis_proxy.proxy",
    **dict.fromkeys(["AegisRecord", "Attempt"], "aegis_proxy.decide.record"),
    "AegisStream": "aegis_proxy.call.streaming",
}

__all__ = [
    "AegisConfig",
    "AegisError",
    "AegisLLMProxy",
    "AegisRecord",
    "AegisStream",
    "Attempt",
    "BudgetExceededError",
    "ConfigError",
    "LLMTask",
    "LedgerError",
    "LedgerUnavailableError",
    "ModelNotFoundError",
    "NoProviderAvailableError",
    "PrivacyViolationError",
    "ProviderAuthError",
    "ProviderCallError",
    "ProviderConnectionError",
    "ProviderRejectedError",
    "ProviderServerError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "RateLimitedError",
    "RequestValidationError",
    "Route",
    "acompletion",
    "close_default_proxy",
    "completion",
    "get_default_proxy",
    "load_config",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'aegis_proxy' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
