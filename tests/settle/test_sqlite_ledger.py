"""The ledger on real SQLite files: migrations, one row per attempt, expiry, locking.

Also how ``open_ledger`` picks a backend, and the spool the PostgreSQL backend keeps rows in
while its database is away (pure memory: tested here, without a server).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from aegis_proxy.errors import BudgetExceededError, LedgerError, LedgerUnavailableError
from aegis_proxy.settle.open import open_ledger
from aegis_proxy.settle.postgres.spool import QueuedRow, QueuedSettle, Spool
from aegis_proxy.settle.records import AttemptOutcome, AttemptStart, BudgetLimit, current_month
from aegis_proxy.settle.sqlite.connection import SQLiteConnection
from aegis_proxy.settle.sqlite.ledger import Ledger
from aegis_proxy.settle.sqlite.migrations import (
    MIGRATIONS,
    apply_migrations,
    m001_initial,
    m002_usage_counters,
    m003_cache_hit,
)

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
BUDGET = BudgetLimit(monthly_micros=10_000)
COLUMNS = [
    "id", "request_id", "attempt", "timestamp", "period", "provider", "model", "user_id",
    "agent", "query_hash", "rule", "task_type", "quality", "complexity", "batch_size",
    "data_classification", "tags", "contains_pii", "stream", "status", "error_type",
    "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens", "counted",
    "reserved_micros", "cost_micros", "cost_usd", "latency_ms", "ttft_ms", "pid", "host",
    "expires_at", "settled_at", "cache_hit", "pii_entities", "privacy_action",
    "providers_removed", "redacted", "provider_local",
]  # fmt: skip


def start(request_id: str = "req-1", provider: str = "openai", attempt: int = 1) -> AttemptStart:
    return AttemptStart(
        request_id=request_id,
        attempt=attempt,
        provider=provider,
        model="gpt-4o",
        rule="critical_to_openai",
        task_type="extraction",
        quality="critical",
        complexity="high",
        batch_size=1,
        data_classification="internal",
        contains_pii=False,
        stream=False,
        query_hash="9f86d081884c7d65",
        user_id="u-7",
        agent="extractor",
        tags=("contracts", "eu"),
    )


def raw(path: Path, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


def _open_and_reserve(path: str, number: int, barrier: Any) -> None:
    barrier.wait()
    with Ledger(path) as ledger:
        ledger.reserve(start(f"req-{number}"), 100, BUDGET, NOW)


def _reserve_then_crash(path: str) -> None:
    ledger = Ledger(path)
    ledger.reserve(start("crashed"), 3000, BUDGET, NOW)
    os._exit(1)


def _hold_write_lock(path: Path, held: threading.Event, release: threading.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    held.set()
    release.wait(10)
    conn.execute("COMMIT")
    conn.close()


def _holder(path: Path) -> tuple[threading.Thread, threading.Event, threading.Event]:
    held, release = threading.Event(), threading.Event()
    thread = threading.Thread(target=_hold_write_lock, args=(path, held, release))
    thread.start()
    assert held.wait(5)
    return thread, held, release


def test_migrations_are_recorded_once(tmp_path: Path) -> None:
    """Opening twice applies each migration once and records it in _migrations."""
    path = tmp_path / "nested" / "ledger.db"
    Ledger(path).close()
    Ledger(path).close()
    names = raw(path, "SELECT name FROM _migrations ORDER BY name")
    assert names == [
        (name,)
        for name in (
            "m001_initial",
            "m002_usage_counters",
            "m003_cache_hit",
            "m004_privacy_audit",
            "m005_ledger_secrets",
            "m006_unknown_outcomes",
        )
    ]


def test_applying_migrations_twice_applies_nothing_the_second_time() -> None:
    """apply_migrations returns the names it applied: all of them once, then none."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    assert apply_migrations(conn, "2025-03-10") == [name for name, _ in MIGRATIONS]
    assert apply_migrations(conn, "2025-03-11") == []
    conn.close()


def test_upgrade_backfills_usage_counters_from_rows(tmp_path: Path) -> None:
    """Opening a file that has only m001 adds the counters, computed from its rows."""
    path = tmp_path / "ledger.db"
    conn = sqlite3.connect(path, isolation_level=None)
    m001_initial(conn)
    conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    conn.execute("INSERT INTO _migrations VALUES ('m001_initial', '2025-01-01')")
    conn.execute(
        "INSERT INTO requests (request_id, attempt, timestamp, period, provider, model,"
        " query_hash, rule, task_type, quality, complexity, batch_size, data_classification,"
        " contains_pii, stream, status, input_tokens, output_tokens, cost_micros, pid, host)"
        " VALUES ('old', 1, '2025-02-03T04:05:06.000+00:00', '2025-02', 'openai', 'gpt-4o',"
        " 'h', 'r', 'general', 'standard', 'medium', 1, 'internal', 0, 0, 'ok', 10, 20, 700,"
        " 1, 'old-host')"
    )
    conn.close()
    Ledger(path).close()
    assert raw(path, "SELECT * FROM budget_usage ORDER BY period") == [
        ("openai", "2025-02", 700, 0, 1, 0, 0, 10, 20, 0, 0, 0, 0),
        ("openai", "2025-02-03", 700, 0, 1, 0, 0, 10, 20, 0, 0, 0, 0),
    ]


def test_cache_hit_migration_keeps_rows_and_is_safe_to_run_twice(tmp_path: Path) -> None:
    """Upgrading a file at m002 adds cache_hit (0 for old rows) and keeps its counters."""
    path = tmp_path / "ledger.db"
    conn = sqlite3.connect(path, isolation_level=None)
    m001_initial(conn)
    conn.execute(
        "INSERT INTO requests (request_id, attempt, timestamp, period, provider, model,"
        " query_hash, rule, task_type, quality, complexity, batch_size, data_classification,"
        " contains_pii, stream, status, input_tokens, output_tokens, cost_micros, pid, host)"
        " VALUES ('old', 1, '2025-02-03T04:05:06.000+00:00', '2025-02', 'openai', 'gpt-4o',"
        " 'h', 'r', 'general', 'standard', 'medium', 1, 'internal', 0, 0, 'ok', 10, 20, 700,"
        " 1, 'old-host')"
    )
    m002_usage_counters(conn)
    conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    conn.execute("INSERT INTO _migrations VALUES ('m001_initial', '2025-01-01')")
    conn.execute("INSERT INTO _migrations VALUES ('m002_usage_counters', '2025-01-01')")
    conn.close()
    Ledger(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    m003_cache_hit(conn)  # already applied: changes nothing
    conn.close()
    assert raw(path, "SELECT cache_hit FROM requests") == [(0,)]
    assert raw(path, "SELECT spent_micros, ok_count, cache_hits FROM budget_usage") == [
        (700, 1, 0),
        (700, 1, 0),
    ]
    assert ("m003_cache_hit",) in raw(path, "SELECT name FROM _migrations ORDER BY name")


def test_m002_reads_its_own_frozen_schema(tmp_path: Path) -> None:
    """m002 runs on a file at m001 although the latest statements name m003's columns."""
    conn = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    m001_initial(conn)
    m002_usage_counters(conn)
    columns = [row[1] for row in conn.execute("PRAGMA table_info(budget_usage)")]
    conn.close()
    assert "ok_count" in columns
    assert "cache_hits" not in columns


def test_two_processes_opening_a_new_file_at_once(tmp_path: Path) -> None:
    """Four processes opening one fresh file together all succeed; migrations run once."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    path = str(tmp_path / "ledger.db")
    processes = [
        context.Process(target=_open_and_reserve, args=(path, n, barrier)) for n in range(4)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    assert raw(Path(path), "SELECT count(*) FROM _migrations") == [(len(MIGRATIONS),)]
    assert raw(Path(path), "SELECT count(*) FROM requests") == [(4,)]


def test_wal_mode_is_on(tmp_path: Path) -> None:
    """The ledger file is in WAL journal mode."""
    path = tmp_path / "ledger.db"
    Ledger(path).close()
    assert raw(path, "PRAGMA journal_mode") == [("wal",)]


def test_columns_hold_no_content(tmp_path: Path) -> None:
    """The requests table has exactly the contracted columns: no prompt, response or key."""
    path = tmp_path / "ledger.db"
    Ledger(path).close()
    assert [row[1] for row in raw(path, "PRAGMA table_xinfo(requests)")] == COLUMNS


def test_failed_attempt_leaves_an_error_row_and_no_reservation(tmp_path: Path) -> None:
    """A failed attempt is an 'error' row with zero cost, and its reservation is released."""
    with Ledger(tmp_path / "ledger.db") as ledger:
        row_id = ledger.reserve(start(), 5000, BUDGET, NOW)
        assert ledger.budget_state("openai", "2025-03") == (0, 5000)
        ledger.settle(row_id, AttemptOutcome("error", 30000.0, error_type="timeout"), NOW)
        [row] = ledger.rows_for_request("req-1")
        assert (row["status"], row["error_type"], row["cost_micros"]) == ("error", "timeout", 0)
        assert ledger.budget_state("openai", "2025-03") == (0, 0)


def test_settling_twice_is_an_error(tmp_path: Path) -> None:
    """A second settle raises LedgerError and leaves the first outcome and the money alone."""
    with Ledger(tmp_path / "ledger.db") as ledger:
        row_id = ledger.reserve(start(), 5000, BUDGET, NOW)
        ledger.settle(row_id, AttemptOutcome("ok", 10.0, cost_micros=4000), NOW)
        with pytest.raises(LedgerError) as caught:
            ledger.settle(row_id, AttemptOutcome("cancelled", 11.0, cost_micros=10), NOW)
        assert caught.value.operation == "settle"
        assert caught.value.problem == f"ledger row {row_id} is already settled (ok)"
        assert ledger.rows_for_request("req-1")[0]["cost_micros"] == 4000
        assert ledger.budget_state("openai", "2025-03") == (4000, 0)


def test_settling_an_unknown_row_is_an_error(tmp_path: Path) -> None:
    """Settling a row id that does not exist raises LedgerError."""
    with Ledger(tmp_path / "ledger.db") as ledger, pytest.raises(LedgerError, match="no ledger"):
        ledger.settle(999, AttemptOutcome("ok", 1.0), NOW)


def test_invalid_outcome_status_is_rejected(tmp_path: Path) -> None:
    """An outcome status other than ok, error or cancelled raises ValueError."""
    with Ledger(tmp_path / "ledger.db") as ledger:
        row_id = ledger.reserve(start(), 0, None, NOW)
        with pytest.raises(ValueError, match="status"):
            ledger.settle(row_id, AttemptOutcome("pending", 1.0), NOW)


def test_crashed_process_reservation_is_billed_at_its_bound(tmp_path: Path) -> None:
    """A reservation whose process died is expired as billed: its bound counts as spent."""
    path = tmp_path / "ledger.db"
    process = multiprocessing.get_context("spawn").Process(
        target=_reserve_then_crash, args=(str(path),)
    )
    process.start()
    process.join(60)
    assert process.exitcode == 1
    with Ledger(path, reservation_ttl_s=60) as ledger:
        assert ledger.budget_state("openai", "2025-03") == (3000, 0)
        with pytest.raises(BudgetExceededError):
            ledger.reserve(start("after"), 10_000, BUDGET, NOW + timedelta(seconds=61))
        ledger.reserve(start("after"), 7000, BUDGET, NOW + timedelta(seconds=61))
        [crashed] = ledger.rows_for_request("crashed")
        assert (crashed["status"], crashed["error_type"]) == ("expired_billed", "process_died")
        assert crashed["cost_micros"] == 3000
        assert ledger.budget_state("openai", "2025-03") == (3000, 7000)


def test_reservation_expires_after_its_ttl_as_billed(tmp_path: Path) -> None:
    """A pending reservation past its TTL is expired as spent at its bound, never released."""
    with Ledger(tmp_path / "ledger.db", reservation_ttl_s=60) as ledger:
        ledger.reserve(start("stale"), 3000, BUDGET, NOW)
        with pytest.raises(BudgetExceededError):
            ledger.reserve(start("early"), 8000, BUDGET, NOW + timedelta(seconds=59))
        with pytest.raises(BudgetExceededError):  # refused: its transaction, expiry included,
            ledger.reserve(start("late"), 8000, BUDGET, NOW + timedelta(seconds=61))  # undone
        ledger.reserve(start("late"), 7000, BUDGET, NOW + timedelta(seconds=61))
        row = ledger.rows_for_request("stale")[0]
        assert (row["status"], row["error_type"]) == ("expired_billed", "reservation_expired")
        assert ledger.budget_state("openai", "2025-03") == (3000, 7000)


def test_late_settle_of_expired_row_replaces_its_bound(tmp_path: Path) -> None:
    """Settling a row expired as billed replaces its bound by the real cost, once."""
    with Ledger(tmp_path / "ledger.db", reservation_ttl_s=60) as ledger:
        stale = ledger.reserve(start("stale"), 3000, BUDGET, NOW)
        ledger.reserve(start("late"), 5000, BUDGET, NOW + timedelta(seconds=61))
        assert ledger.budget_state("openai", "2025-03") == (3000, 5000)
        ledger.settle(stale, AttemptOutcome("ok", 70000.0, cost_micros=2000), NOW)
        assert ledger.rows_for_request("stale")[0]["status"] == "ok"
        assert ledger.budget_state("openai", "2025-03") == (2000, 5000)


def test_locked_database_is_waited_for(tmp_path: Path) -> None:
    """A write lock held for less than the busy timeout delays the row, which then lands."""
    path = tmp_path / "ledger.db"
    with Ledger(path, busy_timeout_s=5) as ledger:
        thread, _, release = _holder(path)
        threading.Timer(0.4, release.set).start()
        began = time.monotonic()
        row_id = ledger.reserve(start(), 100, BUDGET, NOW)
        waited = time.monotonic() - began
        thread.join()
        assert waited >= 0.3
        assert [row["id"] for row in ledger.rows_for_request("req-1")] == [row_id]


def test_lock_held_past_the_timeout_refuses_reserve_and_queues_settle(tmp_path: Path) -> None:
    """Past the busy timeout a reserve raises LedgerError; a settle waits in the backlog
    (its reservation held) and lands once the lock is gone, exactly once."""
    path = tmp_path / "ledger.db"
    with Ledger(path, busy_timeout_s=0.3, retry_interval_s=0.05) as ledger:
        row_id = ledger.reserve(start("held"), 100, BUDGET, NOW)
        thread, _, release = _holder(path)
        began = time.monotonic()
        with pytest.raises(LedgerError) as reserving:
            ledger.reserve(start("blocked"), 100, BUDGET, NOW)
        ledger.settle(row_id, AttemptOutcome("ok", 1.0, cost_micros=100), NOW)
        elapsed = time.monotonic() - began
        assert ledger.queued_rows == 1
        assert ledger.rows_for_request("held")[0]["status"] == "pending"
        release.set()
        thread.join()
        assert reserving.value.operation == "reserve"
        assert "locked" in reserving.value.problem
        assert 0.6 <= elapsed < 3.0
        deadline = time.monotonic() + 5
        while ledger.queued_rows and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ledger.queued_rows == 0
        assert ledger.rows_for_request("blocked") == []
        assert ledger.rows_for_request("held")[0]["status"] == "ok"
        assert ledger.budget_state("openai", "2025-03") == (100, 0)


def test_naive_time_is_rejected(tmp_path: Path) -> None:
    """A naive datetime raises ValueError: months are UTC months."""
    with Ledger(tmp_path / "ledger.db") as ledger, pytest.raises(ValueError, match="aware"):
        ledger.reserve(start(), 0, None, datetime(2025, 3, 10, 12, 0))


def test_time_in_another_zone_is_converted_to_utc(tmp_path: Path) -> None:
    """A timestamp in UTC+2 shortly after midnight belongs to the previous UTC month."""
    plus_two = datetime(2025, 4, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    with Ledger(tmp_path / "ledger.db") as ledger:
        ledger.reserve(start(), 10, None, plus_two)
        assert ledger.rows_for_request("req-1")[0]["period"] == "2025-03"
    assert current_month(plus_two) == "2025-03"


def test_rebuild_usage_matches_incremental_counters(tmp_path: Path) -> None:
    """Recomputing budget_usage from the rows gives what reserve and settle maintained."""
    path = tmp_path / "ledger.db"
    with Ledger(path) as ledger:
        for n, status in enumerate(["ok", "error", "cancelled", "ok"]):
            row_id = ledger.reserve(start(f"r{n}"), 1000, BUDGET, NOW + timedelta(days=n))
            ledger.settle(row_id, AttemptOutcome(status, 5.0, 10, 20, 3, 4, 7 * n), NOW)
        ledger.reserve(start("open"), 500, BUDGET, NOW)
        before = raw(path, "SELECT * FROM budget_usage ORDER BY provider, period")
        ledger.rebuild_usage()
    assert raw(path, "SELECT * FROM budget_usage ORDER BY provider, period") == before
    assert len(before) == 5


# -- checkpoints off the write path -------------------------------------------------------


def _checkpoint_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "aegis-ledger-checkpoint"}


def _wal_bytes(path: Path) -> int:
    wal = path.with_name(f"{path.name}-wal")
    return wal.stat().st_size if wal.exists() else 0


def _table(path: Path) -> SQLiteConnection:
    db = SQLiteConnection(path, busy_timeout_s=5)
    db.write("schema", lambda c: c.execute("CREATE TABLE t (n INTEGER, pad TEXT)"))
    return db


def _fill(db: SQLiteConnection, rows: int) -> None:
    """One write transaction per row, each row filling most of a 4 KB page."""
    for n in range(rows):
        db.write("fill", lambda c, n=n: c.execute("INSERT INTO t VALUES (?, ?)", (n, "x" * 3000)))


def test_commits_do_not_checkpoint_at_sqlites_default_mark(tmp_path: Path) -> None:
    """1,500 quick commits grow the WAL past 1,000 pages: no COMMIT stopped to checkpoint."""
    path = tmp_path / "wal.db"
    db = _table(path)
    try:
        _fill(db, 1500)
        assert _wal_bytes(path) > 1100 * 4096
    finally:
        db.close()


def test_idle_connection_is_checkpointed_and_its_wal_reused(tmp_path: Path) -> None:
    """After a pause the thread checkpoints; the next commits reuse the WAL, not grow it."""
    path = tmp_path / "wal.db"
    db = _table(path)
    try:
        _fill(db, 200)
        deadline = time.monotonic() + 10
        while db.checkpoints == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert db.checkpoints >= 1
        size = _wal_bytes(path)
        _fill(db, 100)
        assert _wal_bytes(path) == size
    finally:
        db.close()
    assert raw(path, "SELECT count(*) FROM t") == [(300,)]


def test_close_stops_the_checkpoint_thread_and_keeps_every_row(tmp_path: Path) -> None:
    """close() joins the checkpoint thread; every committed row is in the file, no WAL left."""
    path = tmp_path / "wal.db"
    before = _checkpoint_threads()
    db = _table(path)
    assert len(_checkpoint_threads() - before) == 1
    _fill(db, 50)
    db.close()
    assert _checkpoint_threads() <= before
    assert raw(path, "SELECT count(*), sum(n) FROM t") == [(50, sum(range(50)))]
    assert _wal_bytes(path) == 0


def test_unclosed_connection_thread_ends_once_it_is_collected(tmp_path: Path) -> None:
    """A connection dropped without close() does not leave its checkpoint thread running."""
    before = _checkpoint_threads()
    db = _table(tmp_path / "wal.db")
    [thread] = _checkpoint_threads() - before
    del db
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()


# -- choosing a backend, and the in-memory spool of the PostgreSQL one --------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("sqlite:///nested/ledger.db", "nested/ledger.db"),
        ("nested/plain.db", "nested/plain.db"),
    ],
)
def test_open_ledger_opens_sqlite_for_paths_and_sqlite_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, expected: str
) -> None:
    """sqlite:///PATH and a plain path both open the SQLite ledger at PATH."""
    monkeypatch.chdir(tmp_path)
    with open_ledger(target) as ledger:
        assert isinstance(ledger, Ledger)
        assert ledger.queued_rows == 0
    assert (tmp_path / expected).is_file()


def test_open_ledger_keeps_an_absolute_sqlite_path(tmp_path: Path) -> None:
    """sqlite:////abs/path (four slashes) is the absolute path /abs/path."""
    with open_ledger(f"sqlite:///{tmp_path / 'abs.db'}", reservation_ttl_s=5) as ledger:
        assert isinstance(ledger, Ledger)
        assert (ledger.path, ledger.reservation_ttl_s) == (tmp_path / "abs.db", 5)


@pytest.mark.parametrize("target", ["mysql://db/ledger", "sqlite://", "sqlite:///", "sqlite:x.db"])
def test_open_ledger_rejects_other_urls(target: str) -> None:
    """A URL that is neither sqlite:///PATH nor postgresql://... raises ValueError."""
    with pytest.raises(ValueError, match="sqlite:///PATH"):
        open_ledger(target)


def test_importing_the_ledger_loads_no_database_driver() -> None:
    """Importing the ledger opener leaves psycopg unloaded: reports stay fast without it."""
    code = (
        "import sys, aegis_proxy.settle.open; "
        "print(sorted(m for m in sys.modules if 'psycopg' in m))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def _queued_start(request_id: str) -> AttemptStart:
    return start(request_id, provider="local_ollama")


def test_spool_settles_queued_rows_in_memory_and_maps_written_ones() -> None:
    """A queued row settles in memory; once written, its provisional id maps to the real id."""
    spool = Spool(capacity=10)
    first = spool.add_row(_queued_start("a"), "2025-03-10T12:00:00.000+00:00", 0, 1.0)
    second = spool.add_row(_queued_start("b"), "2025-03-10T12:00:00.000+00:00", 0, 1.0)
    assert (first, second, len(spool)) == (-1, -2, 2)
    assert spool.settle(first, AttemptOutcome("ok", 1.0), "s1") is None
    [row_a, row_b] = spool.head(10)
    assert isinstance(row_a, QueuedRow)
    assert row_a.outcome == AttemptOutcome("ok", 1.0)
    spool.done([(row_a, 41), (row_b, 42)])
    assert len(spool) == 0
    assert spool.settle(second, AttemptOutcome("error", 2.0), "s2") == 42
    with pytest.raises(LedgerError, match="no ledger row -1"):
        spool.settle(first, AttemptOutcome("ok", 1.0), "s3")


def test_spool_keeps_a_settle_that_arrives_while_its_row_is_written() -> None:
    """A settle landing between head() and done() becomes a settle of the written row id."""
    spool = Spool(capacity=10)
    row_id = spool.add_row(_queued_start("a"), "2025-03-10T12:00:00.000+00:00", 0, 1.0)
    [written] = spool.head(1)
    spool.settle(row_id, AttemptOutcome("cancelled", 3.0), "late")
    with pytest.raises(LedgerError, match="already settled"):
        spool.settle(row_id, AttemptOutcome("ok", 3.0), "later")
    spool.done([(written, 7)])
    assert spool.head(10) == [QueuedSettle(7, AttemptOutcome("cancelled", 3.0), "late")]


def test_spool_is_bounded() -> None:
    """Past its capacity the spool refuses with LedgerUnavailableError: nothing is dropped."""
    spool = Spool(capacity=2)
    spool.add_row(_queued_start("a"), "2025-03-10T12:00:00.000+00:00", 0, 1.0)
    spool.add_settle(5, AttemptOutcome("ok", 1.0), "s")
    with pytest.raises(LedgerUnavailableError) as caught:
        spool.add_row(_queued_start("c"), "2025-03-10T12:00:00.000+00:00", 0, 1.0)
    assert (caught.value.operation, caught.value.queued_rows) == ("reserve", 2)
    assert len(spool) == 2
