"""How ``aegis-proxy simulate`` prints a simulation: an aligned table, or JSON.

What must always hold: the table and the JSON say the same as the ``Simulation`` they
render; JSON keeps integer micro-dollars (USD beside them), the table rounds USD to four
places; a workload (no recorded side) shows no ``actual`` column.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aegis_proxy.reserve.money import usd

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Iterator, Sequence

    from aegis_proxy.reports.replay.tally import Simulation, Tally


def render_simulation(simulation: Simulation, fmt: str = "table") -> str:
    """The projection beside the recorded month, as an aligned table or JSON."""
    if fmt == "json":
        return json.dumps(simulation.to_dict(), indent=2)
    if fmt != "table":
        raise ValueError(f"unknown simulation format: {fmt!r}")
    return "\n".join(_table(simulation))


def _table(sim: Simulation) -> Iterator[str]:
    actual, projected = sim.actual, sim.projected
    yield f"simulate {sim.config} on {sim.source} ({', '.join(sim.months) or 'no requests'})"
    for name, reason in sim.unavailable.items():
        yield f"  {name} treated as unavailable: {reason}"
    if sim.unavailable:
        yield "  (--assume-available counts every provider as up)"
    names = set(sim.budgets) | set(projected.served)
    names |= set(actual.served) | set(actual.spend_micros) if actual else set()
    head = ["provider", "budget $"]
    head += ["actual req", "actual $"] if actual else []
    head += ["projected req", "projected $", "used %", "refusals", "first refusal"]
    rows = [head]
    for name in sorted(names):
        budget, spend = sim.budgets.get(name), projected.spend_micros[name]
        row = [name, "-" if budget is None else _money(budget)]
        if actual:
            row += [f"{actual.served[name]:,}", _money(actual.spend_micros[name])]
        row += [f"{projected.served[name]:,}", _money(spend),
                _share(spend / budget if budget else None), f"{projected.refusals[name]:,}",
                projected.first_refusal.get(name, "")]  # fmt: skip
        rows.append(row)
    total = ["total", ""]
    if actual:
        total += [f"{sum(actual.served.values()):,}", _money(sum(actual.spend_micros.values()))]
    total += [f"{sum(projected.served.values()):,}", _money(sum(projected.spend_micros.values())),
              "", f"{sum(projected.refusals.values()):,}", ""]  # fmt: skip
    yield from _aligned([*rows, total])
    yield ""
    yield from _aligned(_summary_rows(actual, projected))


def _summary_rows(actual: Tally | None, projected: Tally) -> list[list[str]]:
    sides = [s for s in (actual, projected) if s is not None]
    rows = [["", *(["actual"] if actual else []), "projected"]]
    rows.append(["requests", *(f"{s.requests:,}" for s in sides)])
    rows.append(["served locally", *(_share(s.local_share) for s in sides)])
    rows.append(["unserved", *(_unserved(s.unserved) for s in sides)])
    rules = sorted(set().union(*(s.rules for s in sides)), key=str)
    rows += [[f"rule {rule}", *(f"{s.rules[rule]:,}" for s in sides)] for rule in rules]
    return rows


def _aligned(rows: Sequence[Sequence[str]]) -> Iterator[str]:
    """Columns padded to their widest cell: names and times to the left, numbers right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    left = {0} | {i for i, name in enumerate(rows[0]) if name in _TEXT_COLUMNS}
    for row in rows:
        cells = [
            cell.ljust(width) if i in left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        yield "  ".join(cells).rstrip()


_TEXT_COLUMNS = frozenset({"first refusal"})


def _money(micros: int) -> str:
    return f"{usd(micros):,.4f}"


def _share(share: float | None) -> str:
    return "-" if share is None else f"{share:.1%}"


def _unserved(reasons: Counter[str]) -> str:
    total = sum(reasons.values())
    detail = ", ".join(f"{reason} {n:,}" for reason, n in sorted(reasons.items()) if n)
    return f"{total:,} ({detail})" if detail else f"{total:,}"
