"""The replay's projection: requests served against budgets, tallied per provider and rule.

What must always hold:

- requests are served in the order given (the ledger's row id: the order reservations were
  made; a workload by timestamp), each by the first candidate of its decision whose cost
  fits what is left of that provider's month (and day) at the request's timestamp; $0 is
  never refused. The real proxy reserves an upper bound first, so near a limit the replay
  is slightly optimistic;
- every request counts once: served by one provider, or unserved with the decision's
  reason; spend is integer micro-dollars;
- a ``Tally``'s counters hold no zero entries: a provider that served nothing, or spent $0,
  is absent.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aegis_proxy.reserve.money import usd

if TYPE_CHECKING:
    from collections.abc import Iterable

    from aegis_proxy.reports.replay.plan import Candidate, Entry, Key, Planner


@dataclass(slots=True)
class Tally:
    """One side of the comparison: who served how many requests, for how much, by rule.

    Counters hold no zero entries: a provider that served nothing, or spent $0, is absent.
    """

    requests: int = 0
    served: Counter[str] = field(default_factory=Counter)
    spend_micros: Counter[str] = field(default_factory=Counter)
    local: int = 0
    rules: Counter[str] = field(default_factory=Counter)
    unserved: Counter[str] = field(default_factory=Counter)  # reason -> requests
    refusals: Counter[str] = field(default_factory=Counter)  # provider -> budget refusals
    first_refusal: dict[str, str] = field(default_factory=dict)  # provider -> timestamp

    @property
    def local_share(self) -> float | None:
        """Share of the served requests that a local provider served."""
        total = sum(self.served.values())
        return self.local / total if total else None

    def to_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "served": dict(self.served),
            "spend_micros": dict(self.spend_micros),
            "spend_usd": {name: float(usd(m)) for name, m in self.spend_micros.items()},
            "local_share": self.local_share,
            "rules": dict(self.rules),
            "unserved": dict(self.unserved),
            "budget_refusals": dict(self.refusals),
            "first_refusal": self.first_refusal,
        }


@dataclass(frozen=True, slots=True)
class Simulation:
    """A projection under ``config``, beside what the ledger recorded (None for a workload)."""

    config: str
    source: str
    months: tuple[str, ...]
    projected: Tally
    actual: Tally | None
    budgets: dict[str, int | None]  # monthly budget in micro-dollars per provider
    unavailable: dict[str, str]  # providers skipped in the projection, and why

    def to_dict(self) -> dict[str, object]:
        return {
            "config": self.config,
            "source": self.source,
            "months": list(self.months),
            "budgets_micros": self.budgets,
            "unavailable": self.unavailable,
            "projected": self.projected.to_dict(),
            "actual": None if self.actual is None else self.actual.to_dict(),
        }


def project(entries: Iterable[Entry], planner: Planner) -> tuple[Tally, Counter[Key]]:
    """Serve each request with the first candidate whose budget still has room.

    A request whose first candidate is free (local) is only counted per key here and
    folded in at the end: most traffic costs one dict update.
    """
    tally = Tally()
    spent: dict[tuple[str, str], int] = {}
    decisions = planner.decisions
    counts: Counter[Key] = Counter()
    for stamp, key, tokens_in, tokens_out, cached in entries:
        decision = decisions.get(key) or planner.decide(key)
        counts[key] += 1
        if decision.free:
            continue
        for candidate in decision.candidates:
            cost = candidate.cost(tokens_in, tokens_out, cached)
            if cost and candidate.budgeted and not _take(spent, candidate, stamp, cost):
                tally.refusals[candidate.name] += 1
                tally.first_refusal.setdefault(candidate.name, stamp)
                continue
            tally.served[candidate.name] += 1
            tally.spend_micros[candidate.name] += cost
            tally.local += candidate.local
            break
        else:
            tally.unserved[decision.refusal] += 1
    for key, count in counts.items():
        decision = decisions[key]
        tally.requests += count
        tally.rules[decision.rule] += count
        if decision.free:
            tally.served[decision.candidates[0].name] += count
            tally.local += count * decision.candidates[0].local
    tally.spend_micros = +tally.spend_micros  # providers that spent something
    return tally, counts


def _take(spent: dict[tuple[str, str], int], candidate: Candidate, stamp: str, cost: int) -> bool:
    """Consume ``cost`` from the candidate's month and day; False (nothing taken) if it
    does not fit."""
    periods = ((stamp[:7], candidate.monthly), (stamp[:10], candidate.daily))
    for period, limit in periods:
        if limit is not None and spent.get((candidate.name, period), 0) + cost > limit:
            return False
    for period, limit in periods:
        if limit is not None:
            spent[candidate.name, period] = spent.get((candidate.name, period), 0) + cost
    return True
