"""The ledger's budgets as Prometheus gauges, read at each scrape (``aegis-proxy metrics``).

A process that serves no requests itself can still export the fleet's spend: the ledger
is shared by every process of the application. What must always hold:

- the budget gauges have the same names, help and labels here as in the live
  ``PrometheusObserver`` (it builds them from ``BUDGET_GAUGES``), so dashboards work with
  either; the two are never registered side by side;
- a scrape only reads the ledger (one monthly summary); label values are provider names
  from the ledger and fixed periods and statuses.

``prometheus_client`` is the optional ``metrics`` extra: import this through
``aegis_proxy.observe.metrics``, which names the extra when it is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from aegis_proxy.reserve.money import usd_float

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from aegis_proxy.settle.backend import LedgerBackend
    from aegis_proxy.settle.records import BudgetLimit
    from aegis_proxy.settle.summary import ProviderMonth

_BUDGET = ("provider", "period")
BUDGET_GAUGES = (  # attribute (on the observer), name, help, labels
    ("budget_spent", "llm_budget_spent_usd", "Settled spend in the period", _BUDGET),
    ("budget_limit", "llm_budget_limit_usd", "Budget of the period", _BUDGET),
    ("budget_used", "llm_budget_used_ratio", "Spend / budget", _BUDGET),
)


class LedgerBudgetCollector:
    """Budget gauges read from the ledger at each scrape (``period="month"``).

    For a process that serves no requests itself (``aegis-proxy metrics``): the ledger is
    shared by every process of the application, so this is the fleet's spend. Not to be
    registered next to a ``PrometheusObserver`` (they export the same gauges).
    """

    def __init__(self, ledger: LedgerBackend, budgets: Mapping[str, BudgetLimit | None]) -> None:
        self._ledger = ledger
        self._budgets = dict(budgets)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(_ledger_families())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        spent, limit, used, attempts = _ledger_families()
        for row in self._ledger.monthly_summary(None, self._budgets):
            labels = [row.provider, "month"]
            spent.add_metric(labels, usd_float(row.spend_micros))
            if row.budget_micros is not None:
                limit.add_metric(labels, usd_float(row.budget_micros))
                used.add_metric(labels, row.share_used or 0.0)
            for status in ("ok", "error", "cancelled", "pending", "expired"):
                attempts.add_metric([row.provider, status], _count(row, status))
        return iter((spent, limit, used, attempts))


def _ledger_families() -> tuple[GaugeMetricFamily, ...]:
    budget = [
        GaugeMetricFamily(name, doc, labels=list(labels)) for _, name, doc, labels in BUDGET_GAUGES
    ]
    attempts = GaugeMetricFamily(
        "llm_ledger_month_attempts", "Ledger rows this month (UTC)", labels=["provider", "status"]
    )
    return (*budget, attempts)


def _count(row: ProviderMonth, status: str) -> int:
    field = {"ok": "requests", "error": "errors", "pending": "in_flight"}.get(status, status)
    return int(getattr(row, field))


def ledger_registry(
    ledger: LedgerBackend, budgets: Mapping[str, BudgetLimit | None]
) -> CollectorRegistry:
    """A registry holding only the ledger's budget gauges."""
    registry = CollectorRegistry()
    registry.register(LedgerBudgetCollector(ledger, budgets))
    return registry
