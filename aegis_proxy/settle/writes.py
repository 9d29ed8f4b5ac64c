"""Writing an attempt's row from an event loop, without ever waiting on a lock there.

Why it exists: the attempt loop runs on the caller's event loop, and a ledger write can
wait (on a SQLite lock, on PostgreSQL's network). What must always hold:
- a ledger that waits on the network (``blocks_event_loop``) is called from a worker
  thread; a local one is tried once without waiting (``wait=False``), then from a worker
  thread if it met a lock;
- a request cancelled while its reservation is being written still gets its row settled,
  as cancelled, once the write is done;
- a settle that can be neither written nor queued is logged loudly (the row then expires,
  billed at its bound): it never costs the caller the answer it paid for;
- a settle handed to a worker thread unawaited is kept referenced until it is done.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aegis_proxy import errors
from aegis_proxy.observe.logs import get_logger
from aegis_proxy.settle.records import AttemptOutcome

if TYPE_CHECKING:
    from aegis_proxy.settle.backend import LedgerBackend
    from aegis_proxy.settle.records import AttemptStart, BudgetLimit

log = get_logger("aegis_proxy")


class RowWriter:
    """Reserves and settles one ledger's attempt rows for an event loop."""

    def __init__(self, ledger: LedgerBackend) -> None:
        self.ledger = ledger
        self._pending: set[asyncio.Future[None]] = set()

    async def reserve(self, start: AttemptStart, amount: int, budget: BudgetLimit | None) -> int:
        """The ledger's reservation of ``amount`` for ``start``; its row id."""
        ledger = self.ledger
        if not ledger.blocks_event_loop:
            try:
                return ledger.reserve(start, amount, budget, wait=False)
            except errors.LedgerBusyError:
                pass  # locked: wait for it in a worker thread, not on the event loop
        writing = asyncio.ensure_future(asyncio.to_thread(ledger.reserve, start, amount, budget))
        try:
            return await asyncio.shield(writing)
        except asyncio.CancelledError:
            writing.add_done_callback(lambda done: _settle_cancelled(ledger, done))
            raise

    async def settle(self, row_id: int, outcome: AttemptOutcome) -> None:
        """Settle the row, awaiting a worker thread when the ledger would wait."""
        ledger = self.ledger
        try:
            if ledger.blocks_event_loop:
                await asyncio.to_thread(ledger.settle, row_id, outcome)
                return
            try:
                ledger.settle(row_id, outcome, wait=False)
            except errors.LedgerBusyError:
                await asyncio.to_thread(ledger.settle, row_id, outcome)
        except errors.LedgerError as exc:  # the answer is the caller's all the same
            _settle_lost(row_id, exc)

    def settle_now(self, row_id: int, outcome: AttemptOutcome) -> None:
        """Settle without awaiting, for where an ``await`` cannot be trusted to finish.

        A ledger that meets a lock gets the settle from a worker thread, unawaited.
        """
        ledger = self.ledger
        try:
            ledger.settle(row_id, outcome, wait=False)
        except errors.LedgerBusyError:
            loop = asyncio.get_running_loop()
            waiting = loop.run_in_executor(None, _settle_or_log, ledger, row_id, outcome)
            self._pending.add(waiting)
            waiting.add_done_callback(self._pending.discard)
        except errors.LedgerError as exc:
            _settle_lost(row_id, exc)


def _settle_cancelled(ledger: LedgerBackend, reserving: asyncio.Future[int]) -> None:
    """Settle, as cancelled, a row whose reservation finished after its request was cancelled."""
    if reserving.cancelled() or reserving.exception() is not None:
        return  # nothing was written, or the failure was the request's own to see
    try:
        ledger.settle(reserving.result(), AttemptOutcome("cancelled", 0.0, error_type="cancelled"))
    except errors.LedgerError as exc:  # the row stays pending: its reservation expires
        log.error("cancelled_reservation_unsettled", problem=exc.problem)


def _settle_or_log(ledger: LedgerBackend, row_id: int, outcome: AttemptOutcome) -> None:
    try:
        ledger.settle(row_id, outcome)
    except errors.LedgerError as exc:
        _settle_lost(row_id, exc)


def _settle_lost(row_id: int, exc: errors.LedgerError) -> None:
    """The settle could not be written nor queued: the row expires billed at its bound."""
    log.error("ledger_settle_unwritten", row_id=row_id, problem=exc.problem)
