"""Streamed responses whose ledger row is settled exactly once, however the stream ends.

What must always hold:
- a failure before the first chunk belongs to the attempt loop (it falls back); after the
  first chunk a failure is raised to the consumer: output is never duplicated;
- the row is settled when the stream ends (``ok``), fails (``error``), or is closed or
  dropped early (``cancelled``). A stream that did not end is billed at what it produced
  only when the provider's usage says so; without usage its outcome is unknown (the
  provider may generate, and bill, the rest) and it is billed at its bound. The work happens in an
  async generator primed before it is handed out, so ``aclose()`` and garbage collection
  (asyncio's async-generator finalizer) both run its ``finally``;
- no chunk waits longer than the attempt's timeout, nor past the request's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Self

from aegis_proxy import errors
from aegis_proxy.settle.records import Finished, Status

if TYPE_CHECKING:
    from types import TracebackType

    from any_llm.types.completion import ChatCompletionChunk

    from aegis_proxy.classify.redaction import ChunkRestorer
    from aegis_proxy.decide.record import AegisRecord
    from aegis_proxy.job import Call

Settle = Callable[[Finished], Awaitable[None]]


async def open_first_chunk(
    call: Call, messages: list[dict[str, Any]], params: dict[str, Any], limit: float | None
) -> tuple[AsyncIterator[ChatCompletionChunk], ChatCompletionChunk | None]:
    """Open the stream and wait for its first chunk (None for an empty stream)."""
    async with asyncio.timeout(limit):
        stream = await call.client.open_stream(call.model, messages, params)
        try:
            return stream, await call.client.next_chunk(stream)
        except StopAsyncIteration:
            return stream, None
        except BaseException:
            await _close(stream)
            raise


class AegisStream:
    """An async iterator of ``ChatCompletionChunk`` with the routing record as ``.aegis``."""

    def __init__(
        self,
        call: Call,
        stream: AsyncIterator[ChatCompletionChunk],
        first: ChatCompletionChunk | None,
        record: AegisRecord,
        settle: Settle,
        stop_at: float | None,
        restorer: ChunkRestorer | None = None,
    ) -> None:
        self.aegis = record
        self._restorer = restorer
        self._call = call
        self._stream = stream
        self._settle = settle
        self._chunk_timeout = call.client.config.timeout_s  # the longest wait for one chunk
        self._stop_at = stop_at
        self._gen = self._run(first)

    async def start(self) -> Self:
        """Prime the generator so that its ``finally`` runs on close or collection."""
        await self._gen.asend(None)
        return self

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        """Stop early: the row is settled as ``cancelled`` with the tokens seen so far."""
        await self._gen.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(
        self, first: ChatCompletionChunk | None
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        text: list[str] = []
        usage: Any = None
        status: Status = "cancelled"
        error_type: str | None = "cancelled"
        try:
            yield None  # type: ignore[misc]  # the priming step; never reaches the consumer
            chunk = first
            while chunk is not None:
                usage = getattr(chunk, "usage", None) or usage
                text.append(_chunk_text(chunk))  # counted as the provider sent it
                yield self._restorer.restore(chunk) if self._restorer else chunk
                chunk = await self._next()
            leftover = self._restorer.leftover_chunk() if self._restorer else None
            if leftover is not None:
                yield leftover
            status, error_type = "ok", None
        except (errors.ProviderCallError, TimeoutError) as exc:
            mapped = _as_call_error(self._call.client.name, exc)
            status, error_type = "error", mapped.kind
            raise mapped from exc
        finally:
            unknown = status != "ok"  # without usage, the provider's bill is unknown
            await self._settle(Finished(status, usage, "".join(text), error_type, unknown))
            await _close(self._stream)

    async def _next(self) -> ChatCompletionChunk | None:
        limit = self._chunk_timeout
        if self._stop_at is not None:
            remaining = max(0.0, self._stop_at - time.monotonic())
            limit = remaining if limit is None else min(limit, remaining)
        try:
            async with asyncio.timeout(limit):
                return await self._call.client.next_chunk(self._stream)
        except StopAsyncIteration:
            return None


def _as_call_error(provider: str, exc: BaseException) -> errors.ProviderCallError:
    if isinstance(exc, errors.ProviderCallError):
        return exc
    return errors.ProviderTimeoutError(provider, "stream stalled past its time limit")


def _chunk_text(chunk: Any) -> str:
    parts: list[str] = []
    for choice in getattr(chunk, "choices", None) or []:
        delta = getattr(choice, "delta", None)
        parts.append(getattr(delta, "content", None) or "")
        for call in getattr(delta, "tool_calls", None) or []:
            function = getattr(call, "function", None)
            parts.append(getattr(function, "arguments", None) or "")
    return "".join(parts)


async def _close(stream: object) -> None:
    closer = getattr(stream, "aclose", None)
    if closer is not None:
        with contextlib.suppress(Exception):  # the row is already settled; closing is courtesy
            await closer()
