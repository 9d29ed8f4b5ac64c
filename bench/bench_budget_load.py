"""Budget safety under load: 1,000 concurrent requests from 4 processes on one ledger.

Run: ``python bench/bench_budget_load.py [--quick]``. The paid provider's monthly budget
is worth 50 calls; each process sends its share of the requests at once (250 each),
released together. Through AegisLLMProxy, a refused reservation falls back to a $0 local
provider on a second server; every server counts the requests it received. Targets:
overshoot $0.00 and ledger rows == provider calls, per provider.

The same load then goes through LiteLLM's ``Router(provider_budget_config=...)`` with the
same price, in 4 processes (its budget lives in each process's memory unless Redis is
configured) and in 1 process (to show the race inside one event loop). Its overshoot is
(calls the paid server received x cost per call) - budget.

What must always hold: the workers never talk to anything but the loopback servers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).absolute().parent))

import common as c
from fast_server import COMPLETION_TOKENS, PROMPT_TOKENS, FastServer

PRICE_PER_MTOK = Decimal(200)  # input and output alike: one call costs exactly $0.0246
CALL_COST = (PROMPT_TOKENS + COMPLETION_TOKENS) * PRICE_PER_MTOK / 1_000_000
BUDGET_CALLS = 50
BUDGET = CALL_COST * BUDGET_CALLS
MAX_TOKENS = 16
REDIS_URL = "redis://127.0.0.1:6379/9"
WORKER_LOG = Path(tempfile.gettempdir()) / "aegis_bench_budget_workers.log"  # their stderr
DELAY_MS = 20.0  # a provider's latency: calls overlap, as they do in production


def aegis_config(paid: FastServer, local: FastServer, ledger: Path) -> dict[str, Any]:
    price = {"input_per_mtok": str(PRICE_PER_MTOK), "output_per_mtok": str(PRICE_PER_MTOK)}
    data = c.proxy_config(paid.url, ledger, budget_usd=float(BUDGET))
    data["providers"]["openai"]["price"] = price
    data["providers"]["local"]["api_base"] = local.url
    data["routing"]["default"] = ["openai", "local"]
    return data


# -- workers (one per process) ------------------------------------------------------------


async def aegis_worker(config: Path, count: int) -> dict[str, Any]:
    from aegis_proxy import AegisLLMProxy, LLMTask

    proxy = AegisLLMProxy.from_config(config)
    task = LLMTask(task_type="summary")
    _ready()

    async def one() -> str:
        try:
            response = await proxy.acompletion(c.MESSAGES, task, max_tokens=MAX_TOKENS)
        except Exception as exc:  # counted, not raised: the bench reports every outcome
            return type(exc).__name__
        return str(response.aegis.provider)

    outcomes = await asyncio.gather(*(one() for _ in range(count)))
    await proxy.aclose()
    return _tally(outcomes)


async def litellm_worker(base_url: str, count: int, redis_url: str | None) -> dict[str, Any]:
    import litellm

    litellm.suppress_debug_info = True
    price = float(PRICE_PER_MTOK / 1_000_000)
    model_list = [
        {
            "model_name": "bench",
            "litellm_params": {
                "model": f"openai/{c.MODEL}",
                "api_base": base_url,
                "api_key": c.API_KEY,
                "max_retries": 0,
                "input_cost_per_token": price,
                "output_cost_per_token": price,
            },
        }
    ]
    budget = {"openai": {"budget_limit": float(BUDGET), "time_period": "1d"}}
    router = litellm.Router(
        model_list=model_list,
        num_retries=0,
        provider_budget_config=budget,
        redis_url=redis_url,  # None: in-process memory
    )
    _ready()

    async def one() -> str:
        try:
            await router.acompletion(model="bench", messages=c.MESSAGES, max_tokens=MAX_TOKENS)
        except Exception as exc:  # a refusal by the budget filter shows up here
            return type(exc).__name__
        return "openai"

    outcomes = await asyncio.gather(*(one() for _ in range(count)))
    await asyncio.sleep(1.5)  # let its success callbacks record (and sync) the spend
    return _tally(outcomes)


def _ready() -> None:
    print("READY", flush=True)
    if sys.stdin.readline().strip() != "GO":
        raise SystemExit("no GO from the parent")


def _tally(outcomes: list[str]) -> dict[str, Any]:
    tally: dict[str, int] = {}
    for outcome in outcomes:
        tally[outcome] = tally.get(outcome, 0) + 1
    return tally


# -- the parent ---------------------------------------------------------------------------


def run_processes(args_per_worker: list[list[str]]) -> list[dict[str, Any]]:
    """Start the workers, release them together once all are ready, collect their tallies."""
    with WORKER_LOG.open("a") as log:
        workers = [
            subprocess.Popen(
                [sys.executable, __file__, *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
            for args in args_per_worker
        ]
    for worker in workers:
        assert worker.stdout is not None
        line = worker.stdout.readline().strip()
        if line != "READY":
            raise RuntimeError(f"worker did not start: {line!r}")
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("GO\n")
        worker.stdin.flush()
    tallies = []
    for worker in workers:
        out, _ = worker.communicate(timeout=600)
        tallies.append(json.loads(out.strip().splitlines()[-1]))
    return tallies


def ledger_rows(path: Path) -> dict[str, dict[str, Any]]:
    query = (
        "SELECT provider, status, count(*), sum(cost_micros) FROM requests "
        "GROUP BY provider, status"
    )
    rows: dict[str, dict[str, Any]] = {}
    with sqlite3.connect(path) as conn:
        for provider, status, count, cost in conn.execute(query):
            entry = rows.setdefault(provider, {"rows": 0, "cost_micros": 0, "by_status": {}})
            entry["rows"] += count
            entry["cost_micros"] += cost or 0
            entry["by_status"][status] = count
    return rows


def aegis_scenario(total: int, processes: int) -> dict[str, Any]:
    with (
        FastServer(DELAY_MS) as paid,
        FastServer(DELAY_MS) as local,
        tempfile.TemporaryDirectory() as tmp,
    ):
        folder = Path(tmp)
        ledger = folder / "ledger.db"
        config = c.write_config(aegis_config(paid, local, ledger), folder / "aegis.yaml")
        share = total // processes
        tallies = run_processes([["--worker", "aegis", str(config), str(share)]] * processes)
        rows = ledger_rows(ledger)
        calls = {"openai": paid.stats()["chat"], "local": local.stats()["chat"]}
    spent = Decimal(rows.get("openai", {}).get("cost_micros", 0)) / 1_000_000
    pending = sum(r["by_status"].get("pending", 0) for r in rows.values())
    return {
        "pending_rows_left": pending,
        "budget_used_share": float(spent / BUDGET),
        "requests": share * processes,
        "processes": processes,
        "outcomes": _merge(tallies),
        "provider_calls": calls,
        "ledger": rows,
        "rows_equal_calls": all(rows.get(p, {}).get("rows", 0) == n for p, n in calls.items()),
        "spent_usd": str(spent),
        "overshoot_usd": str(max(Decimal(0), spent - BUDGET)),
        "paid_calls_vs_budget_calls": f"{calls['openai']} / {BUDGET_CALLS}",
    }


def litellm_scenario(total: int, processes: int, redis_url: str | None = None) -> dict[str, Any]:
    if redis_url:
        _clear_redis(redis_url)
    with FastServer(DELAY_MS) as paid:
        share = total // processes
        worker = ["--worker", "litellm", paid.url, str(share), "--redis", redis_url or ""]
        tallies = run_processes([worker] * processes)
        calls = paid.stats()["chat"]
    spent = calls * CALL_COST
    recorded = _redis_spend(redis_url) if redis_url else None
    return {
        "spend_litellm_recorded_in_redis_usd": recorded,
        "requests": share * processes,
        "processes": processes,
        "shared_state": "redis" if redis_url else "in-process memory",
        "outcomes": _merge(tallies),
        "provider_calls": calls,
        "spent_usd": str(spent),
        "overshoot_usd": str(max(Decimal(0), spent - BUDGET)),
        "overshoot_x": float(spent / BUDGET),
        "paid_calls_vs_budget_calls": f"{calls} / {BUDGET_CALLS}",
    }


def redis_available() -> str | None:
    """The URL of the machine's Redis (a spare database) when it and its client are there."""
    try:
        import redis
    except ImportError:
        return None
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping()
    except redis.RedisError:
        return None
    return REDIS_URL


def _clear_redis(url: str) -> None:
    """Drop LiteLLM's budget keys from an earlier run (only keys naming a provider budget)."""
    import redis

    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match="*provider*"):
        client.delete(key)


def _redis_spend(url: str) -> float | None:
    import redis

    value = redis.Redis.from_url(url).get("provider_spend:openai:1d")
    return float(value) if value is not None else None


def _merge(tallies: list[dict[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for tally in tallies:
        for key, value in tally.items():
            merged[key] = merged.get(key, 0) + value
    return merged


def reservation_usd() -> Decimal:
    """What the proxy reserves per call: its input bound plus max_tokens, at the price."""
    from aegis_proxy.reserve.pricing import count_tokens, input_token_bound

    if count_tokens(c.MESSAGES) != PROMPT_TOKENS:
        raise AssertionError("fast_server.PROMPT_TOKENS no longer matches the bench prompt")
    return Decimal(input_token_bound(c.MESSAGES) + MAX_TOKENS) * PRICE_PER_MTOK / 1_000_000


def run(quick: bool) -> dict[str, Any]:
    total = 400 if quick else 1000
    WORKER_LOG.unlink(missing_ok=True)
    redis_url = redis_available()
    result: dict[str, Any] = {
        "reservation_usd": str(reservation_usd()),
        "budget_usd": str(BUDGET),
        "call_cost_usd": str(CALL_COST),
        "budget_calls": BUDGET_CALLS,
        "server_delay_ms": DELAY_MS,
        "aegis_4_processes": aegis_scenario(total, 4),
        "litellm_4_processes": litellm_scenario(total, 4),
        "litellm_1_process": litellm_scenario(total, 1),
    }
    result["litellm_4_processes_redis"] = (
        litellm_scenario(total, 4, redis_url) if redis_url else "skipped: no Redis reachable"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "TARGET", "COUNT"))
    parser.add_argument("--redis", default="")
    args = parser.parse_args()
    c.configure_quiet_logging("error")
    if args.worker:
        kind, target, count = args.worker
        worker = aegis_worker(Path(target), int(count)) if kind == "aegis" else None
        if kind == "litellm":
            worker = litellm_worker(target, int(count), args.redis or None)
        assert worker is not None, kind
        print(json.dumps(asyncio.run(worker)), flush=True)
        return
    print(c.save_json("budget_load", run(args.quick)))


if __name__ == "__main__":
    main()
