"""LoopThread: blocking and cross-loop calls into one background event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from aegis_proxy import RequestValidationError
from aegis_proxy.loop_thread import BridgedIterator, LoopThread, bridge


@pytest.fixture
def runner() -> Iterator[LoopThread]:
    thread = LoopThread("test-loop")
    yield thread
    thread.stop()


async def where() -> threading.Thread:
    return threading.current_thread()


def test_run_executes_on_the_loop_thread(runner: LoopThread) -> None:
    """run() returns the coroutine's result, computed on the background thread."""
    ran_on = runner.run(where())
    assert ran_on is not threading.current_thread()
    assert ran_on.name == "test-loop"


def test_run_from_the_loop_thread_itself_is_refused(runner: LoopThread) -> None:
    """A blocking run() from the loop's own thread raises instead of waiting on itself."""

    async def nested() -> None:
        runner.run(where(), "nested")

    with pytest.raises(RequestValidationError) as caught:
        runner.run(nested())
    assert caught.value.field == "nested"


async def test_cancelling_the_caller_cancels_the_work(runner: LoopThread) -> None:
    """A caller on another loop that is cancelled cancels the coroutine on the runner."""
    started, cancelled = threading.Event(), threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = asyncio.ensure_future(runner.arun(forever()))
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(cancelled.wait, 5)


def closing_source(closed: threading.Event) -> AsyncIterator[int]:
    async def numbers() -> AsyncIterator[int]:
        try:
            for n in range(100):
                yield n
        finally:
            closed.set()

    return numbers()


def test_a_bridged_iterator_closed_early_closes_its_source(runner: LoopThread) -> None:
    """Leaving a blocking iterator early runs the async source's finally on the runner."""
    closed = threading.Event()
    with BridgedIterator(runner, closing_source(closed)) as numbers:
        assert [next(numbers), next(numbers)] == [0, 1]
    assert closed.wait(5)


async def test_bridge_from_another_loop_closes_its_source(runner: LoopThread) -> None:
    """An async consumer on another loop reads the runner's iterator and closes it."""
    closed = threading.Event()
    source = bridge(runner, closing_source(closed))
    assert [await anext(source), await anext(source)] == [0, 1]
    await source.aclose()
    assert closed.is_set()


def test_stop_lets_pending_work_finish(runner: LoopThread) -> None:
    """stop() waits for submitted work before ending the loop and its thread."""
    done = threading.Event()

    async def slow() -> None:
        await asyncio.sleep(0.2)
        done.set()

    runner.submit(slow())
    runner.stop()
    assert done.is_set()
    assert not runner.running
