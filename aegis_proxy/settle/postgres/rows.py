"""The PostgreSQL ledger's transactions, as functions of one open transaction.

``PostgresLedger`` decides when to call them (and what waits in memory meanwhile); these
functions say what each transaction reads and writes. What must always hold:

- lock order: a transaction locks ``budget_usage`` rows before ``requests`` rows, month
  before day; ``reserve_row`` takes its provider's two usage rows ``FOR UPDATE`` before it
  reads the budget, and keeps them to its commit (see ``aegis_proxy.settle.postgres.ledger``);
- expiry takes request rows ``FOR UPDATE SKIP LOCKED``: a row being settled is its settle's;
- writing a queued entry twice (its first commit's answer was lost) changes nothing the
  second time: a row is found by its identity, a settle by its timestamp and status.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from aegis_proxy.errors import LedgerError
from aegis_proxy.settle import budget as rules
from aegis_proxy.settle.postgres import queries as q
from aegis_proxy.settle.postgres.spool import Entry, QueuedRow
from aegis_proxy.settle.records import (
    alive,
    dicts,
    iso,
    outcome_params,
    row_params,
    settle_delta,
)
from aegis_proxy.settle.sqlite.queries import USAGE_WIDTH

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from aegis_proxy.settle.postgres.pool import Connection
    from aegis_proxy.settle.records import AttemptOutcome, AttemptStart, BudgetLimit
    from aegis_proxy.settle.summary import UsageRow

Settled = tuple[str, int, list["UsageRow"]]
"""(provider, reserved_micros, usage rows after the settle) of a settled row."""


def reserve_row(
    conn: Connection,
    host: str,
    ttl_s: float,
    start: AttemptStart,
    amount: int,
    budget: BudgetLimit | None,
    moment: datetime,
    hash_key: bytes,
) -> tuple[int, list[UsageRow]]:
    """Lock the provider's month and day usage, expire stale rows, check, insert the row.

    Until this transaction commits, no other reservation of the provider in this month or
    day can read its usage: the check and the insert are one step on every host.
    """
    stamp, unix = iso(moment), moment.timestamp()
    provider, month, day = start.provider, stamp[:7], stamp[:10]
    locked = conn.execute(q.LOCK_USAGE, (provider, month, day)).fetchall()
    if len(locked) < 2:  # a new month or day: create its rows (or wait for who does), lock
        conn.execute(q.ENSURE_USAGE, (provider, month, provider, day))
        locked = conn.execute(q.LOCK_USAGE, (provider, month, day)).fetchall()
    if expire(conn, conn.execute(q.STALE, (unix, provider)), "reservation_expired"):
        locked = conn.execute(q.LOCK_USAGE, (provider, month, day)).fetchall()
    if budget is not None and amount > 0:
        usage = {period: (spent, reserved) for period, spent, reserved in locked}
        rules.check_reservation(provider, amount, rules.limited_periods(stamp, budget), usage)
    params = row_params(start, stamp, amount, unix + ttl_s, hash_key)
    row_id = first_id(conn.execute(q.INSERT_ROW, (*params, os.getpid(), host)))
    return row_id, add_usage(conn, provider, stamp, (0, amount))


def settle_row(
    conn: Connection, row_id: int, outcome: AttemptOutcome, stamp: str, replay: bool = False
) -> Settled | None:
    """Settle the row once; None for a replayed settle that had already landed."""
    row = conn.execute(q.SELECT_FOR_SETTLE, (row_id,)).fetchone()
    if row is None:
        raise LedgerError("settle", f"no ledger row {row_id}")
    provider, started, status, reserved, settled_at, prior_cost = row
    if settled_at is not None:
        if replay and settled_at == stamp and status == outcome.status:
            return None
        raise LedgerError("settle", f"ledger row {row_id} is already settled ({status})")
    conn.execute(q.SETTLE_ROW, (*outcome_params(outcome), stamp, row_id))
    delta = settle_delta(outcome, status, reserved, prior_cost)
    return provider, reserved, add_usage(conn, provider, started, delta)


def write_entry(conn: Connection, host: str, entry: Entry, hash_key: bytes) -> int:
    """Write one queued row or settle; returns the row id it concerns."""
    if not isinstance(entry, QueuedRow):
        settle_row(conn, entry.row_id, entry.outcome, entry.stamp, replay=True)
        return entry.row_id
    start = entry.start
    identity = (start.request_id, start.attempt, entry.stamp, start.provider, entry.pid, host)
    found = conn.execute(q.FIND_ROW, identity).fetchall()
    if found:
        row_id = first_id(found)
    else:
        params = row_params(start, entry.stamp, entry.reserve_micros, entry.expires_at, hash_key)
        row_id = first_id(conn.execute(q.INSERT_ROW, (*params, entry.pid, host)))
        add_usage(conn, start.provider, entry.stamp, (0, entry.reserve_micros))
    if entry.outcome is not None and entry.settled_stamp is not None:
        settle_row(conn, row_id, entry.outcome, entry.settled_stamp, replay=True)
    return row_id


def sweep_dead_pids(conn: Connection, host: str) -> float:
    """Expire the pending rows of this host's dead processes; when to sweep next."""
    for (pid,) in conn.execute(q.PENDING_PIDS, (host,)).fetchall():
        if not alive(pid):
            expire(conn, conn.execute(q.PENDING_OF_PID, (host, pid)), "process_died")
    return time.monotonic() + 60.0


def add_usage(
    conn: Connection, provider: str, stamp: str, delta: tuple[int, ...]
) -> list[UsageRow]:
    """Add ``delta`` to the provider's month and day usage; their (period, spent, reserved)."""
    delta = delta + (0,) * (USAGE_WIDTH - len(delta))
    params = (provider, stamp[:7], *delta, provider, stamp[:10], *delta)
    return conn.execute(q.ADD_USAGE, params).fetchall()


def expire(conn: Connection, rows: Iterable[tuple[Any, ...]], reason: str) -> int:
    """Mark pending rows expired as billed: their reservations become spend; how many."""
    expired = list(rows)
    for row_id, provider, stamp, reserved in expired:
        conn.execute(q.EXPIRE_ROW, (reason, row_id))
        add_usage(conn, provider, stamp, (reserved, -reserved))  # spent at the bound
    if expired:
        rules.warn_expired(expired, reason)
    return len(expired)


def renew(conn: Connection, rows: list[int], expires_at: float) -> None:
    """Push the expiry of pending ``rows`` forward (the heartbeat's transaction)."""
    for row_id in rows:
        conn.execute(q.RENEW, (expires_at, row_id))


def first_id(rows: Iterable[tuple[Any, ...]]) -> int:
    """The id in the first row (of ``INSERT ... RETURNING id`` or a lookup)."""
    for row in rows:
        return int(row[0])
    raise LedgerError("write", "the database returned no row id")


def dict_rows(conn: Connection, query: str, *params: object) -> list[dict[str, object]]:
    """The rows of ``query`` as dicts keyed by column name."""
    cursor = conn.execute(query, params)
    return list(dicts([column.name for column in cursor.description or ()], cursor))
