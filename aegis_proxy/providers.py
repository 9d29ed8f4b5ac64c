"""The only module that talks to any-llm: one reused client per provider, errors mapped.

What must always hold:
- ``any_llm`` is imported lazily, on the first call, so that ``aegis-proxy report`` and
  ``route`` never pay its ~1.5 s import;
- one ``AnyLLM`` client per configured provider, created once and reused, with
  ``unified_exceptions=True`` and SDK-side retries off (retries belong to our layer, where
  the ledger sees them);
- each API key reaches only its own provider: a provider without a configured key never
  picks one up from the process environment (``OPENAI_API_KEY``, ``OLLAMA_API_KEY``);
- every exception out of the SDK becomes a ``ProviderCallError`` in ``map_sdk_errors``,
  and its message never carries request or response text.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from aegis_proxy import errors

if TYPE_CHECKING:
    from any_llm.types.completion import ChatCompletion, ChatCompletionChunk

    from aegis_proxy.config import ProviderConfig

_NO_KEY = "aegis-no-key"  # sent to key-less OpenAI-compatible servers instead of an env key

_CLASS_MAP: dict[str, type[errors.ProviderCallError]] = {
    "RateLimitError": errors.RateLimitedError,
    "AuthenticationError": errors.ProviderAuthError,
    "MissingApiKeyError": errors.ProviderUnavailableError,
    "UnsupportedProviderError": errors.ProviderUnavailableError,
    "ModelNotFoundError": errors.ModelNotFoundError,
    "ProviderFileNotFoundError": errors.ProviderRejectedError,
    "InvalidRequestError": errors.ProviderRejectedError,
    "ContextLengthExceededError": errors.ProviderRejectedError,
    "ContentFilterError": errors.ProviderRejectedError,
    "ContentFilterFinishReasonError": errors.ProviderRejectedError,
    "LengthFinishReasonError": errors.ProviderRejectedError,
    "UnsupportedParameterError": errors.ProviderRejectedError,
    "InsufficientFundsError": errors.ProviderAuthError,
    "BatchNotCompleteError": errors.ProviderServerError,
    "UpstreamProviderError": errors.ProviderServerError,
    "GatewayTimeoutError": errors.ProviderTimeoutError,
    "ProviderError": errors.ProviderServerError,
    "AnyLLMError": errors.ProviderServerError,
}
"""Every ``any_llm.exceptions`` class, by name, onto ours (a test checks none is missing)."""

_CONNECTION_NAMES = ("ConnectError", "ReadError", "RemoteProtocolError", "APIConnectionError")
_TIMEOUT_NAMES = ("TimeoutException", "ReadTimeout", "ConnectTimeout", "APITimeoutError")


def map_error(provider: str, exc: BaseException) -> errors.ProviderCallError:
    """Translate one SDK/transport exception into our hierarchy (no message text kept)."""
    if isinstance(exc, errors.ProviderCallError):
        return exc
    names = [cls.__name__ for cls in type(exc).__mro__]
    status = _status_of(exc)
    if isinstance(exc, TimeoutError) or any(n in _TIMEOUT_NAMES for n in names):
        return errors.ProviderTimeoutError(provider, "timed out", status)
    if any(n in _CONNECTION_NAMES for n in names) or _caused_by_connection(exc):
        return errors.ProviderConnectionError(provider, "connection failed", status)
    if status is not None and status >= 500:
        return errors.ProviderServerError(provider, "server error", status)
    if status == 429 or "RateLimitError" in names:
        retry = _retry_after(getattr(exc, "retry_after", None))
        return errors.RateLimitedError(provider, "rate limited", status or 429, retry)
    if status == 404 and "ModelNotFoundError" not in names:
        return errors.ModelNotFoundError(provider, "not found", status)
    if status in (401, 403):
        return errors.ProviderAuthError(provider, "authentication failed", status)
    target = next((_CLASS_MAP[n] for n in names if n in _CLASS_MAP), errors.ProviderServerError)
    return target(provider, _problem(names[0]), status)


def _status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "original_exception", None), "status_code", None)
    return status if isinstance(status, int) and status > 0 else None


def _caused_by_connection(exc: BaseException) -> bool:
    inner = getattr(exc, "original_exception", None) or exc.__cause__
    if inner is None or inner is exc:
        return isinstance(exc, ConnectionError)
    names = [cls.__name__ for cls in type(inner).__mro__]
    return isinstance(inner, ConnectionError) or any(n in _CONNECTION_NAMES for n in names)


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
        raise map_error(provider, exc) from exc


class ProviderClient:
    """One configured provider and its lazily created, reused any-llm client."""

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.config = config
        self._client: Any = None

    @property
    def unavailable_reason(self) -> str | None:
        return self.config.unavailable_reason

    @property
    def ready(self) -> bool:
        """Whether the SDK client exists already."""
        return self._client is not None

    def prepare(self) -> None:
        """Create the SDK client now (imports any-llm), outside any attempt's time limit."""
        self._get_client()

    def _get_client(self) -> Any:
        if self._client is None:
            with map_sdk_errors(self.name):
                self._client = _create_client(self.config)
        return self._client

    async def complete(
        self, model: str, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> ChatCompletion:
        """One non-streaming attempt; raises ``ProviderCallError``."""
        client = self._get_client()
        with map_sdk_errors(self.name):
            response: ChatCompletion = await client.acompletion(
                model=model, messages=messages, **params
            )
        return response

    async def open_stream(
        self, model: str, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Start a streaming attempt; iterate the result through ``iterate_stream``."""
        client = self._get_client()
        if self.config.sdk != "ollama":  # OpenAI-style servers send usage only when asked
            params = {**params, "stream_options": {"include_usage": True}}
        with map_sdk_errors(self.name):
            stream: AsyncIterator[ChatCompletionChunk] = await client.acompletion(
                model=model, messages=messages, stream=True, **params
            )
        return stream

    async def next_chunk(self, stream: AsyncIterator[ChatCompletionChunk]) -> ChatCompletionChunk:
        """The next chunk of a stream; ``StopAsyncIteration`` at its end."""
        with map_sdk_errors(self.name):
            return await anext(stream)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(Exception):  # closing a broken connection must not mask
            await _close_client(client)


def completion_from_json(data: dict[str, Any]) -> ChatCompletion:
    """A ChatCompletion rebuilt from its JSON (a cached answer)."""
    from any_llm.types.completion import ChatCompletion

    return ChatCompletion.model_validate(data)


def _create_client(config: ProviderConfig) -> Any:
    from any_llm import AnyLLM  # lazy: ~1.5 s import

    key = config.api_key.get_secret_value() if config.api_key else None
    kwargs: dict[str, Any] = {"unified_exceptions": True}
    if config.sdk == "ollama":
        if key:
            kwargs["headers"] = {"Authorization": f"Bearer {key}"}
        client: Any = AnyLLM.create("ollama", api_base=config.api_base, **kwargs)
        if not key:  # the ollama client reads OLLAMA_API_KEY from the environment: drop it
            client.client._client.headers.pop("authorization", None)
        return client
    return AnyLLM.create(
        config.sdk, api_key=key or _NO_KEY, api_base=config.api_base, max_retries=0, **kwargs
    )


async def _close_client(client: Any) -> None:
    inner = getattr(client, "client", None)
    for name in ("aclose", "close"):
        method = getattr(inner, name, None)
        if method is not None:
            result = method()
            if asyncio.iscoroutine(result):
                await result
            return
    httpx_client = getattr(inner, "_client", None)
    if httpx_client is not None:
        await httpx_client.aclose()
