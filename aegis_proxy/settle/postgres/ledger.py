"""The ledger on PostgreSQL: budgets that hold for many worker processes on many hosts.

Same rows, migrations, reports and export as the SQLite ``Ledger``; see
``aegis_proxy.settle.sqlite.ledger`` for the guarantees. How they hold here:

- **Budget.** A reservation first locks its provider's month and day rows of
  ``budget_usage`` (``SELECT ... ORDER BY period FOR UPDATE``, after creating them if
  needed), then expires stale reservations, reads (spent, reserved), checks, inserts the
  row and adds to the usage, all in one READ COMMITTED transaction. Every writer of those
  rows (reserve, settle, expiry) holds their row locks until it commits, and a locked row
  is read in its newest committed version, so two reservations of one provider and period
  run one after the other on every host: what SQLite's ``BEGIN IMMEDIATE`` gives for one file.
- **No deadlock by design.** Locks go usage rows first (month before day), request rows
  after; expiry takes request rows ``FOR UPDATE SKIP LOCKED`` (a row being settled is left
  to its settle). A rare cycle across periods (a sweep of dead processes meeting an
  expiry) is broken by PostgreSQL's deadlock detector and the transaction retried.
- **Database away.** ``LedgerUnavailableError`` is raised for what needs the database: a
  reservation that must be checked against a budget (the proxy falls over to the next
  provider), and reads. A reservation needing no check ($0, or no budget) and any settle
  wait in a bounded in-memory ``Spool`` (``queued_rows`` is its size) and a background
  thread writes them once the server answers again. ``close`` writes them or raises.
- **Durability.** Commits wait for the WAL flush (the server's ``synchronous_commit``):
  a reservation that returned survives a server crash. Since a provider's month row is
  held until each commit's flush, one provider takes about 1/flush-time reservations and
  settles per second across all hosts (~250/s with this machine's 4 ms flushes).
- **Unknown outcomes, live reservations** as on SQLite: an expired reservation is spent
  at its bound ('expired_billed'); a heartbeat renews this ledger's open rows, so only a
  dead process's rows expire. A settle that meets a row lock past ``busy_timeout_s`` waits
  in the spool like one that meets an unreachable server: the caller keeps its answer.
- Dead processes are detected on this host only (pid + PID namespace); a crashed host's
  reservations expire (billed) after their TTL, since nothing renews them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg import IsolationLevel

from aegis_proxy.errors import LedgerError, LedgerUnavailableError
from aegis_proxy.observe.logs import get_logger
from aegis_proxy.settle import budget as rules
from aegis_proxy.settle.heartbeat import Heartbeat
from aegis_proxy.settle.postgres import queries as q
from aegis_proxy.settle.postgres import rows
from aegis_proxy.settle.postgres.availability import Availability, Written
from aegis_proxy.settle.postgres.migrations import apply_migrations
from aegis_proxy.settle.postgres.pool import Connection, PostgresPool
from aegis_proxy.settle.postgres.spool import Entry, QueuedRow, QueuedSettle, Spool
from aegis_proxy.settle.records import (
    AttemptOutcome,
    AttemptStart,
    BudgetLimit,
    PrivacyRefusal,
    check_outcome,
    dicts,
    host_identity,
    iso,
    refusal_params,
    utc,
)
from aegis_proxy.settle.sqlite.queries import HASH_KEY_QUERY, hash_key_of
from aegis_proxy.settle.summary import ProviderMonth, UsageRow, check_month, summarize

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from datetime import datetime

T = TypeVar("T")
_log = get_logger("aegis_proxy.ledger")


class PostgresLedger:
    """The ledger in a PostgreSQL database shared by every process; safe between threads."""

    blocks_event_loop = True
    """Each write waits for a network round trip and a commit flush (~4 ms here)."""

    def __init__(
        self,
        url: str,
        *,
        reservation_ttl_s: float = 900.0,
        busy_timeout_s: float = 10.0,
        connect_timeout_s: float = 2.0,
        retry_interval_s: float = 1.0,
        close_timeout_s: float = 10.0,
        max_queued_rows: int = 10_000,
        pool_size: int = 4,
    ) -> None:
        if min(reservation_ttl_s, retry_interval_s) <= 0 or busy_timeout_s < 0:
            raise ValueError("reservation_ttl_s, retry_interval_s must be > 0, busy_timeout_s >= 0")
        self.reservation_ttl_s = reservation_ttl_s
        self.heartbeat = Heartbeat(reservation_ttl_s, self._renew)
        self._db = PostgresPool(
            url, busy_timeout_s=busy_timeout_s, connect_timeout_s=connect_timeout_s,
            max_size=pool_size,
        )  # fmt: skip
        self.where = self._db.where
        self._spool = Spool(max_queued_rows)
        self._state = Availability(
            self.where, self._spool, self._connect, self._write_batch,
            retry_interval_s, close_timeout_s,
        )  # fmt: skip
        self._host = host_identity()
        self._warned = rules.WarnedPeriods()
        self._budgets: dict[str, BudgetLimit] = {}
        self._next_pid_sweep = 0.0
        self._migrated = self._closed = False
        self._hash_key = b""  # read once the database answers (m005); rows wait until then
        try:
            self._state.connect()
        except LedgerUnavailableError as exc:
            self._state.went_away(exc)  # serve $0 rows from memory; budgets wait
        except BaseException:
            self._db.close()
            raise

    @property
    def queued_rows(self) -> int:
        """Rows and settles waiting in memory for the database (a gauge for metrics)."""
        return len(self._spool)

    @property
    def available(self) -> bool:
        """Whether the database answered the last time it was asked."""
        return self._state.reachable

    def __enter__(self) -> PostgresLedger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Write every queued row, then close; ``LedgerUnavailableError`` if rows remain."""
        if self._closed:
            return
        self._closed = True
        try:
            self._state.close()
        finally:
            self.heartbeat.stop()
            self._db.close()

    def flush(self) -> int:
        """Write the queued entries now; how many. ``LedgerUnavailableError`` if still away."""
        return self._state.flush()

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

        ``wait`` is accepted for the interface: this ledger always waits (from a worker
        thread, as ``blocks_event_loop`` asks). ``BudgetExceededError`` as on SQLite. With
        the database away, a reservation that must be checked raises
        ``LedgerUnavailableError``; any other is queued under a negative id.
        """
        if reserve_micros < 0:
            raise ValueError("reserve_micros must not be negative")
        self._check_open("reserve")
        moment = utc(now)
        if self._state.reachable:
            try:
                row_id, usage = self._reserve(start, reserve_micros, budget, moment)
            except LedgerUnavailableError as exc:
                self._state.went_away(exc)
            else:
                self.heartbeat.held(row_id)
                if budget is not None:
                    self._budgets[start.provider] = budget
                    rules.warn_if_near(start.provider, usage, budget, self._warned)
                return row_id
        if rules.needs_check(budget, reserve_micros):
            problem = f"{self.where} unreachable: the budget of {start.provider} cannot be checked"
            raise LedgerUnavailableError("reserve", problem, len(self._spool))
        expires_at = moment.timestamp() + self.reservation_ttl_s
        row_id = self._spool.add_row(start, iso(moment), reserve_micros, expires_at)
        self._state.start_recovery()
        return row_id

    def settle(
        self,
        row_id: int,
        outcome: AttemptOutcome,
        now: datetime | None = None,
        *,
        wait: bool = True,
    ) -> None:
        """Record how attempt ``row_id`` ended, once; queued while the database is away or
        the row stays locked past ``busy_timeout_s``."""
        check_outcome(outcome)
        self._check_open("settle")
        stamp = iso(utc(now))
        if row_id < 0:
            written_as = self._spool.settle(row_id, outcome, stamp)
            if written_as is None:
                return
            row_id = written_as
        if self._state.reachable:
            try:
                settled = self._db.run(
                    "settle", lambda c: rows.settle_row(c, row_id, outcome, stamp)
                )
            except LedgerUnavailableError as exc:
                self._state.went_away(exc)
            except LedgerError as exc:
                if "stayed locked" not in exc.problem:
                    raise
                _log.error("ledger_settle_queued", row_id=row_id, problem=exc.problem)
            else:
                self.heartbeat.released(row_id)
                if settled is not None:
                    provider, reserved, usage = settled
                    budget = self._budgets.get(provider)
                    rules.after_settle(
                        budget, provider, row_id, reserved, outcome, usage, self._warned
                    )
                return
        self._spool.add_settle(row_id, outcome, stamp)
        self._state.start_recovery()

    def budget_state(self, provider: str, period: str) -> tuple[int, int]:
        """(spent_micros, reserved_micros) of ``provider`` in a 'YYYY-MM' or 'YYYY-MM-DD'."""
        found = self._read("budget_state", q.USAGE_OF, provider, period)
        return (found[0][0], found[0][1]) if found else (0, 0)

    def monthly_summary(
        self,
        month: str | None = None,
        budgets: Mapping[str, BudgetLimit | None] | None = None,
        now: datetime | None = None,
    ) -> list[ProviderMonth]:
        """Spend, tokens and budget use per provider for ``month`` (queued rows aside)."""
        moment = utc(now)
        month = month or iso(moment)[:7]
        check_month(month)
        usage = self._read("summary", q.SUMMARY_USAGE, month)
        open_rows = self._read("summary", q.SUMMARY_OPEN, month)
        return summarize(month, moment, usage, open_rows, budgets)

    def export_rows(self, month: str) -> Iterator[dict[str, object]]:
        """Every row of ``month``, all columns, in id order, from a read-only snapshot."""
        check_month(month)
        self._read("export", "SELECT 1")  # fail now, not at the first row, if unreachable
        return self._export(month)

    def rows_for_request(self, request_id: str) -> list[dict[str, object]]:
        """Every attempt row of one proxy call, in attempt order."""
        return self._online(
            "rows_for_request", lambda c: rows.dict_rows(c, q.BY_REQUEST, request_id)
        )

    def rebuild_usage(self) -> None:
        """Recompute ``budget_usage`` from the rows (after a bulk import or a manual edit)."""
        self._online("rebuild_usage", q.rebuild_usage)

    def record_refusal(self, refusal: PrivacyRefusal, now: datetime | None = None) -> None:
        """Record a request refused for privacy before any provider call (audit only)."""
        params = refusal_params(refusal, iso(utc(now)), self._hash_key)
        self._online("record_refusal", lambda c: c.execute(q.INSERT_REFUSAL, params))

    def privacy_rows(self, month: str) -> list[dict[str, object]]:
        """The month's attempts that held personal data, with their privacy decision."""
        check_month(month)
        return self._online("privacy_rows", lambda c: rows.dict_rows(c, q.PRIVACY_ROWS, month))

    def refusal_rows(self, month: str) -> list[dict[str, object]]:
        """The month's requests refused for privacy (blocked, or no local provider)."""
        check_month(month)
        return self._online("refusal_rows", lambda c: rows.dict_rows(c, q.REFUSAL_ROWS, month))

    def privacy_breaches(self) -> list[dict[str, object]]:
        """Rows, in any month, that sent unredacted personal data to a non-local provider."""
        query = q.PII_LEFT_LOCAL_UNREDACTED
        return self._online("privacy_breaches", lambda c: rows.dict_rows(c, query))

    # -- internals ----------------------------------------------------------------------

    def _connect(self) -> None:
        """Probe the server, migrate once, sweep dead processes (``Availability.connect``)."""
        self._db.probe()
        if not self._migrated:
            self._db.run("open", lambda c: apply_migrations(c, iso(utc(None))))
            found = self._db.run("open", lambda c: c.execute(HASH_KEY_QUERY).fetchall())
            self._hash_key = hash_key_of(found)
            self._migrated = True
        self._sweep()

    def _reserve(
        self, start: AttemptStart, amount: int, budget: BudgetLimit | None, moment: datetime
    ) -> tuple[int, list[UsageRow]]:
        if time.monotonic() >= self._next_pid_sweep:
            self._sweep()
        ttl, host, key = self.reservation_ttl_s, self._host, self._hash_key
        return self._db.run(
            "reserve", lambda c: rows.reserve_row(c, host, ttl, start, amount, budget, moment, key)
        )

    def _sweep(self) -> None:
        self._next_pid_sweep = self._db.run("sweep", lambda c: rows.sweep_dead_pids(c, self._host))

    def _write_batch(self, batch: list[Entry]) -> Written:
        """Write queued entries in one transaction, each in its own savepoint."""
        return self._db.run("flush", lambda c: [(entry, self._write(c, entry)) for entry in batch])

    def _renew(self, held: list[int], expires_at: float) -> None:
        """Push the expiry of this ledger's open rows forward (the heartbeat's write)."""
        if self._state.reachable:
            self._db.run("renew", lambda c: rows.renew(c, held, expires_at))

    def _write(self, conn: Connection, entry: Entry) -> int:
        """Write one entry; one the database refuses (not "unreachable") is logged and dropped."""
        try:
            with conn.transaction():
                row_id = rows.write_entry(conn, self._host, entry, self._hash_key)
                if isinstance(entry, QueuedSettle):
                    self.heartbeat.released(row_id)
                elif isinstance(entry, QueuedRow) and entry.outcome is None:
                    self.heartbeat.held(row_id)
                return row_id
        except LedgerError as exc:
            if "stayed locked" in exc.problem:
                raise  # the whole batch waits for the next round: never dropped
            _log.error("ledger_queued_entry_refused", entry=repr(entry), problem=exc.problem)
            return 0

    def _export(self, month: str) -> Iterator[dict[str, object]]:
        try:
            conn = self._db.connect(autocommit=False)
        except psycopg.Error as exc:
            raise self._db.error("export", exc) from exc
        try:
            conn.isolation_level, conn.read_only = IsolationLevel.REPEATABLE_READ, True
            with conn.cursor(name="aegis_export") as cursor:
                cursor.execute(q.EXPORT, (month,))
                yield from dicts([column.name for column in cursor.description or ()], cursor)
        except psycopg.Error as exc:
            raise self._db.error("export", exc) from exc
        finally:
            conn.close()

    def _check_open(self, operation: str) -> None:
        if self._closed:
            raise LedgerError(operation, f"ledger {self.where} is closed")

    def _online(self, operation: str, work: Callable[[Connection], T]) -> T:
        """``work`` in one transaction, refused at once while the database is known away."""
        self._check_open(operation)
        if not self._state.reachable:
            raise LedgerUnavailableError(operation, f"{self.where} unreachable", len(self._spool))
        try:
            return self._db.run(operation, work)
        except LedgerUnavailableError as exc:
            self._state.went_away(exc)
            raise

    def _read(self, operation: str, query: str, *params: Any) -> list[Any]:
        return self._online(operation, lambda c: c.execute(query, params).fetchall())
