"""The monthly summary record and its renderings: pure functions the CLI prints.

``aegis-proxy report`` must start and finish within a second, so this module imports only
the standard library (no SDK, tokenizer or pydantic). What must always hold:

- money is integer micro-dollars and ``Decimal``; it is rounded only for display;
- a provider is flagged ``OVER`` when its spend reached its monthly budget, ``WARN``
  from its warn share on, and ``PROJECTED_OVER`` when its month-end projection passes the
  budget; the projection is linear in the elapsed part of the month;
- the cache hit ratio is hits / attempts served ('ok', hits included); none without any;
- exports stream row by row to a text file: a month may hold millions of rows.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, TextIO

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

UsageRow = tuple[str, int, int]
"""(period, spent_micros, reserved_micros) of one ``budget_usage`` row."""

_MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
_TABLE_COLUMNS = (
    "provider", "month", "requests", "errors", "cache hit %", "tokens in", "tokens out",
    "spend $", "budget $", "used %", "projected $", "flag",
)  # fmt: skip
_LEFT_ALIGNED = frozenset({"provider", "month", "flag"})
EXPORT_COLUMNS = (
    "id", "request_id", "attempt", "timestamp", "period", "provider", "model", "user_id",
    "agent", "query_hash", "rule", "task_type", "quality", "complexity", "batch_size",
    "data_classification", "tags", "contains_pii", "stream", "status", "error_type",
    "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens", "counted",
    "cost_micros", "cost_usd", "latency_ms", "ttft_ms", "settled_at", "cache_hit",
    "pii_entities", "privacy_action", "providers_removed", "redacted", "provider_local",
)  # fmt: skip
"""The columns of ``requests`` an export holds, in order."""
INTERNAL_COLUMNS = frozenset({"pid", "host", "expires_at", "reserved_micros"})
"""The ledger's own bookkeeping (which process holds a reservation, and until when)."""
_JSON_TEXT = frozenset({"tags", "pii_entities", "providers_removed"})
_FLAGS = frozenset({"contains_pii", "stream", "counted", "cache_hit", "redacted", "provider_local"})


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
    """Reservations given back because their process died or their TTL passed."""
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
    def flag(self) -> str:
        """'OVER' when the budget is used up; else 'WARN' past the warn share and/or
        'PROJECTED_OVER' when the month-end projection passes the budget; else ''."""
        share = self.share_used
        if share is not None and share >= 1.0:
            return "OVER"
        flags = ["WARN"] * self.warn + ["PROJECTED_OVER"] * self.projected_over
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
        data["hit_ratio"] = self.hit_ratio
        return data


def usd(micros: int) -> Decimal:
    """Micro-dollars as an exact Decimal amount of USD."""
    return Decimal(micros).scaleb(-6)


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
            name, month, now, by_provider.get(name, [0] * 10), counts, limits, warn_shares
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
    spent, reserved, ok, errors, cancelled, tokens_in, tokens_out, cached, reasoning, hits = values
    return ProviderMonth(
        provider=name,
        month=month,
        requests=ok,
        errors=errors,
        cancelled=cancelled,
        in_flight=counts.get((name, "pending"), 0),
        expired=counts.get((name, "expired"), 0),
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
    )


def render_summary(
    rows: Sequence[ProviderMonth],
    fmt: Literal["table", "json", "csv"] = "table",
    *,
    caching: bool | None = None,
) -> str:
    """The summary as an aligned table, a JSON array, or CSV with the ``to_dict`` columns.

    ``caching=False`` (the config's cache is off) shows the table's cache column as '-'.
    """
    if fmt == "json":
        return json.dumps([row.to_dict() for row in rows], indent=2)
    if fmt == "csv":
        return _summary_csv(rows)
    if fmt == "table":
        return _summary_table(rows, caching is not False)
    raise ValueError(f"unknown summary format: {fmt!r}")


def render_export(rows: Iterable[Mapping[str, object]], fmt: Literal["csv", "json"]) -> str:
    """Ledger rows as CSV or a JSON array, in one string (see ``write_export`` to stream)."""
    out = io.StringIO()
    write_export(rows, fmt, out)
    return out.getvalue()


def export_record(row: Mapping[str, object]) -> dict[str, object]:
    """A ledger row as a JSON export holds it: public columns, objects, booleans."""
    record: dict[str, object] = {}
    for column in EXPORT_COLUMNS:
        value = row.get(column)
        if column in _JSON_TEXT and isinstance(value, str):
            value = json.loads(value)
        elif column in _FLAGS and value is not None:
            value = bool(value)
        record[column] = value
    return record


def write_export(
    rows: Iterable[Mapping[str, object]], fmt: Literal["csv", "json"], out: TextIO
) -> int:
    """Stream ledger rows to ``out``: CSV (a header even for no rows) or a JSON array.

    Either holds ``EXPORT_COLUMNS`` only; JSON turns the JSON-text columns into objects
    and the 0/1 flags into booleans (``export_record``), CSV keeps the stored text.
    """
    if fmt == "csv":
        return _export_csv(rows, out)
    if fmt == "json":
        return _export_json(rows, out)
    raise ValueError(f"unknown export format: {fmt!r}")


def _summary_table(rows: Sequence[ProviderMonth], caching: bool) -> str:
    lines = [_TABLE_COLUMNS, *(_table_cells(row, caching) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(_TABLE_COLUMNS))]
    return "\n".join(_table_line(line, widths) for line in lines)


def _table_line(cells: Sequence[str], widths: Sequence[int]) -> str:
    aligned = (
        cell.ljust(width) if column in _LEFT_ALIGNED else cell.rjust(width)
        for cell, width, column in zip(cells, widths, _TABLE_COLUMNS, strict=True)
    )
    return "  ".join(aligned).rstrip()


def _table_cells(row: ProviderMonth, caching: bool) -> tuple[str, ...]:
    share = row.share_used
    budget = row.budget_usd
    hits = row.hit_ratio if caching else None
    return (
        row.provider,
        row.month,
        f"{row.requests:,}",
        f"{row.errors:,}",
        "-" if hits is None else f"{hits:.1%}",
        f"{row.input_tokens:,}",
        f"{row.output_tokens:,}",
        _money(row.spend_usd),
        "-" if budget is None else _money(budget),
        "-" if share is None else f"{share:.1%}",
        _money(row.projected_usd),
        row.flag,
    )


def _money(amount: Decimal) -> str:
    return f"{amount:,.4f}"


def _summary_csv(rows: Sequence[ProviderMonth]) -> str:
    out = io.StringIO()
    dicts = [row.to_dict() for row in rows]
    if dicts:
        writer = csv.DictWriter(out, fieldnames=list(dicts[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(dicts)
    return out.getvalue()


def _export_csv(rows: Iterable[Mapping[str, object]], out: TextIO) -> int:
    count = 0
    writer = csv.DictWriter(out, EXPORT_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
        count += 1
    return count


def _export_json(rows: Iterable[Mapping[str, object]], out: TextIO) -> int:
    count = 0
    out.write("[")
    for row in rows:
        out.write(",\n" if count else "\n")
        out.write(json.dumps(export_record(row), default=str))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count
