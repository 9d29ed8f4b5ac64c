"""The cost ledger: one SQLite row per provider attempt, and hard budgets on top of it.

A budget checked before a call and charged after it is no budget under concurrency
(LiteLLM let 50 of 50 concurrent calls through a budget worth 2.5). Here the check and the
reservation are one ``BEGIN IMMEDIATE`` transaction on a file that threads, asyncio tasks
and processes share. What must always hold:

- after a reservation, spent + reserved <= limit for the provider's month (UTC) and, when
  set, day; a settle replaces the reservation with the real cost (the proxy reserves an
  upper bound, so the cost is never more);
- each attempt is exactly one row: ``reserve`` inserts it 'pending', ``settle`` finishes it
  once as 'ok', 'error' or 'cancelled'; a reservation a crashed process left pending
  becomes 'expired' and its money is released; a late settle still records the cost;
- ``budget_usage`` moves in the same transaction as the row it reflects;
- nothing is dropped silently: a locked database is waited for, then ``LedgerError``;
- no prompt, response or key is ever written here: the row keeps only a query hash.

This module stays light to import (no SDKs, no tokenizer): ``aegis-proxy report`` uses it.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from aegis_proxy import migrations as sql
from aegis_proxy.errors import BudgetExceededError, LedgerError
from aegis_proxy.migrations import apply_migrations, rebuild_usage
from aegis_proxy.reports import ProviderMonth, UsageRow, build_summary, check_month, usd

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping

__all__ = [
    "AttemptOutcome",
    "AttemptStart",
    "BudgetLimit",
    "Ledger",
    "ProviderMonth",
    "current_month",
]

T = TypeVar("T")

_OUTCOMES = frozenset({"ok", "error", "cancelled"})
_PID_SWEEP_INTERVAL_S = 60.0
_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED (low byte of extended codes)
_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class AttemptStart:
    """What is known of an attempt before the provider is called (never any text)."""

    request_id: str
    attempt: int
    provider: str
    model: str
    rule: str
    task_type: str
    quality: str
    complexity: str
    batch_size: int
    data_classification: str
    contains_pii: bool
    stream: bool
    query_hash: str
    user_id: str | None = None
    agent: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BudgetLimit:
    """A provider's limits in micro-dollars; None means no limit of that kind."""

    monthly_micros: int | None
    daily_micros: int | None = None
    warn_share: float = 0.8


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """How an attempt ended: real (or locally ``counted``) tokens, cost and timing."""

    status: str
    latency_ms: float
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    cost_micros: int = 0
    counted: bool = False
    error_type: str | None = None
    ttft_ms: float | None = None


def current_month(now: datetime | None = None) -> str:
    """The calendar month (UTC) of ``now`` as 'YYYY-MM'."""
    return _iso(_utc(now))[:7]


class Ledger:
    """One SQLite connection to the ledger file; safe to share between threads."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        reservation_ttl_s: float = 900.0,
        busy_timeout_s: float = 10.0,
    ) -> None:
        if reservation_ttl_s <= 0 or busy_timeout_s < 0:
            raise ValueError("reservation_ttl_s must be > 0 and busy_timeout_s >= 0")
        self.path = Path(path)
        self.reservation_ttl_s = reservation_ttl_s
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._host = _host_identity()
        self._budgets: dict[str, BudgetLimit] = {}
        self._next_pid_sweep = 0.0
        self._conn: sqlite3.Connection | None = self._connect()
        try:
            self._write("open", self._migrate_and_sweep)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the connection; the ledger cannot be used afterwards."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def reserve(
        self,
        start: AttemptStart,
        reserve_micros: int,
        budget: BudgetLimit | None,
        now: datetime | None = None,
    ) -> int:
        """Insert the attempt's pending row holding ``reserve_micros``; returns its id.

        Raises ``BudgetExceededError`` (and records nothing) when the reservation would pass
        the month's or the day's limit. A $0 reservation is never refused.
        """
        if reserve_micros < 0:
            raise ValueError("reserve_micros must not be negative")
        moment = _utc(now)
        stamp, unix = _iso(moment), moment.timestamp()

        def work(conn: sqlite3.Connection) -> tuple[int, list[UsageRow]]:
            self._expire_stale(conn, start.provider, unix)
            if time.monotonic() >= self._next_pid_sweep:
                self._sweep_dead_pids(conn)
            if budget is not None and reserve_micros > 0:
                _check_budget(conn, start.provider, stamp, reserve_micros, budget)
            params = _row_params(start, stamp, reserve_micros, unix + self.reservation_ttl_s)
            row_id = conn.execute(sql.INSERT_ROW, (*params, os.getpid(), self._host)).lastrowid
            usage = _add_usage(conn, start.provider, stamp, (0, reserve_micros))
            return int(row_id or 0), usage

        row_id, usage = self._write("reserve", work)
        if budget is not None:
            self._budgets[start.provider] = budget
            _warn_if_near(start.provider, usage, budget)
        return row_id

    def settle(self, row_id: int, outcome: AttemptOutcome, now: datetime | None = None) -> None:
        """Record how attempt ``row_id`` ended and turn its reservation into its cost, once."""
        _check_outcome(outcome)
        stamp = _iso(_utc(now))

        def work(conn: sqlite3.Connection) -> tuple[str, int, list[UsageRow]]:
            row = conn.execute(sql.SELECT_FOR_SETTLE, (row_id,)).fetchone()
            if row is None:
                raise LedgerError("settle", f"no ledger row {row_id}")
            provider, started, status, reserved, settled_at = row
            if settled_at is not None:
                raise LedgerError("settle", f"ledger row {row_id} is already settled ({status})")
            conn.execute(sql.SETTLE_ROW, (*_outcome_params(outcome), stamp, row_id))
            release = reserved if status == "pending" else 0  # an expired row gave it back
            delta = (outcome.cost_micros, -release, *_counter_deltas(outcome))
            return provider, reserved, _add_usage(conn, provider, started, delta)

        provider, reserved, usage = self._write("settle", work)
        budget = self._budgets.get(provider)
        if budget is not None:
            if outcome.cost_micros > reserved:
                _warn(
                    "cost_exceeded_reservation",
                    provider=provider,
                    row_id=row_id,
                    reserved_micros=reserved,
                    cost_micros=outcome.cost_micros,
                )
            _warn_if_near(provider, usage, budget)

    def budget_state(self, provider: str, period: str) -> tuple[int, int]:
        """(spent_micros, reserved_micros) of ``provider`` in a 'YYYY-MM' or 'YYYY-MM-DD'."""
        row = self._read("budget_state", lambda c: c.execute(sql.USAGE_OF, (provider, period)))
        return (row[0][0], row[0][1]) if row else (0, 0)

    def monthly_summary(
        self,
        month: str | None = None,
        budgets: Mapping[str, BudgetLimit | None] | None = None,
        now: datetime | None = None,
    ) -> list[ProviderMonth]:
        """Spend, tokens and budget use per provider for ``month`` (default: this month)."""
        moment = _utc(now)
        month = month or _iso(moment)[:7]
        check_month(month)
        usage = self._read("summary", lambda c: c.execute(sql.SUMMARY_USAGE, (month,)))
        open_rows = self._read("summary", lambda c: c.execute(sql.SUMMARY_OPEN, (month,)))
        limits = {name: b.monthly_micros if b else None for name, b in (budgets or {}).items()}
        shares = {name: b.warn_share for name, b in (budgets or {}).items() if b}
        return build_summary(month, moment, usage, open_rows, limits, shares)

    def export_rows(self, month: str) -> Iterator[dict[str, object]]:
        """Every row of ``month``, all columns, in id order.

        The rows stream from a read-only snapshot on a second connection, so a long export
        never holds up reservations.
        """
        check_month(month)
        return self._export(month)

    def _export(self, month: str) -> Iterator[dict[str, object]]:
        try:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise LedgerError("export", str(exc)) from exc
        try:
            yield from _dicts(conn.execute(sql.EXPORT, (month,)))
        except sqlite3.Error as exc:
            raise LedgerError("export", str(exc)) from exc
        finally:
            conn.close()

    def rows_for_request(self, request_id: str) -> list[dict[str, object]]:
        """Every attempt row of one proxy call, in attempt order."""
        return self._read(
            "rows_for_request", lambda c: _dicts(c.execute(sql.BY_REQUEST, (request_id,)))
        )

    def rebuild_usage(self) -> None:
        """Recompute ``budget_usage`` from the rows (after a bulk import or a manual edit)."""
        self._write("rebuild_usage", rebuild_usage)

    # -- internals ----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError("open", f"{self.path}: {exc}") from exc
        deadline = time.monotonic() + self.busy_timeout_s
        try:
            mode = self._retry("open", deadline, lambda: _enable_wal(conn))
            if mode != "wal":
                raise LedgerError("open", f"{self.path}: WAL journal mode unavailable ({mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _write(self, operation: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction, retried while locked."""
        deadline = time.monotonic() + self.busy_timeout_s
        conn = self._acquire(operation, deadline)
        try:
            return self._retry(operation, deadline, lambda: _transaction(conn, work))
        finally:
            self._lock.release()

    def _read(
        self, operation: str, query: Callable[[sqlite3.Connection], Iterable[Any]]
    ) -> list[Any]:
        deadline = time.monotonic() + self.busy_timeout_s
        conn = self._acquire(operation, deadline)
        try:
            return self._retry(operation, deadline, lambda: list(query(conn)))
        finally:
            self._lock.release()

    def _acquire(self, operation: str, deadline: float) -> sqlite3.Connection:
        """Take this ledger's connection, waiting for other threads no longer than allowed."""
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            problem = f"{self.path}: busy in this process for {self.busy_timeout_s}s"
            raise LedgerError(operation, problem)
        if self._conn is None:
            self._lock.release()
            raise LedgerError(operation, f"ledger {self.path} is closed")
        return self._conn

    def _retry(self, operation: str, deadline: float, attempt: Callable[[], T]) -> T:
        pause = 0.001
        while True:
            try:
                return attempt()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise LedgerError(operation, self._problem(exc)) from exc
            except sqlite3.Error as exc:
                raise LedgerError(operation, f"{self.path}: {exc}") from exc
            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 2, 0.05)

    def _problem(self, exc: sqlite3.Error) -> str:
        if _is_busy(exc):
            return f"{self.path} stayed locked for {self.busy_timeout_s}s ({exc})"
        return f"{self.path}: {exc}"

    def _migrate_and_sweep(self, conn: sqlite3.Connection) -> None:
        apply_migrations(conn, _iso(_utc(None)))
        self._sweep_dead_pids(conn)

    def _expire_stale(self, conn: sqlite3.Connection, provider: str, unix: float) -> None:
        rows = conn.execute(sql.STALE, (unix, provider)).fetchall()
        _expire(conn, rows, "reservation_expired")

    def _sweep_dead_pids(self, conn: sqlite3.Connection) -> None:
        pids = [pid for (pid,) in conn.execute(sql.PENDING_PIDS, (self._host,))]
        for pid in pids:
            if not _alive(pid):
                _expire(conn, conn.execute(sql.PENDING_OF_PID, (self._host, pid)), "process_died")
        self._next_pid_sweep = time.monotonic() + _PID_SWEEP_INTERVAL_S


def _enable_wal(conn: sqlite3.Connection) -> str:
    (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
    return str(mode)


def _transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _check_budget(
    conn: sqlite3.Connection, provider: str, stamp: str, amount: int, budget: BudgetLimit
) -> None:
    for period, limit in ((stamp[:7], budget.monthly_micros), (stamp[:10], budget.daily_micros)):
        if limit is None:
            continue
        row = conn.execute(sql.USAGE_OF, (provider, period)).fetchone()
        spent, reserved = row if row else (0, 0)
        if spent + reserved + amount > limit:
            raise BudgetExceededError(
                provider, period, usd(spent), usd(reserved), usd(amount), usd(limit)
            )


def _add_usage(
    conn: sqlite3.Connection, provider: str, stamp: str, delta: tuple[int, ...]
) -> list[UsageRow]:
    delta = delta + (0,) * (sql.USAGE_WIDTH - len(delta))
    params = (provider, stamp[:7], *delta, provider, stamp[:10], *delta)
    return conn.execute(sql.ADD_USAGE, params).fetchall()


def _expire(
    conn: sqlite3.Connection, rows: Iterable[tuple[int, str, str, int]], reason: str
) -> None:
    expired = list(rows)
    for row_id, provider, stamp, reserved in expired:
        conn.execute(sql.EXPIRE_ROW, (reason, row_id))
        _add_usage(conn, provider, stamp, (0, -reserved))
    if expired:
        providers = sorted({row[1] for row in expired})
        _warn("reservations_expired", providers=providers, count=len(expired), reason=reason)


def _host_identity() -> str:
    """Hostname plus PID namespace: containers sharing a hostname cannot see each other's pids."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # e.g. 'pid:[4026531836]'
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()}/{namespace.removeprefix('pid:').strip('[]')}"


def _alive(pid: int) -> bool:
    if pid == os.getpid() or sys.platform == "win32":  # os.kill(pid, 0) is not a probe there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: it exists
        return True
    return True


def _warn_if_near(provider: str, usage: list[UsageRow], budget: BudgetLimit) -> None:
    for period, spent, reserved in usage:
        limit = budget.monthly_micros if len(period) == 7 else budget.daily_micros
        if not limit:
            continue
        share = (spent + reserved) / limit
        if share < budget.warn_share:
            continue
        with _warned_lock:
            if (provider, period) in _warned:
                continue
            _warned.add((provider, period))
        _warn("budget_warning", provider=provider, period=period, share=round(share, 4))


def _warn(event: str, **context: object) -> None:
    """Log a rare warning; a fresh logger follows the current structlog configuration."""
    structlog.get_logger(__name__).warning(event, **context)


def _check_outcome(outcome: AttemptOutcome) -> None:
    if outcome.status not in _OUTCOMES:
        raise ValueError(f"outcome status must be one of {sorted(_OUTCOMES)}: {outcome.status!r}")
    counts = (outcome.input_tokens, outcome.output_tokens, outcome.cached_input_tokens)
    if min(*counts, outcome.reasoning_tokens, outcome.cost_micros) < 0:
        raise ValueError("token counts and cost must not be negative")


def _row_params(
    start: AttemptStart, stamp: str, reserved: int, expires_at: float
) -> tuple[object, ...]:
    s = start
    return (
        s.request_id, s.attempt, stamp, stamp[:7], s.provider, s.model, s.user_id, s.agent,
        s.query_hash, s.rule, s.task_type, s.quality, s.complexity, s.batch_size,
        s.data_classification, json.dumps(list(s.tags)), int(s.contains_pii), int(s.stream),
        reserved, expires_at,
    )  # fmt: skip


def _outcome_params(o: AttemptOutcome) -> tuple[object, ...]:
    return (
        o.status, o.error_type, o.input_tokens, o.output_tokens, o.cached_input_tokens,
        o.reasoning_tokens, int(o.counted), o.cost_micros, o.latency_ms, o.ttft_ms,
    )  # fmt: skip


def _counter_deltas(o: AttemptOutcome) -> tuple[int, ...]:
    flags = (int(o.status == "ok"), int(o.status == "error"), int(o.status == "cancelled"))
    tokens = (o.input_tokens, o.output_tokens, o.cached_input_tokens, o.reasoning_tokens)
    return flags + tokens


def _dicts(cursor: sqlite3.Cursor) -> Iterator[dict[str, object]]:
    names = [column[0] for column in cursor.description]
    for row in cursor:
        yield dict(zip(names, row, strict=True))


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _BUSY_CODES
    return "locked" in str(exc) or "busy" in str(exc)


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")
