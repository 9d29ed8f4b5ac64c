"""The monthly summary and the export, rendered: pure functions the CLI prints.

``aegis-proxy report`` must start and finish within a second, so this module imports only
the standard library (no SDK, tokenizer or pydantic). What must always hold:

- money is integer micro-dollars and ``Decimal``; it is rounded only for display (the
  figures and flags themselves are ``aegis_proxy.settle.summary``'s);
- an export holds ``EXPORT_COLUMNS`` only (never the ledger's internal bookkeeping), CSV
  with its header even for an empty month;
- exports stream row by row to a text file: a month may hold millions of rows.
"""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from typing import TYPE_CHECKING, Literal, TextIO

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from aegis_proxy.settle.summary import ProviderMonth

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
