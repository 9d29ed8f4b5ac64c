"""Shared pieces of the benchmarks: statistics, the proxy config, the three clients.

Why it exists: every benchmark compares the proxy with a baseline measured in the same
run, against the same fast loopback server (``fast_server.py``), with the same prompt.
What must always hold:

- ``LITELLM_LOCAL_MODEL_COST_MAP`` is set before anything can import litellm (no network);
- the proxy config routes every request to one budgeted OpenAI-compatible provider on the
  fast server, so each proxy call runs the whole path: PII scan, routing, a budget
  reservation and a settled ledger row in a SQLite file;
- logging is configured at ``warning`` (the proxy's per-request ``info`` events are
  filtered, as in a service that keeps them off) unless a benchmark asks otherwise
  (``bench_overhead`` leaves it unconfigured, as a library user gets it);
- the prompt holds no personal data, so it is routed to the paid provider.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import gc
import itertools
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

BENCH = Path(__file__).absolute().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(REPO))

API_KEY = "sk-bench-0123456789abcdef"
MODEL = "gpt-4o-mini"
PROMPT = (
    "Summarise the following clause of a supply contract in two sentences. "
    "The supplier shall deliver the goods described in Schedule 1 to the buyer's warehouse "
    "within thirty days of each purchase order, in the quantities stated in that order. "
    "Risk in the goods passes to the buyer on delivery; title passes on payment in full. "
    "Late deliveries entitle the buyer to a reduction of the price by one percent per week "
    "of delay, up to ten percent, without prejudice to its other remedies."
)
MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a careful legal assistant."},
    {"role": "user", "content": PROMPT},
]
MAX_TOKENS = 64
_FRESH = itertools.count()


def fresh_messages() -> list[dict[str, Any]]:
    """``MESSAGES`` with a user prompt no earlier request had (the system prompt repeats).

    As in a pipeline: a node's system prompt is the same on every call, its input is new.
    The latency benches send these, so no per-string memo can serve a whole request.
    """
    prompt = f"{PROMPT} (Reference {next(_FRESH):08d}.)"
    return [MESSAGES[0], {"role": "user", "content": prompt}]


def configure_quiet_logging(level: str = "warning") -> None:
    """Our logging as a service would set it up, filtering below ``level``."""
    from aegis_proxy.observe.logs import configure_logging

    configure_logging(json_output=True, level=level)


def percentile(values: Sequence[float], share: float) -> float:
    """The ``share`` quantile (0..1) of ``values``, by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = share * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """Median, p95, p99 and mean of a list of durations in seconds, as milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50": statistics.median(ms),
        "p95": percentile(ms, 0.95),
        "p99": percentile(ms, 0.99),
        "mean": statistics.fmean(ms),
    }


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, p95 (or max for few runs), min and max of repeated figures."""
    return {
        "median": statistics.median(values),
        "p95": percentile(values, 0.95),
        "min": min(values),
        "max": max(values),
        "runs": len(values),
    }


def proxy_config(
    base_url: str,
    ledger: Path,
    *,
    budget_usd: float = 1_000_000.0,
    rules: int = 0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A config routing every non-PII request to one budgeted provider on ``base_url``.

    With ``rules`` > 0, that many rules that never match come first, so the request walks
    all of them before the default route (the worst case of first-match routing).
    """
    data: dict[str, Any] = {
        "providers": {
            "openai": {
                "sdk": "openai",
                "api_base": base_url,
                "api_key": API_KEY,
                "model": MODEL,
                "monthly_budget_usd": budget_usd,
            },
            "local": {
                "sdk": "openai",
                "api_base": base_url,
                "api_key": API_KEY,
                "model": "local-model",
                "local": True,
            },
        },
        "routing": {"deadline_s": 60, "rules": _rules(rules), "default": ["openai"]},
        "ledger": {"path": str(ledger)},
        "resilience": {"retries": 0},
    }
    data.update(extra or {})
    return data


def _rules(count: int) -> list[dict[str, Any]]:
    return [
        {
            "name": f"rule_{n}",
            "when": {"task_type": f"never_{n}", "quality": "critical", "min_batch_size": 2},
            "route": ["openai"],
        }
        for n in range(count)
    ]


def write_config(data: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def make_proxy(data: dict[str, Any], folder: Path) -> Any:
    """An ``AegisLLMProxy`` loaded from a YAML file written from ``data``."""
    from aegis_proxy import AegisLLMProxy

    return AegisLLMProxy.from_config(write_config(data, folder / "aegis.yaml"))


def make_anyllm(base_url: str) -> Any:
    """One any-llm OpenAI client, created once, SDK retries off."""
    from any_llm import AnyLLM

    return AnyLLM.create("openai", api_key=API_KEY, api_base=base_url, max_retries=0)


def make_litellm_router(base_url: str, **router_kwargs: Any) -> Any:
    """A LiteLLM Router with one OpenAI-compatible deployment on ``base_url``."""
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    model_list = [
        {
            "model_name": "bench",
            "litellm_params": {
                "model": f"openai/{MODEL}",
                "api_base": base_url,
                "api_key": API_KEY,
                "max_retries": 0,
            },
        }
    ]
    return litellm.Router(model_list=model_list, num_retries=0, **router_kwargs)


Call = Callable[[], Awaitable[Any]]


def variant_calls(proxy: Any, client: Any, router: Any) -> dict[str, Call]:
    """One request of each variant, each with a fresh user prompt (``fresh_messages``)."""
    from aegis_proxy import LLMTask

    task = LLMTask(task_type="summary")

    async def direct() -> Any:
        messages = fresh_messages()
        return await client.acompletion(model=MODEL, messages=messages, max_tokens=MAX_TOKENS)

    async def via_proxy() -> Any:
        return await proxy.acompletion(fresh_messages(), task, max_tokens=MAX_TOKENS)

    async def via_litellm() -> Any:
        messages = fresh_messages()
        return await router.acompletion(model="bench", messages=messages, max_tokens=MAX_TOKENS)

    calls: dict[str, Call] = {"direct": direct}
    if proxy is not None:
        calls["proxy"] = via_proxy
    if router is not None:
        calls["litellm"] = via_litellm
    return calls


def contender_calls(server_url: str, folder: Path, peer: bool) -> tuple[dict[str, Call], Any]:
    """Direct any-llm plus either the proxy or (``peer``) LiteLLM's Router: never both.

    LiteLLM runs callbacks and background tasks on the same event loop, which land inside
    whatever request runs next; a process that loads it measures every variant slower.
    So the peer is measured in a process of its own, against its own direct baseline.
    Returns the calls and the proxy (None for the peer), which the caller closes.
    """
    proxy = None if peer else make_proxy(proxy_config(server_url, folder / "ledger.db"), folder)
    router = make_litellm_router(server_url) if peer else None
    return variant_calls(proxy, make_anyllm(server_url), router), proxy


def strip_egress_guard(proxy: Any) -> None:
    """Take the egress guard's hook off the proxy's HTTP clients (to measure its cost only)."""
    for client in proxy.clients.values():
        for shard in client._shards:
            http = shard.client.client._client
            hooks = http.event_hooks
            hooks["request"] = [h for h in hooks["request"] if h.__name__ != "aegis_egress_guard"]
            http.event_hooks = hooks


def same_pools_call(proxy: Any) -> tuple[Call, Any]:
    """The SDK call through the proxy's provider client code (same pools), no policy.

    Returns the call and its ``ProviderClient``, which the caller closes.
    """
    from aegis_proxy.call.client import ProviderClient
    from aegis_proxy.call.egress import Expected, expecting

    client = ProviderClient("openai", proxy.config.providers["openai"])
    params = {"max_tokens": MAX_TOKENS}
    detector = proxy._rt.detector

    def scan(value: Any) -> Any:
        return detector.scan_messages(value).entity_counts

    async def same_pools() -> Any:
        expected = Expected("openai", "openai", MODEL, MESSAGES, params, scan, False, False)
        with expecting(expected):  # the egress guard checks every body for a cloud
            return await client.complete(MODEL, MESSAGES, params)

    return same_pools, client


async def timed(call: Call) -> tuple[float, float]:
    """Wall time and this thread's CPU time of one call, in seconds."""
    wall, cpu = time.perf_counter(), time.thread_time()
    await call()
    return time.perf_counter() - wall, time.thread_time() - cpu


async def interleaved(
    calls: dict[str, Call], rounds: int, warmup: int = 200
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Sequential requests, variants alternating in a rotating order to cancel drift.

    Returns (wall seconds, CPU seconds) per variant. The CPU time is the event-loop
    thread's: what the layer itself costs, barely touched by other work on the machine.
    """
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            await calls[name]()
    walls: dict[str, list[float]] = {name: [] for name in names}
    cpus: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    for n in range(rounds):
        shift = n % len(names)
        for name in names[shift:] + names[:shift]:
            wall, cpu = await timed(calls[name])
            walls[name].append(wall)
            cpus[name].append(cpu)
    return walls, cpus


def save_json(name: str, data: dict[str, Any]) -> Path:
    return save_text(f"{name}.json", json.dumps(data, indent=2, default=str) + "\n")


def save_text(name: str, text: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(text)
    return path


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import platform

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }
