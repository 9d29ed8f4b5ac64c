"""Budgets hold at any concurrency, across processes, per month and per day (UTC)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest

from aegis_proxy.errors import BudgetExceededError
from aegis_proxy.settle import budget as rules
from aegis_proxy.settle.records import AttemptOutcome, BudgetLimit
from aegis_proxy.settle.sqlite.ledger import Ledger
from tests.logcapture import capture_events
from tests.settle.race import CALLS_PER_PROCESS, NOW, RESERVATION, run_race, start

if TYPE_CHECKING:
    from pathlib import Path

PROCESSES = 4


def _totals(path: Path) -> tuple[int, int, int, int, int]:
    conn = sqlite3.connect(path)
    try:
        rows, ok, cost = conn.execute(
            "SELECT count(*), sum(status = 'ok'), sum(cost_micros) FROM requests"
        ).fetchone()
        spent, reserved = conn.execute(
            "SELECT spent_micros, reserved_micros FROM budget_usage"
            " WHERE provider = 'openai' AND period = '2025-03'"
        ).fetchone()
    finally:
        conn.close()
    return rows, ok, cost, spent, reserved


@pytest.mark.slow
@pytest.mark.parametrize(("cost", "expected_ok"), [(RESERVATION, 10), (700, None)])
def test_concurrent_reservations_never_pass_the_budget(
    tmp_path: Path, cost: int, expected_ok: int | None
) -> None:
    """200 calls from 4 processes (threads and asyncio) never spend past a 10-call budget."""
    path = tmp_path / "ledger.db"
    Ledger(path).close()
    budget = BudgetLimit(monthly_micros=10 * RESERVATION)
    successes = run_race(str(path), PROCESSES, budget, cost, join_s=60)
    rows, ok, total_cost, spent, reserved = _totals(path)
    assert successes == ok == rows
    assert PROCESSES * CALLS_PER_PROCESS - successes == 200 - ok
    assert total_cost == spent == ok * cost
    assert spent <= 10 * RESERVATION
    assert reserved == 0
    if expected_ok is not None:
        assert ok == expected_ok
    else:
        assert 10 <= ok <= 14


def test_daily_limit_refuses_within_the_day_only(tmp_path: Path) -> None:
    """A daily limit refuses the third call of a day and allows the next day's call."""
    budget = BudgetLimit(monthly_micros=10_000, daily_micros=2500)
    with Ledger(tmp_path / "ledger.db", reservation_ttl_s=7 * 86400) as ledger:
        ledger.reserve(start("a"), 1000, budget, NOW)
        ledger.reserve(start("b"), 1000, budget, NOW)
        with pytest.raises(BudgetExceededError) as caught:
            ledger.reserve(start("c"), 1000, budget, NOW)
        ledger.reserve(start("d"), 1000, budget, NOW + timedelta(days=1))
        assert ledger.budget_state("openai", "2025-03") == (0, 3000)
        assert ledger.budget_state("openai", "2025-03-11") == (0, 1000)
    error = caught.value
    assert (error.period, error.reserved_usd, error.limit_usd) == (
        "2025-03-10",
        Decimal("0.002"),
        Decimal("0.0025"),
    )


def test_month_boundary_starts_a_new_budget(tmp_path: Path) -> None:
    """Spend in January does not count against February, even when settled in February."""
    budget = BudgetLimit(monthly_micros=1000)
    january = datetime(2025, 1, 31, 23, 59, 59, 999000, tzinfo=UTC)
    february = datetime(2025, 2, 1, tzinfo=UTC)
    with Ledger(tmp_path / "ledger.db") as ledger:
        late = ledger.reserve(start("jan"), 1000, budget, january)
        with pytest.raises(BudgetExceededError):
            ledger.reserve(start("jan-2"), 1, budget, january)
        ledger.reserve(start("feb"), 1000, budget, february)
        ledger.settle(late, AttemptOutcome("ok", 2.0, cost_micros=1000), february)
        assert ledger.budget_state("openai", "2025-01") == (1000, 0)
        assert ledger.budget_state("openai", "2025-02") == (0, 1000)


def test_zero_reservation_is_never_refused(tmp_path: Path) -> None:
    """A $0 reservation passes even when the budget is used up."""
    budget = BudgetLimit(monthly_micros=1000)
    with Ledger(tmp_path / "ledger.db") as ledger:
        row_id = ledger.reserve(start("full"), 1000, budget, NOW)
        ledger.settle(row_id, AttemptOutcome("ok", 1.0, cost_micros=1000), NOW)
        ledger.reserve(start("free"), 0, budget, NOW)
        assert ledger.rows_for_request("free")[0]["status"] == "pending"


def test_unbudgeted_provider_is_recorded_without_a_check(tmp_path: Path) -> None:
    """With no budget the pending row is inserted and its spend still tracked."""
    with Ledger(tmp_path / "ledger.db") as ledger:
        row_id = ledger.reserve(start("local", "local_ollama"), 10**12, None, NOW)
        ledger.settle(row_id, AttemptOutcome("ok", 1.0, 10, 5, cost_micros=0), NOW)
        assert ledger.budget_state("local_ollama", "2025-03") == (0, 0)
        assert ledger.rows_for_request("local")[0]["status"] == "ok"


def test_warning_is_logged_once_when_the_spend_reaches_the_warn_share(tmp_path: Path) -> None:
    """Spend (not reservations) reaching 80% of a budget logs budget_warning once."""
    budget = BudgetLimit(monthly_micros=10_000, warn_share=0.8)
    with Ledger(tmp_path / "ledger.db") as ledger, capture_events() as logs:
        rows = [ledger.reserve(start(r, "warned_once"), 3000, budget, NOW) for r in "abc"]
        assert logs == []  # 90% reserved, nothing spent: no warning
        for row_id in rows:
            ledger.settle(row_id, AttemptOutcome("ok", 1.0, cost_micros=2700), NOW)
    assert logs == [
        {
            "event": "budget_warning",
            "log_level": "warning",
            "provider": "warned_once",
            "period": "2025-03",
            "share": 0.81,
            "counts": "spent",
            "spent_micros": 8100,
            "reserved_micros": 0,
        }
    ]


def test_settle_over_the_reservation_warns(tmp_path: Path) -> None:
    """A cost above its reservation is logged, and so is the warn share it crosses."""
    budget = BudgetLimit(monthly_micros=10_000, daily_micros=100_000, warn_share=0.8)
    with Ledger(tmp_path / "ledger.db") as ledger, capture_events() as logs:
        row_id = ledger.reserve(start("a", "underestimated"), 5000, budget, NOW)
        ledger.settle(row_id, AttemptOutcome("ok", 1.0, cost_micros=9000), NOW)
    assert [log["event"] for log in logs] == ["cost_exceeded_reservation", "budget_warning"]
    assert logs[0] == {
        "event": "cost_exceeded_reservation",
        "log_level": "warning",
        "provider": "underestimated",
        "row_id": row_id,
        "reserved_micros": 5000,
        "cost_micros": 9000,
    }
    assert (logs[1]["period"], logs[1]["share"]) == ("2025-03", 0.9)


@pytest.mark.parametrize(
    ("budget", "amount", "usage", "refused_period"),
    [
        (BudgetLimit(1000), 400, {"2025-03": (300, 300)}, None),
        (BudgetLimit(1000), 401, {"2025-03": (300, 300)}, "2025-03"),
        (BudgetLimit(1000, daily_micros=500), 300, {"2025-03-10": (0, 201)}, "2025-03-10"),
        (BudgetLimit(None, daily_micros=500), 500, {"2025-03": (10**9, 0)}, None),
        (BudgetLimit(0), 1, {}, "2025-03"),
    ],
)
def test_check_reservation_table(
    budget: BudgetLimit,
    amount: int,
    usage: dict[str, tuple[int, int]],
    refused_period: str | None,
) -> None:
    """spent + reserved + amount must stay within each limit that is set, month and day."""
    limits = rules.limited_periods("2025-03-10T12:00:00.000+00:00", budget)
    if refused_period is None:
        rules.check_reservation("openai", amount, limits, usage)
        return
    with pytest.raises(BudgetExceededError) as caught:
        rules.check_reservation("openai", amount, limits, usage)
    assert caught.value.period == refused_period


@pytest.mark.parametrize(
    ("budget", "amount", "checked"),
    [(None, 5, False), (BudgetLimit(1000), 0, False), (BudgetLimit(1000), 1, True)],
)
def test_only_paid_budgeted_reservations_need_the_database(
    budget: BudgetLimit | None, amount: int, checked: bool
) -> None:
    """A $0 or unbudgeted reservation needs no check, so it may wait while the DB is away."""
    assert rules.needs_check(budget, amount) is checked
