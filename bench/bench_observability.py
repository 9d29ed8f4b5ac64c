"""Benchmark: what Prometheus metrics and OpenTelemetry tracing add to a request.

Run: ``python bench/bench_observability.py [--requests 1500]``.

Two measures, both against a baseline taken in the same run:

- end to end: sequential requests through the proxy to one fast fake OpenAI-compatible
  server on loopback (``bench/fast_server.py``), with no observer, with ``PrometheusObserver``
  (bound: its budget gauges read the ledger after every settled attempt), with
  ``OTelObserver`` (an SDK ``TracerProvider`` with a ``BatchSpanProcessor`` and an exporter
  that discards, as a service with an OTLP exporter would run it), and with both. The
  variants take turns request by request on the same server and prompt; each figure is
  the median over all requests of a variant. A second proxy without observers
  (``control``) runs alongside: its distance from ``baseline`` is the noise floor;
- observer only: the events of one real request (two attempts: a 500 then a fallback,
  recorded through ``tests/fakeserver.py``) replayed straight into each observer, which
  isolates its cost from network noise.

The provider is budgeted, so every request also reserves and settles a ledger row, and
the metrics observer refreshes the budget gauges from SQLite: the worst case.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the cost map

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).absolute().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from fast_server import FastServer  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import (  # noqa: E402
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from prometheus_client import CollectorRegistry  # noqa: E402

from aegis_proxy import AegisLLMProxy, LLMTask  # noqa: E402
from aegis_proxy.config import load_config  # noqa: E402
from aegis_proxy.observe.events import AttemptEvent, RequestEvent  # noqa: E402
from aegis_proxy.observe.logs import configure_logging  # noqa: E402
from aegis_proxy.observe.metrics import PrometheusObserver  # noqa: E402
from aegis_proxy.observe.tracing import OTelObserver  # noqa: E402
from tests.fakeserver import FakeProviderServer, Fault  # noqa: E402

MESSAGES = [{"role": "user", "content": "Summarise the supply clause in two sentences."}]
TASK = LLMTask(task_type="extraction")
VARIANTS = ("baseline", "control", "metrics", "tracing", "both")
OBSERVED = ("metrics", "tracing", "both")


class Discard(SpanExporter):
    """An exporter that drops every span (the export cost is a collector's, not ours)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class Recorder:
    """An observer keeping the events it sees, to replay them."""

    def __init__(self) -> None:
        self.events: list[AttemptEvent | RequestEvent] = []

    def attempt_finished(self, event: AttemptEvent) -> None:
        self.events.append(event)

    def request_finished(self, event: RequestEvent) -> None:
        self.events.append(event)


def write_config(folder: Path, api_base: str, name: str) -> Path:
    provider = {
        "sdk": "openai",
        "api_base": api_base,
        "api_key": "sk-bench-0123456789abcdef",
        "model": "gpt-4o-mini",
        "monthly_budget_usd": 1_000_000,
    }
    data = {
        "providers": {"primary": provider, "backup": dict(provider)},
        "routing": {"rules": [], "default": ["primary", "backup"]},
        "ledger": {"path": str(folder / f"{name}.db")},
        "resilience": {"retries": 0},
    }
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


def build(variant: str, path: Path) -> tuple[AegisLLMProxy, list[TracerProvider]]:
    proxy = AegisLLMProxy(load_config(path))
    providers = []
    if variant in ("metrics", "both"):
        PrometheusObserver(CollectorRegistry()).bind(proxy)
    if variant in ("tracing", "both"):
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(BatchSpanProcessor(Discard()))
        OTelObserver(tracer_provider).bind(proxy)
        providers.append(tracer_provider)
    return proxy, providers


async def timed_request(proxy: AegisLLMProxy) -> tuple[float, float]:
    """(wall, CPU) seconds of one request.

    CPU time is this process's (the proxy, the observers and their threads; the server is
    another process): it is what an observer costs, and other load on the machine moves
    it far less than wall time.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    await proxy.acompletion(MESSAGES, TASK, max_tokens=32)
    return time.perf_counter() - wall, time.process_time() - cpu


async def end_to_end(folder: Path, requests: int) -> dict[str, dict[str, float]]:
    """Median wall and CPU time per request of each variant, in µs.

    The variants take turns request by request (in a new random order each turn), so a
    change of load on the machine hits them all alike.
    """
    with FastServer() as server:
        built = {v: build(v, write_config(folder, server.url, v)) for v in VARIANTS}
        for proxy, _ in built.values():
            for _ in range(20):  # warm up: connections, tokenizer, SQLite pages
                await timed_request(proxy)
        times: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
        for _ in range(requests):
            for variant in random.sample(VARIANTS, len(VARIANTS)):
                times[variant].append(await timed_request(built[variant][0]))
        for proxy, tracer_providers in built.values():
            await proxy.aclose()
            for tracer_provider in tracer_providers:
                tracer_provider.shutdown()
    return {
        kind: {v: statistics.median(t[i] for t in times[v]) * 1e6 for v in VARIANTS}
        for i, kind in enumerate(("wall", "cpu"))
    }


async def record_events(folder: Path) -> list[AttemptEvent | RequestEvent]:
    """The events of one real request whose first attempt fails (500) and falls back."""
    recorder = Recorder()
    with FakeProviderServer() as server:
        server.add_fault(Fault.status(500))
        proxy = AegisLLMProxy(load_config(write_config(folder, server.openai_base, "record")))
        proxy.observers.append(recorder)
        async with proxy:
            await proxy.acompletion(MESSAGES, TASK, max_tokens=32)
    return recorder.events


def replay_cost(
    folder: Path, events: list[AttemptEvent | RequestEvent], repeats: int
) -> dict[str, float]:
    """Microseconds each observer spends on one request's events (median of 5 runs)."""
    path = folder / "replay.yaml"
    path.write_text((folder / "record.yaml").read_text())
    costs = {}
    for variant in OBSERVED:
        proxy, tracer_providers = build(variant, path)
        observers = list(proxy.observers)

        def replay(observers: list[Any] = observers) -> None:
            for _ in range(repeats):
                for event in events:
                    for observer in observers:
                        if isinstance(event, AttemptEvent):
                            observer.attempt_finished(event)
                        else:
                            observer.request_finished(event)

        costs[variant] = median_seconds(5, replay) / repeats * 1e6
        asyncio.run(proxy.aclose())
        for tracer_provider in tracer_providers:
            tracer_provider.shutdown()
    return costs


def median_seconds(runs: int, action: Callable[[], object]) -> float:
    """Median CPU time of ``action`` (the span exporter's thread included)."""
    times = []
    for _ in range(runs):
        began = time.process_time()
        action()
        times.append(time.process_time() - began)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1500, help="requests per variant")
    parser.add_argument("--replays", type=int, default=2000)
    args = parser.parse_args(argv)
    configure_logging(json_output=True, level="warning")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        e2e = asyncio.run(end_to_end(folder, args.requests))
        events = asyncio.run(record_events(folder))
        direct = replay_cost(folder, events, args.replays)
    report: dict[str, Any] = {}
    for kind, figures in e2e.items():
        base = figures["baseline"]
        report[f"end_to_end_{kind}_us_per_request"] = {v: round(t, 1) for v, t in figures.items()}
        report[f"end_to_end_{kind}_ratio"] = {v: round(t / base, 4) for v, t in figures.items()}
        report[f"end_to_end_{kind}_us_added"] = {
            v: round(t - base, 1) for v, t in figures.items() if v != "baseline"
        }
    report["observer_only_cpu_us_per_request"] = {v: round(t, 1) for v, t in direct.items()}
    report["requests_per_variant"] = args.requests
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
