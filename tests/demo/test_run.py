"""``aegis-proxy demo``: its pipeline, tables and truthfulness, on a fake and on the real model."""

from __future__ import annotations

import io
import os
import re
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aegis_proxy.demo.local_model_setup import llama_server_missing
from aegis_proxy.demo.run import DemoOptions, run_demo
from tests.fakeserver import FakeProviderServer

MISSING = llama_server_missing()
# About 40 tokens: five simulated-cloud answers cost more than its $0.002 budget.
LONG_REPLY = " ".join(f"word{i}" for i in range(20))


def ledger_rows(path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY id")]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, FakeProviderServer, Path]:
    """The demo against a fake OpenAI-compatible local server: (output, server, ledger)."""
    ledger = tmp_path_factory.mktemp("demo") / "demo.db"
    with pytest.MonkeyPatch.context() as env, FakeProviderServer() as local:
        env.delenv("OPENAI_API_KEY", raising=False)
        env.delenv("OLLAMA_API_KEY", raising=False)
        local.reply_text = LONG_REPLY
        out = io.StringIO()
        options = DemoOptions(ledger=str(ledger), local_base=local.openai_base)
        assert run_demo(options, out) == 0
    return out.getvalue(), local, ledger


def test_demo_sends_every_request_to_the_local_server(
    demo_run: tuple[str, FakeProviderServer, Path],
) -> None:
    """Without cloud keys all 34 requests reach the local server, one ledger row each."""
    _, local, ledger = demo_run
    rows = ledger_rows(ledger)
    assert len(local.chat_requests()) == len(rows) == 1 + 1 + 25 + 1 + 6
    assert {r["status"] for r in rows} == {"ok"}
    assert {r["provider"] for r in rows} == {"local_model", "simulated_cloud"}


def test_demo_shows_unavailable_providers_as_never_called(
    demo_run: tuple[str, FakeProviderServer, Path],
) -> None:
    """Providers without keys are shown as unavailable, and the table shows what served."""
    output, _, _ = demo_run
    assert "openai           UNAVAILABLE: environment variable OPENAI_API_KEY is not set" in output
    assert "ollama_cloud     UNAVAILABLE: environment variable OLLAMA_API_KEY is not set" in output
    assert "openai (no key), ollama_cloud (no key)" in output
    assert "SIMULATED cloud, answered by the local model" in output


def test_demo_keeps_personal_data_local_and_says_why(
    demo_run: tuple[str, FakeProviderServer, Path],
) -> None:
    """The email step is served locally; the output names the entities and the removed tiers."""
    output, _, ledger = demo_run
    first = ledger_rows(ledger)[0]
    assert (first["provider"], first["contains_pii"]) == ("local_model", 1)
    assert "personal data (EMAIL, PHONE): local providers only" in output
    assert "1. openai (personal data): kept away: not a local provider" in output
    assert "1. ollama_cloud (personal data): kept away: not a local provider" in output
    assert first["privacy_action"] == "route_local"
    assert "proof: no row with contains_pii = 1 reached a non-local provider" in output


def test_demo_budget_runs_out_mid_way(demo_run: tuple[str, FakeProviderServer, Path]) -> None:
    """The budgeted report step is served by the simulated cloud, then falls back locally."""
    output, _, ledger = demo_run
    report = [r for r in ledger_rows(ledger) if r["task_type"] == "report"]
    providers = [r["provider"] for r in report]
    cloud = providers.count("simulated_cloud")
    assert 0 < cloud < len(providers)
    assert providers == ["simulated_cloud"] * cloud + ["local_model"] * (len(providers) - cloud)
    assert sum(r["cost_micros"] for r in report) <= 2000  # the $0.002 monthly budget
    assert "simulated_cloud (budget used up)" in output
    assert "simulated_cloud (budget used up): budget of simulated_cloud" in output


def test_demo_prints_answers_stream_and_ledger_report(
    demo_run: tuple[str, FakeProviderServer, Path],
) -> None:
    """The output holds the model's answers, the streamed text and the month's report."""
    output, _, ledger = demo_run
    assert f'local_model:     "{LONG_REPLY[:40]}' in output
    assert f"streaming: {LONG_REPLY}" in output
    assert "provider         month    requests" in output
    assert f"REAL SQLite file {ledger}" in output
    assert "demo finished in" in output


def test_demo_passed_over_column_agrees_with_the_why_lines(
    demo_run: tuple[str, FakeProviderServer, Path],
) -> None:
    """Every provider the routing table shows as passed over has a why line, and back."""
    output, _, _ = demo_run
    table, why = output.split("\nwhy:\n", 1)
    table = table.rsplit("routing table", 1)[1]
    why = why.split("\n\n", 1)[0]
    header = next(line for line in table.splitlines() if line.startswith("#"))
    start, end = header.index("passed over"), header.index("tokens")
    cells = {line[start:end].strip() for line in table.splitlines()[3:] if line[:1].isdigit()}
    shown = {part for cell in cells if cell != "-" for part in cell.split(", ")}
    labelled = {line.split(": ", 1)[0].split(". ", 1)[1] for line in why.splitlines()
                if re.match(r"\s+\d+\. \S+ \(", line)}  # fmt: skip
    assert shown
    assert shown == labelled
    assert "openai (personal data)" in shown


def test_demo_prints_library_warnings_in_its_own_format(
    demo_run: tuple[str, FakeProviderServer, Path],
) -> None:
    """The budget warning shows as a demo line, not as a raw log record."""
    output, _, _ = demo_run
    warnings = [line for line in output.splitlines() if line.startswith("  ! ")]
    assert any(line.startswith("  ! budget_warning: provider=simulated_cloud") for line in warnings)


def test_demo_report_flags_and_cache_column(
    demo_run: tuple[str, FakeProviderServer, Path],
) -> None:
    """The report flags the spent budget, shows '-' for the cache when it is off, and
    counts requests in words ("1 request")."""
    output, _, _ = demo_run
    report = output.split("this month's ledger (aegis-proxy report):", 1)[1].split("\n\n")[1]
    rows = {line.split()[0]: line.split() for line in report.splitlines()[1:]}
    assert rows["simulated_cloud"][4] == "-"
    assert rows["simulated_cloud"][-1] == "OVER" or "PROJECTED_OVER" in rows["simulated_cloud"][-1]
    assert "(1 request," in output
    assert "request(s)" not in output


@pytest.mark.skipif(MISSING is not None, reason=f"LOUD: the real demo did NOT run: {MISSING}")
@pytest.mark.local_model
@pytest.mark.slow
def test_readme_demo_command_runs_on_the_real_model(tmp_path: Path) -> None:
    """`aegis-proxy demo` starts SmolLM2, runs the pipeline on it and stops it."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OLLAMA_API_KEY")}
    ledger = tmp_path / "demo.db"
    done = subprocess.run(
        [sys.executable, "-m", "aegis_proxy.cli", "demo", "--no-ollama", "--ledger", str(ledger)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "local model ready: SmolLM2-135M-Instruct" in done.stdout
    rows = ledger_rows(ledger)
    assert len(rows) == 34
    assert {r["status"] for r in rows} == {"ok"}
    assert sum(r["output_tokens"] for r in rows) > 34  # real answers, not empty ones
    assert "simulated_cloud (budget used up)" in done.stdout
    port = int(re.search(r"at http://127\.0\.0\.1:(\d+)/v1", done.stdout).group(1))  # type: ignore[union-attr]
    with pytest.raises(ConnectionRefusedError):  # the server was stopped
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
