"""The SQLite ledger's one connection: WAL mode, write transactions, and waiting out locks.

Threads, asyncio tasks (through threads) and processes share one ledger file. What must
always hold:

- every write is one ``BEGIN IMMEDIATE`` transaction: it takes the file's write lock
  before reading, so a budget check and the reservation it allows cannot interleave with
  another writer's; it commits whole or rolls back whole;
- a locked database is retried (exponential pause up to 50 ms) until ``busy_timeout_s``,
  then ``LedgerError`` naming the operation: never a dropped row;
- one connection per ``SQLiteConnection``, used by one thread at a time; once closed, every
  use raises ``LedgerError``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any, TypeVar

from aegis_proxy.errors import LedgerError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

T = TypeVar("T")

_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED (low byte of extended codes)


class SQLiteConnection:
    """A WAL-mode connection to ``path`` that runs work under a lock, retrying while busy."""

    def __init__(self, path: Path, busy_timeout_s: float) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = self._connect()

    def close(self) -> None:
        """Close the connection; later use raises ``LedgerError``."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def write(self, operation: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction, retried while locked."""
        deadline = time.monotonic() + self.busy_timeout_s
        conn = self._acquire(operation, deadline)
        try:
            return self._retry(operation, deadline, lambda: _transaction(conn, work))
        finally:
            self._lock.release()

    def read(
        self, operation: str, query: Callable[[sqlite3.Connection], Iterable[Any]]
    ) -> list[Any]:
        """The rows ``query`` yields, read outside any write transaction."""
        deadline = time.monotonic() + self.busy_timeout_s
        conn = self._acquire(operation, deadline)
        try:
            return self._retry(operation, deadline, lambda: list(query(conn)))
        finally:
            self._lock.release()

    def open_snapshot(self, operation: str) -> sqlite3.Connection:
        """A second, read-only connection (for long reads that must not hold up writers)."""
        try:
            return sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise LedgerError(operation, str(exc)) from exc

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

    def _acquire(self, operation: str, deadline: float) -> sqlite3.Connection:
        """Take the connection, waiting for other threads no longer than allowed."""
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
                if not is_busy(exc) or time.monotonic() >= deadline:
                    raise LedgerError(operation, self._problem(exc)) from exc
            except sqlite3.Error as exc:
                raise LedgerError(operation, f"{self.path}: {exc}") from exc
            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 2, 0.05)

    def _problem(self, exc: sqlite3.Error) -> str:
        if is_busy(exc):
            return f"{self.path} stayed locked for {self.busy_timeout_s}s ({exc})"
        return f"{self.path}: {exc}"


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says the database is locked by another connection (worth a retry)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _BUSY_CODES
    return "locked" in str(exc) or "busy" in str(exc)


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
