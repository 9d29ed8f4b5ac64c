"""An event loop on a background thread, so blocking code and other loops can use one proxy.

HTTP clients belong to the event loop that opened them. Blocking callers (``completion``,
``ChatAegis.invoke``) and callers on other loops submit coroutines to this loop instead of
each building a proxy. What must always hold:

- work submitted from the loop's own thread is refused (``RequestValidationError``): the
  caller would wait on itself forever;
- a caller that stops waiting (cancelled, interrupted) cancels the submitted work;
- a bridged iterator closes the async iterator it reads, on its loop, however the consumer
  stops (end, ``close()``, ``break`` + garbage collection), so a stream's ledger row settles;
- ``stop()`` lets pending work finish (bounded), then ends the loop and joins the thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Iterator
from typing import Any, Self, TypeVar

from aegis_proxy.errors import RequestValidationError

__all__ = ["BridgedIterator", "LoopThread", "bridge"]

T = TypeVar("T")

_STOP_GRACE_S = 5.0


class LoopThread:
    """One daemon thread running one event loop, started on first use."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop (started now if it is not)."""
        with self._lock:
            if self._loop is None:
                self._loop, self._thread = _start(self.name)
            return self._loop

    @property
    def running(self) -> bool:
        return self._loop is not None

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; never blocks (safe from any thread, a finalizer too)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], what: str = "call") -> T:
        """Run ``coro`` on the loop and wait for its result in this (blocking) thread."""
        if self.in_loop_thread():
            coro.close()
            raise RequestValidationError(what, "called from the proxy's own event loop thread")
        future = self.submit(coro)
        try:
            return future.result()
        except BaseException:  # interrupted or failed: stop the work if it still runs
            future.cancel()
            raise

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` run on this loop from another loop (cancelling one cancels both)."""
        if asyncio.get_running_loop() is self._loop:
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def stop(self) -> None:
        """Let pending tasks finish (a few seconds at most), stop the loop, join the thread."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        if threading.current_thread() is thread:
            loop.call_soon(loop.stop)  # cannot wait on ourselves: the thread ends when we return
            return
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(_drain(), loop).result(_STOP_GRACE_S * 2)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_STOP_GRACE_S)


def _start(name: str) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=serve, name=name, daemon=True)
    thread.start()
    ready.wait()
    return loop, thread


async def _drain() -> None:
    """Wait (bounded) for every other task of this loop to finish."""
    current = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not current]
    if pending:
        await asyncio.wait(pending, timeout=_STOP_GRACE_S)


class BridgedIterator(Iterator[T]):
    """A blocking iterator over an async iterator that lives on a ``LoopThread``."""

    def __init__(self, runner: LoopThread, source: AsyncIterator[T]) -> None:
        self._runner = runner
        self._source = source
        self._done = False

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        try:
            return self._runner.run(_next(self._source), "stream")
        except StopAsyncIteration:
            self._done = True
            raise StopIteration from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the async iterator (settling what it holds); safe to call twice."""
        if self._done:
            return
        self._done = True
        closing = getattr(self._source, "aclose", None)
        if closing is not None and self._runner.running:
            if self._runner.in_loop_thread():
                self._runner.submit(closing())
            else:
                self._runner.run(closing(), "stream")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._done:  # abandoned mid-way: close without waiting
            self._done = True
            closing = getattr(self._source, "aclose", None)
            if closing is not None and self._runner.running:
                self._runner.submit(closing())


async def _next(source: AsyncIterator[T]) -> T:
    return await source.__anext__()


async def bridge(runner: LoopThread, source: AsyncIterator[T]) -> AsyncGenerator[T, None]:
    """Iterate, from the caller's loop, an async iterator that lives on ``runner``'s loop."""
    try:
        while True:
            try:
                item = await runner.arun(_next(source))
            except StopAsyncIteration:
                return
            yield item
    finally:
        closing = getattr(source, "aclose", None)
        if closing is not None and runner.running:
            await runner.arun(closing())
