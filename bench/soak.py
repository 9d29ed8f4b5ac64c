"""Soak: many requests at high concurrency through one AegisLLMProxy, ~20% of them faulted.

Why it exists: the unit tests show each fault once; this shows the proxy survives them
all mixed together, for long enough that a leak, a hang or an unsettled row would show.
Run: ``python bench/soak.py [--requests 20000] [--concurrency 200]`` (not in the unit suite).

What must always hold (asserted at the end; the exit status is 1 if one fails):
- zero hung requests: every request ends within its deadline (plus a scheduling margin);
- zero unhandled exceptions: only ``AegisError`` subclasses reach the caller;
- ledger rows == attempts that reached a provider (counted from ``resp.aegis.attempts``,
  ``stream.aegis.attempts`` and ``NoProviderAvailableError.attempts``); no ``pending`` row;
- RSS grows by less than 20 MB between the end of the warm-up and the end of the run.

The fake providers are ``tests/fakeserver.py`` (stdlib, one thread per connection: OpenAI
JSON+SSE and Ollama JSON+NDJSON), three of them in a child process (``--serve``) so their
threads never compete with the proxy for our GIL. Each server is given, before the run, a
shuffled queue of faults in which ``Fault.delay(0)`` (a no-op) stands for "no fault": each
chat request consumes one entry, so ~``--fault-rate`` of all responses misbehave (429 with
Retry-After, 500, dropped connection, headers later than the timeout, malformed JSON, a
body or stream dropped or stalled after its first chunk). Callers also close some streams
early. Figures go to stdout and ``bench/results/soak.json``.

The proxy is entered with ``async with``, which creates the SDK clients before the first
request (without it the first calls spend their deadline on importing any-llm, see
``tests/test_faults.py::test_first_call_of_a_fresh_process_keeps_its_deadline``).

Choices that matter: the per-attempt timeout (5 s) and deadline (15 s) leave room for the
client's own queueing, which counts against them: with 200 requests in flight on a busy
2-CPU machine a healthy answer can take seconds, and a 3 s timeout turned that queueing
into timeouts, open breakers and a storm of refusals. The hang margin (2 s) is scheduling
slack; the loop lag printed beside it says how late this process was woken (a real hang
runs into the guard, deadline + margin + 5 s, and is counted as hung). Workers yield after
each request, as separate request tasks would: a request refused at once never awaits.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).absolute().parent))

import common as c

from aegis_proxy import AegisError, AegisLLMProxy, LLMTask, NoProviderAvailableError
from aegis_proxy.decide.record import Attempt

NOT_REACHED = ("skipped", "budget_exceeded")
RSS_LIMIT_MB = 20.0
MESSAGES = [{"role": "user", "content": "Give me three facts about lighthouses."}]
TASKS = {  # share of requests, task; each route starts with a different provider
    "critical": (0.4, LLMTask(quality="critical", complexity="high", task_type="soak")),
    "batch": (0.3, LLMTask(batch_size=20, task_type="soak")),
    "default": (0.3, LLMTask(task_type="soak")),
}
MODES = {"complete": 0.7, "stream": 0.2, "stream_closed_early": 0.1}


# --- the fake providers, in a child process ------------------------------------------------


def fault_mix(timeout_s: float) -> list[tuple[Any, int]]:
    """(fault, weight) of the faulted share; a late fault is later than the provider timeout."""
    from tests.fakeserver import Fault

    late = timeout_s + 0.5
    return [
        (Fault.status(429, retry_after=0.05), 4),
        (Fault.status(500), 4),
        (Fault.drop(), 3),
        (Fault.delay(late), 2),
        (Fault.malformed(), 3),
        (Fault.drop_after_first_chunk(), 2),
        (Fault.stall_after_first_chunk(late), 2),
    ]


def fault_queue(size: int, rate: float, timeout_s: float, rng: random.Random) -> list[Any]:
    from tests.fakeserver import Fault

    mix = fault_mix(timeout_s)
    faults, weights = [f for f, _ in mix], [w for _, w in mix]
    none = Fault.delay(0)  # the fake's no-op: answers at once, normally
    return [rng.choices(faults, weights)[0] if rng.random() < rate else none for _ in range(size)]


def fault_name(fault: Any) -> str:
    if fault.kind == "status":
        return f"status_{fault.status_code}"
    return "none" if fault.kind == "delay" and fault.seconds == 0 else str(fault.kind)


def serve(args: argparse.Namespace) -> None:
    """Child: start three fake providers, print their URLs, report stats, stop on EOF."""
    from tests.fakeserver import FakeProviderServer

    rng = random.Random(args.seed)
    names = ("cloud_openai", "cloud_ollama", "local")
    servers = {name: FakeProviderServer().start() for name in names}
    queues = {n: fault_queue(args.requests * 2, args.fault_rate, args.timeout, rng) for n in names}
    for name, server in servers.items():
        for fault in queues[name]:
            server.add_fault(fault)
    print(json.dumps({n: s.url for n, s in servers.items()}), flush=True)
    for line in sys.stdin:
        if line.strip() == "stats":
            print(json.dumps(server_stats(servers, queues)), flush=True)
    for server in servers.values():
        server.stop()


def server_stats(servers: dict[str, Any], queues: dict[str, list[Any]]) -> dict[str, Any]:
    """Chat requests per server and the faults they were served (faults pop FIFO, one each)."""
    stats: dict[str, Any] = {}
    for name, server in servers.items():
        chats = len(server.chat_requests())
        served = Counter(fault_name(f) for f in queues[name][:chats])
        stats[name] = {"chat_requests": chats, "faults": dict(served)}
        stats[name]["queue_exhausted"] = chats > len(queues[name])
    return stats


class Providers:
    """The child process holding the fake providers."""

    def __init__(self, args: argparse.Namespace) -> None:
        command = [sys.executable, __file__, "--serve", *child_args(args)]
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.urls: dict[str, str] = json.loads(self.proc.stdout.readline())

    def stats(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        result: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return result

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def child_args(args: argparse.Namespace) -> list[str]:
    return [
        f"--requests={args.requests}",
        f"--fault-rate={args.fault_rate}",
        f"--timeout={args.timeout}",
        f"--seed={args.seed}",
    ]


# --- the proxy side --------------------------------------------------------------------------


def proxy_config(urls: dict[str, str], ledger: Path, args: argparse.Namespace) -> dict[str, Any]:
    price = {"input_per_mtok": 2.5, "output_per_mtok": 10}
    common = {"timeout_s": args.timeout, "price": price}
    paid = {**common, "api_key": c.API_KEY, "monthly_budget_usd": 1_000_000}
    return {
        "providers": {
            "cloud_openai": {"sdk": "openai", "api_base": f"{urls['cloud_openai']}/v1",
                             "model": "gpt-4o", **paid},
            "cloud_ollama": {"sdk": "ollama", "api_base": urls["cloud_ollama"],
                             "model": "gpt-oss:120b", **paid},
            "local": {"sdk": "ollama", "api_base": urls["local"], "model": "llama3.2:3b",
                      "local": True, **common},
        },
        "routing": {
            "deadline_s": args.deadline,
            "rules": [
                {"name": "critical", "when": {"quality": "critical"},
                 "route": ["cloud_openai", "cloud_ollama", "local"]},
                {"name": "batch", "when": {"min_batch_size": 11},
                 "route": ["cloud_ollama", "local"]},
            ],
            "default": ["local", "cloud_ollama"],
        },
        "ledger": {"path": str(ledger)},
        "resilience": {"retries": 1, "backoff_s": 0.05, "max_backoff_s": 0.5,
                       "breaker_failures": 5, "breaker_cooldown_s": 2.0},
    }  # fmt: skip


@dataclass
class Tally:
    """What the requests came to."""

    latencies: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    unhandled: Counter[str] = field(default_factory=Counter)
    attempts: int = 0  # attempts that reached a provider
    hung: int = 0
    unaccounted: int = 0  # AegisErrors that carry no attempts (must stay 0)
    slowest: list[tuple[float, str, str]] = field(default_factory=list)  # (s, mode, story)


def reached(attempts: Any) -> int:
    return sum(1 for a in attempts if isinstance(a, Attempt) and a.outcome not in NOT_REACHED)


async def one_request(
    proxy: AegisLLMProxy, task: LLMTask, mode: str, tally: Tally, guard_s: float
) -> None:
    """One request, consumed as ``mode`` says; every ending is tallied."""
    started = time.monotonic()
    record: Any = None
    error: BaseException | None = None
    guard = asyncio.timeout(guard_s)
    try:
        async with guard:
            result = await proxy.acompletion(
                MESSAGES, task, stream=mode != "complete", max_tokens=32
            )
            record = result.aegis
            if mode != "complete":
                await consume(result, early=mode == "stream_closed_early")
        tally.outcomes[f"{mode}_ok"] += 1
    except NoProviderAvailableError as exc:
        error, record = exc, exc
        tally.outcomes["no_provider"] += 1
    except AegisError as exc:  # a stream failing after its first chunk reaches its consumer
        error = exc
        tally.errors[type(exc).__name__] += 1
        tally.outcomes[f"{mode}_raised"] += 1
    except TimeoutError as exc:
        error = exc
        tally.hung += 1
        if not guard.expired():
            tally.unhandled["TimeoutError"] += 1
    except Exception as exc:  # the point of the soak: count whatever else escapes
        error = exc
        tally.unhandled[type(exc).__name__] += 1
    if record is None:
        tally.unaccounted += isinstance(error, AegisError)
    else:
        tally.attempts += reached(record.attempts)
    elapsed = time.monotonic() - started
    tally.latencies.append(elapsed)
    if elapsed > task_deadline_s(proxy):
        tally.slowest.append((elapsed, mode, story(record, error)))


def task_deadline_s(proxy: AegisLLMProxy) -> float:
    return float(proxy.config.routing.deadline_s or 0.0)


def story(record: Any, exc: BaseException | None) -> str:
    """The attempts of one request, for the report of a request that ran past its deadline."""
    attempts = getattr(record, "attempts", ())
    steps = [
        f"{a.provider}:{a.outcome}:{a.error_type or a.reason}:{a.latency_ms}" for a in attempts
    ]
    return f"{type(exc).__name__ if exc else 'ok'} " + " > ".join(steps)


async def consume(stream: Any, *, early: bool) -> None:
    async with stream:
        async for _chunk in stream:
            if early:
                break


async def run_batch(
    proxy: AegisLLMProxy,
    plan: list[tuple[LLMTask, str]],
    concurrency: int,
    guard_s: float,
    tally: Tally,
) -> float:
    """Run ``plan`` with ``concurrency`` workers; returns the wall time in seconds."""
    items = iter(plan)

    async def worker() -> None:
        for task, mode in items:
            await one_request(proxy, task, mode, tally, guard_s)
            await asyncio.sleep(0)  # a request refused at once never yields: let others run

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - began


def request_plan(count: int, rng: random.Random) -> list[tuple[LLMTask, str]]:
    tasks = [t for _, t in TASKS.values()]
    task_weights = [w for w, _ in TASKS.values()]
    modes, mode_weights = list(MODES), list(MODES.values())
    return [
        (rng.choices(tasks, task_weights)[0], rng.choices(modes, mode_weights)[0])
        for _ in range(count)
    ]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def ledger_counts(path: Path) -> tuple[int, int]:
    import sqlite3

    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        total, pending = conn.execute(
            "SELECT count(*), coalesce(sum(status = 'pending'), 0) FROM requests"
        ).fetchone()
    return int(total), int(pending)


@dataclass
class Figures:
    """What the measured phase came to, beside the tallies."""

    wall_s: float
    rss_start: float
    rss_end: float
    rows: int
    pending: int
    lags: list[float]
    rss_track: list[float]
    servers: dict[str, Any]


async def watch_loop(lags: list[float], rss: list[float], period_s: float = 0.05) -> None:
    """How late the loop wakes a sleeper (the process's own scheduling delay, for context),
    and the RSS about once a second (does it level off?)."""
    while True:
        began = time.monotonic()
        await asyncio.sleep(period_s)
        lags.append(time.monotonic() - began - period_s)
        if len(lags) % 20 == 0:
            rss.append(rss_mb())


async def soak(args: argparse.Namespace, providers: Providers, folder: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    ledger = folder / "ledger.db"
    proxy = c.make_proxy(proxy_config(providers.urls, ledger, args), folder)
    guard_s = args.deadline + args.hang_margin + 5.0  # far past any honest ending
    warm, measured = Tally(), Tally()
    lags: list[float] = []
    rss_track: list[float] = []
    async with proxy:
        warm_n = min(args.warmup, args.requests // 5)
        await run_batch(proxy, request_plan(warm_n, rng), args.concurrency, guard_s, warm)
        gc.collect()
        rss_start = rss_mb()
        watcher = asyncio.create_task(watch_loop(lags, rss_track))
        plan = request_plan(args.requests - warm_n, rng)
        wall = await run_batch(proxy, plan, args.concurrency, guard_s, measured)
        watcher.cancel()
        gc.collect()
        rss_end = rss_mb()
    rows, pending = ledger_counts(ledger)
    figures = Figures(wall, rss_start, rss_end, rows, pending, lags, rss_track, providers.stats())
    return report(args, warm, measured, figures)


def merged(a: Tally, b: Tally) -> Tally:
    return Tally(
        latencies=a.latencies + b.latencies,
        outcomes=a.outcomes + b.outcomes,
        errors=a.errors + b.errors,
        unhandled=a.unhandled + b.unhandled,
        attempts=a.attempts + b.attempts,
        hung=a.hung + b.hung,
        unaccounted=a.unaccounted + b.unaccounted,
        slowest=a.slowest + b.slowest,
    )


def fault_totals(servers: dict[str, Any]) -> tuple[int, int, dict[str, int]]:
    """(chat requests, faulted responses, faults by kind) over every fake provider."""
    faults = Counter[str]()
    chats = 0
    for stats in servers.values():
        chats += stats["chat_requests"]
        faults.update(stats["faults"])
    return chats, chats - faults.pop("none", 0), dict(faults)


def report(args: argparse.Namespace, warm: Tally, measured: Tally, f: Figures) -> dict[str, Any]:
    everything = merged(warm, measured)
    bound = args.deadline + args.hang_margin
    late = sum(1 for s in everything.latencies if s > bound)
    chats, faulted, faults = fault_totals(f.servers)
    checks = {
        "no_hung_requests": everything.hung == 0 and late == 0,
        "no_unhandled_exceptions": not everything.unhandled,
        "ledger_rows_equal_attempts": f.rows == everything.attempts and not everything.unaccounted,
        "no_pending_rows": f.pending == 0,
        "rss_growth_under_20_mb": f.rss_end - f.rss_start < RSS_LIMIT_MB,
    }
    latency = c.summary_ms(measured.latencies)
    lag = c.summary_ms(f.lags)
    return {
        "requests": len(everything.latencies),
        "measured_requests": len(measured.latencies),
        "concurrency": args.concurrency,
        "requests_per_s": len(measured.latencies) / f.wall_s,
        "wall_s": f.wall_s,
        "latency_ms": {k: latency[k] for k in ("p50", "p95", "p99", "mean")},
        "latency_max_ms": max(measured.latencies) * 1000,
        "deadline_s": args.deadline,
        "provider_timeout_s": args.timeout,
        "hang_bound_s": bound,
        "over_hang_bound": late,
        "past_deadline": sorted(everything.slowest, reverse=True)[:10],
        "loop_lag_ms": {"p50": lag["p50"], "p99": lag["p99"], "max": max(f.lags) * 1000},
        "hung": everything.hung,
        "unhandled": dict(everything.unhandled),
        "outcomes": dict(everything.outcomes),
        "errors_raised": dict(everything.errors),
        "attempts_reaching_a_provider": everything.attempts,
        "ledger_rows": f.rows,
        "pending_rows": f.pending,
        "rss_mb": {
            "after_warmup": f.rss_start,
            "end": f.rss_end,
            "growth": f.rss_end - f.rss_start,
        },
        "rss_tenths_mb": tenths(f.rss_track),
        "chat_requests_at_providers": chats,
        "faulted_responses": faulted,
        "fault_share": faulted / chats if chats else 0.0,
        "faults_served": faults,
        "queues_exhausted": [n for n, s in f.servers.items() if s["queue_exhausted"]],
        "checks": checks,
        "loadavg": list(os.getloadavg()),
        "machine": c.machine(),
    }


def tenths(samples: list[float]) -> list[float]:
    """The samples at the start of each tenth of the run (to see whether RSS levels off)."""
    return [round(samples[len(samples) * i // 10], 1) for i in range(10)] if samples else []


def print_report(result: dict[str, Any]) -> None:
    lat = result["latency_ms"]
    print(
        f"requests        {result['requests']} ({result['measured_requests']} measured) "
        f"at {result['concurrency']} concurrent"
    )
    print(
        f"throughput      {result['requests_per_s']:.0f} requests/s over {result['wall_s']:.1f} s"
    )
    print(
        f"latency         p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms, "
        f"max {result['latency_max_ms']:.0f} ms (bound {result['hang_bound_s']:.1f} s)"
    )
    print(
        f"faults          {result['faulted_responses']} of {result['chat_requests_at_providers']} "
        f"provider responses ({result['fault_share']:.1%}): {result['faults_served']}"
    )
    print(f"outcomes        {result['outcomes']}")
    print(f"errors raised   {result['errors_raised']}")
    print(
        f"ledger          {result['ledger_rows']} rows, {result['attempts_reaching_a_provider']} "
        f"attempts, {result['pending_rows']} pending"
    )
    rss = result["rss_mb"]
    print(
        f"rss             {rss['after_warmup']:.1f} MB -> {rss['end']:.1f} MB "
        f"(growth {rss['growth']:+.1f} MB)"
    )
    print(f"rss over time   {result['rss_tenths_mb']} MB (each tenth of the run)")
    print(f"hung/unhandled  {result['hung']} / {result['unhandled'] or 0}")
    lag = result["loop_lag_ms"]
    print(
        f"loop lag        p50 {lag['p50']:.0f} ms, p99 {lag['p99']:.0f} ms, max {lag['max']:.0f} ms"
    )
    for elapsed, mode, steps in result["past_deadline"]:
        print(f"  past deadline {elapsed:.2f} s {mode}: {steps}")
    for name, ok in result["checks"].items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--fault-rate", type=float, default=0.2)
    parser.add_argument("--deadline", type=float, default=15.0, help="per request, seconds")
    parser.add_argument("--timeout", type=float, default=5.0, help="per attempt, seconds")
    parser.add_argument("--hang-margin", type=float, default=2.0, help="scheduling slack, s")
    parser.add_argument("--warmup", type=int, default=2_000, help="requests before RSS is read")
    parser.add_argument("--seed", type=int, default=20_261_122)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="soak", help="results file name under bench/results")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.serve:
        serve(args)
        return 0
    c.configure_quiet_logging("error")
    providers = Providers(args)
    try:
        with tempfile.TemporaryDirectory(prefix="aegis-soak-") as folder:
            result = asyncio.run(soak(args, providers, Path(folder)))
    finally:
        providers.stop()
    print_report(result)
    print(f"written to {c.save_json(args.out, result)}")
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
