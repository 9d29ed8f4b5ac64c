"""Ledger rows that wait in memory while the shared database cannot be reached.

When PostgreSQL is down or restarting, a $0 local attempt must still be served and still
get its row. Such a row (and any settle the database could not take) waits here, in
order, until ``PostgresLedger`` writes it. What must always hold:

- the spool is bounded: past ``capacity`` entries ``add_row``/``add_settle`` raise
  ``LedgerUnavailableError``; nothing is ever dropped silently;
- a queued row has a negative provisional id; settling that id before the row is written
  settles it in memory; after it is written, ``settle`` maps it to the real row id;
- entries leave the spool only after their transaction committed (``done``); a settle
  that arrived while its row was being written is kept as a settle of the real id;
- only rows that need no budget check are queued here: a budget cannot be checked in
  memory, so a budgeted reservation is refused while the database is away.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import deque
from dataclasses import dataclass, replace

from aegis_proxy.errors import LedgerError, LedgerUnavailableError
from aegis_proxy.settle.records import AttemptOutcome, AttemptStart


@dataclass(slots=True)
class QueuedRow:
    """An attempt whose pending row is not in the database yet (``outcome``: settled since).

    Mutable, under the spool's lock only: a settle fills in ``outcome`` and ``settled_stamp``.
    """

    provisional_id: int
    start: AttemptStart
    stamp: str
    reserve_micros: int
    expires_at: float
    pid: int
    outcome: AttemptOutcome | None = None
    settled_stamp: str | None = None


@dataclass(frozen=True, slots=True)
class QueuedSettle:
    """The outcome of a row that is in the database, not yet written to it."""

    row_id: int
    outcome: AttemptOutcome
    stamp: str


Entry = QueuedRow | QueuedSettle


class Spool:
    """A bounded FIFO of entries to write, with the provisional ids of the rows among them."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("the spool needs a capacity of at least 1")
        self.capacity = capacity
        self._lock = threading.Lock()
        self._entries: deque[Entry] = deque()
        self._rows: dict[int, QueuedRow] = {}  # provisional id -> its entry, while queued
        self._written: dict[int, int] = {}  # provisional id -> row id, until it is settled
        self._ids = itertools.count(-1, -1)

    def __len__(self) -> int:
        return len(self._entries)

    def add_row(
        self, start: AttemptStart, stamp: str, reserve_micros: int, expires_at: float
    ) -> int:
        """Queue a pending row for ``start``; returns its provisional (negative) id."""
        with self._lock:
            self._check_room("reserve")
            row_id = next(self._ids)
            entry = QueuedRow(row_id, start, stamp, reserve_micros, expires_at, os.getpid())
            self._rows[row_id] = entry
            self._entries.append(entry)
            return row_id

    def add_settle(self, row_id: int, outcome: AttemptOutcome, stamp: str) -> None:
        """Queue the settle of row ``row_id``, which the database already holds."""
        with self._lock:
            self._check_room("settle")
            self._entries.append(QueuedSettle(row_id, outcome, stamp))

    def settle(self, provisional_id: int, outcome: AttemptOutcome, stamp: str) -> int | None:
        """Settle a queued row in memory (None), or the real row id it was written as."""
        with self._lock:
            entry = self._rows.get(provisional_id)
            if entry is None:
                if provisional_id in self._written:
                    return self._written.pop(provisional_id)
                raise LedgerError("settle", f"no ledger row {provisional_id}")
            if entry.outcome is not None:
                status = entry.outcome.status
                raise LedgerError(
                    "settle", f"ledger row {provisional_id} is already settled ({status})"
                )
            entry.outcome, entry.settled_stamp = outcome, stamp
            return None

    def head(self, count: int) -> list[Entry]:
        """Copies of the first ``count`` entries, left queued until ``done`` is called."""
        with self._lock:
            return [_snapshot(entry) for entry in itertools.islice(self._entries, count)]

    def done(self, written: list[tuple[Entry, int]]) -> None:
        """Drop the written head entries; ``written`` pairs each copy with its real row id."""
        with self._lock:
            for entry, row_id in written:
                self._entries.popleft()
                if isinstance(entry, QueuedRow):
                    self._row_written(entry, row_id)

    def _row_written(self, written: QueuedRow, row_id: int) -> None:
        """Keep a settle that came while the row was written; remember its id otherwise."""
        live = self._rows.pop(written.provisional_id)
        if written.outcome is not None:
            return
        if live.outcome is not None and live.settled_stamp is not None:
            self._entries.append(QueuedSettle(row_id, live.outcome, live.settled_stamp))
        else:
            self._written[written.provisional_id] = row_id

    def _check_room(self, operation: str) -> None:
        if len(self._entries) >= self.capacity:
            problem = f"the database is unreachable and {self.capacity} rows already wait"
            raise LedgerUnavailableError(operation, problem, len(self._entries))


def _snapshot(entry: Entry) -> Entry:
    return replace(entry) if isinstance(entry, QueuedRow) else entry
