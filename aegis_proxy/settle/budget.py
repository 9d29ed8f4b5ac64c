"""The budget rules both ledger backends apply inside their reservation transactions.

A backend reads each period's (spent, reserved) while it holds that period's write lock
(SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: ``SELECT ... FOR UPDATE`` on the budget row),
then asks ``check_reservation``. What must always hold:

- a reservation passes only if spent + reserved + amount <= limit for the month and, when
  set, the day; a refusal is ``BudgetExceededError`` with the amounts in USD;
- a $0 reservation, or one without a budget, is never checked (``needs_check``);
- ``budget_warning`` is logged once per provider and period per process, when the spend
  (not spend + reserved) reaches the warn share, as the report's WARN flag.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from aegis_proxy.errors import BudgetExceededError
from aegis_proxy.observe.logs import get_logger
from aegis_proxy.reserve.money import limit_micros, usd
from aegis_proxy.settle.summary import UsageRow

if TYPE_CHECKING:
    from collections.abc import Mapping

    from aegis_proxy.config import AegisConfig
    from aegis_proxy.config.providers import ProviderConfig
    from aegis_proxy.settle.records import AttemptOutcome, BudgetLimit


class WarnedPeriods:
    """The (provider, period) pairs a ledger has warned about: each is warned of once.

    One per ledger object (never process-global), safe to share between threads.
    """

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def first_time(self, provider: str, period: str) -> bool:
        """True once per (provider, period); False ever after."""
        with self._lock:
            if (provider, period) in self._seen:
                return False
            self._seen.add((provider, period))
            return True


def needs_check(budget: BudgetLimit | None, amount: int) -> bool:
    """Whether reserving ``amount`` must be checked against ``budget`` (and so needs the DB)."""
    return budget is not None and amount > 0


def limited_periods(stamp: str, budget: BudgetLimit) -> list[tuple[str, int]]:
    """(period, limit) of each limit ``budget`` sets at ``stamp``: the month, then the day."""
    periods = ((stamp[:7], budget.monthly_micros), (stamp[:10], budget.daily_micros))
    return [(period, limit) for period, limit in periods if limit is not None]


def check_reservation(
    provider: str,
    amount: int,
    limits: list[tuple[str, int]],
    usage: Mapping[str, tuple[int, int]],
) -> None:
    """Raise ``BudgetExceededError`` if ``amount`` would pass a limit given (spent, reserved)."""
    for period, limit in limits:
        spent, reserved = usage.get(period, (0, 0))
        if spent + reserved + amount > limit:
            raise BudgetExceededError(
                provider, period, usd(spent), usd(reserved), usd(amount), usd(limit)
            )


def warn_if_near(
    provider: str, usage: list[UsageRow], budget: BudgetLimit, warned: WarnedPeriods
) -> None:
    """Log ``budget_warning`` the first time a period's *spend* reaches the warn share.

    Spent only (``counts="spent"``), as the report's WARN flag: money merely reserved by
    calls in flight is not spent, and warning on it fired at the first request.
    """
    for period, spent, reserved in usage:
        limit = budget.monthly_micros if len(period) == 7 else budget.daily_micros
        if not limit:
            continue
        share = spent / limit
        if share < budget.warn_share:
            continue
        if warned.first_time(provider, period):
            warn(
                "budget_warning",
                provider=provider,
                period=period,
                share=round(share, 4),
                counts="spent",
                spent_micros=spent,
                reserved_micros=reserved,
            )


def after_settle(
    budget: BudgetLimit | None,
    provider: str,
    row_id: int,
    reserved: int,
    outcome: AttemptOutcome,
    usage: list[UsageRow],
    warned: WarnedPeriods,
) -> None:
    """Warn when a cost passed its reservation, and when the budget's warn share is reached."""
    if budget is None:
        return
    if outcome.cost_micros > reserved:
        warn(
            "cost_exceeded_reservation",
            provider=provider,
            row_id=row_id,
            reserved_micros=reserved,
            cost_micros=outcome.cost_micros,
        )
    warn_if_near(provider, usage, budget, warned)


def warn_expired(expired: list[tuple[Any, ...]], reason: str) -> None:
    """Log reservations expired as billed: (id, provider, timestamp, reserved) rows."""
    providers = sorted({row[1] for row in expired})
    billed = sum(int(row[3]) for row in expired)
    warn(
        "reservations_expired_billed",
        providers=providers,
        count=len(expired),
        billed_micros=billed,
        reason=reason,
    )


def warn(event: str, **context: object) -> None:
    """Log a rare warning; a fresh logger follows the current logging configuration."""
    get_logger("aegis_proxy.ledger").warning(event, **context)


def budget_limits(config: AegisConfig) -> dict[str, BudgetLimit | None]:
    """Each provider's ledger budget (None for an unbudgeted provider)."""
    return {name: _budget_limit(p, config) for name, p in config.providers.items()}


def _budget_limit(provider: ProviderConfig, config: AegisConfig) -> BudgetLimit | None:
    from aegis_proxy.settle.records import BudgetLimit

    if not provider.budgeted:
        return None
    return BudgetLimit(
        monthly_micros=limit_micros(provider.monthly_budget_usd),
        daily_micros=limit_micros(provider.daily_budget_usd),
        warn_share=config.budgets.warn_share,
    )
