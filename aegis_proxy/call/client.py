"""The only module that talks to any-llm: one reused client per provider, errors mapped.

What must always hold:
- ``any_llm`` is imported lazily, on the first call, so that ``aegis-proxy report`` and
  ``route`` never pay its ~1.5 s import;
- a provider's ``AnyLLM`` clients are created once and reused, with
  ``unified_exceptions=True`` and SDK-side retries off (retries belong to our layer, where
  the ledger sees them). The first is made by ``prepare``; more (``MAX_SHARDS`` at most)
  only while every one of them has ``SHARD_IN_FLIGHT`` calls in flight: httpcore's
  connection pool rescans all its connections for each request, so one pool holding 256
  connections cost twice the CPU per request of sixteen pools holding sixteen each. No
  pool is capped: a slow provider gets as many connections as the SDK allows. Extra
  clients share the first one's SSL context (building one costs ~17 ms) and are made only
  for the SDKs whose HTTP client we can hand that context to (Ollama and the plain
  OpenAI-compatible ones); any other SDK keeps one client;
- each API key reaches only its own provider: a provider without a configured key never
  picks one up from the process environment (``OPENAI_API_KEY``, ``OLLAMA_API_KEY``), nor
  a base URL, organization, project or header (``aegis_proxy.call.ambient``);
- every exception out of the SDK becomes a ``ProviderCallError`` in ``map_sdk_errors``
  (``call.sdk_errors``), and its message never carries request or response text;
- every non-local provider's HTTP client carries the egress guard (``call.egress``); a
  provider whose client cannot take it is unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aegis_proxy.call.ambient import drop_ambient_settings, explicit_api_base
from aegis_proxy.call.egress import install_guard
from aegis_proxy.call.sdk_errors import map_sdk_errors
from aegis_proxy.decide.params import CHAT_PARAMS
from aegis_proxy.decide.payload import has_binary

if TYPE_CHECKING:
    import ssl

    from any_llm.types.completion import ChatCompletion, ChatCompletionChunk

    from aegis_proxy.config.providers import ProviderConfig

_NO_KEY = "aegis-no-key"  # sent to key-less OpenAI-compatible servers instead of an env key
SHARD_IN_FLIGHT = 16
"""Calls in flight on every client of a provider before another client is made."""
MAX_SHARDS = 16
"""Clients (each with its own connection pool) per provider at most."""

_OLLAMA_HONOURS: dict[str, tuple[object, ...]] = {  # what the ollama SDK can honour of each
    "tool_choice": (None, "auto"),
    "n": (None, 1),
    "logprobs": (None, False),
    "top_logprobs": (None,),
    "parallel_tool_calls": (None, True),
}


def _remote_image(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether an ``image_url`` part points at an http(s) URL rather than a data: URL."""
    for message in messages:
        content = message.get("content")
        for part in content if isinstance(content, list) else ():
            url = part.get("image_url") if isinstance(part, Mapping) else None
            url = url.get("url") if isinstance(url, Mapping) else url
            if isinstance(url, str) and not url.startswith("data:"):
                return True
    return False


@dataclass(slots=True)
class _Shard:
    """One any-llm client (one connection pool) and the calls it has in flight."""

    client: Any
    in_flight: int = 0


class ProviderClient:
    """One configured provider and its lazily created, reused any-llm clients."""

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.config = config
        self._shards: list[_Shard] = []
        self._max_shards = MAX_SHARDS
        self._ssl_context: ssl.SSLContext | None = None

    @property
    def unavailable_reason(self) -> str | None:
        return self.config.unavailable_reason

    @property
    def fetches_remote_images(self) -> bool:
        """Whether the SDK sends http(s) image URLs on (the ollama SDK drops them)."""
        return self.config.sdk != "ollama"

    @property
    def reports_stream_usage_unasked(self) -> bool:
        """Whether a stream ends with usage without ``stream_options`` (Ollama does)."""
        return self.config.sdk == "ollama"

    def cannot_serve(
        self, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]
    ) -> str | None:
        """Why this provider's SDK would silently lose part of the request; None if it would not.

        any-llm's ollama provider passes unknown parameters as model options, which the
        server ignores: a tool_choice of ``required`` or ``n=3`` would be lost without a
        word, and http(s) image URLs are dropped.
        """
        if not self.fetches_remote_images and _remote_image(messages):
            return "the ollama SDK drops http(s) image URLs: send images as data: URLs"
        if self.config.sdk != "ollama":
            return None
        if has_binary(messages):
            return "the ollama SDK drops file, audio and unknown content parts"
        for name, honoured in _OLLAMA_HONOURS.items():
            if name in params and params[name] not in honoured:
                return f"the ollama SDK cannot honour {name}={params[name]!r}"
        return None

    @property
    def ready(self) -> bool:
        """Whether the first SDK client exists already."""
        return bool(self._shards)

    @property
    def shards(self) -> int:
        """How many SDK clients (connection pools) this provider has now."""
        return len(self._shards)

    def prepare(self) -> None:
        """Create the first SDK client now (imports any-llm), outside any attempt's limit."""
        if not self._shards:
            self._add_shard()

    def _add_shard(self) -> _Shard:
        with map_sdk_errors(self.name):
            if self._ssl_context is None:
                self._ssl_context = _ssl_context()
            client, shareable = _create_client(self.config, self._ssl_context)
            if not self.config.local:  # every byte bound for a cloud passes our last check
                install_guard(client, self.name)
        if not shareable:
            self._max_shards = 1
        shard = _Shard(client)
        self._shards.append(shard)
        return shard

    def _pick(self) -> _Shard:
        """The first client with room, else a new one, else the least busy one."""
        for shard in self._shards:
            if shard.in_flight < SHARD_IN_FLIGHT:
                return shard
        if len(self._shards) < self._max_shards:
            return self._add_shard()
        return min(self._shards, key=lambda shard: shard.in_flight)

    async def complete(
        self, model: str, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> ChatCompletion:
        """One non-streaming attempt; raises ``ProviderCallError``."""
        shard = self._pick()
        shard.in_flight += 1
        try:
            with map_sdk_errors(self.name):
                response: ChatCompletion = await shard.client.acompletion(
                    model=model, messages=messages, **self._sdk_params(params)
                )
        finally:
            shard.in_flight -= 1
        return response

    async def open_stream(
        self, model: str, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Start a streaming attempt; iterate the result through ``iterate_stream``.

        A stream counts as in flight on its client while it opens, not while it is read.
        """
        shard = self._pick()
        if not self.reports_stream_usage_unasked:  # OpenAI-style servers send it when asked
            params = {**params, "stream_options": {"include_usage": True}}
        shard.in_flight += 1
        try:
            with map_sdk_errors(self.name):
                stream: AsyncIterator[ChatCompletionChunk] = await shard.client.acompletion(
                    model=model, messages=messages, stream=True, **self._sdk_params(params)
                )
        finally:
            shard.in_flight -= 1
        return stream

    def _sdk_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments for the SDK: a provider's own parameters (``allow_params``)
        travel in the OpenAI SDK's ``extra_body`` (its ``create`` takes no others); the
        ollama SDK passes unknown ones on as model options by itself."""
        if self.config.sdk == "ollama":
            return params
        own = {name: value for name, value in params.items() if name not in CHAT_PARAMS}
        if not own:
            return params
        sent = {name: value for name, value in params.items() if name in CHAT_PARAMS}
        return {**sent, "extra_body": own}

    async def next_chunk(self, stream: AsyncIterator[ChatCompletionChunk]) -> ChatCompletionChunk:
        """The next chunk of a stream; ``StopAsyncIteration`` at its end."""
        with map_sdk_errors(self.name):
            return await anext(stream)

    async def aclose(self) -> None:
        shards, self._shards = self._shards, []
        for shard in shards:
            with contextlib.suppress(Exception):  # closing a broken connection must not mask
                await _close_client(shard.client)


def completion_from_json(data: dict[str, Any]) -> ChatCompletion:
    """A ChatCompletion rebuilt from its JSON (a cached answer)."""
    from any_llm.types.completion import ChatCompletion

    return ChatCompletion.model_validate(data)


def _ssl_context() -> ssl.SSLContext:
    """The SSL context httpx would build for a client (certifi, or $SSL_CERT_FILE/DIR)."""
    import httpx

    return httpx.create_ssl_context(trust_env=True)


def _create_client(config: ProviderConfig, context: ssl.SSLContext) -> tuple[Any, bool]:
    """A new any-llm client, and whether it was handed ``context`` (then more may follow).

    It gets nothing from the process environment (``aegis_proxy.call.ambient``).
    """
    from any_llm import AnyLLM  # lazy: ~1.5 s import

    key = config.api_key.get_secret_value() if config.api_key else None
    kwargs: dict[str, Any] = {"unified_exceptions": True}
    if config.sdk == "ollama":
        if key:
            kwargs["headers"] = {"Authorization": f"Bearer {key}"}
        base = explicit_api_base(config, None)
        client: Any = AnyLLM.create("ollama", api_base=base, verify=context, **kwargs)
        if not key:  # the ollama client reads OLLAMA_API_KEY from the environment: drop it
            client.client._client.headers.pop("authorization", None)
        return client, True
    provider_class = AnyLLM.get_provider_class(config.sdk)
    shareable = _plain_openai_client(provider_class)
    if shareable:
        kwargs["http_client"] = _openai_http_client(context)
    base = explicit_api_base(config, provider_class)
    client = AnyLLM.create(
        config.sdk, api_key=key or _NO_KEY, api_base=base, max_retries=0, **kwargs
    )
    drop_ambient_settings(client, config)
    _load_chat_resources(client)
    return client, shareable


def _load_chat_resources(client: Any) -> None:
    """Import the OpenAI SDK's chat modules now, in the warm-up thread.

    ``AsyncOpenAI`` imports them (~470 modules, 0.15-0.4 s) on first use of ``.chat``,
    which would otherwise stall the event loop during a process's first request.
    """
    chat = getattr(getattr(client, "client", None), "chat", None)
    getattr(chat, "completions", None)


def _plain_openai_client(provider_class: type[Any]) -> bool:
    """Whether the SDK builds a plain ``AsyncOpenAI`` (which takes an ``http_client``)."""
    from any_llm.providers.openai.base import BaseOpenAIProvider

    return (
        issubclass(provider_class, BaseOpenAIProvider)
        and provider_class._init_client is BaseOpenAIProvider._init_client
    )


def _openai_http_client(context: ssl.SSLContext) -> Any:
    """The OpenAI SDK's own default HTTP client (its limits, timeouts), with ``context``."""
    from openai import DefaultAsyncHttpxClient

    return DefaultAsyncHttpxClient(verify=context)


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
