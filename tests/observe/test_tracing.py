"""OpenTelemetry spans read from an in-memory exporter after real requests to the fake servers."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from aegis_proxy import AegisLLMProxy, LLMTask, NoProviderAvailableError
from aegis_proxy.observe.tracing import OTelObserver
from tests.conftest import Rig
from tests.fakeserver import Fault
from tests.observe.test_metrics import BLOCK_IMPORT, run_python

CRITICAL = LLMTask(quality="critical", complexity="high", task_type="extraction")
BATCH = LLMTask(batch_size=25)
HELLO = [{"role": "user", "content": "Summarise the quarterly report in one line."}]
PII = [{"role": "user", "content": "Write to jane.doe@example.com about the invoice."}]


def rows(rig: Rig) -> list[dict[str, Any]]:
    with sqlite3.connect(rig.tmp_path / "ledger.db") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY id")]


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def split(exporter: InMemorySpanExporter) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The one request span and its attempt spans, in start order."""
    spans = exporter.get_finished_spans()
    [request] = [s for s in spans if s.name == "aegis.request"]
    attempts = sorted((s for s in spans if s is not request), key=lambda s: s.start_time or 0)
    return request, attempts


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


async def test_served_request_is_a_request_span_with_one_client_span(
    rig: Rig, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A served request yields a request span and a GenAI CLIENT span as its child."""
    async with rig.proxy() as proxy:
        OTelObserver(tracer_provider).bind(proxy)
        resp = await proxy.acompletion(HELLO, CRITICAL, max_tokens=16)
    [row] = rows(rig)
    request, [attempt] = split(exporter)
    assert request.kind is SpanKind.INTERNAL
    assert dict(request.attributes or {}) == {
        "aegis.request_id": resp.aegis.request_id,
        "aegis.rule": "critical_to_openai",
        "aegis.contains_pii": False,
        "aegis.cost_usd": row["cost_micros"] / 1_000_000,
        "aegis.stream": False,
        "aegis.attempts": 1,
        "aegis.provider": "openai",
        "aegis.model": "gpt-4o",
    }
    assert request.status.status_code is StatusCode.UNSET
    assert (attempt.name, attempt.kind) == ("chat gpt-4o", SpanKind.CLIENT)
    assert dict(attempt.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o",
        "gen_ai.request.stream": False,
        "gen_ai.usage.input_tokens": resp.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": resp.usage.completion_tokens,
        "server.address": "127.0.0.1",
        "server.port": port_of(rig.openai.url),
        "aegis.provider": "openai",
        "aegis.request_id": resp.aegis.request_id,
        "aegis.rule": "critical_to_openai",
        "aegis.attempt.outcome": "ok",
        "aegis.breaker_state": "closed",
        "aegis.cost_usd": row["cost_micros"] / 1_000_000,
        "aegis.tokens_counted": False,
    }
    assert attempt.parent is not None
    assert attempt.parent.span_id == request.context.span_id
    assert attempt.context.trace_id == request.context.trace_id
    assert request.start_time <= attempt.start_time < attempt.end_time <= request.end_time
    took_ms = (attempt.end_time - attempt.start_time) / 1e6
    assert took_ms == pytest.approx(row["latency_ms"], abs=0.001)


async def test_fallback_yields_an_error_span_then_a_served_span(
    rig: Rig, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A failed attempt is an ERROR span with error.type; the next provider's span serves."""
    rig.openai.add_fault(Fault.status(500))
    async with rig.proxy() as proxy:
        OTelObserver(tracer_provider).bind(proxy)
        await proxy.acompletion(HELLO, CRITICAL, max_tokens=8)
    request, [failed, served] = split(exporter)
    failed_attributes = dict(failed.attributes or {})
    assert failed_attributes["error.type"] == "server_error"
    assert failed_attributes["aegis.attempt.outcome"] == "error"
    assert "gen_ai.usage.input_tokens" not in failed_attributes
    assert "gen_ai.response.model" not in failed_attributes
    assert failed.status.status_code is StatusCode.ERROR
    served_attributes = dict(served.attributes or {})
    assert served_attributes["gen_ai.provider.name"] == "ollama"  # the config's sdk
    assert served_attributes["aegis.provider"] == "ollama_cloud"
    assert served.name == "chat gpt-oss:120b"
    assert served.status.status_code is StatusCode.UNSET
    assert request.attributes is not None
    assert (request.attributes["aegis.provider"], request.attributes["aegis.attempts"]) == (
        "ollama_cloud",
        2,
    )
    parents = {span.parent.span_id if span.parent else None for span in (failed, served)}
    assert parents == {request.context.span_id}


async def test_skipped_candidate_is_an_event_on_the_request_span(
    rig: Rig,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A candidate skipped without a call is an event with its reason, not a CLIENT span."""
    monkeypatch.delenv("AEGIS_TEST_OPENAI_KEY")
    async with rig.proxy() as proxy:
        OTelObserver(tracer_provider).bind(proxy)
        await proxy.acompletion(HELLO, CRITICAL, max_tokens=8)
    request, [served] = split(exporter)
    assert dict(served.attributes or {})["aegis.provider"] == "ollama_cloud"
    [event] = request.events
    assert event.name == "aegis.provider_skipped"
    assert dict(event.attributes or {}) == {
        "aegis.provider": "openai",
        "gen_ai.request.model": "gpt-4o",
        "aegis.attempt.outcome": "skipped",
        "aegis.skip_reason": "environment variable AEGIS_TEST_OPENAI_KEY is not set",
        "aegis.breaker_state": "closed",
    }
    assert request.start_time <= event.timestamp <= request.end_time


async def test_failed_request_span_has_error_status_and_type(
    rig: Rig, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """When no provider serves, the request span is an ERROR with the exception's class."""
    rig.cheap.add_fault(Fault.status(500))
    rig.local.add_fault(Fault.status(500))
    async with rig.proxy() as proxy:
        OTelObserver(tracer_provider).bind(proxy)
        with pytest.raises(NoProviderAvailableError):
            await proxy.acompletion(HELLO, BATCH)
    request, attempts = split(exporter)
    assert request.status.status_code is StatusCode.ERROR
    attributes = dict(request.attributes or {})
    assert attributes["error.type"] == "NoProviderAvailableError"
    assert "aegis.provider" not in attributes
    assert [dict(a.attributes or {})["error.type"] for a in attempts] == ["server_error"] * 2


async def test_stream_span_has_time_to_first_chunk(
    rig: Rig, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A streamed attempt says so and carries its time to first chunk in seconds."""
    async with rig.proxy() as proxy:
        OTelObserver(tracer_provider).bind(proxy)
        stream = await proxy.acompletion(HELLO, CRITICAL, stream=True)
        async for _ in stream:
            pass
    [row] = rows(rig)
    request, [attempt] = split(exporter)
    attributes = dict(attempt.attributes or {})
    assert attributes["gen_ai.request.stream"] is True
    assert attributes["gen_ai.response.time_to_first_chunk"] == pytest.approx(row["ttft_ms"] / 1000)
    assert attributes["gen_ai.usage.output_tokens"] == row["output_tokens"]
    assert dict(request.attributes or {})["aegis.stream"] is True


async def test_request_span_is_a_child_of_the_callers_span(
    rig: Rig, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """The request span joins the trace of the span current in the caller (a graph node)."""
    tracer = tracer_provider.get_tracer("app")
    async with rig.proxy() as proxy:
        OTelObserver(tracer_provider).bind(proxy)
        with tracer.start_as_current_span("extract_parties") as node:
            await proxy.acompletion(HELLO, CRITICAL, max_tokens=8)
    spans = exporter.get_finished_spans()
    [request] = [s for s in spans if s.name == "aegis.request"]
    assert request.parent is not None
    assert request.parent.span_id == node.get_span_context().span_id
    assert {s.context.trace_id for s in spans} == {node.get_span_context().trace_id}


async def test_pii_request_span_names_entity_types_only(
    rig: Rig, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A PII request's span says it holds PII, which types, and which providers it lost."""
    async with rig.proxy() as proxy:
        OTelObserver(tracer_provider).bind(proxy)
        resp = await proxy.acompletion(PII, CRITICAL)
    request, [attempt] = split(exporter)
    assert dict(attempt.attributes or {})["aegis.provider"] == "local_ollama"
    attributes = dict(request.attributes or {})
    assert attributes["aegis.contains_pii"] is True
    assert list(attributes["aegis.pii_entities"]) == sorted(resp.aegis.pii_entities)
    assert list(attributes["aegis.removed_providers"]) == ["openai", "ollama_cloud"]
    dumped = repr([s.to_json() for s in exporter.get_finished_spans()])
    assert "jane.doe" not in dumped


async def leave_in_flight(proxy: AegisLLMProxy, rig: Rig) -> asyncio.Task[object]:
    """Start a request whose first attempt fails and whose fallback hangs; leave it running."""
    rig.openai.add_fault(Fault.status(500))
    rig.cheap.add_fault(Fault.delay(5.0))
    seen = len(rig.cheap.chat_requests())
    task: asyncio.Task[object] = asyncio.create_task(
        proxy.acompletion(HELLO, CRITICAL, max_tokens=8)
    )
    await wait_for(lambda: len(rig.cheap.chat_requests()) > seen)
    return task


async def stop(tasks: list[asyncio.Task[object]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def wait_for(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met within 5 s")


async def test_unfinished_requests_are_flushed_when_the_buffer_is_full(
    rig: Rig, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A request still unfinished is exported as a root span once the buffer is full."""
    observer = OTelObserver(tracer_provider, max_pending=1)
    async with rig.proxy() as proxy:
        observer.bind(proxy)
        tasks = [await leave_in_flight(proxy, rig)]
        assert exporter.get_finished_spans() == ()
        tasks.append(await leave_in_flight(proxy, rig))
        [orphan] = exporter.get_finished_spans()
        assert observer.pending() == 1
        await stop(tasks)
    assert orphan.parent is None
    assert orphan.kind is SpanKind.CLIENT
    attributes = dict(orphan.attributes or {})
    assert attributes["aegis.attempt.outcome"] == "error"
    assert rows(rig)[0]["request_id"] == attributes["aegis.request_id"]


async def test_unfinished_request_is_flushed_when_it_ages_out(
    rig: Rig, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A request older than max_age_s is flushed by the next attempt of another request."""
    observer = OTelObserver(tracer_provider, max_age_s=0.0)
    async with rig.proxy() as proxy:
        observer.bind(proxy)
        task = await leave_in_flight(proxy, rig)
        await asyncio.sleep(0.01)
        await proxy.acompletion(HELLO, max_tokens=8)
        spans = exporter.get_finished_spans()
        pending = observer.pending()
        await stop([task])
    [orphan] = [s for s in spans if s.parent is None and s.name != "aegis.request"]
    assert dict(orphan.attributes or {})["aegis.attempt.outcome"] == "error"
    assert len(spans) == 3
    assert pending == 0


def test_missing_extra_fails_with_a_clear_message() -> None:
    """Without opentelemetry-api, importing observe.tracing names the extra to install."""
    code = BLOCK_IMPORT.format(blocked="opentelemetry", module="aegis_proxy.observe.tracing")
    assert "pip install 'aegis-proxy[otel]'" in run_python(code)
