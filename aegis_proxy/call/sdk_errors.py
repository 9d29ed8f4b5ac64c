"""SDK and transport exceptions onto our ``ProviderCallError`` tree, in one place.

What must always hold:
- every ``any_llm.exceptions`` class has an entry in ``_CLASS_MAP``, matched with
  ``isinstance``, the most specific class first; httpx, httpx2 (the OpenAI SDK's fork)
  and OpenAI SDK classes are loaded lazily, only when an error is mapped;
- the request's own faults (HTTP 400/413/422, an SDK refusing a parameter locally with a
  ``TypeError``) become ``RequestRejectedError``, which no circuit breaker counts;
- the egress guard's ``EgressBlockedError`` comes out as itself, however the SDK wrapped it;
- no mapped error carries request or response text.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
from typing import TYPE_CHECKING

from aegis_proxy import errors

if TYPE_CHECKING:
    from collections.abc import Iterator

_CLASS_MAP: dict[str, type[errors.ProviderCallError]] = {
    "RateLimitError": errors.RateLimitedError,
    "AuthenticationError": errors.ProviderAuthError,
    "MissingApiKeyError": errors.ProviderUnavailableError,
    "UnsupportedProviderError": errors.ProviderUnavailableError,
    "ModelNotFoundError": errors.ModelNotFoundError,
    "ProviderFileNotFoundError": errors.ProviderRejectedError,
    "InvalidRequestError": errors.RequestRejectedError,
    "ContextLengthExceededError": errors.RequestRejectedError,
    "ContentFilterError": errors.ProviderRejectedError,
    "ContentFilterFinishReasonError": errors.ProviderRejectedError,
    "LengthFinishReasonError": errors.ProviderRejectedError,
    "UnsupportedParameterError": errors.RequestRejectedError,
    "InsufficientFundsError": errors.ProviderAuthError,
    "BatchNotCompleteError": errors.ProviderServerError,
    "UpstreamProviderError": errors.ProviderServerError,
    "GatewayTimeoutError": errors.ProviderTimeoutError,
    "ProviderError": errors.ProviderServerError,
    "AnyLLMError": errors.ProviderServerError,
}
"""Every ``any_llm.exceptions`` class onto ours (a test checks none is missing); matched
with ``isinstance``, most specific class first (``_sdk_classes``)."""
_REQUEST_FAULTS = (400, 413, 422)
"""HTTP statuses that say the request itself is invalid (the provider is fine)."""


@functools.cache
def _sdk_classes() -> tuple[tuple[type[BaseException], type[errors.ProviderCallError]], ...]:
    """``_CLASS_MAP`` with any-llm's classes loaded (lazily), subclasses before their bases."""
    import any_llm.exceptions as sdk

    pairs = [
        (cls, target)
        for name, target in _CLASS_MAP.items()
        if isinstance(cls := getattr(sdk, name, None), type) and issubclass(cls, BaseException)
    ]
    return tuple(sorted(pairs, key=lambda pair: -len(pair[0].__mro__)))


@functools.cache
def _transport_classes() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(timeouts, connection failures) of httpx, its fork httpx2 (the OpenAI SDK's) and the
    OpenAI SDK, each loaded lazily when installed."""
    timeouts: list[type[BaseException]] = [TimeoutError]
    connections: list[type[BaseException]] = []
    for name in ("httpx", "httpx2"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        timeouts.append(module.TimeoutException)
        connections += [module.NetworkError, module.RemoteProtocolError]
    try:
        import openai
    except ImportError:  # pragma: no cover - the openai extra is absent
        pass
    else:
        timeouts.append(openai.APITimeoutError)
        connections.append(openai.APIConnectionError)
    return tuple(timeouts), tuple(connections)


def map_error(provider: str, exc: BaseException) -> errors.ProviderCallError:
    """Translate one SDK/transport exception into our hierarchy (no message text kept).

    ``before_send`` is set when the connection itself failed (refused, connect timeout):
    then the request never reached the provider, and its reservation is released.
    """
    mapped = _mapped(provider, exc)
    if mapped is not exc and _never_connected(exc):
        mapped.before_send = True
    return mapped


_CONNECT_NAMES = frozenset({"ConnectError", "ConnectTimeout"})  # httpx, httpx2: never sent


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps (the SDK's, httpx's, the socket's), at most 16 deep."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    found: list[BaseException] = []
    while pending and len(found) < 16:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        found.append(current)
        inner = (
            getattr(current, "original_exception", None),
            current.__cause__,
            current.__context__,
        )
        pending += [c for c in inner if isinstance(c, BaseException)]
    return found


def _never_connected(exc: BaseException) -> bool:
    return any(
        isinstance(cause, ConnectionRefusedError)
        or _CONNECT_NAMES & {cls.__name__ for cls in type(cause).__mro__}
        for cause in _causes(exc)
    )


def _mapped(provider: str, exc: BaseException) -> errors.ProviderCallError:
    if isinstance(exc, errors.ProviderCallError):
        return exc
    timeouts, connections = _transport_classes()
    status = _status_of(exc)
    if isinstance(exc, timeouts):
        return errors.ProviderTimeoutError(provider, "timed out", status)
    if isinstance(exc, connections) or _caused_by_connection(exc, connections):
        refused = any(isinstance(cause, ConnectionRefusedError) for cause in _causes(exc))
        problem = "connection refused" if refused else "connection failed"
        return errors.ProviderConnectionError(provider, problem, status)
    if isinstance(exc, TypeError):  # the SDK refused a parameter before sending anything
        return errors.RequestRejectedError(provider, "the SDK refused the request locally")
    if status is not None and status >= 500:
        return errors.ProviderServerError(provider, "server error", status)
    mapped = next((target for cls, target in _sdk_classes() if isinstance(exc, cls)), None)
    if status == 429 or mapped is errors.RateLimitedError:
        retry = _retry_after(getattr(exc, "retry_after", None))
        return errors.RateLimitedError(provider, "rate limited", status or 429, retry)
    if status == 404 and mapped is not errors.ModelNotFoundError:
        return errors.ModelNotFoundError(provider, "not found", status)
    if status in (401, 403):
        return errors.ProviderAuthError(provider, "authentication failed", status)
    if status in _REQUEST_FAULTS:
        return errors.RequestRejectedError(provider, "invalid request", status)
    return (mapped or errors.ProviderServerError)(provider, _problem(type(exc).__name__), status)


def _status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "original_exception", None), "status_code", None)
    return status if isinstance(status, int) and status > 0 else None


def _caused_by_connection(exc: BaseException, connections: tuple[type[BaseException], ...]) -> bool:
    inner = getattr(exc, "original_exception", None) or exc.__cause__
    if inner is None or inner is exc:
        return isinstance(exc, ConnectionError)
    return isinstance(inner, (ConnectionError, *connections))


def _blocked_in(exc: BaseException) -> errors.EgressBlockedError | None:
    """The egress guard's refusal, however the SDK wrapped it (at most 16 causes deep)."""
    current: BaseException | None = exc
    for _ in range(16):
        if current is None or isinstance(current, errors.EgressBlockedError):
            return current
        inner = getattr(current, "original_exception", None)
        if isinstance(inner, BaseException) and inner is not current:
            current = inner
        else:
            current = current.__cause__ or current.__context__
    return None


def _retry_after(value: object) -> float | None:
    try:
        return max(0.0, float(str(value))) if value is not None else None
    except ValueError:
        return None  # an HTTP-date Retry-After: fall back to our own backoff


def _problem(class_name: str) -> str:
    return "".join(f" {c.lower()}" if c.isupper() else c for c in class_name).strip()


@contextlib.contextmanager
def map_sdk_errors(provider: str) -> Iterator[None]:
    """Re-raise any SDK or transport exception as a ``ProviderCallError``."""
    try:
        yield
    except (errors.AegisError, asyncio.CancelledError, GeneratorExit, StopAsyncIteration):
        raise
    except Exception as exc:
        blocked = _blocked_in(exc)
        if blocked is not None:
            raise blocked from None
        raise map_error(provider, exc) from exc
