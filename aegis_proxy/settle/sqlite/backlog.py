"""Settles the ledger file could not take when they came, written later, exactly once.

A provider call that was paid for must reach its caller even when its settle cannot be
written now: another process holds the write lock past the busy timeout, or the disk is
full. Such a settle waits here (memory) and a thread writes it once the file accepts
writes again. What must always hold:

- bounded: past ``capacity`` settles, ``add`` raises ``LedgerError`` (the row then stays
  pending and expires billed at its bound: the budget is still safe);
- loud: every queued settle logs ``ledger_settle_queued`` (error level) with the count,
  and ``len()`` is the gauge metrics read (``queued_rows``);
- order kept, each settle removed only after its transaction committed; writing one
  twice changes nothing the second time (the ledger's settle is idempotent for a replay);
- its row's reservation stays held (and renewed) until the settle lands;
- ``close`` writes what is left, retrying until its timeout, or raises naming how many
  settles are still unwritten.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from aegis_proxy.errors import LedgerError
from aegis_proxy.observe.logs import get_logger

if TYPE_CHECKING:
    from collections.abc import Callable

    from aegis_proxy.settle.records import AttemptOutcome

_log = get_logger("aegis_proxy.ledger")
QueuedSettle = tuple[int, "AttemptOutcome", str]


class Backlog:
    """A bounded FIFO of (row id, outcome, settled_at) and the thread that writes it."""

    def __init__(
        self,
        write: Callable[[int, AttemptOutcome, str], None],
        capacity: int = 10_000,
        retry_interval_s: float = 0.25,
    ) -> None:
        if capacity < 1 or retry_interval_s <= 0:
            raise ValueError("the backlog needs capacity >= 1 and retry_interval_s > 0")
        self.capacity = capacity
        self.retry_interval_s = retry_interval_s
        self.written = 0
        """Settles written from the backlog so far."""
        self._write = write
        self._entries: deque[QueuedSettle] = deque()
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, row_id: int, outcome: AttemptOutcome, stamp: str, problem: str) -> None:
        """Queue the settle of ``row_id``; ``LedgerError`` when the backlog is full."""
        with self._lock:
            if len(self._entries) >= self.capacity:
                raise LedgerError("settle", f"{problem}; and {self.capacity} settles already wait")
            self._entries.append((row_id, outcome, stamp))
            queued = len(self._entries)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="aegis-ledger-backlog", daemon=True
                )
                self._thread.start()
        _log.error("ledger_settle_queued", row_id=row_id, queued_rows=queued, problem=problem)

    def flush(self) -> int:
        """Write the queued settles in order until one fails (``LedgerError``); how many."""
        done = 0
        with self._flushing:
            while self._entries:
                row_id, outcome, stamp = self._entries[0]
                self._write(row_id, outcome, stamp)
                with self._lock:
                    self._entries.popleft()
                done += 1
        if done:
            self.written += done
            _log.warning("ledger_backlog_written", rows=done, queued_rows=len(self._entries))
        return done

    def close(self, timeout_s: float) -> None:
        """Stop the thread, then write what is left or raise ``LedgerError`` naming the count."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        deadline = time.monotonic() + timeout_s
        while self._entries:
            try:
                self.flush()
            except LedgerError as exc:
                if time.monotonic() < deadline:
                    time.sleep(self.retry_interval_s)
                    continue
                count = len(self._entries)
                _log.error("ledger_rows_unwritten", queued_rows=count, problem=exc.problem)
                problem = f"{count} settles could not be written: {exc.problem}"
                raise LedgerError("close", problem) from exc

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.retry_interval_s)
            try:
                self.flush()
            except LedgerError:
                continue  # still locked or full: the next round tries again
            except Exception as exc:  # a daemon thread must never die silently
                _log.error("ledger_backlog_failed", problem=str(exc))
                continue
            with self._lock:
                if not self._entries:
                    self._thread = None
                    return
