"""Money under faults, through the proxy, on SQLite and PostgreSQL: what a provider may have
billed is counted, a reservation outlives a slow call, a paid answer survives a locked
ledger, a provider billing above its bound is recorded and flagged.

The fake provider records every request before answering: each recorded request counts as
billed at its fake usage (``billed``), and the ledger's spend must cover it.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from aegis_proxy import AegisLLMProxy, LLMTask
from aegis_proxy.settle.open import open_ledger
from aegis_proxy.settle.records import current_month
from tests.fakeserver import Fault, count_prompt_tokens
from tests.logcapture import capture_events
from tests.settle.test_postgres_ledger import pg_server, pg_url, target  # noqa: F401

if TYPE_CHECKING:
    from tests.conftest import Rig
    from tests.fakeserver import FakeProviderServer

HELLO = [{"role": "user", "content": "hello there"}]
CRITICAL = LLMTask(quality="critical", complexity="high")
MAX_TOKENS = 100


def config(
    rig: Rig, where: str, budget_usd: float, ttl_s: float = 900.0, busy_s: float = 10.0
) -> dict[str, Any]:
    """openai (budgeted, $2.50/$10 per Mtok) then local_ollama, on the ledger at ``where``."""
    data = rig.config_data()
    openai = data["providers"]["openai"]
    openai.update(monthly_budget_usd=budget_usd, timeout_s=30)
    openai["price"] = {"input_per_mtok": 2.5, "output_per_mtok": 10}
    data["routing"]["deadline_s"] = 30
    data["routing"]["rules"][0]["route"] = ["openai", "local_ollama"]
    data["budgets"] = {"reservation_ttl_s": ttl_s}
    ledger: dict[str, Any] = {"busy_timeout_s": busy_s}
    if where.startswith("postgres"):
        ledger["url"] = where
    else:
        ledger["path"] = where.removeprefix("sqlite:///")
    data["ledger"] = ledger
    return data


def write(rig: Rig, data: dict[str, Any]) -> Path:
    path = rig.tmp_path / "aegis.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def billed(server: FakeProviderServer) -> int:
    """Micro-dollars the fake provider billed: every request it received, at its usage."""
    total = Decimal(0)
    for request in server.chat_requests():
        prompt = count_prompt_tokens(request.body)
        total += Decimal(prompt) * Decimal("2.5") + len(server.reply_text.split()) * 10
    return math.ceil(total)


def wait_for(predicate: Any, seconds: float = 20.0, describe: Any = None) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting: {describe and describe()}"
        time.sleep(0.02)


def openai_rows(where: str) -> list[dict[str, object]]:
    with open_ledger(where) as ledger:
        return [r for r in ledger.export_rows(current_month()) if r["provider"] == "openai"]


def spent(where: str) -> tuple[int, int]:
    with open_ledger(where) as ledger:
        return ledger.budget_state("openai", current_month())


# -- crash ---------------------------------------------------------------------------------


def _calls_in_child(config_path: str, calls: int) -> None:
    async def main() -> None:
        proxy = AegisLLMProxy.from_config(config_path)
        requests = (proxy.acompletion(HELLO, CRITICAL, max_tokens=MAX_TOKENS) for _ in range(calls))
        await asyncio.gather(*requests, return_exceptions=True)
        await asyncio.sleep(60)  # killed before this ends

    asyncio.run(main())


def test_kill_9_with_calls_in_flight_bills_their_bounds(rig: Rig, target: str) -> None:  # noqa: F811
    """Calls held at the provider when their process is killed -9 count at their bounds on
    reopen, and no later call passes the budget: spend >= billed, billed <= budget."""
    import multiprocessing

    budget_usd = 0.0035  # three calls' bounds (~1,030 µ$ each) fit
    path = write(rig, config(rig, target, budget_usd))
    rig.openai.add_fault(Fault.hold(), times=50)
    child = multiprocessing.get_context("spawn").Process(
        target=_calls_in_child, args=(str(path), 10)
    )
    child.start()

    def counts() -> tuple[int, int]:
        return len(rig.openai.chat_requests()), len(rig.local.chat_requests())

    wait_for(lambda: counts() == (3, 7), describe=counts, seconds=40)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    rig.openai.release_held()
    rows = openai_rows(target)
    assert sorted(str(r["status"]) for r in rows) == ["expired_billed"] * 3
    bounds = sum(int(str(r["reserved_micros"])) for r in rows)
    assert spent(target) == (bounds, 0)

    async def later() -> None:
        async with AegisLLMProxy.from_config(path) as proxy:
            for _ in range(5):
                response = await proxy.acompletion(HELLO, CRITICAL, max_tokens=MAX_TOKENS)
                assert response.aegis.provider == "local_ollama"

    asyncio.run(later())
    assert len(rig.openai.chat_requests()) == 3
    assert billed(rig.openai) <= spent(target)[0] <= budget_usd * 1_000_000


# -- cancel --------------------------------------------------------------------------------


async def test_cancel_after_send_is_billed_at_the_bound(rig: Rig, target: str) -> None:  # noqa: F811
    """A non-streamed call cancelled after its request reached the provider is settled
    'cancelled' at its bound: its money is spent, not released."""
    rig.openai.add_fault(Fault.hold())
    async with AegisLLMProxy.from_config(write(rig, config(rig, target, 1.0))) as proxy:
        task = asyncio.create_task(proxy.acompletion(HELLO, CRITICAL, max_tokens=MAX_TOKENS))
        await asyncio.to_thread(wait_for, lambda: len(rig.openai.chat_requests()) == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    rig.openai.release_held()
    [row] = openai_rows(target)
    assert (row["status"], row["error_type"]) == ("cancelled", "cancelled")
    assert row["cost_micros"] == row["reserved_micros"]
    assert int(str(row["cost_micros"])) > 0
    assert spent(target) == (row["cost_micros"], 0)
    assert billed(rig.openai) <= int(str(row["cost_micros"]))


async def test_connection_refused_is_released(rig: Rig, target: str, refused_url: str) -> None:  # noqa: F811
    """A call whose connection was refused never left: its row costs $0, nothing is held."""
    data = config(rig, target, 1.0)
    data["providers"]["openai"]["api_base"] = f"{refused_url}/v1"
    async with AegisLLMProxy.from_config(write(rig, data)) as proxy:
        response = await proxy.acompletion(HELLO, CRITICAL, max_tokens=MAX_TOKENS)
    assert response.aegis.provider == "local_ollama"
    [row] = openai_rows(target)
    assert (row["status"], row["error_type"], row["cost_micros"]) == (
        "error",
        "connection_error",
        0,
    )
    assert spent(target) == (0, 0)


async def test_stream_cancelled_midway_without_usage_is_billed_at_the_bound(
    rig: Rig,
    target: str,  # noqa: F811
) -> None:
    """A stream closed after its first chunk, with no usage from the provider, costs its bound."""
    rig.openai.reply_text = " ".join(["word"] * 30)
    rig.openai.add_fault(Fault.stall_after_first_chunk(5.0))
    async with AegisLLMProxy.from_config(write(rig, config(rig, target, 1.0))) as proxy:
        stream = await proxy.acompletion(HELLO, CRITICAL, max_tokens=MAX_TOKENS, stream=True)
        await stream.__anext__()
        await stream.aclose()
    [row] = openai_rows(target)
    assert row["status"] == "cancelled"
    assert row["cost_micros"] == row["reserved_micros"]


@pytest.fixture
def refused_url() -> str:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- slow calls ------------------------------------------------------------------------------


async def test_call_slower_than_the_ttl_keeps_its_reservation(rig: Rig, target: str) -> None:  # noqa: F811
    """A call three TTLs long stays pending (renewed), so a second call cannot reserve the
    same money meanwhile; the first then settles once at its real cost."""
    rig.openai.add_fault(Fault.delay(2.0))
    data = config(rig, target, 0.0015, ttl_s=0.6)  # one bound fits, not two
    async with AegisLLMProxy.from_config(write(rig, data)) as proxy:
        slow = asyncio.create_task(proxy.acompletion(HELLO, CRITICAL, max_tokens=MAX_TOKENS))
        await asyncio.sleep(1.5)
        second = await proxy.acompletion(HELLO, CRITICAL, max_tokens=MAX_TOKENS)
        assert [a.outcome for a in second.aegis.attempts][:1] == ["budget_exceeded"]
        assert [r["status"] for r in openai_rows(target)] == ["pending"]
        first = await slow
    assert first.aegis.provider == "openai"
    [row] = openai_rows(target)
    assert row["status"] == "ok"
    assert spent(target) == (row["cost_micros"], 0)


# -- a locked ledger -------------------------------------------------------------------------


def _lock_ledger(where: str, held: threading.Event, release: threading.Event) -> None:
    """Hold the write lock (SQLite) or the openai usage rows' locks (PostgreSQL)."""
    if where.startswith("postgres"):
        import psycopg

        with psycopg.connect(where) as conn:
            conn.execute("SELECT * FROM budget_usage WHERE provider = 'openai' FOR UPDATE")
            held.set()
            release.wait(20)
        return
    import sqlite3

    conn = sqlite3.connect(where.removeprefix("sqlite:///"), isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    held.set()
    release.wait(20)
    conn.execute("COMMIT")
    conn.close()


async def _ticker(lags: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(0.005)
        lags.append(time.perf_counter() - before - 0.005)


async def test_ledger_locked_during_settle_still_answers(rig: Rig, target: str) -> None:  # noqa: F811
    """A settle meeting a lock past the busy timeout is queued: the caller gets the paid
    answer, the loop never stalls > 50 ms, and the row lands once the lock is gone."""
    held, release = threading.Event(), threading.Event()
    data = config(rig, target, 1.0, busy_s=0.3)
    lags: list[float] = []
    stop = asyncio.Event()
    async with AegisLLMProxy.from_config(write(rig, data)) as proxy:
        await proxy.acompletion(HELLO, CRITICAL, max_tokens=5)  # warm: ledger, SDK, rows
        rig.openai.clear()
        rig.openai.add_fault(Fault.delay(0.5))
        ticker = asyncio.create_task(_ticker(lags, stop))
        call = asyncio.create_task(proxy.acompletion(HELLO, CRITICAL, max_tokens=MAX_TOKENS))
        await asyncio.to_thread(wait_for, lambda: len(rig.openai.chat_requests()) == 1)
        locker = threading.Thread(target=_lock_ledger, args=(target, held, release))
        locker.start()
        await asyncio.to_thread(held.wait, 5)
        with capture_events() as logs:
            response = await call
        assert response.choices[0].message.content == rig.openai.reply_text
        assert proxy.ledger.queued_rows == 1
        assert "ledger_settle_queued" in [log["event"] for log in logs]
        release.set()
        await asyncio.to_thread(locker.join)
        await asyncio.to_thread(wait_for, lambda: proxy.ledger.queued_rows == 0)
        stop.set()
        await ticker
    assert max(lags) < 0.05
    rows = openai_rows(target)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert spent(target) == (sum(int(str(r["cost_micros"])) for r in rows), 0)


# -- a lying provider ------------------------------------------------------------------------


async def test_provider_billing_above_its_bound_is_recorded_and_flagged(
    rig: Rig,
    target: str,  # noqa: F811
) -> None:
    """Usage above the reservation: the real cost is recorded, logged with its figures,
    counted in a metric, and the report flags the provider SUSPECT."""
    from prometheus_client import CollectorRegistry

    from aegis_proxy.observe.metrics import PrometheusObserver

    rig.openai.reply_text = " ".join(["word"] * 300)  # 300 tokens billed for max_tokens=5
    registry = CollectorRegistry()
    async with AegisLLMProxy.from_config(write(rig, config(rig, target, 1.0))) as proxy:
        PrometheusObserver(registry).bind(proxy)
        with capture_events() as logs:
            await proxy.acompletion(HELLO, CRITICAL, max_tokens=5)
        summary = proxy.ledger.monthly_summary()
    [row] = openai_rows(target)
    prompt = count_prompt_tokens(rig.openai.chat_requests()[0].body)
    real = math.ceil(Decimal(prompt) * Decimal("2.5")) + 3000
    assert row["cost_micros"] == real > int(str(row["reserved_micros"]))
    [warning] = [log for log in logs if log["event"] == "cost_exceeded_reservation"]
    assert (warning["cost_micros"], warning["reserved_micros"]) == (real, row["reserved_micros"])
    labels = {"provider": "openai", "model": "gpt-4o"}
    assert registry.get_sample_value("llm_cost_overshoots_total", labels) == 1.0
    [openai] = [p for p in summary if p.provider == "openai"]
    assert openai.overshoots == 1
    assert "SUSPECT" in openai.flag
