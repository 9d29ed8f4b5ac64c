"""Benchmark of the ledger's hot path, its monthly summary and its import time.

Run: ``python bench/bench_ledger.py [--rows 1000000] [--runs 5] [--postgres URL]``. Targets:

- reserve + settle pairs, sequential, on a tmp file with a budget row: >= 5,000/s;
- settled rows/s on PostgreSQL against SQLite (1 thread = 1.00x), measured in the same
  run, the variants alternating run by run: one thread, and 4 threads sharing one ledger
  (PostgreSQL's pool then has 4 connections; SQLite serialises them on its one). The first
  run is a warm-up and not counted. PostgreSQL commits wait for the WAL to reach the disk
  (``synchronous_commit=on``, the server default, which the budget guarantee needs across a
  server crash); SQLite's WAL with ``synchronous=NORMAL`` does not. A variant with
  ``synchronous_commit=off`` shows how much of the gap is that flush. The PostgreSQL ledger
  lives in a schema made for the run and dropped after it; an unreachable server is
  reported, not silently left out;
- ``monthly_summary`` over a month of 1,000,000 rows: <= 0.2 s. The summary reads the
  per-provider-and-month counters that reserve/settle maintain in ``budget_usage`` in the
  same transaction as each row (migration m002), so its cost does not grow with the rows;
  the bulk rows are inserted with ``executemany`` and the counters rebuilt once
  (``Ledger.rebuild_usage``). For comparison the bench also times the equivalent
  aggregation over the rows themselves;
- ``python -c "import aegis_proxy.settle.open, aegis_proxy.reports.render"``: well under 1 s.

Every figure is the median of several runs.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from aegis_proxy.settle.backend import LedgerBackend
from aegis_proxy.settle.open import open_ledger
from aegis_proxy.settle.records import AttemptOutcome, AttemptStart, BudgetLimit
from aegis_proxy.settle.sqlite.ledger import Ledger

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

NOW = datetime(2025, 4, 16, tzinfo=UTC)
PROVIDERS = ("openai", "ollama_cloud", "local_ollama", "anthropic")
STATUSES = ("ok",) * 18 + ("error", "cancelled")
BULK_INSERT = (
    "INSERT INTO requests (request_id, attempt, timestamp, period, provider, model, user_id,"
    " agent, query_hash, rule, task_type, quality, complexity, batch_size,"
    " data_classification, tags, contains_pii, stream, status, input_tokens, output_tokens,"
    " reserved_micros, cost_micros, latency_ms, pid, host, expires_at, settled_at)"
    " VALUES (?, 1, ?, '2025-04', ?, 'gpt-4o', NULL, NULL, ?, 'default', 'general', 'standard',"
    " 'medium', 1, 'internal', '[]', 0, 0, ?, ?, ?, 2000, ?, 250.0, 1, 'bench', 0, ?)"
)
FROM_ROWS = (
    "SELECT provider, status, count(*), sum(input_tokens), sum(output_tokens),"
    " sum(cost_micros) FROM requests WHERE period = ? GROUP BY provider, status"
)
REPO = Path(__file__).absolute().parents[1]


def median_of(runs: int, action: Callable[[], object]) -> float:
    """Median wall time of ``action`` over ``runs`` runs, in seconds."""
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        action()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def attempt(n: int) -> AttemptStart:
    return AttemptStart(
        f"bench-{n}", 1, "openai", "gpt-4o", "default", "general", "standard", "medium", 1,
        "internal", False, False, "0" * 16,
    )  # fmt: skip


def bench_pairs(folder: Path, runs: int, pairs: int = 5000) -> float:
    """Sequential reserve + settle pairs per second against a budgeted provider."""
    budget = BudgetLimit(monthly_micros=10**15, daily_micros=10**15)
    outcome = AttemptOutcome("ok", 250.0, 1200, 300, cost_micros=1500)
    with Ledger(folder / "pairs.db") as ledger:

        def run() -> None:
            for n in range(pairs):
                ledger.settle(ledger.reserve(attempt(n), 2000, budget), outcome)

        return pairs / median_of(runs, run)


def settle_pairs(ledger: LedgerBackend, pairs: int, threads: int) -> float:
    """Seconds for ``pairs`` reserve + settle pairs, from ``threads`` threads."""
    budget = BudgetLimit(monthly_micros=10**15, daily_micros=10**15)
    outcome = AttemptOutcome("ok", 250.0, 1200, 300, cost_micros=1500)

    def pair(n: int) -> None:
        ledger.settle(ledger.reserve(attempt(n), 2000, budget), outcome)

    began = time.perf_counter()
    if threads == 1:
        for n in range(pairs):
            pair(n)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(pair, range(pairs)))
    return time.perf_counter() - began


@contextmanager
def postgres_schema(server_url: str) -> Iterator[str]:
    """A URL into a schema made for this run, dropped afterwards."""
    import psycopg

    schema = f"aegis_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{server_url}{'&' if '?' in server_url else '?'}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


ASYNC_COMMIT = "%20-csynchronous_commit%3Doff"  # appended to the URL's options


def bench_backends(folder: Path, server_url: str, runs: int, pairs: int = 1000) -> dict[str, float]:
    """Settled rows/s per variant, the variants alternating run by run."""
    times: dict[str, list[float]] = {}
    with (
        postgres_schema(server_url) as pg_url,
        open_ledger(pg_url, pool_size=4) as pg,
        open_ledger(pg_url + ASYNC_COMMIT, pool_size=4) as pg_async,
        open_ledger(folder / "backends.db") as lite,
    ):
        variants = [
            ("SQLite, 1 thread", lite, 1),
            ("PostgreSQL, 1 thread", pg, 1),
            ("SQLite, 4 threads", lite, 4),
            ("PostgreSQL, 4 threads", pg, 4),
            ("PostgreSQL, 1 thread, synchronous_commit=off", pg_async, 1),
        ]
        for run in range(runs + 1):
            for name, ledger, threads in variants:
                seconds = settle_pairs(ledger, pairs, threads)
                if run:  # run 0 warms up connections, caches and prepared statements
                    times.setdefault(name, []).append(seconds)
    return {name: pairs / statistics.median(values) for name, values in times.items()}


def postgres_problem(server_url: str) -> str | None:
    """Why ``server_url`` cannot be benchmarked, or None."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    try:
        with psycopg.connect(server_url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]
    return None


def bulk_rows(count: int) -> Iterator[tuple[object, ...]]:
    for n in range(count):
        stamp = f"2025-04-{1 + n % 28:02d}T12:00:00.000+00:00"
        status = STATUSES[n % len(STATUSES)]
        cost = 1500 if status == "ok" else 0
        yield (f"r{n:08d}", stamp, PROVIDERS[n % 4], f"{n:016x}", status, 1200, 300, cost, stamp)


def bench_summary(folder: Path, rows: int, runs: int) -> dict[str, float]:
    """Seconds to bulk-insert ``rows``, rebuild the counters, and summarise the month."""
    path = folder / "summary.db"
    with Ledger(path) as ledger:
        conn = sqlite3.connect(path, isolation_level=None)
        began = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany(BULK_INSERT, bulk_rows(rows))
        conn.execute("COMMIT")
        inserted = time.perf_counter() - began
        rebuilt = median_of(1, ledger.rebuild_usage)
        budgets = {name: BudgetLimit(10**9) for name in PROVIDERS}
        summary = median_of(runs, lambda: ledger.monthly_summary("2025-04", budgets, NOW))
        scan = median_of(runs, lambda: conn.execute(FROM_ROWS, ("2025-04",)).fetchall())
        total = sum(row.requests + row.errors + row.cancelled for row in
                    ledger.monthly_summary("2025-04", budgets, NOW))  # fmt: skip
        conn.close()
    assert total == rows, (total, rows)
    return {"insert": inserted, "rebuild": rebuilt, "summary": summary, "scan": scan}


def bench_import(runs: int) -> dict[str, float]:
    """Wall time of a fresh interpreter importing the report modules (and of doing nothing)."""
    package_only = (
        "import sys, types; p = types.ModuleType('aegis_proxy'); "
        f"p.__path__ = [{str(REPO / 'aegis_proxy')!r}]; sys.modules['aegis_proxy'] = p; "
        "import aegis_proxy.settle.sqlite.ledger, aegis_proxy.reports.render"
    )
    commands = {
        "python -c pass": "pass",
        "import aegis_proxy.settle.sqlite.ledger, aegis_proxy.reports.render": (
            "import aegis_proxy.settle.sqlite.ledger, aegis_proxy.reports.render"
        ),
        "same, without running aegis_proxy/__init__": package_only,
    }
    return {label: median_of(runs, _interpreter(code)) for label, code in commands.items()}


def print_backends(folder: Path, server_url: str, runs: int) -> None:
    problem = postgres_problem(server_url)
    if problem is not None:
        print(f"PostgreSQL vs SQLite: NOT MEASURED, {server_url} unusable: {problem}")
        return
    rates = bench_backends(folder, server_url, runs)
    baseline = rates["SQLite, 1 thread"]
    for name, rate in rates.items():
        print(f"settled rows/s, {name} (median of {runs}): {rate:,.0f} ({rate / baseline:.2f}x)")


def _interpreter(code: str) -> Callable[[], object]:
    return lambda: subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pairs = bench_pairs(folder, args.runs)
        print(f"reserve+settle pairs/s (median of {args.runs}): {pairs:,.0f}")
        print_backends(folder, args.postgres, args.runs)
        summary = bench_summary(folder, args.rows, args.runs)
    print(f"bulk insert of {args.rows:,} rows: {summary['insert']:.1f} s")
    print(f"rebuild_usage over them: {summary['rebuild']:.2f} s")
    print(f"monthly_summary (median of {args.runs}): {summary['summary'] * 1000:.2f} ms")
    print(f"  for comparison, aggregating the rows: {summary['scan'] * 1000:.0f} ms")
    for label, seconds in bench_import(args.runs).items():
        print(f"{label}: {seconds * 1000:.0f} ms")


if __name__ == "__main__":
    main()
