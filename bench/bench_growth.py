"""Cost growth: proxy overhead at 1, 10 and 100 routing rules and at 10k-1M ledger rows.

Run: ``python bench/bench_growth.py [--quick]``. Each family of proxies (one per size) is
measured interleaved with direct any-llm against the same fast loopback server, so every
size shares the same drift. The rules never match (the request walks all of them to the
default route: first-match routing's worst case); the ledger rows are settled rows of the
current month, spread over its days, mostly on the budgeted provider being called.

Target: flat. The added p50 (proxy - direct) at the largest size exceeds the one at the
smallest by <= 0.1 ms, judged on the event-loop thread's CPU time (which other work on a
busy machine barely moves; the wall-clock figures are reported beside it). The ledger
side must be flat by design (reservations read O(1) counters and indexed pending rows);
routing is linear in the rules before the match, so there the figure is a measured slope.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).absolute().parent))

import common as c
from fast_server import FastServer

FLAT_MS = 0.1
BULK = (
    "INSERT INTO requests (request_id, attempt, timestamp, period, provider, model, user_id,"
    " agent, query_hash, rule, task_type, quality, complexity, batch_size,"
    " data_classification, tags, contains_pii, stream, status, input_tokens, output_tokens,"
    " reserved_micros, cost_micros, latency_ms, pid, host, expires_at, settled_at)"
    " VALUES (?, 1, ?, ?, ?, 'gpt-4o-mini', NULL, NULL, ?, 'default', 'summary', 'standard',"
    " 'medium', 1, 'internal', '[]', 0, 0, 'ok', 114, 9, 2000, 30, 250.0, 1, 'bench', 0, ?)"
)


def fill_ledger(path: Path, rows: int) -> float:
    """Create a ledger holding ``rows`` settled rows of this month; seconds it took."""
    from aegis_proxy.settle.sqlite.ledger import Ledger

    began = time.perf_counter()
    Ledger(path).close()  # the schema, through the migrations
    now = datetime.now(UTC)
    month, days = now.strftime("%Y-%m"), now.day
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany(BULK, _bulk_rows(rows, month, days))
    conn.execute("COMMIT")
    conn.close()
    with Ledger(path) as ledger:
        ledger.rebuild_usage()
    return time.perf_counter() - began


def _bulk_rows(count: int, month: str, days: int) -> Any:
    for n in range(count):
        stamp = f"{month}-{1 + n % days:02d}T00:{n % 60:02d}:00.000+00:00"
        provider = "local" if n % 4 == 3 else "openai"
        yield (f"g{n:08d}", stamp, month, provider, f"{n:064x}", stamp)


async def compare(
    server: FastServer, proxies: dict[str, Any], rounds: int, blocks: int
) -> dict[str, Any]:
    """Interleaved direct + one proxy per size; wall and CPU p50/p99, added p50 per size."""
    client = c.make_anyllm(server.url)
    calls: dict[str, c.Call] = {"direct": c.variant_calls(None, client, None)["direct"]}
    for label, proxy in proxies.items():
        calls[label] = c.variant_calls(proxy, None, None)["proxy"]
    walls: dict[str, list[float]] = {name: [] for name in calls}
    cpus: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(blocks):
        wall, cpu = await c.interleaved(calls, rounds, warmup=50)
        for name in calls:
            walls[name].extend(wall[name])
            cpus[name].extend(cpu[name])
    sizes = _sizes(walls, proxies)
    sizes_cpu = _sizes(cpus, proxies)
    growth = _growth(sizes_cpu)
    return {
        "direct": c.summary_ms(walls["direct"]),
        "direct_cpu": c.summary_ms(cpus["direct"]),
        "sizes": sizes,
        "sizes_cpu": sizes_cpu,
        "growth_ms": _growth(sizes),
        "growth_cpu_ms": growth,
        "flat": growth <= FLAT_MS,
    }


def _sizes(samples: dict[str, list[float]], proxies: dict[str, Any]) -> dict[str, Any]:
    stats = {name: c.summary_ms(values) for name, values in samples.items()}
    base = stats["direct"]["p50"]
    return {
        label: {**stats[label], "added_p50_ms": stats[label]["p50"] - base} for label in proxies
    }


def _growth(sizes: dict[str, Any]) -> float:
    added = [size["added_p50_ms"] for size in sizes.values()]
    return float(added[-1] - added[0])


async def rules_family(server: FastServer, folder: Path, rounds: int, blocks: int) -> Any:
    proxies = {}
    for count in (1, 10, 100):
        sub = folder / f"rules{count}"
        sub.mkdir()
        proxies[f"{count} rules"] = c.make_proxy(
            c.proxy_config(server.url, sub / "ledger.db", rules=count), sub
        )
    try:
        return await compare(server, proxies, rounds, blocks)
    finally:
        for proxy in proxies.values():
            await proxy.aclose()


async def rows_family(
    server: FastServer, folder: Path, sizes: list[int], rounds: int, blocks: int
) -> Any:
    proxies, fill_s = {}, {}
    for rows in sizes:
        sub = folder / f"rows{rows}"
        sub.mkdir()
        label = f"{rows:,} rows"
        fill_s[label] = fill_ledger(sub / "ledger.db", rows)
        proxies[label] = c.make_proxy(c.proxy_config(server.url, sub / "ledger.db"), sub)
    try:
        result = await compare(server, proxies, rounds, blocks)
    finally:
        for proxy in proxies.values():
            await proxy.aclose()
    result["fill_seconds"] = fill_s
    return result


async def run(quick: bool) -> dict[str, Any]:
    rounds, blocks = (300, 2) if quick else (800, 4)
    sizes = [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
    with FastServer() as server, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        return {
            "rules": await rules_family(server, folder, rounds, blocks),
            "ledger_rows": await rows_family(server, folder, sizes, rounds, blocks),
            "rounds_per_block": rounds,
            "blocks": blocks,
            "flat_threshold_ms": FLAT_MS,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    c.configure_quiet_logging()
    load = os.getloadavg()
    result = asyncio.run(run(args.quick))
    result.update(loadavg_before=load, loadavg_after=os.getloadavg())
    print(c.save_json("growth", result))


if __name__ == "__main__":
    main()
