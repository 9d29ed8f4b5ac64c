"""The multi-process budget race, for either ledger backend: many processes, each with
threads or asyncio tasks, reserving and settling against one budget at once.

Each process opens its own ledger at ``target`` (a SQLite path or a PostgreSQL URL), waits
at a barrier, then makes ``calls`` calls at once (even processes from a thread pool, odd
ones as asyncio tasks with the ledger work in threads, the proxy's way). It reports how
many of its calls the budget let through.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from aegis_proxy.errors import BudgetExceededError
from aegis_proxy.settle.backend import LedgerBackend
from aegis_proxy.settle.open import open_ledger
from aegis_proxy.settle.records import AttemptOutcome, AttemptStart, BudgetLimit

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
RESERVATION = 1000
CALLS_PER_PROCESS = 50


def start(request_id: str, provider: str = "openai") -> AttemptStart:
    return AttemptStart(
        request_id=request_id,
        attempt=1,
        provider=provider,
        model="gpt-4o",
        rule="default",
        task_type="general",
        quality="standard",
        complexity="medium",
        batch_size=1,
        data_classification="internal",
        contains_pii=False,
        stream=False,
        query_hash="0" * 16,
    )


def one_call(ledger: LedgerBackend, request_id: str, budget: BudgetLimit, cost: int) -> bool:
    """Reserve, pretend to call the provider, settle; False when the budget refused it."""
    try:
        row_id = ledger.reserve(start(request_id), RESERVATION, budget, NOW)
    except BudgetExceededError:
        return False
    time.sleep(0.005)
    ledger.settle(row_id, AttemptOutcome("ok", 5.0, 40, 10, cost_micros=cost), NOW)
    return True


async def _async_call(
    ledger: LedgerBackend, request_id: str, budget: BudgetLimit, cost: int
) -> bool:
    """The proxy's way: ledger work in a thread, the provider call awaited."""
    try:
        row_id = await asyncio.to_thread(
            ledger.reserve, start(request_id), RESERVATION, budget, NOW
        )
    except BudgetExceededError:
        return False
    await asyncio.sleep(0.005)
    outcome = AttemptOutcome("ok", 5.0, 40, 10, cost_micros=cost)
    await asyncio.to_thread(ledger.settle, row_id, outcome, NOW)
    return True


async def _async_calls(
    ledger: LedgerBackend, prefix: str, budget: BudgetLimit, cost: int
) -> list[bool]:
    calls = (_async_call(ledger, f"{prefix}-{n}", budget, cost) for n in range(CALLS_PER_PROCESS))
    return await asyncio.gather(*calls)


def _worker(
    target: str, index: int, budget: BudgetLimit, cost: int, barrier: Any, results: Any
) -> None:
    """One process: 50 concurrent calls on its own ledger, by threads or asyncio tasks."""
    with open_ledger(target) as ledger:
        barrier.wait()
        prefix = f"p{index}"
        if index % 2:
            outcomes = asyncio.run(_async_calls(ledger, prefix, budget, cost))
        else:
            with ThreadPoolExecutor(CALLS_PER_PROCESS) as pool:
                calls = [f"{prefix}-{n}" for n in range(CALLS_PER_PROCESS)]
                outcomes = list(pool.map(lambda rid: one_call(ledger, rid, budget, cost), calls))
    results.put(sum(outcomes))


def run_race(target: str, processes: int, budget: BudgetLimit, cost: int, join_s: float) -> int:
    """Run ``processes`` racing processes on the ledger at ``target``; the calls let through."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [
        context.Process(target=_worker, args=(target, n, budget, cost, barrier, results))
        for n in range(processes)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(join_s)  # the results are a few small ints: the queue cannot block a join
    assert [p.exitcode for p in workers] == [0] * processes
    return sum(results.get(timeout=5) for _ in workers)
