"""The aegis-proxy command, run as a real process on real config and ledger files."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Rig

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "aegis.yaml"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "aegis_proxy.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )


def test_route_explains_pii_decision() -> None:
    """route shows the matched rule, the PII found and the providers removed."""
    out = run(
        "route", "--config", str(EXAMPLE), "Call Jane on +44 20 7946 0958",
        "--quality", "critical", "--complexity", "high",
        env={"OPENAI_API_KEY": "sk-x", "OLLAMA_API_KEY": "o-x"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "rule:         critical_to_openai" in out.stdout
    assert "contains_pii: True ['PHONE']" in out.stdout
    assert "removed:      openai, ollama_cloud (not local)" in out.stdout
    assert "1. local_ollama" in out.stdout
    assert "+44 20" not in out.stderr


def test_route_shows_unavailable_provider() -> None:
    """route marks a provider whose key is unset as unavailable."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OLLAMA_API_KEY")}
    out = subprocess.run(
        [sys.executable, "-m", "aegis_proxy.cli", "route", "--config", str(EXAMPLE), "hello",
         "--batch-size", "25"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "rule:         batch_to_cloud" in out.stdout
    assert "environment variable OLLAMA_API_KEY is not set" in out.stdout


def test_check_config_reports_error_with_file_and_key(tmp_path: Path) -> None:
    """check-config exits 2 and names the file and key of a bad config."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "providers:\n  a: {sdk: ollama, model: m, local: true}\nrouting:\n  default: [b]\n"
    )
    out = run("check-config", "--config", str(bad))
    assert out.returncode == 2
    assert f"{bad}: routing.default[0]: unknown provider 'b'" in out.stderr


async def test_report_and_export_after_requests(rig: Rig) -> None:
    """report and export read the ledger the proxy wrote, in every format."""
    from aegis_proxy import LLMTask

    config = rig.write_config()
    async with rig.proxy() as proxy:
        await proxy.acompletion([{"role": "user", "content": "hi"}], LLMTask(batch_size=20))
        await proxy.acompletion([{"role": "user", "content": "hello"}])
    env = {"AEGIS_TEST_OPENAI_KEY": "sk-x", "AEGIS_TEST_CHEAP_KEY": "c-x"}
    table = run("report", "--config", str(config), env=env)
    assert table.returncode == 0, table.stderr
    assert "ollama_cloud" in table.stdout
    assert "local_ollama" in table.stdout
    data = json.loads(run("report", "--config", str(config), "--format", "json", env=env).stdout)
    by_provider = {row["provider"]: row for row in data}
    assert by_provider["ollama_cloud"]["requests"] == 1
    assert by_provider["openai"]["requests"] == 0  # budgeted providers show with no rows
    exported = run("export", "--config", str(config), "--format", "csv", env=env)
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert sorted(r["provider"] for r in rows) == ["local_ollama", "ollama_cloud"]
    assert "hello" not in exported.stdout


@pytest.mark.parametrize("command", ["report", "audit", "route", "check-config"])
def test_commands_do_not_import_any_llm(command: str, tmp_path: Path) -> None:
    """report, audit, route and check-config never import any_llm (its import costs ~1.5 s)."""
    code = (
        "import sys; from aegis_proxy.cli.main import main; "
        f"args = {[command, '--config', str(EXAMPLE)] + (['hi'] if command == 'route' else [])!r}; "
        "main(args); print('ANY_LLM', 'any_llm' in sys.modules)"
    )
    env = {**os.environ, "OPENAI_API_KEY": "sk-x"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
        check=False, cwd=tmp_path,
    )  # fmt: skip
    assert "ANY_LLM False" in out.stdout, out.stderr


def test_check_config_refuses_duplicate_keys_and_an_empty_ledger_path(tmp_path: Path) -> None:
    """check-config exits 2 on a repeated key or an empty ledger.path, naming the key."""
    base = "providers:\n  a: {sdk: ollama, model: m, local: true}\nrouting:\n  default: [a]\n"
    duplicate = tmp_path / "dup.yaml"
    duplicate.write_text(base + "routing:\n  default: [a]\n")
    out = run("check-config", "--config", str(duplicate))
    assert out.returncode == 2
    assert f"{duplicate}: routing: duplicate key: line 5 repeats the key of line 3" in out.stderr
    empty = tmp_path / "empty.yaml"
    empty.write_text(base + "ledger:\n  path: ''\n")
    out = run("check-config", "--config", str(empty))
    assert out.returncode == 2
    assert f"{empty}: ledger.path:" in out.stderr
