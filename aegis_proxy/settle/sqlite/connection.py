"""The SQLite ledger's one connection: WAL mode, write transactions, and waiting out locks.

Threads, asyncio tasks (through threads) and processes share one ledger file. What must
always hold:

- every write is one ``BEGIN IMMEDIATE`` transaction: it takes the file's write lock
  before reading, so a budget check and the reservation it allows cannot interleave with
  another writer's; it commits whole or rolls back whole;
- a locked database is retried (exponential pause up to 50 ms) until ``busy_timeout_s``,
  then ``LedgerError`` naming the operation: never a dropped row. SQLite's own busy
  handler is off (timeout 0): every wait is this loop's, so a caller on an event loop can
  ask for one try without waiting (``wait=False``: ``LedgerBusyError`` at the first lock,
  and it then retries from a worker thread);
- one connection per ``SQLiteConnection``, used by one thread at a time; once closed, every
  use raises ``LedgerError``;
- checkpoints (copying the WAL back into the database file, with its two fsyncs) stay off
  the write path as far as they can: a thread with its own connection runs them when the
  ledger falls idle (``Checkpointer``), and a COMMIT runs one only past
  ``AUTOCHECKPOINT_PAGES``. A checkpoint copies committed pages only: no row depends on it,
  and one that fails or is cut short is simply run again later. ``close`` stops and joins
  the thread before it closes the writer's connection.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, TypeVar

from aegis_proxy.errors import LedgerBusyError, LedgerError
from aegis_proxy.observe.logs import get_logger

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

T = TypeVar("T")

_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED (low byte of extended codes)
_UNWRITABLE_CODES = frozenset({5, 6, 8, 10, 13, 14})  # + READONLY, IOERR, FULL, CANTOPEN
AUTOCHECKPOINT_PAGES = 10_000
"""WAL pages after which a COMMIT checkpoints. SQLite's default, 1,000, put a checkpoint's
fsyncs into ~1 proxy request in 75; this mark (~40 MB of WAL) into ~1 in 500 under load."""
CHECKPOINT_IDLE_S = 0.25
"""A pause without commits after which the checkpoint thread copies the WAL back."""
CHECKPOINT_INTERVAL_S = 0.5
"""How often the checkpoint thread looks for such a pause."""

log = get_logger("aegis_proxy.ledger")


class SQLiteConnection:
    """A WAL-mode connection to ``path`` that runs work under a lock, retrying while busy."""

    def __init__(self, path: Path, busy_timeout_s: float, *, read_only: bool = False) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self.read_only = read_only
        """Opened with ``mode=ro``: an existing file only, nothing created, writes refused."""
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = self._connect()
        self._checkpointer = Checkpointer(path, weakref.ref(self))

    @property
    def checkpoints(self) -> int:
        """Checkpoints the background thread has run on this file so far."""
        return self._checkpointer.checkpoints

    def close(self) -> None:
        """Stop the checkpoint thread, then close the connection; later use raises."""
        self._checkpointer.stop()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def write(
        self, operation: str, work: Callable[[sqlite3.Connection], T], *, wait: bool = True
    ) -> T:
        """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction, retried while locked.

        ``wait=False``: one try, ``LedgerBusyError`` at once if the file or the connection
        is busy (for an event loop, which then retries from a worker thread).
        """
        if self.read_only:
            raise LedgerError(operation, f"{self.path} is open read-only")
        if not wait:
            return self._write_now(operation, work)
        deadline = time.monotonic() + self.busy_timeout_s
        conn = self._acquire(operation, deadline)
        try:
            result = self._retry(operation, deadline, lambda: _transaction(conn, work))
            self._checkpointer.committed()
            return result
        finally:
            self._lock.release()

    def _write_now(self, operation: str, work: Callable[[sqlite3.Connection], T]) -> T:
        if not self._lock.acquire(blocking=False):
            raise LedgerBusyError(operation, f"{self.path}: in use by another thread")
        try:
            if self._conn is None:
                raise LedgerError(operation, f"ledger {self.path} is closed")
            try:
                result = _transaction(self._conn, work)
            except sqlite3.OperationalError as exc:
                if is_busy(exc):
                    raise LedgerBusyError(operation, self._problem(exc)) from exc
                raise LedgerError(operation, self._problem(exc)) from exc
            except sqlite3.Error as exc:
                raise LedgerError(operation, f"{self.path}: {exc}") from exc
            self._checkpointer.committed()
            return result
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
        if self.read_only:
            return self._connect_read_only()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                timeout=0,  # no busy wait inside SQLite: ``_retry`` waits, where it may
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
            conn.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_read_only(self) -> sqlite3.Connection:
        """A ``mode=ro`` connection: a missing file is an error, never a new empty ledger."""
        if not self.path.is_file():
            raise LedgerError("open", f"{self.path}: no such ledger file")
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        try:
            return sqlite3.connect(
                uri, uri=True, timeout=self.busy_timeout_s, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise LedgerError("open", f"{self.path}: {exc}") from exc

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


class Checkpointer:
    """A daemon thread that checkpoints the WAL (``PASSIVE``) once its ledger falls idle.

    A checkpoint that runs while commits keep coming never catches up with them, and then
    SQLite cannot start the WAL over: measured under steady load, such a thread made the
    writer checkpoint inside its own commits more often, not less. So this one waits for a
    pause: ``idle_s`` without a commit in this process (checked every ``interval_s``);
    the WAL is then copied whole and the next write starts it over. Under steady load the
    WAL grows to ``AUTOCHECKPOINT_PAGES`` and one commit in that many pages checkpoints.
    A checkpoint another connection runs is left to it (``PASSIVE`` never waits). The
    thread ends on ``stop`` (idempotent; it returns once the thread closed its connection)
    or when its ledger connection is garbage collected unclosed.
    """

    def __init__(
        self,
        path: Path,
        owner: weakref.ref[Any],
        idle_s: float = CHECKPOINT_IDLE_S,
        interval_s: float = CHECKPOINT_INTERVAL_S,
    ) -> None:
        self.path = path
        self.idle_s = idle_s
        self.interval_s = interval_s
        self.checkpoints = 0
        """Checkpoints this thread ran so far."""
        self._owner = owner
        self._dirty = False  # a commit since the last checkpoint (set under the write lock)
        self._last_commit = 0.0
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aegis-ledger-checkpoint")
        self._thread.daemon = True  # a ledger never closed must not hold the process open
        self._thread.start()

    def committed(self) -> None:
        """Note a commit (cheap: the write path calls it every time)."""
        self._last_commit = time.monotonic()
        self._dirty = True

    def stop(self) -> None:
        """End the thread and wait until it has closed its connection."""
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._wake.wait(self.interval_s) and self._owner() is not None:
                if self._dirty and time.monotonic() - self._last_commit >= self.idle_s:
                    self._dirty = False
                    conn = conn or self._connect()
                    self._checkpoint(conn)
        finally:
            if conn is not None:
                conn.close()

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=rw", uri=True)

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:  # busy: another connection checkpoints; else next pause
            if not is_busy(exc):
                log.warning("ledger_checkpoint_failed", path=str(self.path), error=str(exc))
            return
        self.checkpoints += 1


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says the database is locked by another connection (worth a retry)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _BUSY_CODES
    return "locked" in str(exc) or "busy" in str(exc)


def unwritable(exc: LedgerError) -> bool:
    """Whether a failed write may succeed later unchanged: a lock held too long (by another
    thread or process), a full disk, a read-only or failing file. Such a settle waits."""
    cause = exc.__cause__
    if cause is None:
        return "busy in this process" in exc.problem
    code = getattr(cause, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _UNWRITABLE_CODES
    text = str(cause)
    return any(word in text for word in ("locked", "busy", "full", "readonly", "disk I/O"))


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
