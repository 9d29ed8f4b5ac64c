"""The ledger on PostgreSQL: SQLite's behaviour, budgets across 8 processes, outages.

Runs against the PostgreSQL server on 127.0.0.1:5432 (``$AEGIS_TEST_POSTGRES_URL`` to
point elsewhere), each test in a schema of its own that it drops afterwards. If the server
cannot be reached, the tests try to start it (``pg_ctlcluster``), and otherwise skip with a
message printed to the terminal. Outages are made with a TCP relay on loopback that a
test cuts (connections dropped, new ones refused) and restores: the server itself is never
stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from aegis_proxy import AegisLLMProxy, LLMTask
from aegis_proxy.config import load_config
from aegis_proxy.errors import BudgetExceededError, LedgerError, LedgerUnavailableError
from aegis_proxy.settle.backend import LedgerBackend
from aegis_proxy.settle.open import open_ledger
from aegis_proxy.settle.records import (
    AttemptOutcome,
    AttemptStart,
    BudgetLimit,
    PrivacyDecision,
    PrivacyRefusal,
    keyed_hash,
)
from aegis_proxy.settle.sqlite.migrations import MIGRATIONS
from tests.logcapture import capture_events
from tests.settle.race import run_race

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.conftest import Rig

try:
    import psycopg
except ImportError:  # the postgres extra is missing: pg_server announces the skip
    psycopg = None

SERVER_URLS = (
    [os.environ["AEGIS_TEST_POSTGRES_URL"]]
    if os.environ.get("AEGIS_TEST_POSTGRES_URL")
    else ["postgresql://postgres@127.0.0.1:5432/test", "postgresql://root@127.0.0.1:5432/test"]
)
NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
BUDGET = BudgetLimit(monthly_micros=10_000)
RESERVATION = 1000
PROCESSES = 8
CALLS_PER_PROCESS = 50


# -- the server, a schema per test, and a relay to cut ---------------------------------


def _reachable(url: str) -> str | None:
    """None if ``url`` answers, else why not."""
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]
    return None


def _start_cluster() -> str:
    """Start the machine's cluster the way the environment notes say; what it printed."""
    if not Path("/etc/postgresql").is_dir() or shutil.which("pg_ctlcluster") is None:
        return "no /etc/postgresql or pg_ctlcluster on this machine"
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    return f"{' '.join(command)} exited {done.returncode}: {(done.stderr or done.stdout).strip()}"


def _find_server() -> tuple[str | None, list[str]]:
    if psycopg is None:
        return None, ["psycopg is not installed: pip install -e '.[postgres]'"]
    problems = [f"{url}: {p}" for url in SERVER_URLS if (p := _reachable(url))]
    if len(problems) < len(SERVER_URLS):
        return next(url for url in SERVER_URLS if _reachable(url) is None), []
    problems.append(_start_cluster())
    for _ in range(20):
        for url in SERVER_URLS:
            if _reachable(url) is None:
                return url, []
        time.sleep(0.5)
    return None, problems


@pytest.fixture(scope="session")
def pg_server(pytestconfig: pytest.Config) -> str:
    """A PostgreSQL URL that answers, or a skip announced on the terminal."""
    url, problems = _find_server()
    if url is None:
        message = "LOUD SKIP: PostgreSQL ledger tests not run: " + "; ".join(problems)
        capture = pytestconfig.pluginmanager.getplugin("capturemanager")
        terminal = pytestconfig.pluginmanager.getplugin("terminalreporter")
        with capture.global_and_fixture_disabled():
            terminal.write_line(f"\nWARNING: {message}", yellow=True, bold=True)
        pytest.skip(message)
    return url


def _in_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A URL whose tables live in a schema made for this test, dropped after it."""
    schema = f"aegis_test_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield _in_schema(pg_server, schema)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a ledger lives: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


class Relay:
    """A loopback TCP relay to PostgreSQL: ``cut`` drops and refuses connections, ``restore``."""

    def __init__(self, server_url: str) -> None:
        parts = psycopg.conninfo.conninfo_to_dict(server_url)
        self.upstream = (str(parts.get("host", "127.0.0.1")), int(parts.get("port", 5432)))
        self.port = 0
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listening = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor = threading.Thread()
        self.delay_s = 0.0
        """Seconds each answer of the database is held back (a slow network)."""
        self.restore()

    def url(self, server_url: str) -> str:
        return server_url.replace(f":{self.upstream[1]}/", f":{self.port}/", 1)

    def restore(self) -> None:
        listener = socket.socket()
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
        except OSError:
            listener.close()
            raise
        listener.settimeout(0.05)
        self.port, self._listener = listener.getsockname()[1], listener
        self._listening.set()
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._acceptor.start()

    def cut(self) -> None:
        """Refuse new connections and drop the open ones, as a server gone away would."""
        self._listening.clear()
        self._acceptor.join()  # the listener stops listening only once nothing waits on it
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _shut(sock)

    def _accept(self, listener: socket.socket) -> None:
        while self._listening.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._join(client)

    def _join(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        client.settimeout(None)
        upstream.settimeout(None)
        with self._lock:
            self._sockets |= {client, upstream}
        for source, sink, delay in ((client, upstream, None), (upstream, client, self)):
            threading.Thread(target=_pump, args=(source, sink, delay), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket, slow: Relay | None) -> None:
    try:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if slow is not None and slow.delay_s:
                    time.sleep(slow.delay_s)
                sink.sendall(data)
    finally:
        _shut(source)
        _shut(sink)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.fixture
def relay(pg_server: str) -> Iterator[Relay]:
    relay = Relay(pg_server)
    yield relay
    relay.cut()


# -- helpers ------------------------------------------------------------------------------


def start(request_id: str = "req-1", provider: str = "openai", attempt: int = 1) -> AttemptStart:
    return AttemptStart(
        request_id=request_id, attempt=attempt, provider=provider, model="gpt-4o",
        rule="critical_to_openai", task_type="extraction", quality="critical",
        complexity="high", batch_size=1, data_classification="internal", contains_pii=False,
        stream=False, query_hash="9f86d081884c7d65", user_id="u-7", agent="extractor",
        tags=("contracts", "eu"),
    )  # fmt: skip


def local(request_id: str) -> AttemptStart:
    return start(request_id, provider="local_ollama")


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def schema_rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


# -- the same behaviour on both backends -------------------------------------------------


def test_successful_attempt_is_one_settled_row(target: str) -> None:
    """Reserve then settle leaves one 'ok' row with its tokens, cost and timing."""
    with open_ledger(target) as ledger:
        row_id = ledger.reserve(start(), 5000, BUDGET, NOW)
        outcome = AttemptOutcome("ok", 812.5, 1200, 300, 200, 50, 4321, ttft_ms=90.0)
        ledger.settle(row_id, outcome, NOW + timedelta(seconds=1))
        [row] = ledger.rows_for_request("req-1")
        assert ledger.budget_state("openai", "2025-03") == (4321, 0)
        assert ledger.budget_state("openai", "2025-03-10") == (4321, 0)
    assert row == row | {
        "id": row_id, "attempt": 1, "timestamp": "2025-03-10T12:00:00.000+00:00",
        "period": "2025-03", "provider": "openai", "model": "gpt-4o", "user_id": "u-7",
        "agent": "extractor", "tags": '["contracts", "eu"]', "contains_pii": 0, "stream": 0,
        "status": "ok", "error_type": None, "input_tokens": 1200, "output_tokens": 300,
        "cached_input_tokens": 200, "reasoning_tokens": 50, "counted": 0,
        "reserved_micros": 5000, "cost_micros": 4321, "cost_usd": 0.004321,
        "latency_ms": 812.5, "ttft_ms": 90.0, "pid": os.getpid(),
        "settled_at": "2025-03-10T12:00:01.000+00:00",
    }  # fmt: skip


def test_privacy_decisions_refusals_and_breaches_alike(target: str) -> None:
    """Both backends keep each row's privacy decision and refusals, and find a leaked row."""
    kept = PrivacyDecision((("EMAIL", 2),), "route_local", ("openai",))
    leaked = PrivacyDecision((("PHONE", 1),), "route_local")  # what a bug could write
    refused = PrivacyDecision((("CREDIT_CARD", 1),), "block", ("openai",))
    with open_ledger(target) as ledger:
        ledger.reserve(replace(local("kept"), contains_pii=True, privacy=kept,
                               provider_local=True), 0, None, NOW)  # fmt: skip
        ledger.reserve(replace(start("leak"), contains_pii=True, privacy=leaked), 0, None, NOW)
        ledger.record_refusal(PrivacyRefusal("r1", "h", "rule", "general", "internal", refused,
                                             "blocked"), NOW)  # fmt: skip
        rows = ledger.privacy_rows("2025-03")
        [refusal] = ledger.refusal_rows("2025-03")
        breaches = ledger.privacy_breaches()
    assert [(r["request_id"], r["pii_entities"], r["providers_removed"], r["provider_local"])
            for r in rows] == [("kept", '{"EMAIL": 2}', '["openai"]', 1),
                               ("leak", '{"PHONE": 1}', "[]", 0)]  # fmt: skip
    assert (refusal["privacy_action"], refusal["reason"]) == ("block", "blocked")
    assert [b["request_id"] for b in breaches] == ["leak"]


def test_cache_hit_is_marked_counted_and_rebuilt_alike(target: str) -> None:
    """A cache-hit settle marks its row and the month's counter; a rebuild gives the same."""
    with open_ledger(target) as ledger:
        row_id = ledger.reserve(start("hit"), 0, None, NOW)
        ledger.settle(row_id, AttemptOutcome("ok", 0.4, 120, 30, cache_hit=True), NOW)
        row_id = ledger.reserve(start("miss"), 5000, BUDGET, NOW)
        ledger.settle(row_id, AttemptOutcome("ok", 800.0, 120, 30, cost_micros=600), NOW)
        before = ledger.monthly_summary("2025-03", now=NOW)
        ledger.rebuild_usage()
        after = ledger.monthly_summary("2025-03", now=NOW)
        [hit] = ledger.rows_for_request("hit")
        [miss] = ledger.rows_for_request("miss")
    [openai] = before
    assert (openai.requests, openai.cache_hits, openai.spend_micros) == (2, 1, 600)
    assert openai.hit_ratio == 0.5
    assert after == before
    assert (hit["cache_hit"], hit["cost_micros"], hit["input_tokens"]) == (1, 0, 120)
    assert miss["cache_hit"] == 0


def test_failed_attempt_releases_its_reservation(target: str) -> None:
    """A failed attempt is an 'error' row with zero cost, and its reservation is released."""
    with open_ledger(target) as ledger:
        row_id = ledger.reserve(start(), 5000, BUDGET, NOW)
        assert ledger.budget_state("openai", "2025-03") == (0, 5000)
        ledger.settle(row_id, AttemptOutcome("error", 30000.0, error_type="timeout"), NOW)
        [row] = ledger.rows_for_request("req-1")
        assert (row["status"], row["error_type"], row["cost_micros"]) == ("error", "timeout", 0)
        assert ledger.budget_state("openai", "2025-03") == (0, 0)


def test_settling_twice_or_unknown_rows_is_an_error(target: str) -> None:
    """A second settle and a settle of an unknown id raise LedgerError and change nothing."""
    with open_ledger(target) as ledger:
        row_id = ledger.reserve(start(), 5000, BUDGET, NOW)
        ledger.settle(row_id, AttemptOutcome("ok", 10.0, cost_micros=4000), NOW)
        with pytest.raises(LedgerError) as caught:
            ledger.settle(row_id, AttemptOutcome("cancelled", 11.0, cost_micros=10), NOW)
        with pytest.raises(LedgerError, match="no ledger row 999"):
            ledger.settle(999, AttemptOutcome("ok", 1.0), NOW)
        assert ledger.budget_state("openai", "2025-03") == (4000, 0)
    assert caught.value.problem == f"ledger row {row_id} is already settled (ok)"


def test_refused_reservation_records_nothing(target: str) -> None:
    """A reservation past the budget raises BudgetExceededError with USD context, no row."""
    with open_ledger(target) as ledger:
        first = ledger.reserve(start("a"), 4000, BUDGET, NOW)
        ledger.settle(first, AttemptOutcome("ok", 1.0, cost_micros=4000), NOW)
        ledger.reserve(start("b"), 5000, BUDGET, NOW)
        with pytest.raises(BudgetExceededError) as caught:
            ledger.reserve(start("c"), 1001, BUDGET, NOW)
        assert ledger.rows_for_request("c") == []
    error = caught.value
    assert (error.provider, error.period) == ("openai", "2025-03")
    assert (error.spent_usd, error.reserved_usd) == (Decimal("0.004"), Decimal("0.005"))
    assert (error.request_usd, error.limit_usd) == (Decimal("0.001001"), Decimal("0.01"))


def test_daily_limit_and_month_boundary(target: str) -> None:
    """A daily limit refuses within its day only; a new month starts a new budget."""
    budget = BudgetLimit(monthly_micros=3000, daily_micros=2500)
    with open_ledger(target, reservation_ttl_s=90 * 86400) as ledger:
        ledger.reserve(start("a"), 1000, budget, NOW)
        ledger.reserve(start("b"), 1000, budget, NOW)
        with pytest.raises(BudgetExceededError) as daily:
            ledger.reserve(start("c"), 1000, budget, NOW)
        ledger.reserve(start("d"), 1000, budget, NOW + timedelta(days=1))
        with pytest.raises(BudgetExceededError) as monthly:
            ledger.reserve(start("e"), 1000, budget, NOW + timedelta(days=2))
        ledger.reserve(start("f"), 2500, budget, datetime(2025, 4, 1, tzinfo=UTC))
        assert ledger.budget_state("openai", "2025-03") == (0, 3000)
        assert ledger.budget_state("openai", "2025-04") == (0, 2500)
    assert (daily.value.period, monthly.value.period) == ("2025-03-10", "2025-03")


def test_zero_and_unbudgeted_reservations_are_never_refused(target: str) -> None:
    """A $0 reservation passes a used-up budget; a provider without budget is not checked."""
    budget = BudgetLimit(monthly_micros=1000)
    with open_ledger(target) as ledger:
        ledger.reserve(start("full"), 1000, budget, NOW)
        ledger.reserve(start("free"), 0, budget, NOW)
        ledger.reserve(local("local"), 10**12, None, NOW)
        assert [r["status"] for r in ledger.rows_for_request("free")] == ["pending"]
        assert ledger.budget_state("local_ollama", "2025-03") == (0, 10**12)


def test_reservation_expires_after_its_ttl_and_late_settle_counts_once(target: str) -> None:
    """A stale reservation expires billed at its bound; its late settle replaces the bound."""
    with open_ledger(target, reservation_ttl_s=60) as ledger:
        stale = ledger.reserve(start("stale"), 3000, BUDGET, NOW)
        with pytest.raises(BudgetExceededError):
            ledger.reserve(start("early"), 8000, BUDGET, NOW + timedelta(seconds=59))
        with pytest.raises(BudgetExceededError):
            ledger.reserve(start("late"), 8000, BUDGET, NOW + timedelta(seconds=61))
        ledger.reserve(start("late"), 7000, BUDGET, NOW + timedelta(seconds=61))
        row = ledger.rows_for_request("stale")[0]
        assert (row["status"], row["error_type"]) == ("expired_billed", "reservation_expired")
        assert ledger.budget_state("openai", "2025-03") == (3000, 7000)
        ledger.settle(stale, AttemptOutcome("ok", 70000.0, cost_micros=1500), NOW)
        assert ledger.budget_state("openai", "2025-03") == (1500, 7000)


def _reserve_then_crash(target: str) -> None:
    ledger = open_ledger(target)
    ledger.reserve(start("crashed"), 3000, BUDGET, NOW)
    os._exit(1)


def test_crashed_process_reservation_is_billed_at_its_bound(target: str) -> None:
    """A reservation whose process died is expired as billed on the next open: spent."""
    process = multiprocessing.get_context("spawn").Process(
        target=_reserve_then_crash, args=(target,)
    )
    process.start()
    process.join(60)
    assert process.exitcode == 1
    with open_ledger(target) as ledger:
        assert ledger.budget_state("openai", "2025-03") == (3000, 0)
        [crashed] = ledger.rows_for_request("crashed")
        assert (crashed["status"], crashed["error_type"]) == ("expired_billed", "process_died")


def test_warning_once_past_the_warn_share(target: str) -> None:
    """Spend reaching 80% of a budget logs budget_warning once per provider and period."""
    provider = f"warned_{uuid.uuid4().hex[:8]}"  # the once-only memory is per process
    budget = BudgetLimit(monthly_micros=10_000, warn_share=0.8)
    with open_ledger(target) as ledger, capture_events() as logs:
        rows = [ledger.reserve(start(r, provider), 4000, budget, NOW) for r in "ab"]
        for row_id in rows:
            ledger.settle(row_id, AttemptOutcome("ok", 1.0, cost_micros=4000), NOW)
    assert [(log["event"], log["period"], log["share"], log["counts"]) for log in logs] == [
        ("budget_warning", "2025-03", 0.8, "spent")
    ]


def test_closed_ledger_refuses_work(target: str) -> None:
    """Using a closed ledger raises LedgerError naming it closed."""
    ledger = open_ledger(target)
    ledger.close()
    with pytest.raises(LedgerError, match="closed"):
        ledger.reserve(start(), 0, None, NOW)


def _fill(ledger: LedgerBackend) -> None:
    """April: openai ok, error, cancelled, in flight; local ok; one March row; then rebuild."""
    april = datetime(2025, 4, 3, 9, 30, tzinfo=UTC)
    budget = BudgetLimit(monthly_micros=80_000_000)
    outcomes = [("ok", 1500), ("error", 0), ("cancelled", 300), ("ok", 2500)]
    for n, (status, cost) in enumerate(outcomes):
        row_id = ledger.reserve(start(f"o{n}"), 5000, budget, april + timedelta(days=n))
        ledger.settle(row_id, AttemptOutcome(status, 9.5, 100 + n, 20, 5, 1, cost), april)
    ledger.reserve(start("open"), 4000, budget, april)
    row_id = ledger.reserve(local("l"), 0, None, april)
    ledger.settle(row_id, AttemptOutcome("ok", 3.25, 40, 8, counted=True), april)
    ledger.reserve(start("march"), 100, budget, NOW)


def test_reports_and_exports_agree_across_backends(tmp_path: Path, pg_url: str) -> None:
    """The same attempts give the same summary, export and rebuilt usage on both backends.

    Only query_hash differs: each ledger keys it with its own secret (m005).
    """
    results = []
    for target in (f"sqlite:///{tmp_path / 'ledger.db'}", pg_url):
        with open_ledger(target, reservation_ttl_s=90 * 86400) as ledger:
            _fill(ledger)
            budgets = {"openai": BudgetLimit(80_000_000), "local_ollama": None}
            summary = ledger.monthly_summary("2025-04", budgets, datetime(2025, 4, 16, tzinfo=UTC))
            exported = [
                row | {"pid": 0, "host": "", "query_hash": ""}
                for row in ledger.export_rows("2025-04")
            ]
            states = [ledger.budget_state("openai", p) for p in ("2025-04", "2025-04-04")]
            ledger.rebuild_usage()
            rebuilt = [ledger.budget_state("openai", p) for p in ("2025-04", "2025-04-04")]
        results.append((summary, exported, states, rebuilt))
    assert results[0] == results[1]
    summary, exported, states, rebuilt = results[0]
    assert len(exported) == 6
    assert [row.requests for row in summary] == [1, 2]
    assert states == rebuilt == [(4300, 4000), (0, 0)]


# -- schema and migrations ----------------------------------------------------------------


def test_schema_matches_sqlite_column_for_column(tmp_path: Path, pg_url: str) -> None:
    """requests and budget_usage have the same columns in the same order on both backends."""
    import sqlite3

    open_ledger(tmp_path / "ledger.db").close()
    open_ledger(pg_url).close()
    lite = sqlite3.connect(tmp_path / "ledger.db")
    for table in ("requests", "budget_usage", "privacy_refusals"):
        expected = [row[1] for row in lite.execute(f"PRAGMA table_xinfo({table})")]
        with psycopg.connect(pg_url) as conn:
            columns = conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema ="
                " current_schema() AND table_name = %s ORDER BY ordinal_position",
                (table,),
            ).fetchall()
        assert [name for (name,) in columns] == expected
    lite.close()


def test_migrations_are_recorded_once(pg_url: str) -> None:
    """Opening twice applies each migration once and records it in _migrations."""
    open_ledger(pg_url).close()
    open_ledger(pg_url).close()
    names = schema_rows(pg_url, "SELECT name FROM _migrations ORDER BY name")
    assert names == [(name,) for name, _ in MIGRATIONS]


def test_cache_hit_migration_is_safe_to_run_twice(pg_url: str) -> None:
    """Running m003 again on a migrated schema changes nothing and raises nothing."""
    from aegis_proxy.settle.postgres.migrations import m003_cache_hit

    open_ledger(pg_url).close()
    with psycopg.connect(pg_url) as conn:
        m003_cache_hit(conn)
    columns = schema_rows(
        pg_url,
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND column_name IN ('cache_hit', 'cache_hits')",
    )
    assert columns == [(2,)]


def _open_and_reserve(target: str, number: int, barrier: Any) -> None:
    barrier.wait()
    with open_ledger(target) as ledger:
        ledger.reserve(start(f"req-{number}"), 100, BUDGET, NOW)


def test_processes_opening_a_new_ledger_at_once(pg_url: str) -> None:
    """Four processes opening one fresh schema together all succeed; migrations run once."""
    target = pg_url  # SQLite's run is in tests/test_ledger.py
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    processes = [
        context.Process(target=_open_and_reserve, args=(target, n, barrier)) for n in range(4)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    with open_ledger(target) as ledger:  # the processes ended: their reservations expire
        rows = list(ledger.export_rows("2025-03"))
        assert [row["error_type"] for row in rows] == ["process_died"] * 4
        reserved = sum(int(str(row["reserved_micros"])) for row in rows)
        assert ledger.budget_state("openai", "2025-03") == (reserved, 0)  # billed at bounds
    assert schema_rows(pg_url, "SELECT count(*) FROM _migrations") == [(len(MIGRATIONS),)]


# -- budgets at any concurrency -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("cost", "expected_ok"), [(RESERVATION, 10), (700, None)])
def test_eight_processes_never_pass_the_budget(
    pg_url: str, cost: int, expected_ok: int | None
) -> None:
    """400 calls from 8 processes (threads and asyncio) never spend past a 10-call budget."""
    target = pg_url  # SQLite's 4-process run is tests/settle/test_budget.py
    open_ledger(target).close()
    budget = BudgetLimit(monthly_micros=10 * RESERVATION)
    successes = run_race(target, PROCESSES, budget, cost, join_s=120)
    with open_ledger(target) as ledger:
        rows = list(ledger.export_rows("2025-03"))
        spent, reserved = ledger.budget_state("openai", "2025-03")
    assert successes == len(rows) == sum(row["status"] == "ok" for row in rows)
    assert spent == sum(int(str(row["cost_micros"])) for row in rows) == successes * cost
    assert spent <= budget.monthly_micros  # overshoot: $0.00
    assert reserved == 0
    if expected_ok is not None:
        assert successes == expected_ok
    else:
        assert 10 <= successes <= 14


# -- the database away --------------------------------------------------------------------


def outage_ledger(url: str, **options: Any) -> LedgerBackend:
    settings: dict[str, Any] = {"retry_interval_s": 0.1, "busy_timeout_s": 3.0} | options
    return open_ledger(url, **settings)


def test_database_away_queues_local_rows_refuses_budgets_and_flushes(
    relay: Relay, pg_url: str
) -> None:
    """Cut: $0 rows queue, budgeted reservations fail; restored: every row lands once."""
    with outage_ledger(relay.url(pg_url)) as ledger:
        paid = ledger.reserve(start("paid"), 5000, BUDGET, NOW)
        relay.cut()
        served = ledger.reserve(local("served"), 0, None, NOW)
        ledger.settle(served, AttemptOutcome("ok", 12.0, 30, 7, counted=True), NOW)
        with pytest.raises(LedgerUnavailableError) as refused:
            ledger.reserve(start("refused"), 1000, BUDGET, NOW)
        ledger.settle(paid, AttemptOutcome("ok", 800.0, 100, 50, cost_micros=4000), NOW)
        streaming = ledger.reserve(local("streaming"), 0, None, NOW)
        with pytest.raises(LedgerUnavailableError):
            ledger.budget_state("openai", "2025-03")
        assert (served, streaming) == (-1, -2)
        assert ledger.queued_rows == 3
        relay.restore()
        assert wait_for(lambda: ledger.queued_rows == 0)
        ledger.settle(streaming, AttemptOutcome("cancelled", 40.0, 30, 2), NOW)
        assert ledger.budget_state("openai", "2025-03") == (4000, 0)
        ledger.reserve(start("after"), 1000, BUDGET, NOW)
    assert refused.value.operation == "reserve"
    assert refused.value.queued_rows == 1
    rows = schema_rows(pg_url, "SELECT request_id, status, cost_micros FROM requests ORDER BY id")
    assert sorted(rows) == [
        ("after", "pending", 0), ("paid", "ok", 4000), ("served", "ok", 0),
        ("streaming", "cancelled", 0),
    ]  # fmt: skip


def test_close_writes_queued_rows_once_the_database_is_back(relay: Relay, pg_url: str) -> None:
    """A clean close writes what waits in memory, even before the recovery thread would."""
    ledger = outage_ledger(relay.url(pg_url), retry_interval_s=30.0)
    relay.cut()
    for n in range(5):
        row_id = ledger.reserve(local(f"r{n}"), 0, None, NOW)
        ledger.settle(row_id, AttemptOutcome("ok", 1.0, 10, 10), NOW)
    assert ledger.queued_rows == 5
    relay.restore()
    ledger.close()
    assert ledger.queued_rows == 0
    assert schema_rows(pg_url, "SELECT count(*) FROM requests WHERE status = 'ok'") == [(5,)]


def test_close_with_the_database_still_away_raises(relay: Relay, pg_url: str) -> None:
    """Closing with rows that cannot be written raises LedgerUnavailableError naming them."""
    ledger = outage_ledger(relay.url(pg_url), close_timeout_s=0.3)
    relay.cut()
    ledger.reserve(local("stuck"), 0, None, NOW)
    with capture_events() as logs, pytest.raises(LedgerUnavailableError) as caught:
        ledger.close()
    assert (caught.value.operation, caught.value.queued_rows) == ("close", 1)
    assert "1 queued rows could not be written" in caught.value.problem
    assert [log["event"] for log in logs if log["log_level"] == "error"] == [
        "ledger_rows_unwritten"
    ]


def test_ledger_opened_while_the_database_is_away(pg_url: str) -> None:
    """Opening on a closed port does not fail: $0 rows queue, budgets are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    url = pg_url.replace(":5432/", f":{closed_port}/")
    with capture_events() as logs:
        ledger = outage_ledger(url, close_timeout_s=0.2, max_queued_rows=2)
    assert [log["event"] for log in logs] == ["ledger_unavailable"]
    assert not ledger.available
    ledger.reserve(local("a"), 0, None, NOW)
    ledger.reserve(local("b"), 0, None, NOW)
    with pytest.raises(LedgerUnavailableError, match="2 rows already wait"):
        ledger.reserve(local("c"), 0, None, NOW)
    with pytest.raises(LedgerUnavailableError, match="cannot be checked"):
        ledger.reserve(start("paid"), 1, BUDGET, NOW)
    with pytest.raises(LedgerUnavailableError):
        ledger.close()


# -- the proxy over a PostgreSQL ledger that goes away --------------------------------------

HELLO = [{"role": "user", "content": "Summarise the quarterly report in one line."}]


async def test_proxy_serves_local_requests_while_the_database_is_away(
    rig: Rig, relay: Relay, pg_url: str
) -> None:
    """With the database cut, local requests are served; their rows land once it is back."""
    ledger = outage_ledger(relay.url(pg_url))
    async with AegisLLMProxy(load_config(rig.write_config()), ledger=ledger) as proxy:
        relay.cut()
        for _ in range(3):
            resp = await proxy.acompletion(HELLO, LLMTask(task_type="query"), max_tokens=16)
            assert resp.aegis.provider == "local_ollama"
        assert ledger.queued_rows == 3
        relay.restore()
        assert wait_for(lambda: ledger.queued_rows == 0)
    rows = schema_rows(pg_url, "SELECT provider, status, input_tokens > 0 FROM requests")
    assert rows == [("local_ollama", "ok", True)] * 3


async def test_proxy_fails_over_from_budgeted_providers_while_the_database_is_away(
    rig: Rig, relay: Relay, pg_url: str
) -> None:
    """With the database cut, a budgeted route skips its paid providers and is served locally."""
    ledger = outage_ledger(relay.url(pg_url))
    critical = LLMTask(quality="critical", complexity="high", task_type="extraction")
    async with AegisLLMProxy(load_config(rig.write_config()), ledger=ledger) as proxy:
        relay.cut()
        resp = await proxy.acompletion(HELLO, critical, max_tokens=16)
        relay.restore()
    assert resp.aegis.provider == "local_ollama"
    assert [a.outcome for a in resp.aegis.attempts][:2] == ["ledger_unavailable"] * 2
    assert not rig.openai.chat_requests()
    assert not rig.cheap.chat_requests()
    assert schema_rows(pg_url, "SELECT provider FROM requests") == [("local_ollama",)]


async def test_a_slow_database_never_blocks_the_event_loop(
    rig: Rig, relay: Relay, pg_url: str
) -> None:
    """With every database answer 0.1 s late, reserve and settle (streams too) wait off the loop."""
    ledger = open_ledger(relay.url(pg_url))  # migrated before the network slows down
    critical = LLMTask(quality="critical", complexity="high", task_type="extraction")
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async with AegisLLMProxy(load_config(rig.write_config()), ledger=ledger) as proxy:
        await proxy.acompletion(HELLO, critical, max_tokens=16)  # the SDK's one-time imports
        relay.delay_s = 0.1
        ticker = asyncio.create_task(tick())
        began = time.monotonic()
        resp = await proxy.acompletion(HELLO, critical, max_tokens=16)
        stream = await proxy.acompletion(HELLO, critical, max_tokens=16, stream=True)
        chunks = [chunk async for chunk in stream]
        took = time.monotonic() - began
        await asyncio.sleep(0.02)  # the ticker notes the gap after the last settle too
        ticker.cancel()
        relay.delay_s = 0.0
    assert resp.aegis.provider == "openai"
    assert chunks
    assert took > 0.6  # the requests did wait on the slow database
    assert max(gaps) < 0.08, f"the event loop stalled {max(gaps):.3f} s"
    assert schema_rows(pg_url, "SELECT provider, status FROM requests") == [("openai", "ok")] * 3


async def test_request_cancelled_while_reserving_leaves_a_cancelled_row(
    rig: Rig, relay: Relay, pg_url: str
) -> None:
    """Cancelled while its reservation is being written, the attempt's row ends 'cancelled'."""
    ledger = open_ledger(relay.url(pg_url))
    critical = LLMTask(quality="critical", complexity="high", task_type="extraction")
    async with AegisLLMProxy(load_config(rig.write_config()), ledger=ledger) as proxy:
        await proxy.warm_up()
        relay.delay_s = 0.1
        request = asyncio.create_task(proxy.acompletion(HELLO, critical, max_tokens=16))
        await asyncio.sleep(0.15)  # the reservation is on its way through the slow network
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        relay.delay_s = 0.0

        def settled() -> bool:
            return schema_rows(pg_url, "SELECT status FROM requests") == [("cancelled",)]

        assert await asyncio.to_thread(wait_for, settled)
    assert not rig.openai.chat_requests()
    assert schema_rows(pg_url, "SELECT reserved_micros > 0 FROM requests") == [(True,)]


# -- the keyed query hash (m005) -----------------------------------------------------------


def _hash_key(target: str) -> bytes:
    query = "SELECT value FROM ledger_secrets WHERE name = 'query_hash_key'"
    if target.startswith("sqlite:///"):
        with sqlite3.connect(target.removeprefix("sqlite:///")) as conn:
            rows = conn.execute(query).fetchall()
    else:
        rows = schema_rows(target, query)
    assert len(rows) == 1
    return bytes.fromhex(rows[0][0])


def _stored_hash(ledger: LedgerBackend, request_id: str) -> object:
    return ledger.rows_for_request(request_id)[0]["query_hash"]


def test_query_hash_is_keyed_with_the_ledgers_own_secret(target: str, tmp_path: Path) -> None:
    """A row stores HMAC(ledger key, digest): stable in one ledger, different in another."""
    plain = start().query_hash
    with open_ledger(target) as ledger:
        ledger.reserve(start("a"), 0, None)
        ledger.reserve(start("b"), 0, None)
        first, second = _stored_hash(ledger, "a"), _stored_hash(ledger, "b")
    key = _hash_key(target)
    assert len(key) == 32
    assert first == second == keyed_hash(key, plain) != plain
    with open_ledger(target) as reopened:  # the key is kept, not made again
        reopened.reserve(start("c"), 0, None)
        assert _stored_hash(reopened, "c") == first
    with open_ledger(tmp_path / "other.db") as other:
        other.reserve(start("a"), 0, None)
        assert _stored_hash(other, "a") not in (first, plain)


def test_refusals_store_the_keyed_hash_too(target: str) -> None:
    """A privacy refusal's query_hash is keyed like a row's; its repr shows no digest."""
    refusal = PrivacyRefusal(
        request_id="r-1", query_hash="ab" * 32, rule="default", task_type="general",
        data_classification="internal", decision=PrivacyDecision((("EMAIL", 1),), "block"),
        reason="blocked",
    )  # fmt: skip
    assert "ab" * 32 not in repr(refusal)
    assert "9f86d081884c7d65" not in repr(start())
    with open_ledger(target) as ledger:
        ledger.record_refusal(refusal)
    query = "SELECT query_hash FROM privacy_refusals"
    if target.startswith("sqlite:///"):
        with sqlite3.connect(target.removeprefix("sqlite:///")) as conn:
            stored = conn.execute(query).fetchall()
    else:
        stored = schema_rows(target, query)
    assert stored == [(keyed_hash(_hash_key(target), "ab" * 32),)]


def test_ledger_secrets_match_column_for_column(tmp_path: Path, pg_url: str) -> None:
    """m005's ledger_secrets table has the same columns on both backends."""
    path = tmp_path / "ledger.db"
    open_ledger(path).close()
    open_ledger(pg_url).close()
    with sqlite3.connect(path) as lite:
        expected = [row[1] for row in lite.execute("PRAGMA table_xinfo(ledger_secrets)")]
    found = schema_rows(
        pg_url,
        "SELECT column_name FROM information_schema.columns WHERE table_schema ="
        " current_schema() AND table_name = 'ledger_secrets' ORDER BY ordinal_position",
    )
    assert [name for (name,) in found] == expected == ["name", "value"]
