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
import os
import signal
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


# -- the same race with crashes and cancellations mixed in --------------------------------


def _log_call(calls_file: str, row_id: int, kind: str) -> None:
    """One line per provider call, appended before the call (O_APPEND: atomic lines)."""
    fd = os.open(calls_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{row_id} {kind}\n".encode())
    finally:
        os.close(fd)


def _faulty_call(
    ledger: LedgerBackend, request_id: str, budget: BudgetLimit, kind: str, calls_file: str
) -> None:
    """Reserve; on success "call" the provider, then settle ok, cancel, or hang (to die)."""
    try:
        row_id = ledger.reserve(start(request_id), RESERVATION, budget, NOW)
    except BudgetExceededError:
        return
    _log_call(calls_file, row_id, kind)
    time.sleep(0.005)
    if kind == "crash":
        time.sleep(3600)  # killed -9 with the call in flight
    elif kind == "cancel":  # cancelled after send: the provider may bill it, up to its bound
        outcome = AttemptOutcome("cancelled", 5.0, cost_micros=RESERVATION)
        ledger.settle(row_id, outcome, NOW)
    else:
        ledger.settle(row_id, AttemptOutcome("ok", 5.0, 40, 10, cost_micros=400), NOW)


def _faulty_worker(
    target: str, index: int, budget: BudgetLimit, barrier: Any, calls_file: str
) -> None:
    """Odd processes hang every call until killed; even ones settle or cancel them.

    One call of each kind is made before the barrier, while the budget is far from spent,
    so every kind is surely in the race (who wins the rest of the budget is the race).
    """
    ledger = open_ledger(target)
    kinds = ["crash"] if index % 2 else ["ok", "cancel"]
    with ThreadPoolExecutor(CALLS_PER_PROCESS) as pool:
        for kind in kinds:
            pool.submit(_faulty_call, ledger, f"f{index}-first-{kind}", budget, kind, calls_file)
        _wait_for_lines(calls_file, len(kinds))
        barrier.wait()
        for n in range(CALLS_PER_PROCESS - len(kinds)):
            kind = kinds[n % len(kinds)]
            pool.submit(_faulty_call, ledger, f"f{index}-{n}", budget, kind, calls_file)
        if index % 2:
            time.sleep(3600)
    ledger.close()


def _wait_for_lines(path: str, count: int, timeout_s: float = 60.0) -> None:
    """Until ``path`` holds ``count`` lines (the calls made so far were logged)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as file:
                if sum(1 for line in file if line.strip()) >= count:
                    return
        time.sleep(0.01)
    raise AssertionError(f"{path}: fewer than {count} calls logged in {timeout_s} s")


def run_faulty_race(
    target: str, processes: int, budget: BudgetLimit, calls_dir: str, join_s: float
) -> list[tuple[int, str]]:
    """The race with half the processes killed -9 mid-call; the provider calls made."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    files = [os.path.join(calls_dir, f"calls-{n}.txt") for n in range(processes)]
    workers = [
        context.Process(target=_faulty_worker, args=(target, n, budget, barrier, files[n]))
        for n in range(processes)
    ]
    for process in workers:
        process.start()
    for process in workers[0::2]:
        process.join(join_s)
    time.sleep(1.0)  # the hanging processes made their reservations by now
    for process in workers[1::2]:
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        process.join(join_s)
    assert [p.exitcode for p in workers] == [0 if n % 2 == 0 else -9 for n in range(processes)]
    calls = []
    for path in files:
        if os.path.exists(path):
            with open(path) as file:
                calls += [(int(line.split()[0]), line.split()[1]) for line in file if line.strip()]
    return calls
