"""Prometheus metrics read back from the registry after real requests to the fake servers."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aegis_proxy import AegisLLMProxy, LLMTask, NoProviderAvailableError
from aegis_proxy.observe.metrics import PrometheusObserver, start_metrics_server
from aegis_proxy.observe.metrics_ledger import ledger_registry
from aegis_proxy.settle.records import BudgetLimit
from aegis_proxy.settle.sqlite.ledger import Ledger
from tests.conftest import Rig
from tests.fakeserver import Fault

CRITICAL = LLMTask(quality="critical", complexity="high", task_type="extraction")
BATCH = LLMTask(batch_size=25, task_type="generation")
HELLO = [{"role": "user", "content": "Summarise the quarterly report in one line."}]
PII = [{"role": "user", "content": "Write to jane.doe@example.com about the invoice."}]
OPENAI = {"provider": "openai", "model": "gpt-4o"}
CHEAP = {"provider": "ollama_cloud", "model": "gpt-oss:120b"}
ALLOWED_LABELS = {"provider", "model", "rule", "outcome", "reason", "type", "period", "le"}


def rows(rig: Rig) -> list[dict[str, Any]]:
    with sqlite3.connect(rig.tmp_path / "ledger.db") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY id")]


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def observed(
    rig: Rig, data: dict[str, Any] | None = None
) -> tuple[AegisLLMProxy, CollectorRegistry]:
    registry = CollectorRegistry()
    proxy = rig.proxy(data)
    PrometheusObserver(registry).bind(proxy)
    return proxy, registry


async def test_served_request_counts_tokens_cost_latency_and_budget(rig: Rig) -> None:
    """One request served by OpenAI is counted once, with its ledger's tokens, cost and time."""
    proxy, registry = observed(rig)
    async with proxy:
        resp = await proxy.acompletion(HELLO, CRITICAL, max_tokens=16)
    [row] = rows(rig)
    rule = {"rule": "critical_to_openai"}
    assert sample(registry, "llm_requests_total", **OPENAI, **rule, outcome="ok") == 1
    assert sample(registry, "llm_attempts_total", **OPENAI, outcome="ok", reason="") == 1
    assert sample(registry, "llm_tokens_total", **OPENAI, type="input") == row["input_tokens"]
    assert sample(registry, "llm_tokens_total", **OPENAI, type="output") == row["output_tokens"]
    assert sample(registry, "llm_tokens_total", **OPENAI, type="cached") == 0
    assert row["input_tokens"] == resp.usage.prompt_tokens
    assert sample(registry, "llm_cost_usd_total", **OPENAI) == row["cost_micros"] / 1_000_000
    assert sample(registry, "llm_latency_seconds_count", **OPENAI, outcome="ok") == 1
    latency = sample(registry, "llm_latency_seconds_sum", **OPENAI, outcome="ok")
    assert latency == pytest.approx(row["latency_ms"] / 1000)
    assert sample(registry, "llm_request_duration_seconds_count", **rule, outcome="ok") == 1
    assert sample(registry, "llm_fallback_requests_total", **rule) is None
    month = {"provider": "openai", "period": "month"}
    assert sample(registry, "llm_budget_spent_usd", **month) == row["cost_micros"] / 1_000_000
    assert sample(registry, "llm_budget_limit_usd", **month) == 80
    assert sample(registry, "llm_budget_used_ratio", **month) == pytest.approx(
        row["cost_micros"] / 1_000_000 / 80
    )
    assert sample(registry, "llm_circuit_breaker_state", provider="openai") == 0


async def test_budget_gauges_are_loaded_from_the_ledger_at_start(rig: Rig) -> None:
    """A fresh observer bound after a restart shows the month's spend already in the ledger."""
    async with rig.proxy() as proxy:
        await proxy.acompletion(HELLO, BATCH)
        await proxy.acompletion(HELLO, CRITICAL)
    spent = {r["provider"]: r["cost_micros"] / 1_000_000 for r in rows(rig)}
    assert spent["ollama_cloud"] > 0
    proxy, registry = observed(rig)
    async with proxy:
        cheap = {"provider": "ollama_cloud", "period": "month"}
        assert sample(registry, "llm_budget_spent_usd", **cheap) == spent["ollama_cloud"]
        assert sample(registry, "llm_budget_used_ratio", **cheap) == pytest.approx(
            spent["ollama_cloud"] / 120
        )
        openai = {"provider": "openai", "period": "month"}
        assert sample(registry, "llm_budget_spent_usd", **openai) == spent["openai"]
        local = {"provider": "local_ollama", "period": "month"}
        assert sample(registry, "llm_budget_limit_usd", **local) is None  # no budget, no gauge
        assert (
            sample(
                registry, "llm_requests_total", **OPENAI, rule="critical_to_openai", outcome="ok"
            )
            is None
        )


def _error(rig: Rig, data: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    rig.openai.add_fault(Fault.status(500))


def _unavailable(rig: Rig, data: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AEGIS_TEST_OPENAI_KEY")


def _budget(rig: Rig, data: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    data["providers"]["openai"]["monthly_budget_usd"] = 0


FALLBACKS = [
    ("error", _error, "server_error"),
    ("unavailable", _unavailable, "unavailable"),
    ("budget", _budget, "budget"),
]


@pytest.mark.parametrize(
    ("reason", "setup", "attempt_reason"), FALLBACKS, ids=["error", "unavailable", "budget"]
)
async def test_fallback_is_counted_with_its_reason(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, reason: str, setup: Any, attempt_reason: str
) -> None:
    """When OpenAI cannot serve, the fallback to the cheap cloud counts under the right reason."""
    data = rig.config_data()
    setup(rig, data, monkeypatch)
    proxy, registry = observed(rig, data)
    async with proxy:
        resp = await proxy.acompletion(HELLO, CRITICAL, max_tokens=8)
    assert resp.aegis.provider == "ollama_cloud"
    assert sample(registry, "llm_fallbacks_total", provider="openai", reason=reason) == 1
    total = sum(
        s.value
        for m in registry.collect()
        if m.name == "llm_fallbacks"
        for s in m.samples
        if s.name == "llm_fallbacks_total"
    )
    assert total == 1
    assert sample(registry, "llm_fallback_requests_total", rule="critical_to_openai") == 1
    assert (
        sample(registry, "llm_requests_total", **CHEAP, rule="critical_to_openai", outcome="ok")
        == 1
    )
    outcome = "error" if reason == "error" else resp.aegis.attempts[0].outcome
    assert (
        sample(registry, "llm_attempts_total", **OPENAI, outcome=outcome, reason=attempt_reason)
        == 1
    )


async def test_open_breaker_counts_as_breaker_fallback_and_shows_in_gauge(rig: Rig) -> None:
    """After a failure opens OpenAI's breaker, the next request's skip counts as 'breaker'."""
    data = rig.config_data()
    data["resilience"] = {"retries": 0, "breaker_failures": 1, "breaker_cooldown_s": 60}
    rig.openai.add_fault(Fault.status(500))
    proxy, registry = observed(rig, data)
    async with proxy:
        await proxy.acompletion(HELLO, CRITICAL, max_tokens=8)
        assert sample(registry, "llm_circuit_breaker_state", provider="openai") == 2
        await proxy.acompletion(HELLO, CRITICAL, max_tokens=8)
    assert len(rig.openai.chat_requests()) == 1
    assert sample(registry, "llm_fallbacks_total", provider="openai", reason="error") == 1
    assert sample(registry, "llm_fallbacks_total", provider="openai", reason="breaker") == 1
    assert (
        sample(registry, "llm_attempts_total", **OPENAI, outcome="skipped", reason="breaker") == 1
    )
    assert sample(registry, "llm_fallback_requests_total", rule="critical_to_openai") == 2


async def test_privacy_fallback_counts_providers_ahead_of_the_local_one(rig: Rig) -> None:
    """PII moves a request off the cloud providers its rule put first: each counts 'privacy'."""
    proxy, registry = observed(rig)
    async with proxy:
        resp = await proxy.acompletion(PII, CRITICAL)
    assert resp.aegis.provider == "local_ollama"
    for provider in ("openai", "ollama_cloud"):
        assert sample(registry, "llm_fallbacks_total", provider=provider, reason="privacy") == 1
    assert sample(registry, "llm_fallback_requests_total", rule="critical_to_openai") == 1


async def test_privacy_removal_behind_the_serving_provider_is_no_fallback(rig: Rig) -> None:
    """A cloud provider removed from behind the local first choice is no fallback."""
    data = rig.config_data()
    data["routing"]["rules"].insert(
        0,
        {
            "name": "local_first",
            "when": {"task_type": "notes"},
            "route": ["local_ollama", "openai"],
        },
    )
    proxy, registry = observed(rig, data)
    async with proxy:
        resp = await proxy.acompletion(PII, LLMTask(task_type="notes"))
    assert resp.aegis.removed_providers == ["openai"]
    assert sample(registry, "llm_fallbacks_total", provider="openai", reason="privacy") is None
    assert sample(registry, "llm_fallback_requests_total", rule="local_first") is None
    local = {"provider": "local_ollama", "model": "llama3.2:3b"}
    assert sample(registry, "llm_requests_total", **local, rule="local_first", outcome="ok") == 1


async def test_failed_request_counts_no_provider_and_no_fallback(rig: Rig) -> None:
    """A request every candidate failed is one 'no_provider' request with provider 'none'."""
    rig.cheap.add_fault(Fault.status(500))
    rig.local.add_fault(Fault.status(429))
    proxy, registry = observed(rig)
    async with proxy:
        with pytest.raises(NoProviderAvailableError):
            await proxy.acompletion(HELLO, BATCH)
    none = {"provider": "none", "model": "none", "rule": "batch_to_cloud"}
    assert sample(registry, "llm_requests_total", **none, outcome="no_provider") == 1
    assert (
        sample(registry, "llm_attempts_total", **CHEAP, outcome="error", reason="server_error") == 1
    )
    local = {"provider": "local_ollama", "model": "llama3.2:3b"}
    assert (
        sample(registry, "llm_attempts_total", **local, outcome="error", reason="rate_limited") == 1
    )
    assert sample(registry, "llm_fallback_requests_total", rule="batch_to_cloud") is None


async def test_stream_records_time_to_first_token_and_early_close(rig: Rig) -> None:
    """A stream observes its time to first token; one closed early counts as 'cancelled'."""
    rig.openai.reply_text = "one two three four five six"
    proxy, registry = observed(rig)
    async with proxy:
        stream = await proxy.acompletion(HELLO, CRITICAL, stream=True)
        async for _ in stream:
            pass
        stream = await proxy.acompletion(HELLO, CRITICAL, stream=True)
        await anext(stream)
        await stream.aclose()
    first, second = rows(rig)
    assert sample(registry, "llm_time_to_first_token_seconds_count", **OPENAI) == 2
    ttft = sample(registry, "llm_time_to_first_token_seconds_sum", **OPENAI)
    assert ttft == pytest.approx((first["ttft_ms"] + second["ttft_ms"]) / 1000)
    rule = {"rule": "critical_to_openai"}
    assert sample(registry, "llm_requests_total", **OPENAI, **rule, outcome="ok") == 1
    assert sample(registry, "llm_requests_total", **OPENAI, **rule, outcome="cancelled") == 1
    assert sample(registry, "llm_latency_seconds_count", **OPENAI, outcome="cancelled") == 1


async def test_labels_are_bounded_and_hold_no_ids(rig: Rig) -> None:
    """No user id or request id reaches a label; only the known label names exist."""
    proxy, registry = observed(rig)
    async with proxy:
        resp = await proxy.acompletion(HELLO, LLMTask(user_id="user-QX81-unique", agent="a1"))
    text = generate_latest(registry).decode()
    assert "user-QX81-unique" not in text
    assert resp.aegis.request_id not in text
    names = {label for m in registry.collect() for s in m.samples for label in s.labels}
    assert names <= ALLOWED_LABELS


async def test_unbound_observer_counts_from_events_alone(rig: Rig) -> None:
    """An observer passed to the constructor without bind() still counts requests."""
    registry = CollectorRegistry()
    async with AegisLLMProxy(rig.proxy().config, observers=[PrometheusObserver(registry)]) as p:
        await p.acompletion(HELLO, CRITICAL, max_tokens=8)
    assert (
        sample(registry, "llm_requests_total", **OPENAI, rule="critical_to_openai", outcome="ok")
        == 1
    )
    assert sample(registry, "llm_circuit_breaker_state", provider="openai") == 0
    assert sample(registry, "llm_budget_spent_usd", provider="openai", period="month") is None


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:  # loopback http
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_server_serves_the_observer_registry(rig: Rig) -> None:
    """start_metrics_server serves the registry over HTTP on the port it bound."""
    proxy, registry = observed(rig)
    async with proxy:
        await proxy.acompletion(HELLO, CRITICAL, max_tokens=8)
    server = start_metrics_server(0, registry)
    try:
        samples = scrape(server.server_port)
    finally:
        server.shutdown()
        server.server_close()
    key = tuple(sorted({**OPENAI, "rule": "critical_to_openai", "outcome": "ok"}.items()))
    assert samples[("llm_requests_total", key)] == 1


async def test_ledger_registry_serves_budgets_read_at_scrape(rig: Rig) -> None:
    """The ledger-only registry (for `aegis-proxy metrics`) shows spend vs budget per scrape."""
    async with rig.proxy() as proxy:
        await proxy.acompletion(HELLO, CRITICAL, max_tokens=8)
    [row] = rows(rig)
    budgets = {"openai": BudgetLimit(monthly_micros=80_000_000), "local_ollama": None}
    with Ledger(rig.tmp_path / "ledger.db") as ledger:
        server = start_metrics_server(0, ledger_registry(ledger, budgets))
        try:
            samples = scrape(server.server_port)
        finally:
            server.shutdown()
            server.server_close()
    month = (("period", "month"), ("provider", "openai"))
    assert samples[("llm_budget_spent_usd", month)] == row["cost_micros"] / 1_000_000
    assert samples[("llm_budget_limit_usd", month)] == 80
    assert samples[("llm_budget_used_ratio", month)] == pytest.approx(
        row["cost_micros"] / 1_000_000 / 80
    )
    ok = (("provider", "openai"), ("status", "ok"))
    assert samples[("llm_ledger_month_attempts", ok)] == 1


DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana-dashboard.json"


async def test_dashboard_queries_only_exported_metrics(rig: Rig) -> None:
    """Every metric the Grafana dashboard queries is one the observer exports."""
    rig.openai.add_fault(Fault.status(500))
    proxy, registry = observed(rig)
    async with proxy:
        await proxy.acompletion(HELLO, CRITICAL, max_tokens=8)  # a fallback
        stream = await proxy.acompletion(HELLO, CRITICAL, stream=True)
        async for _ in stream:
            pass
    exported = {s.name for m in registry.collect() for s in m.samples}
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    queried = {name for expr in exprs for name in re.findall(r"\bllm_[a-z_]+", expr)}
    assert len(queried) >= 10
    assert queried <= exported


def run_python(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout.strip()


def test_import_aegis_proxy_loads_no_observability_library() -> None:
    """`import aegis_proxy` imports neither prometheus_client nor opentelemetry."""
    prefixes = (
        "prometheus_client",
        "opentelemetry",
        "aegis_proxy.observe.metrics",
        "aegis_proxy.observe.tracing",
    )
    code = f"import sys, aegis_proxy; print([m for m in sys.modules if m.startswith({prefixes})])"
    assert run_python(code) == "[]"


BLOCK_IMPORT = """
import sys
class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
        return None
sys.meta_path.insert(0, Missing())
try:
    import {module}
except ImportError as exc:
    print(exc)
"""


def test_missing_extra_fails_with_a_clear_message() -> None:
    """Without prometheus-client, importing observe.metrics names the extra to install."""
    code = BLOCK_IMPORT.format(blocked="prometheus_client", module="aegis_proxy.observe.metrics")
    assert "pip install 'aegis-proxy[metrics]'" in run_python(code)
