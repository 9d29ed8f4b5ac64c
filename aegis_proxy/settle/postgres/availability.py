"""Whether the ledger's database answers, and the thread that writes the spool when it does.

``PostgresLedger`` asks ``reachable`` before each call: while the database is known to be
away nothing waits on it (a budgeted reservation fails over at once). What must always hold:

- the first failure logs ``ledger_unavailable`` once and starts one recovery thread; the
  thread probes every ``retry_interval_s``, writes the spool once the server answers, and
  ends only when the server answers and the spool is empty;
- one writer at a time (``flush``), entries removed only after their commit;
- ``close`` stops the thread and writes what is left, retrying until ``close_timeout_s``;
  if rows remain it logs ``ledger_rows_unwritten`` and raises ``LedgerUnavailableError``.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from aegis_proxy.errors import LedgerUnavailableError
from aegis_proxy.observe.logs import get_logger

if TYPE_CHECKING:
    from collections.abc import Callable

    from aegis_proxy.settle.postgres.spool import Entry, Spool

Written = list[tuple["Entry", int]]
_FLUSH_BATCH = 200
_log = get_logger("aegis_proxy.ledger")


class Availability:
    """The reachable flag, the spool's writer thread, and the final drain."""

    def __init__(
        self,
        where: str,
        spool: Spool,
        connect: Callable[[], None],
        write: Callable[[list[Entry]], Written],
        retry_interval_s: float,
        close_timeout_s: float,
    ) -> None:
        self.where = where
        self.reachable = False
        self._spool = spool
        self._connect = connect
        self._write = write
        self._retry_interval_s = retry_interval_s
        self._close_timeout_s = close_timeout_s
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._down_logged = False

    def connect(self) -> None:
        """Probe (and prepare) the database; reachable afterwards, or LedgerUnavailableError."""
        self._connect()
        self.reachable, self._down_logged = True, False

    def went_away(self, exc: LedgerUnavailableError) -> None:
        """Note that the database stopped answering, and start the recovery thread."""
        with self._lock:
            self.reachable = False
            announce, self._down_logged = not self._down_logged, True
        if announce:  # once per outage, not at every probe
            _log.warning("ledger_unavailable", where=self.where, problem=exc.problem)
        self.start_recovery()

    def start_recovery(self) -> None:
        """Make sure a thread is writing the spool (no-op once closing)."""
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._recover, name="aegis-ledger-recovery", daemon=True
                )
                self._thread.start()

    def flush(self) -> int:
        """Write the spool now; how many entries. ``LedgerUnavailableError`` if still away."""
        written = 0
        with self._flushing:
            while batch := self._spool.head(_FLUSH_BATCH):
                done = self._write(batch)
                self._spool.done(done)
                written += len(done)
        if written:
            _log.info("ledger_rows_flushed", rows=written, where=self.where)
        return written

    def close(self) -> None:
        """Stop the thread, then write what is left or raise ``LedgerUnavailableError``."""
        with self._lock:
            self._stop.set()
            thread = self._thread
        if thread is not None:
            thread.join()
        deadline = time.monotonic() + self._close_timeout_s
        while self._spool:
            try:
                self._write_all()
            except LedgerUnavailableError as exc:
                if time.monotonic() < deadline:
                    time.sleep(self._retry_interval_s)
                    continue
                count = len(self._spool)
                _log.error("ledger_rows_unwritten", where=self.where, queued_rows=count)
                problem = f"{count} queued rows could not be written: {exc.problem}"
                raise LedgerUnavailableError("close", problem, count) from exc

    def _write_all(self) -> None:
        if not self.reachable:
            self.connect()
            _log.info("ledger_available", where=self.where, queued_rows=len(self._spool))
        self.flush()

    def _recover(self) -> None:
        """Until the server answers and the spool is empty: probe, then write the spool."""
        while not self._stop.wait(self._retry_interval_s):
            try:
                self._write_all()
            except LedgerUnavailableError as exc:
                self.went_away(exc)
                continue
            except Exception as exc:  # a daemon thread must never die silently
                _log.error("ledger_recovery_failed", where=self.where, problem=str(exc))
                continue
            with self._lock:
                if self.reachable and not self._spool:
                    self._thread = None
                    return
