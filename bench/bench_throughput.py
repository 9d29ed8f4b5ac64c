"""Throughput at 256 concurrent requests: AegisLLMProxy vs direct any-llm (and LiteLLM).

Run: ``python bench/bench_throughput.py [--quick]``. 256 asyncio workers each send
requests back to back to one fast loopback server until a fixed total is done; the
variants take turns, run after run, so drift hits them alike. Target: proxy >= 0.85x
direct any-llm requests/s (median over the runs).

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


async def measure(server: FastServer, folder: Path, total: int, runs: int) -> dict[str, Any]:
    proxy = c.make_proxy(c.proxy_config(server.url, folder / "ledger.db"), folder)
    client = c.make_anyllm(server.url)
    router = c.make_litellm_router(server.url)
    calls = c.variant_calls(proxy, client, router)
    for call in calls.values():  # warm up: connections opened, caches filled
        await burst(call, CONCURRENCY * 2, CONCURRENCY)
    rates: dict[str, list[float]] = {name: [] for name in calls}
    opened: dict[str, list[int]] = {name: [] for name in calls}
    names = list(calls)
    for run in range(runs):
        shift = run % len(names)
        for name in names[shift:] + names[:shift]:
            before = server.stats()
            rates[name].append(await burst(calls[name], total, CONCURRENCY))
            after = server.stats()
            if after["chat"] - before["chat"] != total:
                raise AssertionError(f"{name}: server saw {after['chat'] - before['chat']}")
            opened[name].append(after["connections"] - before["connections"])
    await proxy.aclose()
    stats = {name: c.spread(values) for name, values in rates.items()}
    direct = stats["direct"]["median"]
    return {
        "rps": stats,
        "ratio_proxy_direct": stats["proxy"]["median"] / direct,
        "ratio_litellm_direct": stats["litellm"]["median"] / direct,
        "per_run_ratio": [p / d for p, d in zip(rates["proxy"], rates["direct"], strict=True)],
        "connections_opened_per_run": opened,
    }


async def run(quick: bool) -> dict[str, Any]:
    total, runs = (2048, 3) if quick else (2560, 5)
    with FastServer() as server, tempfile.TemporaryDirectory() as tmp:
        result = await measure(server, Path(tmp), total, runs)
        result["server_capacity_rps"] = await asyncio.to_thread(server_capacity, server.port)
    result.update(concurrency=CONCURRENCY, requests_per_run=total, runs=runs)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    c.configure_quiet_logging()
    load = os.getloadavg()
    result = asyncio.run(run(args.quick))
    result.update(loadavg_before=load, loadavg_after=os.getloadavg())
    print(c.save_json("throughput", result))


if __name__ == "__main__":
    main()
