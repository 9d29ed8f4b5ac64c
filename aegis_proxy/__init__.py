"""aegis_proxy: a thin, trustworthy policy layer between LLM calls and their providers.

Personal data stays on local providers, budgets are never overspent, and every attempt is
a row in the SQLite ledger. See ``AegisLLMProxy`` and the module-level ``acompletion``.
"""

from __future__ import annotations

from aegis_proxy.config import AegisConfig, load_config
from aegis_proxy.default import acompletion, close_default_proxy, completion, get_default_proxy
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
from aegis_proxy.policy import LLMTask, Route
from aegis_proxy.proxy import AegisLLMProxy
from aegis_proxy.request import AegisRecord, Attempt
from aegis_proxy.streaming import AegisStream

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
