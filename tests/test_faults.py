"""Every provider fault ends, through the proxy, served by the right provider or with a clear
error within the deadline; streams keep their order and settle their row however they end.

What must always hold, for an OpenAI-protocol and an Ollama-protocol provider alike (Ollama's
client has no timeout of its own, so only our deadline can stop it):
- 429 (with Retry-After), 500, malformed JSON, refused connections, slow headers, a body or
  stream that stalls, and a socket that accepts but never answers all end by
  ``elapsed <= limit + MARGIN``: the bound is on hanging, the margin is scheduling slack;
- a stream falls back only before its first chunk; after it, the consumer gets the error;
- ledger rows are exactly the attempts that reached a provider, none left ``pending`` and no
  budget reservation left behind.

The timings are bounds on hanging, not speed measurements (those live in ``bench/``). The
module first makes one call per protocol so that the one-off SDK import is not timed here
(``test_first_call_of_a_fresh_process_keeps_its_deadline`` is about exactly that).
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aegis_proxy import (
    AegisConfig,
    AegisError,
    AegisLLMProxy,
    AegisStream,
    Attempt,
    LLMTask,
    NoProviderAvailableError,
    ProviderCallError,
)
from tests.conftest import Rig
from tests.fakeserver import FakeProviderServer, Fault, count_prompt_tokens

PROTOCOLS = ["openai", "ollama"]
DEADLINE_S = 0.6  # for requests that must end at their deadline
ROOMY_S = 2.0  # for requests that must fall back: room for the backup on a busy machine
TIMEOUT_S = 0.25
MARGIN = 0.5  # scheduling slack on a shared 2-CPU box; a hang overshoots by seconds
HELLO = [{"role": "user", "content": "List the planets of the solar system."}]
REPLY = "alpha bravo charlie delta echo foxtrot golf"
NOT_REACHED = ("skipped", "budget_exceeded")


@pytest.fixture(scope="module", autouse=True)
def _sdk_imported(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One call per protocol, so the timed calls below never include the SDK's first import."""
    with FakeProviderServer() as server:
        data = {
            "providers": {
                "o": {"sdk": "openai", "api_base": server.openai_base, "model": "m", "local": True},
                "l": {"sdk": "ollama", "api_base": server.url, "model": "m", "local": True},
            },
            "routing": {
                "default": ["o"],
                "rules": [{"name": "l", "when": {"quality": "high"}, "route": ["l"]}],
            },
            "ledger": {"path": str(tmp_path_factory.mktemp("warm") / "ledger.db")},
        }

        async def warm() -> None:
            async with AegisLLMProxy(AegisConfig.model_validate(data)) as proxy:
                await proxy.acompletion(HELLO)
                await proxy.acompletion(HELLO, LLMTask(quality="high"))

        asyncio.run(warm())


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A loopback URL whose kernel completes the TCP handshake but that never sends a byte."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as sock:  # listens, never accepts
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def refused() -> str:
    """A loopback URL with nothing listening: connections are refused."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _config(
    rig: Rig,
    protocol: str,
    *,
    base: str | None = None,
    timeout_s: float | None = None,
    deadline_s: float = DEADLINE_S,
    retries: int = 1,
    max_backoff_s: float = 2.0,
) -> dict[str, Any]:
    """``primary`` (paid, the given protocol) then ``backup`` (local Ollama) on every route."""
    url = base or _server(rig, protocol).url
    primary: dict[str, Any] = {
        "sdk": protocol,
        "api_base": f"{url}/v1" if protocol == "openai" else url,
        "api_key": "${AEGIS_TEST_OPENAI_KEY}",
        "model": "gpt-4o" if protocol == "openai" else "gpt-oss:120b",
        "monthly_budget_usd": 50,
        "price": {"input_per_mtok": 2.5, "output_per_mtok": 10},
    }
    if timeout_s is not None:
        primary["timeout_s"] = timeout_s
    backup = {"sdk": "ollama", "api_base": rig.local.url, "model": "llama3.2:3b", "local": True}
    return {
        "providers": {"primary": primary, "backup": backup},
        "routing": {"deadline_s": deadline_s, "default": ["primary", "backup"]},
        "ledger": {"path": str(rig.tmp_path / "ledger.db")},
        "resilience": {"retries": retries, "backoff_s": 0.01, "max_backoff_s": max_backoff_s},
    }


def _server(rig: Rig, protocol: str) -> FakeProviderServer:
    return rig.openai if protocol == "openai" else rig.cheap


def _hang(rig: Rig, protocol: str, hang: str, black_hole: str) -> str | None:
    """Arrange the hang at ``primary``; returns its base URL when it is not the fake server."""
    if hang == "black_hole":
        return black_hole
    fault = Fault.delay(10.0) if hang == "slow_headers" else Fault.stall_after_first_chunk(10.0)
    _server(rig, protocol).add_fault(fault)
    return None


async def _call(proxy: AegisLLMProxy, **params: Any) -> tuple[Any, float]:
    """The response (or the AegisError raised) and the seconds it took."""
    assert proxy.ledger is not None  # opened (and migrated) before the clock starts
    started = time.monotonic()
    try:
        result: Any = await proxy.acompletion(HELLO, **params)
    except AegisError as exc:
        result = exc
    return result, time.monotonic() - started


def rows(rig: Rig) -> list[dict[str, Any]]:
    path = rig.tmp_path / "ledger.db"
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY id")]


def budget(rig: Rig, provider: str = "primary") -> tuple[int, int]:
    """(spent, reserved) micro-dollars of ``provider`` this month (periods are YYYY-MM)."""
    query = (
        "SELECT sum(spent_micros), sum(reserved_micros) FROM budget_usage"
        " WHERE provider = ? AND length(period) = 7"
    )
    with sqlite3.connect(rig.tmp_path / "ledger.db") as conn:
        spent, reserved = conn.execute(query, (provider,)).fetchone()
    return spent or 0, reserved or 0


def outcomes(attempts: Sequence[Attempt]) -> list[tuple[str, str, str | None]]:
    return [(a.provider, a.outcome, a.error_type or a.reason) for a in attempts]


def assert_ledger_matches(rig: Rig, attempts: Sequence[Attempt]) -> list[dict[str, Any]]:
    """Rows == the attempts that reached a provider, in order; none pending, none reserved."""
    ledger = rows(rig)
    reached = [
        (a.provider, a.outcome, a.error_type) for a in attempts if a.outcome not in NOT_REACHED
    ]
    assert [(r["provider"], r["status"], r["error_type"]) for r in ledger] == reached
    assert all(r["status"] != "pending" for r in ledger)
    if ledger:
        assert budget(rig)[1] == 0
    return ledger


def cost_micros(input_tokens: int, output_tokens: int) -> int:
    """$2.50 / $10.00 per Mtok, rounded up to whole micro-dollars."""
    return math.ceil(Decimal(input_tokens) * Decimal("2.5") + output_tokens * 10)


# --- non-streaming faults ------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_rate_limit_is_retried_at_the_same_provider(rig: Rig, protocol: str) -> None:
    """A 429 with Retry-After is retried at the same provider, inside the deadline."""
    _server(rig, protocol).add_fault(Fault.status(429, retry_after=0.3))
    async with rig.proxy(_config(rig, protocol, deadline_s=ROOMY_S)) as proxy:
        resp, elapsed = await _call(proxy)
    assert outcomes(resp.aegis.attempts) == [
        ("primary", "error", "rate_limited"),
        ("primary", "ok", None),
    ]
    if protocol == "openai":  # Ollama's client drops response headers: no hint reaches us
        assert elapsed >= 0.3
    assert elapsed <= 0.3 + MARGIN
    assert_ledger_matches(rig, resp.aegis.attempts)


async def test_retry_after_past_the_deadline_falls_back_at_once(rig: Rig) -> None:
    """A Retry-After longer than the time left is not slept: the next provider serves now."""
    rig.openai.add_fault(Fault.status(429, retry_after=30))
    async with rig.proxy(_config(rig, "openai", deadline_s=ROOMY_S, max_backoff_s=60)) as proxy:
        resp, elapsed = await _call(proxy)
    assert outcomes(resp.aegis.attempts) == [
        ("primary", "error", "rate_limited"),
        ("backup", "ok", None),
    ]
    assert elapsed <= MARGIN
    assert len(rig.openai.chat_requests()) == 1
    assert_ledger_matches(rig, resp.aegis.attempts)


PERSISTENT = {
    "429": (Fault.status(429), "rate_limited"),
    "500": (Fault.status(500), "server_error"),
    "malformed_json": (Fault.malformed(), "server_error"),
    "refused": (None, "connection_error"),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("fault", PERSISTENT)
async def test_persistent_fault_is_retried_then_falls_back(
    rig: Rig, refused: str, protocol: str, fault: str
) -> None:
    """A fault that survives its retry hands the request to the backup, within the deadline."""
    injected, kind = PERSISTENT[fault]
    if injected is not None:
        _server(rig, protocol).add_fault(injected, times=2)
    base = refused if injected is None else None
    async with rig.proxy(_config(rig, protocol, base=base, deadline_s=ROOMY_S)) as proxy:
        resp, elapsed = await _call(proxy)
    assert outcomes(resp.aegis.attempts) == [
        ("primary", "error", kind),
        ("primary", "error", kind),
        ("backup", "ok", None),
    ]
    assert elapsed <= MARGIN  # nothing here waits: only two tiny backoffs
    assert_ledger_matches(rig, resp.aegis.attempts)


HANGS = ["slow_headers", "stalled_body", "black_hole"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("hang", HANGS)
async def test_hanging_provider_gives_way_after_its_timeout(
    rig: Rig, black_hole: str, protocol: str, hang: str
) -> None:
    """A hanging provider times out after ``timeout_s`` (no retry) and the backup serves."""
    base = _hang(rig, protocol, hang, black_hole)
    data = _config(rig, protocol, base=base, timeout_s=TIMEOUT_S, deadline_s=ROOMY_S)
    async with rig.proxy(data) as proxy:
        resp, elapsed = await _call(proxy)
    assert outcomes(resp.aegis.attempts) == [
        ("primary", "error", "timeout"),
        ("backup", "ok", None),
    ]
    assert TIMEOUT_S <= elapsed <= TIMEOUT_S + MARGIN
    assert_ledger_matches(rig, resp.aegis.attempts)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("hang", HANGS)
async def test_hanging_provider_without_timeout_ends_at_the_deadline(
    rig: Rig, black_hole: str, protocol: str, hang: str
) -> None:
    """With no provider timeout, the per-call deadline ends the request with a clear error."""
    base = _hang(rig, protocol, hang, black_hole)
    async with rig.proxy(_config(rig, protocol, base=base, deadline_s=30)) as proxy:
        error, elapsed = await _call(proxy, deadline_s=DEADLINE_S)
    assert isinstance(error, NoProviderAvailableError)
    assert outcomes(error.attempts) == [  # type: ignore[arg-type]
        ("primary", "error", "timeout"),
        ("backup", "skipped", "request deadline passed"),
    ]
    assert DEADLINE_S * 0.9 <= elapsed <= DEADLINE_S + MARGIN
    assert_ledger_matches(rig, error.attempts)  # type: ignore[arg-type]
    assert rig.local.chat_requests() == []


COLD_START = textwrap.dedent(
    """
    import asyncio, json, socket, time
    from aegis_proxy import AegisConfig, AegisLLMProxy, NoProviderAvailableError

    async def call(proxy):
        started = time.monotonic()
        try:
            await proxy.acompletion([dict(role="user", content="hi")], deadline_s=DEADLINE)
        except NoProviderAvailableError as exc:
            tried = [[a.outcome, a.error_type or a.reason] for a in exc.attempts]
            print(json.dumps([time.monotonic() - started, tried]))

    async def main():
        with socket.create_server(("127.0.0.1", 0)) as hole:  # listens, never answers
            base = "http://127.0.0.1:{port}/v1".format(port=hole.getsockname()[1])
            provider = dict(sdk="openai", api_base=base, model="gpt-4o", local=True)
            config = AegisConfig.model_validate(dict(
                providers=dict(p=provider), routing=dict(default=["p"]),
                ledger=dict(path=LEDGER),
            ))
            if ENTERED:  # async with warms the clients up
                async with AegisLLMProxy(config) as proxy:
                    await call(proxy)
            else:  # as the module-level acompletion's default proxy is used
                proxy = AegisLLMProxy(config)
                await call(proxy)
                await proxy.aclose()

    asyncio.run(main())
    """
)


@pytest.mark.parametrize(
    "entered",
    [
        pytest.param(True, id="async_with"),
        pytest.param(False, id="plain"),
    ],
)
def test_first_call_of_a_fresh_process_keeps_its_deadline(tmp_path: Path, entered: bool) -> None:
    """The first call of a process (SDK not yet imported) still reaches its provider.

    With ``async with`` the SDK is imported on entry, so the call keeps its deadline. Without
    it, the one-time import (~1.5 s, in a thread) runs before the deadline clock starts: the
    provider is still tried, and the deadline then bounds the provider's time.
    """
    ledger = str(tmp_path / "ledger.db")
    script = f"LEDGER = {ledger!r}\nDEADLINE = {DEADLINE_S}\nENTERED = {entered}\n{COLD_START}"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    elapsed, tried = json.loads(done.stdout.strip().splitlines()[-1])
    assert tried == [["error", "timeout"]]  # it reached the silent socket, then timed out
    if entered:
        assert elapsed <= DEADLINE_S + MARGIN


# --- streams ----------------------------------------------------------------------------------


async def _deltas(stream: AegisStream, keep: int | None = None) -> list[str]:
    """The non-empty content deltas in arrival order (stop reading after ``keep`` of them)."""
    seen: list[str] = []
    async for chunk in stream:
        seen += [c.delta.content for c in chunk.choices if c.delta and c.delta.content]
        if keep is not None and len(seen) >= keep:
            break
    return seen


async def _read_into(stream: AegisStream, seen: list[str]) -> None:
    """Read the whole stream, keeping every content delta even if it then fails."""
    async for chunk in stream:
        seen += [c.delta.content or "" for c in chunk.choices if c.delta]


def _words(text: str) -> list[str]:
    """What the fake sends: one word per chunk, each but the first with its leading space."""
    first, *rest = text.split()
    return [first, *(f" {w}" for w in rest)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stream_arrives_in_order_and_its_cost_lands_in_the_ledger(
    rig: Rig, protocol: str
) -> None:
    """Chunks come in the provider's order; the row gets its usage, cost and budget spend."""
    _server(rig, protocol).reply_text = REPLY
    async with rig.proxy(_config(rig, protocol)) as proxy:
        stream = await proxy.acompletion(HELLO, stream=True, max_tokens=32)
        assert isinstance(stream, AegisStream)
        deltas = await _deltas(stream)
    assert deltas == _words(REPLY)
    [sent] = _server(rig, protocol).chat_requests()
    [row] = assert_ledger_matches(rig, stream.aegis.attempts)
    assert (row["status"], row["stream"], row["counted"]) == ("ok", 1, 0)
    assert (row["input_tokens"], row["output_tokens"]) == (count_prompt_tokens(sent.body), 7)
    assert row["cost_micros"] == cost_micros(row["input_tokens"], 7)
    assert 0 < row["cost_micros"] <= row["reserved_micros"]
    assert row["ttft_ms"] is not None
    assert stream.aegis.cost_usd * 1_000_000 == row["cost_micros"]
    assert budget(rig) == (row["cost_micros"], 0)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stream_left_early_settles_its_row(rig: Rig, protocol: str) -> None:
    """Leaving ``async with stream`` after two chunks settles the row as cancelled, counted."""
    _server(rig, protocol).reply_text = REPLY
    async with rig.proxy(_config(rig, protocol)) as proxy:
        stream = await proxy.acompletion(HELLO, stream=True, max_tokens=32)
        async with stream:
            deltas = await _deltas(stream, keep=2)
        [row] = assert_ledger_matches(rig, stream.aegis.attempts)
    assert deltas == _words(REPLY)[:2]
    assert (row["status"], row["error_type"], row["counted"]) == ("cancelled", "cancelled", 1)
    assert 1 <= row["output_tokens"] < 7
    assert row["cost_micros"] > 0
    assert budget(rig) == (row["cost_micros"], 0)


BEFORE_FIRST_CHUNK = {
    "429": (Fault.status(429, retry_after=0), "rate_limited"),
    "500": (Fault.status(500), "server_error"),
    "malformed_json": (Fault.malformed(), "server_error"),
    "slow_headers": (Fault.delay(10.0), "timeout"),
    "black_hole": (None, "timeout"),
    "refused": (None, "connection_error"),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("fault", BEFORE_FIRST_CHUNK)
async def test_stream_failing_before_its_first_chunk_falls_back(
    rig: Rig, black_hole: str, refused: str, protocol: str, fault: str
) -> None:
    """A stream that fails before any chunk is served whole by the next provider."""
    injected, kind = BEFORE_FIRST_CHUNK[fault]
    if injected is not None:
        _server(rig, protocol).add_fault(injected)
    base = {"black_hole": black_hole, "refused": refused}.get(fault)
    rig.local.reply_text = REPLY
    data = _config(rig, protocol, base=base, timeout_s=TIMEOUT_S, deadline_s=ROOMY_S, retries=0)
    async with rig.proxy(data) as proxy:
        assert proxy.ledger is not None  # opened (and migrated) before the clock starts
        started = time.monotonic()
        stream = await proxy.acompletion(HELLO, stream=True)
        deltas = await _deltas(stream)
        elapsed = time.monotonic() - started
    assert deltas == _words(REPLY)
    assert outcomes(stream.aegis.attempts) == [("primary", "error", kind), ("backup", "ok", None)]
    assert elapsed <= TIMEOUT_S + MARGIN
    assert_ledger_matches(rig, stream.aegis.attempts)


AFTER_FIRST_CHUNK = {
    "drop": (Fault.drop_after_first_chunk(), "connection_error"),
    "stall": (Fault.stall_after_first_chunk(10.0), "timeout"),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("fault", AFTER_FIRST_CHUNK)
async def test_stream_failing_after_its_first_chunk_raises(
    rig: Rig, protocol: str, fault: str
) -> None:
    """After the first chunk a failure reaches the consumer: nothing is replayed elsewhere."""
    injected, kind = AFTER_FIRST_CHUNK[fault]
    server = _server(rig, protocol)
    server.reply_text = REPLY
    server.add_fault(injected)
    seen: list[str] = []
    async with rig.proxy(_config(rig, protocol)) as proxy:  # no timeout_s: the deadline rules
        assert proxy.ledger is not None  # opened (and migrated) before the clock starts
        started = time.monotonic()
        stream = await proxy.acompletion(HELLO, stream=True)
        with pytest.raises(ProviderCallError) as info:
            await _read_into(stream, seen)
        elapsed = time.monotonic() - started
    assert info.value.kind == kind
    assert REPLY.startswith("".join(seen))
    assert rig.local.chat_requests() == []
    assert elapsed <= DEADLINE_S + MARGIN
    [row] = assert_ledger_matches(rig, stream.aegis.attempts)
    assert row["status"] == "error"
