"""The PostgreSQL ledger's connections: a pool, one transaction per call, and error mapping.

Every psycopg exception raised while the ledger works is mapped here, and only here, onto
the ledger's own errors. What must always hold:

- ``run`` is one transaction on a pooled connection: committed whole or rolled back whole;
  a deadlock or serialisation failure (SQLSTATE class 40) is retried until
  ``busy_timeout_s``, a row lock held longer than that is ``LedgerError`` ("stayed locked");
- a lost or refused connection, a server shutting down or starting up, or no connection
  within the pool's timeout is ``LedgerUnavailableError``: the caller decides what may wait
  in memory; any other database error is ``LedgerError``;
- messages and logs name the server as ``postgresql://host:port/dbname``: never a password.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from aegis_proxy.errors import LedgerError, LedgerUnavailableError

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")
Connection = psycopg.Connection[TupleRow]

_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "53300"})  # shutdown, starting, full


class PostgresPool:
    """A small connection pool to one database, opened lazily, safe to share between threads."""

    def __init__(
        self, url: str, *, busy_timeout_s: float, connect_timeout_s: float, max_size: int
    ) -> None:
        self.url = url
        self.where = describe(url)
        self.busy_timeout_s = busy_timeout_s
        self._connect_timeout = max(2, math.ceil(connect_timeout_s))  # libpq's floor is 2 s
        self._lock_timeout_ms = max(1, round(busy_timeout_s * 1000))
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            url,
            min_size=0,  # nothing connects (or logs reconnection failures) until needed
            max_size=max_size,
            open=True,
            timeout=busy_timeout_s,
            kwargs={
                "autocommit": True,
                "connect_timeout": self._connect_timeout,
                "application_name": "aegis_proxy_ledger",
            },
            configure=self._configure,
            name="aegis-ledger",
        )

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.close()

    def run(self, operation: str, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one transaction, retried on deadlock or serialisation failure."""
        deadline = time.monotonic() + self.busy_timeout_s
        pause = 0.001
        while True:
            try:
                with self._pool.connection() as conn, conn.transaction():
                    return work(conn)
            except psycopg.Error as exc:
                if not _retryable(exc) or time.monotonic() >= deadline:
                    raise self.error(operation, exc) from exc
            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 2, 0.05)

    def probe(self) -> None:
        """Raise ``LedgerUnavailableError`` unless the server answers a fresh connection.

        Then the pool drops connections the server no longer knows (after a restart), so
        the next call does not pick one up and fail.
        """
        try:
            with self.connect(autocommit=True) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            raise LedgerUnavailableError("probe", f"{self.where}: {exc}") from exc
        self._pool.check()

    def connect(self, *, autocommit: bool) -> Connection:
        """A connection of its own, outside the pool (for probes and long snapshots)."""
        return psycopg.connect(
            self.url, autocommit=autocommit, connect_timeout=self._connect_timeout
        )

    def error(self, operation: str, exc: psycopg.Error) -> LedgerError:
        """The ledger error for ``exc``: unavailable when the server cannot be reached."""
        if is_unavailable(exc):
            return LedgerUnavailableError(operation, f"{self.where} unreachable: {exc}")
        if exc.sqlstate == "55P03":  # lock_not_available: lock_timeout passed
            return LedgerError(
                operation, f"{self.where} stayed locked for {self.busy_timeout_s}s ({exc})"
            )
        return LedgerError(operation, f"{self.where}: {exc}")

    def _configure(self, conn: Connection) -> None:
        conn.execute(f"SET lock_timeout = {self._lock_timeout_ms}")


def is_unavailable(exc: psycopg.Error) -> bool:
    """Whether ``exc`` means the server is gone, refusing, or not answering in time."""
    if isinstance(exc, PoolTimeout | psycopg.InterfaceError):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in _UNAVAILABLE_STATES


def describe(url: str) -> str:
    """``postgresql://host:port/dbname`` of ``url``, without user or password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return "postgresql://(unparsable URL)"
    host, port = parts.get("host") or "localhost", parts.get("port") or 5432
    return f"postgresql://{host}:{port}/{parts.get('dbname') or ''}"


def _retryable(exc: psycopg.Error) -> bool:
    return (exc.sqlstate or "").startswith("40")  # serialization_failure, deadlock_detected
