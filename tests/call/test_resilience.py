"""Retries, circuit breaking and deadlines, through the proxy against fake servers."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import pytest

from aegis_proxy import LLMTask, NoProviderAvailableError
from aegis_proxy.call.resilience import CircuitBreaker, RetryPolicy
from aegis_proxy.errors import ProviderAuthError, ProviderServerError, RateLimitedError
from tests.conftest import Rig
from tests.fakeserver import Fault

CRITICAL = LLMTask(quality="critical", complexity="high")
HELLO = [{"role": "user", "content": "Name three rivers."}]


def rows(rig: Rig) -> list[dict[str, Any]]:
    with sqlite3.connect(rig.tmp_path / "ledger.db") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY id")]


def _config(rig: Rig, **resilience: Any) -> dict[str, Any]:
    data = rig.config_data()
    data["resilience"] = {"retries": 2, "backoff_s": 0.01, "max_backoff_s": 0.05, **resilience}
    return data


async def test_server_error_is_retried_at_same_provider(rig: Rig) -> None:
    """A 500 is retried at the same provider, and each attempt is its own ledger row."""
    rig.openai.add_fault(Fault.status(500))
    async with rig.proxy(_config(rig)) as proxy:
        resp = await proxy.acompletion(HELLO, CRITICAL)
    assert resp.aegis.provider == "openai"
    assert [(a.provider, a.outcome) for a in resp.aegis.attempts] == [
        ("openai", "error"),
        ("openai", "ok"),
    ]
    assert [(r["attempt"], r["status"]) for r in rows(rig)] == [(1, "error"), (2, "ok")]
    assert len(rig.openai.chat_requests()) == 2


async def test_retry_after_is_honoured(rig: Rig) -> None:
    """A 429 with Retry-After waits that long before the retry."""
    rig.openai.add_fault(Fault.status(429, retry_after=0.3))
    async with rig.proxy(_config(rig, max_backoff_s=5)) as proxy:
        started = time.monotonic()
        resp = await proxy.acompletion(HELLO, CRITICAL)
    assert time.monotonic() - started >= 0.3
    assert [a.error_type for a in resp.aegis.attempts] == ["rate_limited", None]


async def test_retries_exhausted_then_fallback(rig: Rig) -> None:
    """After its retries a failing provider gives way to the next of the route."""
    rig.openai.add_fault(Fault.status(503), times=3)
    async with rig.proxy(_config(rig)) as proxy:
        resp = await proxy.acompletion(HELLO, CRITICAL)
    assert resp.aegis.provider == "ollama_cloud"
    assert [a.provider for a in resp.aegis.attempts] == ["openai"] * 3 + ["ollama_cloud"]


@pytest.mark.parametrize("status", [401, 404, 400])
async def test_client_errors_are_not_retried(rig: Rig, status: int) -> None:
    """Auth, not-found and validation errors fall back at once, without a retry."""
    rig.openai.add_fault(Fault.status(status))
    async with rig.proxy(_config(rig)) as proxy:
        resp = await proxy.acompletion(HELLO, CRITICAL)
    assert len(rig.openai.chat_requests()) == 1
    assert resp.aegis.provider == "ollama_cloud"


async def test_breaker_opens_then_probes(rig: Rig) -> None:
    """After N failures the provider is skipped; after the cool-down one probe goes through."""
    data = _config(rig, retries=0, breaker_failures=2, breaker_cooldown_s=0.3)
    rig.openai.add_fault(Fault.status(500), times=2)
    async with rig.proxy(data) as proxy:
        for _ in range(2):
            await proxy.acompletion(HELLO, CRITICAL)
        skipped = await proxy.acompletion(HELLO, CRITICAL)
        assert skipped.aegis.attempts[0].reason == "circuit breaker open"
        assert skipped.aegis.attempts[0].breaker == "open"
        assert len(rig.openai.chat_requests()) == 2
        await asyncio.sleep(0.35)
        probe = await proxy.acompletion(HELLO, CRITICAL)
        assert probe.aegis.provider == "openai"
        assert probe.aegis.attempts[0].breaker == "half_open"
        assert proxy.breakers["openai"].state == "closed"


async def test_deadline_bounds_a_hanging_route(rig: Rig) -> None:
    """With every provider hanging, the request ends at its deadline, not later."""
    for server in rig.servers().values():
        server.add_fault(Fault.delay(10.0))
    data = _config(rig)
    data["providers"]["openai"].pop("timeout_s")
    async with rig.proxy(data) as proxy:
        started = time.monotonic()
        with pytest.raises(NoProviderAvailableError) as info:
            await proxy.acompletion(HELLO, CRITICAL, deadline_s=0.6)
        elapsed = time.monotonic() - started
    assert elapsed < 2.0
    outcomes = [(a.outcome, a.error_type or a.reason) for a in info.value.attempts]  # type: ignore[attr-defined]
    assert outcomes[0] == ("error", "timeout")
    assert ("skipped", "request deadline passed") in outcomes
    assert all(r["status"] != "pending" for r in rows(rig))


def test_backoff_grows_and_is_capped() -> None:
    """Backoff doubles per retry within jitter, is capped, and prefers Retry-After."""
    policy = RetryPolicy(retries=5, backoff_s=0.1, max_backoff_s=0.5)
    error = ProviderServerError("p", "boom", 500)
    for retry, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (5, 0.5)]:
        assert ceiling / 2 <= policy.delay(retry, error) <= ceiling
    assert policy.delay(1, RateLimitedError("p", "slow", retry_after=0.3)) == 0.3
    assert policy.delay(1, RateLimitedError("p", "slow", retry_after=60)) == 0.5


def test_breaker_half_open_lets_one_probe() -> None:
    """A half-open breaker admits a single probe until it reports back."""
    breaker = CircuitBreaker("p", failures=1, cooldown_s=0)
    breaker.record_failure()
    assert breaker.allow() is True
    assert breaker.allow() is False
    breaker.record_failure()
    assert breaker.allow() is True  # cool-down 0: half-open again at once
    breaker.record_success()
    assert breaker.state == "closed"
    assert not isinstance(ProviderAuthError("p", "x"), ProviderServerError)
