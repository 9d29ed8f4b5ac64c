"""Monthly summaries and exports: exact numbers, and renderings the CLI prints as they are."""

from __future__ import annotations

import ast
import csv
import importlib.util
import io
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aegis_proxy.reports.render import (
    EXPORT_COLUMNS,
    export_record,
    render_export,
    render_summary,
    write_export,
)
from aegis_proxy.settle.records import AttemptOutcome, AttemptStart, BudgetLimit
from aegis_proxy.settle.sqlite.ledger import Ledger
from aegis_proxy.settle.summary import ProviderMonth

APRIL_16 = datetime(2025, 4, 16, tzinfo=UTC)
ROWS = [
    ProviderMonth("local_ollama", "2025-04", 340, 0, 2, 0, 0, 512_000, 98_000, 0, 0, 0, 0, 0),
    ProviderMonth(
        "ollama_cloud", "2025-04", 1500, 12, 0, 1, 1, 9_000_000, 2_000_000, 0, 0,
        120_000_000, 250, 120_000_000, budget_micros=120_000_000,
    ),
    ProviderMonth(
        "openai", "2025-04", 120, 3, 1, 0, 0, 1_234_567, 89_012, 4096, 512,
        64_500_123, 0, 129_000_246, budget_micros=80_000_000, cache_hits=30,
    ),
]  # fmt: skip
TABLE = """\
provider      month    requests  errors  cache hit %  tokens in  tokens out   spend $  budget $  used %  projected $  flag
local_ollama  2025-04       340       0         0.0%    512,000      98,000    0.0000         -       -       0.0000
ollama_cloud  2025-04     1,500      12         0.0%  9,000,000   2,000,000  120.0000  120.0000  100.0%     120.0000  OVER
openai        2025-04       120       3        25.0%  1,234,567      89,012   64.5001   80.0000   80.6%     129.0002  WARN,PROJECTED_OVER"""  # noqa: E501  (the exact table, one row per line)
CSV = """\
provider,month,requests,errors,cancelled,in_flight,expired,input_tokens,output_tokens,cached_input_tokens,reasoning_tokens,spend_micros,reserved_micros,projected_micros,budget_micros,warn_share,cache_hits,expired_billed,overshoots,spend_usd,budget_usd,projected_usd,share_used,warn,projected_over,flag,flag_counts,suspect,hit_ratio
local_ollama,2025-04,340,0,2,0,0,512000,98000,0,0,0,0,0,,0.8,0,0,0,0.0,,0.0,,False,False,,spent,False,0.0
ollama_cloud,2025-04,1500,12,0,1,1,9000000,2000000,0,0,120000000,250,120000000,120000000,0.8,0,0,0,120.0,120.0,120.0,1.0,True,False,OVER,spent,False,0.0
openai,2025-04,120,3,1,0,0,1234567,89012,4096,512,64500123,0,129000246,80000000,0.8,30,0,0,64.500123,80.0,129.000246,0.8062515375,True,True,"WARN,PROJECTED_OVER",spent,False,0.25
"""
LIGHT_MODULES = (
    "aegis_proxy.settle.open",
    "aegis_proxy.settle.sqlite.ledger",
    "aegis_proxy.settle.sqlite.connection",
    "aegis_proxy.settle.sqlite.backlog",
    "aegis_proxy.settle.heartbeat",
    "aegis_proxy.settle.sqlite.migrations",
    "aegis_proxy.settle.sqlite.queries",
    "aegis_proxy.settle.records",
    "aegis_proxy.settle.backend",
    "aegis_proxy.settle.summary",
    "aegis_proxy.settle.budget",
    "aegis_proxy.reserve.money",
    "aegis_proxy.reports.render",
    "aegis_proxy.observe.logs",
)
ALLOWED_IMPORTS = {
    *LIGHT_MODULES,
    "structlog",  # observe/logs.py: inside configure_logging only
    "aegis_proxy.config",  # budget.py: under TYPE_CHECKING only, never imported at run time
    "aegis_proxy.config.providers",  # the same
    "aegis_proxy.errors",
    "aegis_proxy.settle.postgres.ledger",  # inside open_ledger, for postgresql:// URLs only
}


def start(request_id: str, provider: str = "openai") -> AttemptStart:
    return AttemptStart(
        request_id, 1, provider, "gpt-4o", "default", "general", "standard", "medium", 1,
        "internal", False, False, "0" * 16,
    )  # fmt: skip


def fill(ledger: Ledger) -> None:
    """April: openai 2 ok, 1 error, 1 cancelled, 1 in flight; local 1 ok; one March row."""
    for name, status, cost, tokens in [
        ("ok-1", "ok", 1000, (100, 10)),
        ("ok-2", "ok", 2000, (200, 20)),
        ("err", "error", 0, (0, 0)),
        ("cancel", "cancelled", 300, (50, 5)),
    ]:
        row_id = ledger.reserve(start(name), 2000, BudgetLimit(10_000), APRIL_16)
        ledger.settle(row_id, AttemptOutcome(status, 9.0, *tokens, cost_micros=cost), APRIL_16)
    ledger.reserve(start("open"), 500, BudgetLimit(10_000), APRIL_16)
    row_id = ledger.reserve(start("local", "local_ollama"), 0, None, APRIL_16)
    ledger.settle(row_id, AttemptOutcome("ok", 50.0, 70, 7), APRIL_16)
    march = APRIL_16 - timedelta(days=20)
    row_id = ledger.reserve(start("march"), 100, BudgetLimit(10_000), march)
    ledger.settle(row_id, AttemptOutcome("ok", 9.0, 1, 1, cost_micros=100), march)


def test_summary_table_is_aligned_with_flags() -> None:
    """The table aligns every column and flags WARN from the warn share, OVER at 100% and
    PROJECTED_OVER when the month-end projection passes the budget."""
    assert render_summary(ROWS, "table") == TABLE


def test_summary_csv_has_every_column() -> None:
    """The CSV has one header and the to_dict columns of every provider."""
    assert render_summary(ROWS, "csv") == CSV


def test_summary_json_is_exact() -> None:
    """The JSON holds exact micro-dollars, USD floats, the share and the flag."""
    [local, cloud, openai] = json.loads(render_summary(ROWS, "json"))
    assert openai == ROWS[2].to_dict()
    assert (openai["spend_micros"], openai["spend_usd"]) == (64_500_123, 64.500123)
    assert (openai["share_used"], openai["warn"]) == (0.8062515375, True)
    assert (openai["projected_over"], openai["flag"]) == (True, "WARN,PROJECTED_OVER")
    assert (cloud["share_used"], cloud["flag"]) == (1.0, "OVER")
    assert (local["budget_usd"], local["share_used"], local["flag"]) == (None, None, "")
    assert (openai["cache_hits"], openai["hit_ratio"]) == (30, 0.25)


def test_hit_ratio_is_none_without_served_attempts() -> None:
    """A provider with no served attempt has no hit ratio: '-' in the table, null in JSON."""
    idle = ProviderMonth("anthropic", "2025-04", 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5000)
    assert idle.hit_ratio is None
    assert render_summary([idle], "table").splitlines()[1].split()[4] == "-"
    assert json.loads(render_summary([idle], "json"))[0]["hit_ratio"] is None


def test_monthly_summary_counts_and_projects_this_month(tmp_path: Path) -> None:
    """Half-way through April the summary has exact counts and a doubled projection."""
    budgets = {"openai": BudgetLimit(10_000), "anthropic": BudgetLimit(5000), "local_ollama": None}
    with Ledger(tmp_path / "ledger.db") as ledger:
        fill(ledger)
        summary = ledger.monthly_summary("2025-04", budgets, now=APRIL_16 + timedelta(days=-1))
    assert summary == [
        ProviderMonth("anthropic", "2025-04", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5000),
        ProviderMonth("local_ollama", "2025-04", 1, 0, 0, 0, 0, 70, 7, 0, 0, 0, 0, 0, None),
        ProviderMonth("openai", "2025-04", 2, 1, 1, 1, 0, 350, 35, 0, 0, 3300, 500, 7072, 10_000),
    ]  # 3300 micro-dollars in 14 of 30 days: ceil(3300 x 30 / 14) = 7072


def test_monthly_summary_of_a_past_month_projects_its_spend(tmp_path: Path) -> None:
    """A finished month's projection is its spend; its default month is now's month."""
    with Ledger(tmp_path / "ledger.db") as ledger:
        fill(ledger)
        [march] = ledger.monthly_summary("2025-03", now=APRIL_16)
        [_, april] = ledger.monthly_summary(now=APRIL_16)
    assert (march.provider, march.spend_micros, march.projected_micros) == ("openai", 100, 100)
    assert (april.month, april.spend_micros, april.projected_micros) == ("2025-04", 3300, 6600)


def test_invalid_month_is_rejected(tmp_path: Path) -> None:
    """A month not written YYYY-MM raises ValueError."""
    with Ledger(tmp_path / "ledger.db") as ledger, pytest.raises(ValueError, match="YYYY-MM"):
        ledger.monthly_summary("2025-13")


def test_export_has_every_row_of_the_month_only(tmp_path: Path) -> None:
    """Exporting April gives its six rows with all columns, and no March row."""
    with Ledger(tmp_path / "ledger.db") as ledger:
        fill(ledger)
        rows = list(ledger.export_rows("2025-04"))
        expected = [r for name in ("ok-1", "ok-2", "err", "cancel", "open", "local")
                    for r in ledger.rows_for_request(name)]  # fmt: skip
    assert rows == expected
    assert len(rows) == 6
    assert {row["period"] for row in rows} == {"2025-04"}


def test_export_renders_as_csv_and_json(tmp_path: Path) -> None:
    """CSV has the export columns and one line per row; JSON parses back to export records."""
    with Ledger(tmp_path / "ledger.db") as ledger:
        fill(ledger)
        rows = list(ledger.export_rows("2025-04"))
    parsed = list(csv.DictReader(io.StringIO(render_export(rows, "csv"))))
    assert [line["request_id"] for line in parsed] == [row["request_id"] for row in rows]
    assert list(parsed[0]) == list(EXPORT_COLUMNS)
    assert json.loads(render_export(rows, "json")) == [export_record(row) for row in rows]


def test_streaming_export_counts_rows_and_handles_empty_months() -> None:
    """write_export returns the row count; an empty month is '[]' in JSON and the header
    alone in CSV."""
    out = io.StringIO()
    assert write_export(iter([{"id": 1}, {"id": 2}]), "json", out) == 2
    assert [row["id"] for row in json.loads(out.getvalue())] == [1, 2]
    assert render_export([], "json") == "[]\n"
    assert render_export([], "csv") == ",".join(EXPORT_COLUMNS) + "\n"


def test_unknown_formats_are_rejected() -> None:
    """A format the renderers do not know raises ValueError."""
    with pytest.raises(ValueError, match="format"):
        render_summary(ROWS, "xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="format"):
        render_export([], "xml")  # type: ignore[arg-type]


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_report_modules_import_only_light_dependencies(module: str) -> None:
    """The ledger, its records and the report renderer import only the stdlib, structlog, peers."""
    spec = importlib.util.find_spec(module)
    assert spec is not None
    assert spec.origin is not None
    source = Path(spec.origin).read_text(encoding="utf-8")
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported |= {
                f"{node.module}.{alias.name}"
                if _is_module(f"{node.module}.{alias.name}")
                else node.module
                for alias in node.names
            }
    foreign = {m for m in imported if m.split(".")[0] not in sys.stdlib_module_names}
    assert foreign <= ALLOWED_IMPORTS
