"""The cost ledger on SQLite: one row per provider attempt, and hard budgets on top of it.

A budget checked before a call and charged after it is no budget under concurrency
(LiteLLM let 50 of 50 concurrent calls through a budget worth 2.5). Here the check and the
reservation are one ``BEGIN IMMEDIATE`` transaction on a SQLite file that threads, asyncio
tasks and processes share (``Ledger``); ``aegis_proxy.settle.postgres.ledger`` is the same
for many hosts, and ``aegis_proxy.settle.open.open_ledger`` picks one. What must always
hold, on either backend:

- after a reservation, spent + reserved <= limit for the provider's month (UTC) and, when
  set, day; a settle replaces the reservation with the real cost;
- each attempt is exactly one row: ``reserve`` inserts it 'pending', ``settle`` finishes it
  once as 'ok', 'error' or 'cancelled' (a replay of the same settle changes nothing);
- **an unknown outcome is billed at its bound.** A pending row whose process died or whose
  TTL passed may have reached its provider, which bills it: it becomes 'expired_billed'
  and its reservation is *spent*, never given back. A late settle replaces that bound
  with the real cost. Only the proxy knows an attempt never left (refused before send,
  connection refused): it settles those itself at $0, which releases them;
- **a reservation lives as long as its call**, by a heartbeat (``settle.heartbeat``):
  every ``reservation_ttl_s / 3`` a thread of the live ledger pushes the expiry of its
  open rows forward. Why a heartbeat rather than a TTL derived from each attempt's
  deadline: a stream has no end-to-end limit unless a deadline is set (its timeout is per
  chunk), a settle may wait in the backlog for as long as the file stays locked, and a
  deadline-derived TTL would make ``deadline_s`` mandatory for every budgeted provider;
  the heartbeat costs one write per ledger per beat (not per call), and a dead process
  stops renewing, so its rows expire (billed) within one TTL (at once on its own host);
- **the paid answer reaches the caller.** A settle the file cannot take now (locked past
  ``busy_timeout_s``, disk full, read-only) waits in a bounded in-memory ``Backlog``
  written by a thread once the file accepts writes (``queued_rows``; logged loudly); its
  reservation stays held meanwhile. ``close`` writes it or raises naming the count;
- ``wait=False`` makes one try and raises ``LedgerBusyError`` at the first lock: the event
  loop never waits on a lock (the proxy then retries from a worker thread);
- ``budget_usage`` moves in the same transaction as the row it reflects; a cost above the
  reservation (a provider whose usage lies) is recorded as billed, logged
  (``cost_exceeded_reservation``) and counted (``overshoots``);
- no prompt, response or key is ever written here: the row keeps only a query hash, keyed
  with the file's own secret (``ledger_secrets``, m005; see ``settle.records``), which is
  never logged.

This module stays light to import (no SDKs, no tokenizer, no database driver):
``aegis-proxy report`` uses it.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING

from aegis_proxy.errors import LedgerError
from aegis_proxy.settle import budget as rules
from aegis_proxy.settle.heartbeat import Heartbeat
from aegis_proxy.settle.records import (
    AttemptOutcome,
    AttemptStart,
    BudgetLimit,
    PrivacyRefusal,
    alive,
    check_outcome,
    dicts,
    host_identity,
    iso,
    outcome_params,
    refusal_params,
    row_params,
    settle_delta,
    utc,
)
from aegis_proxy.settle.sqlite import queries as sql
from aegis_proxy.settle.sqlite.backlog import Backlog
from aegis_proxy.settle.sqlite.connection import SQLiteConnection, unwritable
from aegis_proxy.settle.sqlite.migrations import MIGRATIONS, apply_migrations
from aegis_proxy.settle.sqlite.queries import HASH_KEY_QUERY, hash_key_of, rebuild_usage
from aegis_proxy.settle.summary import ProviderMonth, UsageRow, check_month, summarize

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping
    from datetime import datetime


_PID_SWEEP_INTERVAL_S = 60.0


class Ledger:
    """The SQLite ledger: one connection to the ledger file, safe to share between threads."""

    blocks_event_loop = False
    """A local file write (~40 µs): cheaper inline (``wait=False``) than a hop to a thread."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        reservation_ttl_s: float = 900.0,
        busy_timeout_s: float = 10.0,
        read_only: bool = False,
        max_queued_rows: int = 10_000,
        retry_interval_s: float = 0.25,
        close_timeout_s: float = 10.0,
    ) -> None:
        if reservation_ttl_s <= 0 or busy_timeout_s < 0:
            raise ValueError("reservation_ttl_s must be > 0 and busy_timeout_s >= 0")
        self.path = Path(path)
        self.reservation_ttl_s = reservation_ttl_s
        self.busy_timeout_s = busy_timeout_s
        self.close_timeout_s = close_timeout_s
        self.heartbeat = Heartbeat(reservation_ttl_s, self._renew)
        self._backlog = Backlog(self._write_settle, max_queued_rows, retry_interval_s)
        self._host = host_identity()
        self._warned = rules.WarnedPeriods()
        self._budgets: dict[str, BudgetLimit] = {}
        self._next_pid_sweep = 0.0
        self._hash_key = b""  # read from the file by the first write (m005)
        self._db = SQLiteConnection(self.path, busy_timeout_s, read_only=read_only)
        try:
            if read_only:
                self._db.read("open", self._check_schema)
            else:
                self._db.write("open", self._migrate_and_sweep)
        except BaseException:
            self.close()
            raise

    @property
    def queued_rows(self) -> int:
        """Settles waiting in memory for the file to accept writes (a gauge for metrics)."""
        return len(self._backlog)

    def close(self) -> None:
        """Write the backlog, then close; ``LedgerError`` naming how many settles remain."""
        try:
            self._backlog.close(self.close_timeout_s)
        finally:
            self.heartbeat.stop()
            self._db.close()

    def flush(self) -> int:
        """Write the backlog now; how many settles. ``LedgerError`` if the file still refuses."""
        return self._backlog.flush()

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
        *,
        wait: bool = True,
    ) -> int:
        """Insert the attempt's pending row holding ``reserve_micros``; returns its id.

        Raises ``BudgetExceededError`` (and records nothing) when the reservation would pass
        the month's or the day's limit. A $0 reservation is never refused. ``wait=False``:
        ``LedgerBusyError`` instead of waiting for a lock.
        """
        if reserve_micros < 0:
            raise ValueError("reserve_micros must not be negative")
        moment = utc(now)
        stamp, unix = iso(moment), moment.timestamp()

        def work(conn: sqlite3.Connection) -> tuple[int, list[UsageRow]]:
            self._expire_stale(conn, start.provider, unix)
            if time.monotonic() >= self._next_pid_sweep:
                self._sweep_dead_pids(conn)
            if budget is not None and reserve_micros > 0:
                _check_budget(conn, start.provider, stamp, reserve_micros, budget)
            expires = unix + self.reservation_ttl_s
            params = row_params(start, stamp, reserve_micros, expires, self._hash_key)
            row_id = conn.execute(sql.INSERT_ROW, (*params, os.getpid(), self._host)).lastrowid
            usage = _add_usage(conn, start.provider, stamp, (0, reserve_micros))
            return int(row_id or 0), usage

        row_id, usage = self._db.write("reserve", work, wait=wait)
        self.heartbeat.held(row_id)
        if budget is not None:
            self._budgets[start.provider] = budget
            rules.warn_if_near(start.provider, usage, budget, self._warned)
        return row_id

    def settle(
        self,
        row_id: int,
        outcome: AttemptOutcome,
        now: datetime | None = None,
        *,
        wait: bool = True,
    ) -> None:
        """Record how attempt ``row_id`` ended and turn its reservation into its cost, once.

        A settle the file cannot take now waits in the backlog (its reservation held);
        ``wait=False``: ``LedgerBusyError`` at the first lock instead of waiting.
        """
        check_outcome(outcome)
        stamp = iso(utc(now))
        try:
            self._write_settle(row_id, outcome, stamp, wait=wait)
        except LedgerError as exc:
            if not wait or not unwritable(exc):
                raise
            self._backlog.add(row_id, outcome, stamp, exc.problem)

    def _write_settle(
        self, row_id: int, outcome: AttemptOutcome, stamp: str, *, wait: bool = True
    ) -> None:
        def work(conn: sqlite3.Connection) -> tuple[str, int, list[UsageRow]] | None:
            row = conn.execute(sql.SELECT_FOR_SETTLE, (row_id,)).fetchone()
            if row is None:
                raise LedgerError("settle", f"no ledger row {row_id}")
            provider, started, status, reserved, settled_at, prior_cost = row
            if settled_at is not None:
                if settled_at == stamp and status == outcome.status:
                    return None  # a replay from the backlog: it landed already
                raise LedgerError("settle", f"ledger row {row_id} is already settled ({status})")
            conn.execute(sql.SETTLE_ROW, (*outcome_params(outcome), stamp, row_id))
            delta = settle_delta(outcome, status, reserved, prior_cost)
            return provider, reserved, _add_usage(conn, provider, started, delta)

        settled = self._db.write("settle", work, wait=wait)
        self.heartbeat.released(row_id)
        if settled is not None:
            provider, reserved, usage = settled
            budget = self._budgets.get(provider)
            rules.after_settle(budget, provider, row_id, reserved, outcome, usage, self._warned)

    def budget_state(self, provider: str, period: str) -> tuple[int, int]:
        """(spent_micros, reserved_micros) of ``provider`` in a 'YYYY-MM' or 'YYYY-MM-DD'."""
        row = self._db.read("budget_state", lambda c: c.execute(sql.USAGE_OF, (provider, period)))
        return (row[0][0], row[0][1]) if row else (0, 0)

    def monthly_summary(
        self,
        month: str | None = None,
        budgets: Mapping[str, BudgetLimit | None] | None = None,
        now: datetime | None = None,
    ) -> list[ProviderMonth]:
        """Spend, tokens and budget use per provider for ``month`` (default: this month)."""
        moment = utc(now)
        month = month or iso(moment)[:7]
        check_month(month)
        usage = self._db.read("summary", lambda c: c.execute(sql.SUMMARY_USAGE, (month,)))
        open_rows = self._db.read("summary", lambda c: c.execute(sql.SUMMARY_OPEN, (month,)))
        return summarize(month, moment, usage, open_rows, budgets)

    def export_rows(self, month: str) -> Iterator[dict[str, object]]:
        """Every row of ``month``, all columns, in id order.

        The rows stream from a read-only snapshot on a second connection, so a long export
        never holds up reservations.
        """
        check_month(month)
        return self._export(month)

    def _export(self, month: str) -> Iterator[dict[str, object]]:
        conn = self._db.open_snapshot("export")
        try:
            cursor = conn.execute(sql.EXPORT, (month,))
            yield from dicts([column[0] for column in cursor.description], cursor)
        except sqlite3.Error as exc:
            raise LedgerError("export", str(exc)) from exc
        finally:
            conn.close()

    def rows_for_request(self, request_id: str) -> list[dict[str, object]]:
        """Every attempt row of one proxy call, in attempt order."""
        return self._db.read(
            "rows_for_request", lambda c: _dict_rows(c, sql.BY_REQUEST, request_id)
        )

    def rebuild_usage(self) -> None:
        """Recompute ``budget_usage`` from the rows (after a bulk import or a manual edit)."""
        self._db.write("rebuild_usage", rebuild_usage)

    def record_refusal(self, refusal: PrivacyRefusal, now: datetime | None = None) -> None:
        """Record a request refused for privacy before any provider call (audit only)."""
        params = refusal_params(refusal, iso(utc(now)), self._hash_key)
        self._db.write("record_refusal", lambda c: c.execute(sql.INSERT_REFUSAL, params))

    def privacy_rows(self, month: str) -> list[dict[str, object]]:
        """The month's attempts that held personal data, with their privacy decision."""
        check_month(month)
        return self._db.read("privacy_rows", lambda c: _dict_rows(c, sql.PRIVACY_ROWS, month))

    def refusal_rows(self, month: str) -> list[dict[str, object]]:
        """The month's requests refused for privacy (blocked, or no local provider)."""
        check_month(month)
        return self._db.read("refusal_rows", lambda c: _dict_rows(c, sql.REFUSAL_ROWS, month))

    def privacy_breaches(self) -> list[dict[str, object]]:
        """Rows, in any month, that sent unredacted personal data to a non-local provider."""
        query = sql.PII_LEFT_LOCAL_UNREDACTED
        return self._db.read("privacy_breaches", lambda c: _dict_rows(c, query))

    # -- internals ----------------------------------------------------------------------

    def _renew(self, rows: list[int], expires_at: float) -> None:
        """Push the expiry of this ledger's open rows forward (the heartbeat's write)."""
        params = [(expires_at, row_id) for row_id in rows]
        self._db.write("renew", lambda c: c.executemany(sql.RENEW, params))

    def _migrate_and_sweep(self, conn: sqlite3.Connection) -> None:
        apply_migrations(conn, iso(utc(None)))
        self._hash_key = hash_key_of(conn.execute(HASH_KEY_QUERY).fetchall())
        self._sweep_dead_pids(conn)

    def _check_schema(self, conn: sqlite3.Connection) -> list[str]:
        """The migrations the file lacks: none, or ``LedgerError`` (a read-only open)."""
        try:
            done = {name for (name,) in conn.execute("SELECT name FROM _migrations")}
        except sqlite3.OperationalError:
            raise LedgerError("open", f"{self.path} is not an aegis_proxy ledger") from None
        missing = [name for name, _ in MIGRATIONS if name not in done]
        if missing:
            problem = f"{self.path} predates migration {missing[0]}: open it once with the proxy"
            raise LedgerError("open", problem)
        return missing

    def _expire_stale(self, conn: sqlite3.Connection, provider: str, unix: float) -> None:
        rows = conn.execute(sql.STALE, (unix, provider)).fetchall()
        _expire(conn, rows, "reservation_expired")

    def _sweep_dead_pids(self, conn: sqlite3.Connection) -> None:
        pids = [pid for (pid,) in conn.execute(sql.PENDING_PIDS, (self._host,))]
        for pid in pids:
            if not alive(pid):
                _expire(conn, conn.execute(sql.PENDING_OF_PID, (self._host, pid)), "process_died")
        self._next_pid_sweep = time.monotonic() + _PID_SWEEP_INTERVAL_S


def _check_budget(
    conn: sqlite3.Connection, provider: str, stamp: str, amount: int, budget: BudgetLimit
) -> None:
    limits = rules.limited_periods(stamp, budget)
    usage = {}
    for period, _ in limits:
        row = conn.execute(sql.USAGE_OF, (provider, period)).fetchone()
        usage[period] = (row[0], row[1]) if row else (0, 0)
    rules.check_reservation(provider, amount, limits, usage)


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
        _add_usage(conn, provider, stamp, (reserved, -reserved))  # spent at the bound
    if expired:
        rules.warn_expired(expired, reason)


def _dict_rows(conn: sqlite3.Connection, query: str, *params: object) -> list[dict[str, object]]:
    cursor = conn.execute(query, params)
    return list(dicts([column[0] for column in cursor.description], cursor))
