"""The ledger alone under faults: the budget race with crashes and cancellations mixed in
(SQLite and PostgreSQL), a full disk during a settle, the heartbeat renewing open rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from aegis_proxy.settle.open import open_ledger
from aegis_proxy.settle.records import AttemptOutcome, BudgetLimit
from aegis_proxy.settle.sqlite.ledger import Ledger
from tests.settle.race import NOW, RESERVATION, run_faulty_race, start
from tests.settle.test_postgres_ledger import pg_server, pg_url, target  # noqa: F401

BUDGET = BudgetLimit(monthly_micros=10 * RESERVATION)


def test_race_with_crashes_and_cancellations_keeps_the_budget(
    target: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """4 processes x 50 calls, two of them killed -9 mid-call, cancellations in the others:
    spend <= budget, and every provider call made is one row, billed or settled."""
    calls = run_faulty_race(target, 4, BUDGET, str(tmp_path), join_s=120)
    with open_ledger(target) as ledger:  # reopening sweeps the killed processes' rows
        rows = {int(str(r["id"])): r for r in ledger.export_rows("2025-03")}
        spent, reserved = ledger.budget_state("openai", "2025-03")
    assert sorted(rows) == sorted(row_id for row_id, _ in calls)
    expected = {"ok": ("ok", 400), "cancel": ("cancelled", RESERVATION)}
    expected["crash"] = ("expired_billed", RESERVATION)
    for row_id, kind in calls:
        assert (rows[row_id]["status"], rows[row_id]["cost_micros"]) == expected[kind]
    assert {kind for _, kind in calls} == {"ok", "cancel", "crash"}
    assert reserved == 0
    assert spent == sum(expected[kind][1] for _, kind in calls) <= BUDGET.monthly_micros


_DISK_FULL_CHILD = """
import json, resource, signal, sys, time
from aegis_proxy.settle.sqlite.ledger import Ledger
from aegis_proxy.settle.records import AttemptOutcome
from tests.settle.race import NOW, start
ledger = Ledger(sys.argv[1], retry_interval_s=0.05)
row_id = ledger.reserve(start("full"), 1000, None, NOW)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (1, hard))  # no file may grow: the disk is full
ledger.settle(row_id, AttemptOutcome("ok", 1.0, 10, 5, cost_micros=700), NOW)
queued = ledger.queued_rows
time.sleep(0.3)
still = ledger.queued_rows
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
deadline = time.monotonic() + 10
while ledger.queued_rows and time.monotonic() < deadline:
    time.sleep(0.02)
print(json.dumps({"queued": queued, "still": still, "after": ledger.queued_rows}))
ledger.close()
"""


def test_full_disk_during_settle_queues_it_until_space_returns(tmp_path: Path) -> None:
    """With no file allowed to grow (RLIMIT_FSIZE), a settle waits in the backlog instead
    of failing; once writes work again it lands exactly once."""
    path = tmp_path / "ledger.db"
    done = subprocess.run(
        [sys.executable, "-c", _DISK_FULL_CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"queued": 1, "still": 1, "after": 0}
    assert "ledger_settle_queued" in done.stderr  # a library warns on stderr (stdlib logging)
    with Ledger(path) as ledger:
        [row] = ledger.rows_for_request("full")
        assert (row["status"], row["cost_micros"]) == ("ok", 700)
        assert ledger.budget_state("openai", "2025-03") == (700, 0)


def test_heartbeat_renews_open_rows_until_their_settle(target: str) -> None:  # noqa: F811
    """An open row's expiry moves forward while its ledger lives; a settled one is dropped."""
    with open_ledger(target, reservation_ttl_s=0.3) as ledger:
        row_id = ledger.reserve(start("slow"), 100, BUDGET, NOW)
        first = ledger.rows_for_request("slow")[0]["expires_at"]
        time.sleep(0.5)
        renewed = ledger.rows_for_request("slow")[0]["expires_at"]
        assert float(str(renewed)) > time.time() > float(str(first))
        ledger.settle(row_id, AttemptOutcome("ok", 1.0, cost_micros=50), NOW)
        assert ledger.rows_for_request("slow")[0]["status"] == "ok"
