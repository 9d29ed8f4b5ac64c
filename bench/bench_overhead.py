"""Overhead per request: direct any-llm vs AegisLLMProxy vs LiteLLM's Router, same server.

Run: ``python bench/bench_overhead.py [--quick] [--profile] [--peer] [--log-level L]``.
Logging is left unconfigured by default, as an application that imports the library gets
it (events below WARNING are dropped at the logger); ``--log-level`` configures ours.
Sequential requests to one fast loopback server (``fast_server.py``, a separate process),
the variants alternating in a rotating order so drift (other load, CPU frequency) hits
all of them alike.
Targets: added p50 (proxy - direct) <= 0.3 ms, added p99 <= 1 ms, proxy/direct at p50 <=
1.10. ``--peer`` measures LiteLLM's ``Router.acompletion`` against direct any-llm instead,
in a process of its own (see ``common.contender_calls``).

What must always hold: the proxy call runs the whole path (PII scan, routing, a budget
reservation on a budgeted provider, a settled row in a SQLite ledger file) and the ledger
ends with exactly one 'ok' row per proxy request. ``--profile`` adds a pyinstrument
profile of the proxy's hot path, summarised per aegis_proxy function.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).absolute().parent))

import common as c
from fast_server import FastServer, server_capacity


async def measure(
    server: FastServer, folder: Path, rounds: int, blocks: int, peer: bool
) -> dict[str, Any]:
    """Interleaved blocks of sequential requests; pooled and per-block statistics."""
    calls, proxy = c.contender_calls(server.url, folder, peer)
    name = "litellm" if peer else "proxy"
    unguarded = None
    if not peer:  # the same proxy without the egress guard's last check on the wire
        (folder / "unguarded").mkdir(exist_ok=True)
        ledger = folder / "unguarded" / "ledger.db"
        unguarded = c.make_proxy(c.proxy_config(server.url, ledger), folder / "unguarded")
        calls["proxy_unguarded"] = _unguarded_call(unguarded)
    walls: dict[str, list[float]] = {n: [] for n in calls}
    cpus: dict[str, list[float]] = {n: [] for n in calls}
    per_block = []
    for _ in range(blocks):
        wall, cpu = await c.interleaved(calls, rounds, warmup=50)
        per_block.append(_added({n: c.summary_ms(s) for n, s in wall.items()}, name))
        for n in calls:
            walls[n].extend(wall[n])
            cpus[n].extend(cpu[n])
    stats = {n: c.summary_ms(values) for n, values in walls.items()}
    cpu_stats = {n: c.summary_ms(values) for n, values in cpus.items()}
    result = {
        "contender": name,
        "variants": stats,
        **_added(stats, name),
        "variants_cpu": cpu_stats,
        "cpu": _added(cpu_stats, name),
        "per_block": per_block,
        "added_p50_spread": c.spread([b["added_p50_ms"] for b in per_block]),
    }
    if unguarded is not None:
        result["guard"] = {
            "added_p50_ms": stats["proxy"]["p50"] - stats["proxy_unguarded"]["p50"],
            "added_p99_ms": stats["proxy"]["p99"] - stats["proxy_unguarded"]["p99"],
            "unguarded_added_p50_ms": stats["proxy_unguarded"]["p50"] - stats["direct"]["p50"],
            "unguarded_added_p99_ms": stats["proxy_unguarded"]["p99"] - stats["direct"]["p99"],
        }
        await unguarded.aclose()
    if proxy is not None:
        await proxy.aclose()
        result["ledger_rows_ok"] = _ok_rows(folder / "ledger.db")
        result["proxy_requests"] = len(walls["proxy"]) + blocks * 50
    return result


def _unguarded_call(proxy: Any) -> Any:
    """A proxy request whose provider client lost the egress guard's hook after warm-up."""
    from aegis_proxy import LLMTask

    task = LLMTask(task_type="summary")
    stripped = False

    async def call() -> Any:
        nonlocal stripped
        answer = await proxy.acompletion(c.fresh_messages(), task, max_tokens=c.MAX_TOKENS)
        if not stripped:
            c.strip_egress_guard(proxy)
            stripped = True
        return answer

    return call


def _added(stats: dict[str, dict[str, float]], name: str) -> dict[str, Any]:
    direct, other = stats["direct"], stats[name]
    return {
        "added_p50_ms": other["p50"] - direct["p50"],
        "added_p99_ms": other["p99"] - direct["p99"],
        "ratio_p50": other["p50"] / direct["p50"],
    }


def _ok_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        (count,) = conn.execute("SELECT count(*) FROM requests WHERE status = 'ok'").fetchone()
    return int(count)


def breakdown(folder: Path, number: int) -> dict[str, float]:
    """Microseconds of the proxy's own steps, timed apart from any network call."""
    from aegis_proxy import LLMTask
    from aegis_proxy.classify.detector import PiiDetector
    from aegis_proxy.decide.request import query_hash
    from aegis_proxy.settle.records import AttemptOutcome, AttemptStart, BudgetLimit
    from aegis_proxy.settle.sqlite.ledger import Ledger

    proxy = c.make_proxy(c.proxy_config("http://127.0.0.1:9/v1", folder / "parts.db"), folder)
    task = LLMTask(task_type="summary")
    detector = PiiDetector()
    start = AttemptStart(
        "r" * 32, 1, "openai", c.MODEL, "default", "summary", "standard", "medium", 1,
        "internal", False, False, "0" * 64,
    )  # fmt: skip
    budget = BudgetLimit(monthly_micros=10**15)
    outcome = AttemptOutcome("ok", 1.0, 114, 9, cost_micros=30)
    ledger = Ledger(folder / "pairs.db")

    def pair() -> None:
        ledger.settle(ledger.reserve(start, 1000, budget), outcome)

    steps = {
        "PII scan of the messages": lambda: detector.scan_messages(c.MESSAGES),
        "plan (validate + scan + route)": lambda: proxy.plan(c.MESSAGES, task),
        "query_hash": lambda: query_hash(c.MESSAGES),
        "ledger reserve + settle (budgeted)": pair,
    }
    try:
        return {name: _median_us(fn, number) for name, fn in steps.items()}
    finally:
        ledger.close()


def _median_us(fn: Any, number: int) -> float:
    runs = timeit.repeat(fn, number=number, repeat=5)
    return statistics.median(runs) / number * 1e6


async def profile(server: FastServer, folder: Path, requests: int) -> dict[str, Any]:
    """A pyinstrument profile of sequential proxy requests, summarised per function."""
    from pyinstrument import Profiler

    proxy = c.make_proxy(c.proxy_config(server.url, folder / "profile.db"), folder)
    call = c.variant_calls(proxy, None, None)["proxy"]
    for _ in range(100):
        await call()
    profiler = Profiler(interval=0.0001, async_mode="disabled")
    profiler.start()
    for _ in range(requests):
        await call()
    profiler.stop()
    await proxy.aclose()
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    c.save_text("profile_overhead.txt", text)
    root = profiler.last_session.root_frame() if profiler.last_session else None
    return {"requests": requests, "functions": _by_function(root, requests)}


def _by_function(root: Any, requests: int) -> list[dict[str, Any]]:
    """Inclusive microseconds per request of each aegis_proxy function (and the SDK call)."""
    totals: dict[str, float] = {}

    def walk(frame: Any, seen: frozenset[str]) -> None:
        key = _key(frame)
        if key is not None and key not in seen:
            totals[key] = totals.get(key, 0.0) + frame.time
            seen = seen | {key}
        for child in frame.children:
            walk(child, seen)

    if root is not None:
        walk(root, frozenset())
    ranked = sorted(totals.items(), key=lambda item: -item[1])
    return [{"function": k, "us_per_request": v / requests * 1e6} for k, v in ranked[:25]]


def _key(frame: Any) -> str | None:
    path = (frame.file_path or "").replace(os.sep, "/")
    if "/aegis_proxy/" not in path:
        return None
    module = path.rsplit("/", 1)[-1].removesuffix(".py")
    return f"{module}.{frame.function}"


async def run(quick: bool, with_profile: bool, peer: bool) -> dict[str, Any]:
    rounds, blocks = (300, 2) if quick else (1500, 5)
    with FastServer() as server, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        began = time.perf_counter()
        result = await measure(server, folder, rounds, blocks, peer)
        result["seconds"] = time.perf_counter() - began
        result["server_capacity_rps"] = await asyncio.to_thread(server_capacity, server.port)
        if not peer:
            result["breakdown_us"] = breakdown(folder, 200 if quick else 1000)
        if with_profile and not peer:
            result["profile"] = await profile(server, folder, 500 if quick else 2000)
    result["rounds_per_block"], result["blocks"] = rounds, blocks  # per_block holds each
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--peer", action="store_true", help="direct vs LiteLLM, not the proxy")
    parser.add_argument(
        "--log-level",
        default="none",
        help="none: logging left as a library user gets it (the default); else configured",
    )
    args = parser.parse_args()
    if args.log_level != "none":
        c.configure_quiet_logging(args.log_level)
    load = os.getloadavg()
    result = asyncio.run(run(args.quick, args.profile, args.peer))
    result.update(log_level=args.log_level, loadavg_before=load, loadavg_after=os.getloadavg())
    print(c.save_json("overhead_litellm" if args.peer else "overhead", result))


if __name__ == "__main__":
    main()
