"""A live process keeps its reservations alive: a thread renews the TTL of every open row.

A reservation must last as long as its call, or other calls reserve the same money while
the first one still runs (a call slower than the TTL let spend reach 192% of a budget).
Both ledgers hold this: ``held`` after a reservation, ``released`` once its settle is
written; every ``ttl_s / 3`` the thread pushes ``expires_at`` of the held rows to now +
``ttl_s``. What must always hold:

- a row held by a live ledger never expires, however long its call takes (a stream,
  a slow provider, a settle waiting in a backlog);
- a dead process renews nothing: its rows expire after at most ``ttl_s`` (sooner on its
  own host, where the pid sweep sees it died), and expiry bills them at their bound;
- one write per ledger every ``ttl_s / 3``, never one per call; a renewal that fails
  (database away or locked) is logged and tried again at the next beat.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from aegis_proxy.observe.logs import get_logger

if TYPE_CHECKING:
    from collections.abc import Callable

_log = get_logger("aegis_proxy.ledger")


class Heartbeat:
    """The open rows of one ledger object, and the daemon thread that renews them."""

    def __init__(self, ttl_s: float, renew: Callable[[list[int], float], None]) -> None:
        self.ttl_s = ttl_s
        self.beats = 0
        """Renewals written so far (for tests and metrics)."""
        self._renew = renew
        self._rows: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def held(self, row_id: int) -> None:
        """Keep renewing ``row_id`` until ``released``; starts the thread on first use."""
        with self._lock:
            self._rows.add(row_id)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="aegis-ledger-heartbeat", daemon=True
                )
                self._thread.start()

    def released(self, row_id: int) -> None:
        """Stop renewing ``row_id`` (its settle is written)."""
        with self._lock:
            self._rows.discard(row_id)

    def stop(self) -> None:
        """End the thread (idempotent) and wait for it."""
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def beat(self) -> int:
        """Renew the held rows now; how many."""
        with self._lock:
            rows = sorted(self._rows)
        if rows:
            self._renew(rows, time.time() + self.ttl_s)
            self.beats += 1
        return len(rows)

    def _run(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.beat()
            except Exception as exc:  # a daemon thread must never die silently
                _log.warning("ledger_heartbeat_failed", rows=len(self._rows), problem=str(exc))
