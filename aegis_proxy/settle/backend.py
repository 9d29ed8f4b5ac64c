"""The ledger as the proxy, the CLI and metrics see it, whatever stores the rows.

What must always hold: every backend (``sqlite.ledger.Ledger``, ``postgres.ledger.
PostgresLedger``) keeps the invariants of ``aegis_proxy.settle.sqlite.ledger``'s docstring:
reservations checked and written in one transaction, one row per attempt settled once,
unknown outcomes billed at their bound, open reservations renewed while their process
lives, nothing dropped silently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from datetime import datetime

    from aegis_proxy.settle.records import AttemptOutcome, AttemptStart, BudgetLimit, PrivacyRefusal
    from aegis_proxy.settle.summary import ProviderMonth


class LedgerBackend(Protocol):
    """The ledger as the proxy, the CLI and metrics see it, whatever stores the rows."""

    blocks_event_loop: bool
    """Whether a write waits on the network: the proxy then calls it from a worker thread."""

    @property
    def queued_rows(self) -> int:
        """Rows (and settles) waiting in memory for the database; 0 when nothing waits."""
        ...

    def reserve(
        self,
        start: AttemptStart,
        reserve_micros: int,
        budget: BudgetLimit | None,
        now: datetime | None = None,
        *,
        wait: bool = True,
    ) -> int: ...

    def settle(
        self,
        row_id: int,
        outcome: AttemptOutcome,
        now: datetime | None = None,
        *,
        wait: bool = True,
    ) -> None:
        """Settle once; a settle the database cannot take now waits in memory (its
        reservation held) and is written later. ``wait=False``: ``LedgerBusyError`` at the
        first lock instead of waiting (only a backend that does not block the loop)."""
        ...

    def budget_state(self, provider: str, period: str) -> tuple[int, int]: ...

    def monthly_summary(
        self,
        month: str | None = None,
        budgets: Mapping[str, BudgetLimit | None] | None = None,
        now: datetime | None = None,
    ) -> list[ProviderMonth]: ...

    def export_rows(self, month: str) -> Iterator[dict[str, object]]: ...

    def rows_for_request(self, request_id: str) -> list[dict[str, object]]: ...

    def rebuild_usage(self) -> None: ...

    def record_refusal(self, refusal: PrivacyRefusal, now: datetime | None = None) -> None: ...

    def privacy_rows(self, month: str) -> list[dict[str, object]]: ...

    def refusal_rows(self, month: str) -> list[dict[str, object]]: ...

    def privacy_breaches(self) -> list[dict[str, object]]: ...

    def close(self) -> None: ...

    def __enter__(self) -> LedgerBackend: ...

    def __exit__(self, *exc_info: object) -> None: ...
