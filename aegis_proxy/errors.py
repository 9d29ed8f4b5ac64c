"""The exceptions aegis_proxy raises, under one root.

Every error a caller can see derives from ``AegisError`` and carries its context as
attributes (provider, spent, limit, ...), never only as text. Provider SDK exceptions are
mapped onto ``ProviderCallError`` subclasses in exactly one place
(``aegis_proxy.call.sdk_errors.map_sdk_errors``); nothing else catches SDK exceptions.

    AegisError
    ├── ConfigError                   bad config file: names the file and the key
    ├── RequestValidationError        malformed request, raised before any network call
    ├── PrivacyViolationError         PII with no local provider left to serve it
    │   └── EgressBlockedError            the last check on the wire stopped a body
    ├── BudgetExceededError           a reservation would pass a provider's budget
    ├── LedgerError                   the ledger could not record a row
    │   ├── LedgerUnavailableError        its database cannot be reached (rows queue in memory)
    │   └── LedgerBusyError               a write asked not to wait met a lock (retry in a thread)
    ├── NoProviderAvailableError      every candidate of the route was skipped or failed
    └── ProviderCallError             one attempt at one provider failed
        ├── ProviderUnavailableError      not callable at all (missing key, no SDK extra)
        ├── ProviderConnectionError       connection refused, reset, dropped
        ├── ProviderTimeoutError          the attempt ran past its time limit
        ├── RateLimitedError              HTTP 429 (``retry_after`` in seconds)
        ├── ProviderServerError           HTTP 5xx or a malformed response
        ├── ProviderAuthError             HTTP 401/403
        ├── ModelNotFoundError            HTTP 404 / unknown model
        └── ProviderRejectedError         4xx validation, context length, content filter
            └── RequestRejectedError          HTTP 400/413/422 or the SDK refused it locally:
                                              the request's fault, not the provider's

Messages never contain prompt text, response text or API keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from decimal import Decimal

    from aegis_proxy.settle.records import PrivacyRefusal


class AegisError(Exception):
    """Root of every exception raised by aegis_proxy."""


class ConfigError(AegisError):
    """A config file is invalid; ``path`` and ``key`` say where."""

    def __init__(self, path: str, key: str, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {problem}")


class RequestValidationError(AegisError):
    """The request is malformed; nothing was sent anywhere."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"invalid request: {field}: {problem}")


class PrivacyViolationError(AegisError):
    """A request holding PII is refused: no local provider can serve it, or it is ``blocked``.

    ``blocked`` is true when the privacy config's action for its entities is ``block``.
    """

    def __init__(
        self,
        entity_types: Sequence[str],
        removed: Sequence[str],
        *,
        blocked: bool = False,
        refusal: PrivacyRefusal | None = None,
    ) -> None:
        self.entity_types = tuple(entity_types)
        self.removed = tuple(removed)
        self.blocked = blocked
        self.refusal = refusal
        """What the audit trail records of it (names and counts only)."""
        kinds = ", ".join(self.entity_types) or "declared pii"
        if blocked:
            message = f"request contains personal data ({kinds}) and the privacy action is block"
        else:
            message = (
                f"request contains personal data ({kinds}) and no local provider can serve it; "
                f"non-local providers removed from the route: {', '.join(self.removed) or 'none'}"
            )
        super().__init__(message)

    def with_refusal(self, refusal: PrivacyRefusal) -> PrivacyViolationError:
        """The same refusal, with the audit record the proxy keeps of it."""
        return PrivacyViolationError(
            self.entity_types, self.removed, blocked=self.blocked, refusal=refusal
        )


class EgressBlockedError(PrivacyViolationError):
    """The body about to be sent to non-local ``provider`` was stopped on the wire.

    ``reason`` says what was wrong (a field that differs from the checked payload, or the
    entity types a second scan found, in ``entity_types``); nothing was sent, and the
    provider's health is not affected.
    """

    def __init__(self, provider: str, reason: str, entity_types: Sequence[str] = ()) -> None:
        super().__init__(entity_types, (), blocked=True)
        self.provider = provider
        self.reason = reason
        self.args = (f"{provider}: request stopped before sending: {reason}",)

    def __str__(self) -> str:
        return str(self.args[0])

    def with_refusal(self, refusal: PrivacyRefusal) -> PrivacyViolationError:
        return self


class BudgetExceededError(AegisError):
    """Reserving ``request_usd`` at ``provider`` would pass its budget for ``period``."""

    def __init__(
        self,
        provider: str,
        period: str,
        spent_usd: Decimal,
        reserved_usd: Decimal,
        request_usd: Decimal,
        limit_usd: Decimal,
    ) -> None:
        self.provider = provider
        self.period = period
        self.spent_usd = spent_usd
        self.reserved_usd = reserved_usd
        self.request_usd = request_usd
        self.limit_usd = limit_usd
        super().__init__(
            f"budget of {provider} for {period} would be exceeded: spent ${spent_usd} + "
            f"reserved ${reserved_usd} + this request ${request_usd} > limit ${limit_usd}"
        )


class LedgerError(AegisError):
    """The ledger could not record or read a row (after retrying a locked database)."""

    def __init__(self, operation: str, problem: str) -> None:
        self.operation = operation
        self.problem = problem
        super().__init__(f"ledger {operation} failed: {problem}")


class LedgerUnavailableError(LedgerError):
    """The ledger's database cannot be reached; ``queued_rows`` are waiting in memory."""

    def __init__(self, operation: str, problem: str, queued_rows: int = 0) -> None:
        super().__init__(operation, problem)
        self.queued_rows = queued_rows


class LedgerBusyError(LedgerError):
    """A write asked not to wait (``wait=False``) met a lock: retry it where waiting is fine."""


class ProviderCallError(AegisError):
    """One attempt at one provider failed."""

    retryable = False
    """Whether retrying the same provider may succeed (429, 5xx, dropped connections)."""
    before_send = False
    """True when the request provably never left (connection refused, connect timeout):
    the provider cannot bill it. Otherwise a timeout or a dropped connection may have been
    served and billed."""

    def __init__(self, provider: str, problem: str, status_code: int | None = None) -> None:
        self.provider = provider
        self.problem = problem
        self.status_code = status_code
        code = f" (HTTP {status_code})" if status_code is not None else ""
        super().__init__(f"{provider}: {problem}{code}")

    @property
    def kind(self) -> str:
        """A short snake_case name for ledger rows and logs."""
        return _KIND_NAMES.get(type(self), "provider_error")


class ProviderUnavailableError(ProviderCallError):
    """The provider cannot be called at all (missing API key, missing SDK extra)."""


class ProviderConnectionError(ProviderCallError):
    """The connection was refused, reset or dropped."""

    retryable = True


class ProviderTimeoutError(ProviderCallError):
    """The attempt ran past its time limit."""

    retryable = True


class RateLimitedError(ProviderCallError):
    """HTTP 429; ``retry_after`` is the server's hint in seconds, if it gave one."""

    retryable = True

    def __init__(
        self,
        provider: str,
        problem: str,
        status_code: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(provider, problem, status_code)
        self.retry_after = retry_after


class ProviderServerError(ProviderCallError):
    """HTTP 5xx, or a response the SDK could not parse."""

    retryable = True


class ProviderAuthError(ProviderCallError):
    """HTTP 401/403: the key was refused."""


class ModelNotFoundError(ProviderCallError):
    """The provider does not know the model."""


class ProviderRejectedError(ProviderCallError):
    """The provider refused the request itself (validation, context length, content filter)."""


class RequestRejectedError(ProviderRejectedError):
    """The provider (HTTP 400/413/422) or its SDK, locally, refused the request as invalid.

    It is the request's fault: the attempt may fall back, but no circuit breaker counts it.
    """


class NoProviderAvailableError(AegisError):
    """Every candidate of the route was skipped or failed; ``attempts`` says why for each.

    Its text is one line per attempt: provider, model and what happened to it.
    """

    def __init__(self, rule: str, attempts: Sequence[object]) -> None:
        self.rule = rule
        self.attempts = tuple(attempts)
        lines = [f"  - {describe_attempt(attempt)}" for attempt in self.attempts]
        head = f"no provider could serve the request (rule {rule})"
        super().__init__("\n".join([f"{head}:", *lines]) if lines else f"{head}: empty route")


_OUTCOME_WORDS = {
    "error": "failed",
    "skipped": "skipped",
    "budget_exceeded": "over budget",
    "ledger_unavailable": "ledger unavailable",
    "cancelled": "cancelled",
}


def describe_attempt(attempt: object) -> str:
    """``provider (model): what happened``, from an ``Attempt``'s fields."""
    provider = getattr(attempt, "provider", "?")
    model = getattr(attempt, "model", "?")
    outcome = str(getattr(attempt, "outcome", "?"))
    detail = getattr(attempt, "reason", None) or getattr(attempt, "error_type", None)
    happened = _OUTCOME_WORDS.get(outcome, outcome)
    return f"{provider} ({model}): {happened}" + (f": {detail}" if detail else "")


_KIND_NAMES: dict[type[ProviderCallError], str] = {
    ProviderUnavailableError: "unavailable",
    ProviderConnectionError: "connection_error",
    ProviderTimeoutError: "timeout",
    RateLimitedError: "rate_limited",
    ProviderServerError: "server_error",
    ProviderAuthError: "auth_error",
    ModelNotFoundError: "model_not_found",
    ProviderRejectedError: "rejected",
    RequestRejectedError: "invalid_request",
}
