"""Replay a month of recorded requests (or a workload file) through another config.

``aegis-proxy simulate`` answers "what would this config have cost last month?" without
calling any provider. A recorded request is replayed from the one attempt row that served
it (``ok``, or a stream closed early that was billed): the routing inputs are the same on
every attempt of a request, and that row has the real tokens. Requests that no attempt
served are counted, not replayed. What must always hold:

- nothing here reaches a provider or writes the ledger: the file is opened read-only;
- decisions are the proxy's own code, once per distinct set of routing inputs
  (``replay_plan``); budgets are consumed in the ledger's order, in integer micro-dollars
  (``replay_tally``);
- against the config that produced the ledger, with no provider failures, the projected
  spend per provider equals the recorded spend; requests never served are not replayed.

Not replayed: images (the ledger does not record them, so ``vision`` is not checked),
retries and circuit breakers (every call is assumed to succeed), and whether a redaction
would have succeeded (a redaction is assumed to succeed, see ``replay_plan``).

The parts: ``replay_plan`` (decisions and integer prices), ``replay_tally`` (serving
against budgets, the results), ``replay_workload`` (JSONL workloads), ``replay_render``
(table and JSON). Their public names are importable from here too.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from aegis_proxy.errors import LedgerError
from aegis_proxy.reports.replay.plan import Planner
from aegis_proxy.reports.replay.tally import Simulation, Tally, project
from aegis_proxy.reports.replay.workload import load_workload
from aegis_proxy.reserve.money import limit_micros
from aegis_proxy.settle.summary import check_month

if TYPE_CHECKING:
    from collections.abc import Iterator

    from aegis_proxy.config import AegisConfig

__all__ = [
    "simulate_ledger",
    "simulate_workload",
]

# Every query reads the month as a rowid range (rows are appended in time order), so no
# other month is read and the rows come in id order without a sort. The SQL is built only
# from the constants below, never from input (hence the S608 waivers).
_RANGE = "SELECT min(id), max(id) FROM requests WHERE period = ?"
_MONTH = "FROM requests WHERE id BETWEEN ? AND ? AND +period = ?"
# a cache hit never reached a provider: neither side counts it (it cost $0 on both)
_SERVED = (
    "(NOT cache_hit AND (+status = 'ok'"
    " OR (+status = 'cancelled' AND (output_tokens > 0 OR cost_micros > 0))))"
)
_KEY = (  # replay_plan.Key, in its order
    "rule, task_type, quality, complexity, batch_size, data_classification, agent, tags,"
    " contains_pii, pii_entities"
)
_ROWS = (  # the attempt that served each request
    f"SELECT timestamp, json_array({_KEY}{{identity}}), input_tokens,"
    f" output_tokens, cached_input_tokens {_MONTH} AND {_SERVED} ORDER BY id"
)
_IDENTITY = ", user_id, query_hash"
_BY_PROVIDER = (  # through the (period, provider) index: grouped without a sort
    f"SELECT provider, sum(cost_micros), sum({_SERVED}) FROM requests"  # noqa: S608
    " WHERE period = ? GROUP BY provider"
)
_NEVER_SERVED = (  # requests with a failed attempt and none that served: few rows to look at
    f"SELECT count(*) FROM (SELECT max({_SERVED}) AS served FROM requests"  # noqa: S608
    f" WHERE +period = ? AND request_id IN (SELECT request_id {_MONTH} AND NOT {_SERVED})"
    " GROUP BY request_id) WHERE NOT served"
)


def simulate_ledger(
    config: AegisConfig,
    ledger_path: str | Path,
    month: str,
    *,
    assume_available: bool = False,
) -> Simulation:
    """Replay ``month`` of the ledger at ``ledger_path`` through ``config``."""
    check_month(month)
    planner = Planner(config, assume_available)
    with _reading(Path(ledger_path)) as conn:
        low, high = conn.execute(_RANGE, (month,)).fetchone()
        span = (low or 0, high or -1, month)
        actual = _actual(conn, span, planner.local)
        rows = _ROWS.format(identity=_IDENTITY if planner.by_identity else "")
        projected, counts = project(conn.execute(rows, span), planner)
    for key, count in counts.items():
        actual.rules[json.loads(key)[0]] += count
    return _simulation(config, f"ledger {ledger_path}", (month,), projected, actual, planner)


def simulate_workload(
    config: AegisConfig,
    workload_path: str | Path,
    *,
    month: str | None = None,
    assume_available: bool = False,
) -> Simulation:
    """Project a JSONL workload through ``config``; lines without a timestamp fall in
    ``month`` (default: this month), spread evenly over its days."""
    month = month or datetime.now(UTC).strftime("%Y-%m")
    check_month(month)
    planner = Planner(config, assume_available)
    entries = load_workload(workload_path, month, identity=planner.by_identity)
    months = tuple(sorted({entry[0][:7] for entry in entries}))
    projected, _ = project(entries, planner)
    return _simulation(config, f"workload {workload_path}", months, projected, None, planner)


def _simulation(
    config: AegisConfig,
    source: str,
    months: tuple[str, ...],
    projected: Tally,
    actual: Tally | None,
    planner: Planner,
) -> Simulation:
    budgets = {name: limit_micros(p.monthly_budget_usd) for name, p in config.providers.items()}
    return Simulation(config.source, source, months, projected, actual, budgets,
                      dict(planner.unavailable))  # fmt: skip


# -- reading ------------------------------------------------------------------------------


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection; any SQLite error becomes ``LedgerError``."""
    if not path.is_file():
        raise LedgerError("simulate", f"no ledger file at {path}")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise LedgerError("simulate", f"{path}: {exc}") from exc
    try:
        yield conn
    except sqlite3.Error as exc:
        raise LedgerError("simulate", f"{path}: {exc}") from exc
    finally:
        conn.close()


def _actual(conn: sqlite3.Connection, span: tuple[int, int, str], local: frozenset[str]) -> Tally:
    """What the ledger recorded: spend per provider, served requests, local share.

    A request has at most one attempt that served (the proxy returns once served). The
    rules that fired are counted while the served rows are replayed.
    """
    tally = Tally()
    for provider, spend, served in conn.execute(_BY_PROVIDER, (span[2],)):
        if spend:
            tally.spend_micros[provider] = spend
        if served:
            tally.served[provider] = served
            tally.local += served if provider in local else 0
    (never,) = conn.execute(_NEVER_SERVED, (span[2], *span)).fetchone()
    tally.unserved["never_served"] = never
    tally.requests = sum(tally.served.values()) + never
    return tally
