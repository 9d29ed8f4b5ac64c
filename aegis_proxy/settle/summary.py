"""The monthly summary of a provider: attempts, tokens, spend against its budget.

Both ledger backends build it from the same two queries' rows; the CLI renders it
(``aegis_proxy.reports.render``). What must always hold:
- money is integer micro-dollars and ``Decimal``; it is rounded only for display;
- a provider is flagged ``OVER`` when its spend reached its monthly budget and ``WARN``
  from its warn share on: both count what is *spent* (settled costs, and reservations
  expired as billed), never what is only reserved; ``PROJECTED_OVER`` is added when its
  month-end projection passes the budget, ``SUSPECT`` when the provider billed an attempt
  above its reserved bound; the projection is linear in the elapsed part of the month;
- the cache hit ratio is hits / attempts served ('ok', hits included); none without any.
This module imports only the standard library: ``aegis-proxy report`` uses it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aegis_proxy.reserve.money import usd

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from decimal import Decimal

    from aegis_proxy.settle.records import BudgetLimit

UsageRow = tuple[str, int, int]
"""(period, spent_micros, reserved_micros) of one ``budget_usage`` row."""

_MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")


@dataclass(frozen=True, slots=True)
class ProviderMonth:
    """One provider's month: attempts, tokens, spend and how much of its budget is used."""

    provider: str
    month: str
    requests: int
    """Attempts settled 'ok'."""
    errors: int
    cancelled: int
    in_flight: int
    """Attempts still 'pending' (their money is in ``reserved_micros``)."""
    expired: int
    """Reservations that expired (their process died or their TTL passed)."""
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    reasoning_tokens: int
    spend_micros: int
    reserved_micros: int
    projected_micros: int
    """Month-end spend at the current pace (the spend itself for a past month)."""
    budget_micros: int | None = None
    warn_share: float = 0.8
    cache_hits: int = 0
    """Attempts served from the response cache (at cost 0); counted in ``requests`` too."""
    expired_billed: int = 0
    """Of ``expired``: reservations spent at their bound (outcome unknown, maybe billed)."""
    overshoots: int = 0
    """Attempts the provider billed above the bound reserved for them (usage that lies)."""

    @property
    def spend_usd(self) -> Decimal:
        return usd(self.spend_micros)

    @property
    def budget_usd(self) -> Decimal | None:
        return None if self.budget_micros is None else usd(self.budget_micros)

    @property
    def projected_usd(self) -> Decimal:
        return usd(self.projected_micros)

    @property
    def share_used(self) -> float | None:
        """Spend / budget; None without a budget; 1.0 for a $0 budget (nothing allowed)."""
        if self.budget_micros is None:
            return None
        if self.budget_micros == 0:
            return 1.0
        return self.spend_micros / self.budget_micros

    @property
    def hit_ratio(self) -> float | None:
        """Share of the served attempts that the response cache served; None if none."""
        return self.cache_hits / self.requests if self.requests else None

    @property
    def warn(self) -> bool:
        share = self.share_used
        return share is not None and share >= self.warn_share

    @property
    def projected_over(self) -> bool:
        """Whether the month-end projection passes the budget."""
        return self.budget_micros is not None and self.projected_micros > self.budget_micros

    @property
    def suspect(self) -> bool:
        """Whether the provider billed an attempt above its reserved bound this month."""
        return self.overshoots > 0

    @property
    def flag(self) -> str:
        """'OVER' (spent >= budget) or 'WARN' (spent past the warn share), then
        'PROJECTED_OVER' (the month-end projection passes the budget) and 'SUSPECT';
        comma-separated, or ''. Spent only: money merely reserved raises no flag.
        """
        share = self.share_used
        flags: list[str] = []
        if share is not None and share >= 1.0:
            flags.append("OVER")
        elif self.warn:
            flags.append("WARN")
        if self.projected_over and "OVER" not in flags:
            flags.append("PROJECTED_OVER")
        if self.suspect:
            flags.append("SUSPECT")
        return ",".join(flags)

    def to_dict(self) -> dict[str, object]:
        """JSON-able values: exact integer micro-dollars, and USD as floats for reading."""
        data: dict[str, object] = asdict(self)
        data["spend_usd"] = float(self.spend_usd)
        data["budget_usd"] = None if self.budget_usd is None else float(self.budget_usd)
        data["projected_usd"] = float(self.projected_usd)
        data["share_used"] = self.share_used
        data["warn"] = self.warn
        data["projected_over"] = self.projected_over
        data["flag"] = self.flag
        data["flag_counts"] = "spent"
        data["suspect"] = self.suspect
        data["hit_ratio"] = self.hit_ratio
        return data


def check_month(month: str) -> None:
    """Raise ValueError unless ``month`` is 'YYYY-MM'."""
    if not _MONTH.fullmatch(month):
        raise ValueError(f"month must be YYYY-MM: {month!r}")


def project_month_end(spend_micros: int, month: str, now: datetime) -> int:
    """Linear month-end projection of ``spend_micros`` if ``now`` is within ``month``."""
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    end = (start + timedelta(days=32)).replace(day=1)
    if not start < now < end:
        return spend_micros
    elapsed = (now - start) // timedelta(microseconds=1)
    whole = (end - start) // timedelta(microseconds=1)
    return -(-spend_micros * whole // elapsed)  # ceiling division


def build_summary(
    month: str,
    now: datetime,
    usage: Iterable[Sequence[Any]],
    open_rows: Iterable[Sequence[Any]],
    limits: Mapping[str, int | None],
    warn_shares: Mapping[str, float],
) -> list[ProviderMonth]:
    """ProviderMonth records from ``budget_usage`` rows and (provider, status, count) rows."""
    counts: dict[tuple[str, str], int] = {}
    for provider, status, count in open_rows:
        counts[provider, status] = count
    by_provider = {row[0]: list(row[1:]) for row in usage}
    names = sorted(by_provider.keys() | limits.keys())
    return [
        _provider_month(
            name, month, now, by_provider.get(name, [0] * 11), counts, limits, warn_shares
        )
        for name in names
    ]


def _provider_month(
    name: str,
    month: str,
    now: datetime,
    values: list[int],
    counts: Mapping[tuple[str, str], int],
    limits: Mapping[str, int | None],
    warn_shares: Mapping[str, float],
) -> ProviderMonth:
    spent, reserved, ok, errors, cancelled, tokens_in, tokens_out, cached, reasoning = values[:9]
    hits, overshoots = values[9:11]
    billed = counts.get((name, "expired_billed"), 0)
    return ProviderMonth(
        provider=name,
        month=month,
        requests=ok,
        errors=errors,
        cancelled=cancelled,
        in_flight=counts.get((name, "pending"), 0),
        expired=counts.get((name, "expired"), 0) + billed,
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cached_input_tokens=cached,
        reasoning_tokens=reasoning,
        spend_micros=spent,
        reserved_micros=reserved,
        projected_micros=project_month_end(spent, month, now),
        budget_micros=limits.get(name),
        warn_share=warn_shares.get(name, 0.8),
        cache_hits=hits,
        expired_billed=billed,
        overshoots=overshoots,
    )


def summarize(
    month: str,
    now: datetime,
    usage: Iterable[Any],
    open_rows: Iterable[Any],
    budgets: Mapping[str, BudgetLimit | None] | None,
) -> list[ProviderMonth]:
    """ProviderMonth records from the summary queries' rows and the configured budgets."""
    limits = {name: b.monthly_micros if b else None for name, b in (budgets or {}).items()}
    shares = {name: b.warn_share for name, b in (budgets or {}).items() if b}
    return build_summary(month, now, usage, open_rows, limits, shares)
