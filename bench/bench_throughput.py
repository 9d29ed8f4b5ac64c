"""Throughput at 256 concurrent requests: AegisLLMProxy vs direct any-llm (and LiteLLM).

Run: ``python bench/bench_throughput.py [--quick] [--peer]`` (``--peer``: LiteLLM's Router
against direct any-llm, in a process of its own). 256 asyncio workers each send
requests back to back to one fast loopback server until a fixed total is done; the
variants take turns, run after run, so drift hits them alike; before each timed run a
variant gets an untimed burst that reopens the connections its client let expire (httpx
keeps idle connections 5 s) while the other variant ran. Target: proxy >= 0.85x direct
any-llm requests/s (median over the runs).

A third variant, ``same_pools``, calls any-llm through the proxy's own provider client
(``aegis_proxy.call.client.ProviderClient``: the same connection pools, split over several
clients under load) with no policy at all. Direct any-llm keeps the SDK's one pool, whose
per-request cost grows with its connections; ``ratio_same_pools`` (proxy / same_pools) is
what the policy layer itself costs at this concurrency, apart from that pool fix.

What must always hold: every proxy request runs the whole path (PII scan, routing,
budget reservation, a settled ledger row), and the server's request count equals the
requests sent, so no variant is credited with calls it did not make.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).absolute().parent))

import common as c
from fast_server import FastServer, server_capacity

CONCURRENCY = 256


async def burst(call: c.Call, total: int, concurrency: int) -> float:
    """Requests per second of ``total`` calls made by ``concurrency`` workers."""
    left = [total]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await call()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - began)


async def measure(
    server: FastServer, folder: Path, total: int, runs: int, peer: bool
) -> dict[str, Any]:
    calls, proxy = c.contender_calls(server.url, folder, peer)
    name = "litellm" if peer else "proxy"
    pooled = None
    if proxy is not None:
        calls["same_pools"], pooled = c.same_pools_call(proxy)
    for call in calls.values():  # warm up: connections opened, caches filled
        await burst(call, CONCURRENCY * 2, CONCURRENCY)
    rates: dict[str, list[float]] = {n: [] for n in calls}
    opened: dict[str, list[int]] = {n: [] for n in calls}
    names = list(calls)
    for run in range(runs):
        shift = run % len(names)
        for n in names[shift:] + names[:shift]:
            await burst(calls[n], CONCURRENCY, CONCURRENCY)  # reopen what idled out (5 s)
            before = server.stats()
            rates[n].append(await burst(calls[n], total, CONCURRENCY))
            after = server.stats()
            if after["chat"] - before["chat"] != total:
                raise AssertionError(f"{n}: server saw {after['chat'] - before['chat']}")
            opened[n].append(after["connections"] - before["connections"])
    if proxy is not None:
        await proxy.aclose()
    if pooled is not None:
        await pooled.aclose()
    stats = {n: c.spread(values) for n, values in rates.items()}
    result = {
        "contender": name,
        "rps": stats,
        "ratio": stats[name]["median"] / stats["direct"]["median"],
        "per_run_ratio": _per_run(rates, name, "direct"),
        "connections_opened_per_run": opened,
    }
    if pooled is not None:
        result["ratio_same_pools"] = stats[name]["median"] / stats["same_pools"]["median"]
        result["per_run_ratio_same_pools"] = _per_run(rates, name, "same_pools")
    return result


def _per_run(rates: dict[str, list[float]], name: str, baseline: str) -> list[float]:
    return [p / d for p, d in zip(rates[name], rates[baseline], strict=True)]


async def run(quick: bool, peer: bool) -> dict[str, Any]:
    total, runs = (2048, 4) if quick else (2560, 8)
    with FastServer() as server, tempfile.TemporaryDirectory() as tmp:
        result = await measure(server, Path(tmp), total, runs, peer)
        result["server_capacity_rps"] = await asyncio.to_thread(server_capacity, server.port)
    result.update(concurrency=CONCURRENCY, requests_per_run=total, runs=runs)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--peer", action="store_true", help="direct vs LiteLLM, not the proxy")
    args = parser.parse_args()
    c.configure_quiet_logging()
    load = os.getloadavg()
    result = asyncio.run(run(args.quick, args.peer))
    result.update(loadavg_before=load, loadavg_after=os.getloadavg())
    print(c.save_json("throughput_litellm" if args.peer else "throughput", result))


if __name__ == "__main__":
    main()
