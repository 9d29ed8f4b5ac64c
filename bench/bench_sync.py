"""The blocking entry vs the async one: ``completion()`` p50 against ``await acompletion()``.

Run: ``python bench/bench_sync.py [--quick]``. Both go through the default proxy (built
from ``$AEGIS_CONFIG``) to one fast loopback server (``fast_server.py``), in blocks that
alternate: a block of sequential ``await acompletion`` calls on one event loop, then a
block of sequential ``completion`` calls from the main thread (no loop), which submit to
the default proxy's background loop thread. Target: sync p50 <= 1.5 x async p50.

Beside them, two reference figures of the same run: the old blocking path (a fresh proxy
and event loop per call, what ``completion`` did before) and 200 threads calling
``completion`` at once (wall time, and that every call answered). What must always hold:
every call runs the whole path (PII scan, routing, a reservation, a settled row) and the
ledger ends with one 'ok' row per request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).absolute().parent))

import common as c
from fast_server import FastServer


def _blocks(rounds: int, per_block: int) -> dict[str, list[float]]:
    from aegis_proxy import LLMTask, acompletion, completion

    task = LLMTask(task_type="summary")
    loop = asyncio.new_event_loop()
    times: dict[str, list[float]] = {"async": [], "sync": []}

    async def async_block(n: int, keep: bool) -> None:
        for _ in range(n):
            began = time.perf_counter()
            await acompletion(c.MESSAGES, task, max_tokens=c.MAX_TOKENS)
            if keep:
                times["async"].append(time.perf_counter() - began)

    def sync_block(n: int, keep: bool) -> None:
        for _ in range(n):
            began = time.perf_counter()
            completion(c.MESSAGES, task, max_tokens=c.MAX_TOKENS)
            if keep:
                times["sync"].append(time.perf_counter() - began)

    loop.run_until_complete(async_block(50, keep=False))  # warm: imports, clients, pools
    sync_block(50, keep=False)
    for n in range(rounds):
        first, second = (async_block, sync_block) if n % 2 == 0 else (sync_block, async_block)
        for block in (first, second):
            result = block(per_block, keep=True)
            if result is not None:
                loop.run_until_complete(result)
    from aegis_proxy import close_default_proxy

    loop.run_until_complete(close_default_proxy())
    loop.close()
    return times


def _fresh_proxy_calls(config: Path, count: int) -> list[float]:
    """The old blocking path: a new proxy (and loop) for every call."""
    from aegis_proxy import AegisLLMProxy, LLMTask, load_config

    task = LLMTask(task_type="summary")

    async def once() -> None:
        async with AegisLLMProxy(load_config(config)) as proxy:
            await proxy.acompletion(c.MESSAGES, task, max_tokens=c.MAX_TOKENS)

    times = []
    for _ in range(count):
        began = time.perf_counter()
        asyncio.run(once())
        times.append(time.perf_counter() - began)
    return times


def _threads(count: int) -> dict[str, Any]:
    """``count`` threads calling ``completion`` at once; wall time and answers."""
    from aegis_proxy import LLMTask, close_default_proxy, completion

    task = LLMTask(task_type="summary")
    barrier = threading.Barrier(count)
    answered: list[bool] = []

    def call() -> None:
        barrier.wait()
        resp = completion(c.MESSAGES, task, max_tokens=c.MAX_TOKENS)
        answered.append(bool(resp.choices))

    workers = [threading.Thread(target=call) for _ in range(count)]
    began = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    wall = time.perf_counter() - began
    close_default_proxy()
    return {"threads": count, "answered": sum(answered), "wall_s": wall,
            "alive_after": sum(w.is_alive() for w in workers)}  # fmt: skip


def _ok_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        (count,) = conn.execute("SELECT count(*) FROM requests WHERE status = 'ok'").fetchone()
    return int(count)


def measure(server: FastServer, folder: Path, quick: bool) -> dict[str, Any]:
    config = c.write_config(c.proxy_config(server.url, folder / "ledger.db"), folder / "a.yaml")
    os.environ["AEGIS_CONFIG"] = str(config)
    rounds, per_block = (6, 100) if quick else (20, 200)
    times = _blocks(rounds, per_block)
    fresh = _fresh_proxy_calls(config, 10 if quick else 30)
    threads = _threads(200)
    stats = {name: c.summary_ms(values) for name, values in times.items()}
    requests = 100 + sum(map(len, times.values())) + len(fresh) + threads["threads"]
    return {
        "variants": stats,
        "ratio_p50": stats["sync"]["p50"] / stats["async"]["p50"],
        "fresh_proxy_per_call": c.summary_ms(fresh),
        "threads_at_once": threads,
        "requests": requests,
        "ledger_rows_ok": _ok_rows(folder / "ledger.db"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    c.configure_quiet_logging()
    with tempfile.TemporaryDirectory() as tmp, FastServer() as server:
        result = measure(server, Path(tmp), args.quick)
    print(c.save_json("sync", result))
    v, fresh = result["variants"], result["fresh_proxy_per_call"]["p50"]
    print(f"async p50 {v['async']['p50']:.3f} ms, sync p50 {v['sync']['p50']:.3f} ms, "
          f"ratio {result['ratio_p50']:.2f}; fresh proxy per call p50 {fresh:.1f} ms; "
          f"{result['threads_at_once']}")  # fmt: skip


if __name__ == "__main__":
    main()
