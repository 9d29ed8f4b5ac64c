"""Replay a month of recorded requests (or a workload file) through another config.

``aegis-proxy simulate`` answers "what would this config have cost last month?" without
calling any provider. A recorded request is replayed from the one attempt row that served
it (``ok``, or a stream closed early that was billed): the routing inputs are the same on
every attempt of a request, and that row has the real tokens. Requests that no attempt
served are counted, not replayed. What must always hold:

- nothing here reaches a provider or writes the ledger: the file is opened read-only;
- decisions come from ``policy.decide_route`` (and ``restrict_to_local`` for PII), the
  code the proxy runs, once per distinct set of routing inputs; costs are integer
  micro-dollars equal to ``pricing.cost_micros`` (rounded up), computed with integers;
- budgets are consumed in the ledger's order (row id: the order reservations were made;
  a workload by timestamp), in the month and day of the attempt that served: a candidate
  serves when its cost fits what is left of its month (and day), else the next one does;
  $0 is never refused. The real proxy reserves an upper bound first, so near a limit the
  replay is slightly optimistic;
- against the config that produced the ledger, with no provider failures, the projected
  spend per provider equals the recorded spend; requests never served are not replayed.

Not replayed: images (the ledger does not record them, so ``vision`` is not checked),
retries and circuit breakers (every call is assumed to succeed), and whether a redaction
would have succeeded (with ``pii_action: redact`` detected PII is assumed redactable).
"""

from __future__ import annotations

import calendar
import contextlib
import json
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from aegis_proxy.errors import ConfigError, LedgerError, PrivacyViolationError
from aegis_proxy.policy import LLMTask, decide_route, restrict_to_local
from aegis_proxy.reports import check_month, usd

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from decimal import Decimal

    from aegis_proxy.config import AegisConfig, RouteEntry
    from aegis_proxy.pricing import Price

Key = str
"""JSON array of what a decision depends on, after the rule that actually fired (null for
a workload): [rule, task_type, quality, complexity, batch_size, data_classification,
agent, tags (JSON text), contains_pii] and, when a rule splits traffic, [user_id,
query_hash]. Few distinct values, so each is decided once."""
Entry = tuple[str, Key, int, int, int]
"""One request to replay: (UTC ISO timestamp, key, input, output, cached input tokens)."""

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
_KEY = "rule, task_type, quality, complexity, batch_size, data_classification, agent, tags"
_ROWS = (  # the attempt that served each request
    f"SELECT timestamp, json_array({_KEY}, contains_pii{{identity}}), input_tokens,"
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
_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cached_input_tokens")


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


def simulate_ledger(
    config: AegisConfig,
    ledger_path: str | Path,
    month: str,
    *,
    assume_available: bool = False,
) -> Simulation:
    """Replay ``month`` of the ledger at ``ledger_path`` through ``config``."""
    check_month(month)
    planner = _Planner(config, assume_available)
    with _reading(Path(ledger_path)) as conn:
        low, high = conn.execute(_RANGE, (month,)).fetchone()
        span = (low or 0, high or -1, month)
        actual = _actual(conn, span, planner.local)
        rows = _ROWS.format(identity=_IDENTITY if planner.by_identity else "")
        projected, counts = _project(conn.execute(rows, span), planner)
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
    planner = _Planner(config, assume_available)
    entries = load_workload(workload_path, month, identity=planner.by_identity)
    months = tuple(sorted({entry[0][:7] for entry in entries}))
    projected, _ = _project(entries, planner)
    return _simulation(config, f"workload {workload_path}", months, projected, None, planner)


def _simulation(
    config: AegisConfig,
    source: str,
    months: tuple[str, ...],
    projected: Tally,
    actual: Tally | None,
    planner: _Planner,
) -> Simulation:
    budgets = {name: _micros(p.monthly_budget_usd) for name, p in config.providers.items()}
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


def load_workload(path: str | Path, month: str, *, identity: bool = False) -> list[Entry]:
    """Requests of a JSONL workload, sorted by timestamp; ConfigError names the bad line.

    Lines without a timestamp are spread evenly over the days of ``month``.
    """
    name = str(path)
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(name, "", f"cannot read workload: {exc.strerror}") from None
    parsed = [_workload_line(name, n, text, identity) for n, text in enumerate(lines, 1)
              if text.strip()]  # fmt: skip
    untimed = [i for i, (stamp, *_) in enumerate(parsed) if stamp is None]
    days = calendar.monthrange(int(month[:4]), int(month[5:]))[1]
    for position, index in enumerate(untimed):
        day = 1 + position * days // len(untimed)
        parsed[index] = (f"{month}-{day:02d}T00:00:00.000+00:00", *parsed[index][1:])
    entries = [(str(ts), k, i, o, c) for ts, k, i, o, c in parsed]
    entries.sort(key=lambda entry: entry[0])
    return entries


def _workload_line(
    name: str, number: int, text: str, identity: bool
) -> tuple[str | None, Key, int, int, int]:
    where = f"line {number}"
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(name, where, f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(name, where, "each line must be a JSON object")
    tokens = [_count(name, where, data, field_) for field_ in _TOKEN_FIELDS]
    pii = data.pop("contains_pii", False)
    if not isinstance(pii, bool):
        raise ConfigError(name, f"{where}.contains_pii", "must be true or false")
    stamp = _stamp(name, where, data.pop("timestamp", None))
    try:
        task = LLMTask.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        at = ".".join([where, *(str(part) for part in first["loc"])])
        raise ConfigError(name, at, first["msg"]) from None
    pii = pii or task.data_classification == "pii"
    inputs = [None, task.task_type, task.quality, task.complexity, task.batch_size,
              task.data_classification, task.agent, json.dumps(task.tags), int(pii)]  # fmt: skip
    key = json.dumps([*inputs, task.user_id, None] if identity else inputs)
    return stamp, key, tokens[0], tokens[1], tokens[2]


def _count(name: str, where: str, data: dict[str, Any], field_: str) -> int:
    value = data.pop(field_, 0 if field_ == "cached_input_tokens" else None)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(name, f"{where}.{field_}", "must be an integer >= 0")
    return value


def _stamp(name: str, where: str, value: object) -> str | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(name, f"{where}.timestamp", "must be an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


# -- deciding and projecting --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A route entry with integer prices: cost = ceil(tokens x rates / scale)."""

    name: str
    local: bool
    rates: tuple[int, int, int]  # input, output, cached input
    scale: int
    monthly: int | None
    daily: int | None
    budgeted: bool

    def cost(self, tokens_in: int, tokens_out: int, cached: int) -> int:
        uncached = tokens_in - cached if cached <= tokens_in else tokens_in
        rate_in, rate_out, rate_cached = self.rates
        exact = uncached * rate_in + cached * rate_cached + tokens_out * rate_out
        return -(-exact // self.scale)


@dataclass(frozen=True, slots=True)
class _Decision:
    rule: str
    candidates: tuple[_Candidate, ...]
    refusal: str  # why nothing served when every candidate was refused (or none was left)
    free: bool = False  # served by its first candidate at $0 whatever the budgets


def _decision(rule: str, candidates: tuple[_Candidate, ...], refusal: str) -> _Decision:
    free = bool(candidates) and not any(candidates[0].rates)
    return _Decision(rule, candidates, refusal, free)


class _Planner:
    """Decisions of one config, computed once per distinct key."""

    def __init__(self, config: AegisConfig, assume_available: bool) -> None:
        self.config = config
        self.decisions: dict[Key, _Decision] = {}
        self.local = frozenset(name for name, p in config.providers.items() if p.local)
        self.unavailable = {
            name: p.unavailable_reason
            for name, p in config.providers.items()
            if p.unavailable_reason is not None and not assume_available
        }
        # A rule with a traffic share (``when.percent``) decides by user: keep it in the key.
        rules = config.routing.rules
        self.by_identity = any(r.when.percent is not None for r in rules)

    def decide(self, key: Key) -> _Decision:
        decision = self.decisions[key] = self._decide(key)
        return decision

    def _decide(self, key: Key) -> _Decision:
        values = json.loads(key)
        _, task_type, quality, complexity, batch, classification, agent, tags, pii = values[:9]
        user_id = values[9] if len(values) > 9 else None
        try:
            task = LLMTask(task_type=task_type, quality=quality, complexity=complexity,
                           batch_size=batch, data_classification=classification, agent=agent,
                           tags=json.loads(tags), user_id=user_id)  # fmt: skip
        except (ValidationError, ValueError, TypeError):
            return _decision("(invalid inputs)", (), "invalid_inputs")
        traffic_key = values[10] if len(values) > 10 else ""  # the query hash, for splits
        route = decide_route(self.config.routing, task, traffic_key or "")
        if pii:
            action = self.config.privacy.pii_action
            if action == "block":
                return _decision(route.rule, (), "pii_blocked")
            if action == "route_local" or classification == "pii":
                try:
                    route = restrict_to_local(route, self.config.providers, ())
                except PrivacyViolationError:
                    return _decision(route.rule, (), "no_local_provider")
        entries = [e for e in route.candidates if e.provider not in self.unavailable]
        candidates = tuple(self._candidate(entry) for entry in entries)
        return _decision(route.rule, candidates, "budget" if entries else "unavailable")

    def _candidate(self, entry: RouteEntry) -> _Candidate:
        provider = self.config.providers[entry.provider]
        rates, scale = integer_rates(provider.price_of(entry.model or provider.model))
        monthly, daily = _micros(provider.monthly_budget_usd), _micros(provider.daily_budget_usd)
        budgeted = monthly is not None or daily is not None
        return _Candidate(entry.provider, provider.local, rates, scale, monthly, daily, budgeted)


def _micros(usd_amount: Decimal | None) -> int | None:
    return None if usd_amount is None else int(usd_amount * 1_000_000)


def integer_rates(price: Price) -> tuple[tuple[int, int, int], int]:
    """(input, output, cached) rates as integers over one power of ten, exactly."""
    cached = price.cached_input_per_mtok
    rates = (price.input_per_mtok, price.output_per_mtok,
             price.input_per_mtok if cached is None else cached)  # fmt: skip
    places = max(max(0, -int(rate.as_tuple().exponent)) for rate in rates)
    scaled = tuple(int(rate.scaleb(places)) for rate in rates)
    return (scaled[0], scaled[1], scaled[2]), 10**places


def _project(entries: Iterable[Entry], planner: _Planner) -> tuple[Tally, Counter[Key]]:
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


def _take(spent: dict[tuple[str, str], int], candidate: _Candidate, stamp: str, cost: int) -> bool:
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


# -- rendering ----------------------------------------------------------------------------


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
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            row[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)),
        ]
        yield "  ".join(cells).rstrip()


def _money(micros: int) -> str:
    return f"{usd(micros):,.4f}"


def _share(share: float | None) -> str:
    return "-" if share is None else f"{share:.1%}"


def _unserved(reasons: Counter[str]) -> str:
    total = sum(reasons.values())
    detail = ", ".join(f"{reason} {n:,}" for reason, n in sorted(reasons.items()) if n)
    return f"{total:,} ({detail})" if detail else f"{total:,}"
