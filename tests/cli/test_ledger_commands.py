"""The ledger commands a newcomer trusts: read-only, refusing a missing ledger, pipe-safe,
and exports that hold real objects; plus --help and check-config saying what they did."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aegis_proxy.cli import main
from aegis_proxy.errors import LedgerError
from aegis_proxy.reports.render import EXPORT_COLUMNS, INTERNAL_COLUMNS
from aegis_proxy.settle.open import open_ledger
from aegis_proxy.settle.records import AttemptOutcome, AttemptStart, PrivacyDecision
from aegis_proxy.settle.sqlite.ledger import Ledger
from tests.conftest import Rig

NOW = datetime(2025, 4, 10, 12, 0, tzinfo=UTC)
MONTH = "2025-04"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aegis_proxy.cli", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def fill(path: Path, rows: int = 3) -> Path:
    """A real ledger with ``rows`` settled attempts in April 2025, the first with PII."""
    with Ledger(path) as ledger:
        for i in range(rows):
            privacy = (
                PrivacyDecision((("EMAIL", 2),), "route_local", ("openai",)) if i == 0 else None
            )
            start = AttemptStart(
                request_id=f"r{i}", attempt=1, provider="local", model="m", rule="default",
                task_type="general", quality="standard", complexity="medium", batch_size=1,
                data_classification="internal", contains_pii=privacy is not None, stream=False,
                query_hash=f"{i:016x}", tags=("a", "b"), privacy=privacy, provider_local=True,
            )  # fmt: skip
            row = ledger.reserve(start, 0, None, NOW)
            ledger.settle(row, AttemptOutcome("ok", 5.0, 10, 2, cost_micros=0), NOW)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("command", ["report", "export", "audit"])
def test_a_missing_ledger_is_refused_and_not_created(tmp_path: Path, command: str) -> None:
    """report, export and audit exit 2 on a ledger path that does not exist, creating nothing."""
    missing = tmp_path / "typo" / "ledger.db"
    done = run(command, "--ledger", str(missing))
    assert done.returncode == 2
    assert done.stderr == f"error: ledger open failed: {missing}: no such ledger file\n"
    assert done.stdout == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["report", "export", "audit"])
def test_a_ledger_url_of_no_known_kind_is_one_line(command: str) -> None:
    """``--ledger mysql://...`` exits 2 with one line naming the URL, not a traceback."""
    done = run(command, "--ledger", "mysql://root@127.0.0.1/ledger")
    assert done.returncode == 2
    assert done.stderr.startswith("error: ledger open failed: ledger URL must be sqlite:///")
    assert "'mysql://root@127.0.0.1/ledger'" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stdout == ""


def test_a_file_that_is_no_ledger_is_refused(tmp_path: Path) -> None:
    """An SQLite file without the ledger's tables is an error, not a passing audit."""
    other = tmp_path / "other.db"
    other.write_bytes(b"")
    done = run("audit", "--ledger", str(other))
    assert done.returncode == 2
    assert f"{other} is not an aegis_proxy ledger" in done.stderr
    assert other.read_bytes() == b""


def test_report_leaves_the_ledger_file_unchanged(tmp_path: Path) -> None:
    """The ledger commands only read: the database file is byte-for-byte the same after."""
    ledger = fill(tmp_path / "ledger.db")
    before = digest(ledger)
    for command in ("report", "export", "audit"):
        assert run(command, "--ledger", str(ledger), "--month", MONTH).returncode == 0
    assert digest(ledger) == before


def test_a_read_only_ledger_refuses_writes(tmp_path: Path) -> None:
    """open_ledger(read_only=True) reads rows and refuses a reservation with LedgerError."""
    path = fill(tmp_path / "ledger.db")
    ledger = open_ledger(path, read_only=True)
    try:
        assert len(list(ledger.export_rows(MONTH))) == 3
        start = AttemptStart("x", 1, "local", "m", "default", "general", "standard", "medium",
                             1, "internal", False, False, "0" * 16)  # fmt: skip
        with pytest.raises(LedgerError) as caught:
            ledger.reserve(start, 0, None, NOW)
        assert caught.value.operation == "reserve"
        assert caught.value.problem == f"{path} is open read-only"
    finally:
        ledger.close()


def test_export_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`export | head -1` ends without a BrokenPipeError traceback."""
    ledger = fill(tmp_path / "ledger.db", rows=2000)  # ~0.5 MB: more than a pipe holds
    with subprocess.Popen(
        [sys.executable, "-m", "aegis_proxy.cli", "export", "--ledger", str(ledger),
         "--month", MONTH],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as process:  # fmt: skip
        assert process.stdout is not None
        assert process.stderr is not None
        header = process.stdout.readline()
        process.stdout.close()  # what `head -1` does once it has its line
        errors = process.stderr.read()
        process.wait(timeout=60)
    assert header.decode().startswith("id,request_id,")
    assert errors == b""
    assert process.returncode == 1


def test_an_empty_month_in_csv_still_has_its_header(tmp_path: Path) -> None:
    """A month without rows exports as the CSV header line alone."""
    ledger = fill(tmp_path / "ledger.db")
    done = run("export", "--ledger", str(ledger), "--month", "2020-01", "--format", "csv")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ",".join(EXPORT_COLUMNS) + "\n"


def test_json_export_holds_objects_and_no_internal_fields(tmp_path: Path) -> None:
    """JSON export: pii_entities an object, tags a list, flags booleans, no pid/host."""
    ledger = fill(tmp_path / "ledger.db")
    done = run("export", "--ledger", str(ledger), "--month", MONTH, "--format", "json")
    assert done.returncode == 0, done.stderr
    first, *rest = json.loads(done.stdout)
    assert len(rest) == 2
    assert list(first) == list(EXPORT_COLUMNS)
    assert not INTERNAL_COLUMNS & set(first)
    assert first["pii_entities"] == {"EMAIL": 2}
    assert first["providers_removed"] == ["openai"]
    assert first["tags"] == ["a", "b"]
    assert (first["contains_pii"], first["stream"], rest[0]["contains_pii"]) == (True, False, False)


def test_export_columns_cover_the_ledger_table(tmp_path: Path) -> None:
    """Every column of `requests` is exported or named internal: none is dropped unseen."""
    ledger = fill(tmp_path / "ledger.db", rows=1)
    with Ledger(ledger) as opened:
        [row] = opened.export_rows(MONTH)
    assert set(row) == set(EXPORT_COLUMNS) | INTERNAL_COLUMNS


def test_csv_export_keeps_the_same_columns(tmp_path: Path) -> None:
    """CSV export has the JSON export's columns, in the same order."""
    ledger = fill(tmp_path / "ledger.db")
    done = run("export", "--ledger", str(ledger), "--month", MONTH)
    reader = csv.DictReader(io.StringIO(done.stdout))
    assert reader.fieldnames == list(EXPORT_COLUMNS)
    assert len(list(reader)) == 3


def test_help_is_for_users(capsys: pytest.CaptureFixture[str]) -> None:
    """--help describes the tool and its commands, without notes meant for developers."""
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "personal data stays on local providers" in text
    assert "check-config" in text
    for note in ("any-llm", "a test checks", "Logging is configured", "wall time"):
        assert note not in text


def test_check_config_says_it_did_not_probe(rig: Rig, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --probe, check-config says that reachability was not checked."""
    assert main(["check-config", "--config", str(rig.write_config())]) == 0
    out = capsys.readouterr().out
    assert "not checked: whether each server answers and takes its key (--probe" in out
    assert rig.local.requests == []


def test_check_config_probe_asks_each_server(rig: Rig, capsys: pytest.CaptureFixture[str]) -> None:
    """--probe lists each server's models; a server that lacks one or does not answer: exit 1."""
    rig.cheap.models = ["gpt-oss:120b"]
    config = rig.write_config()
    assert main(["check-config", "--config", str(config), "--probe"]) == 0
    out = capsys.readouterr().out
    assert "not checked" not in out
    assert {"local_ollama", "ollama_cloud", "openai"} <= set(out.split())
    assert rig.local.requests
    rig.cheap.models = []
    assert main(["check-config", "--config", str(config), "--probe"]) == 1
    assert "gpt-oss:120b  MISSING" in capsys.readouterr().out
    rig.cheap.stop()
    assert main(["check-config", "--config", str(config), "--probe"]) == 1


def test_report_shows_no_cache_ratio_when_caching_is_off(
    rig: Rig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the config's cache off, the report's cache column is '-', not 0.0%."""
    ledger = fill(tmp_path / "ledger.db")
    data = rig.config_data()
    data["ledger"] = {"path": str(ledger)}
    config = rig.write_config(data)
    assert main(["report", "--config", str(config), "--month", MONTH]) == 0
    table = capsys.readouterr().out.splitlines()
    row = next(line for line in table if line.startswith("local "))
    assert row.split()[4] == "-"
    assert "0.0%" not in row


def test_simulate_table_columns_align(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each number ends under its header's end; the refusal time starts under its header."""
    example = Path(__file__).resolve().parents[2]
    config = tmp_path / "tiny.yaml"
    text = (example / "config" / "aegis.yaml").read_text()
    config.write_text(text.replace("monthly_budget_usd: 80", "monthly_budget_usd: 0.01"))
    workload = str(example / "examples" / "workload.jsonl")
    args = ["simulate", "--config", str(config), "--workload", workload, "--assume-available"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("provider"))
    table = lines[lines.index(header) + 1 : lines.index(header) + 4]
    openai = next(line for line in table if line.startswith("openai"))
    first = header.index("first refusal")
    assert openai[first : first + 4] == "2026"
    for name in ("budget $", "projected req", "projected $", "used %", "refusals"):
        end = header.index(name) + len(name)
        for line in table:
            assert line[end - 1] != " ", (name, line)
            assert line[end : end + 1] in ("", " "), (name, line)


def test_simulate_names_assume_available_when_it_treats_providers_as_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Providers without keys are named as unavailable, with the flag that counts them up."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    root = Path(__file__).resolve().parents[2]
    workload = str(root / "examples" / "workload.jsonl")
    config = str(root / "config" / "aegis.yaml")
    assert main(["simulate", "--config", config, "--workload", workload]) == 0
    out = capsys.readouterr().out
    assert "openai treated as unavailable: environment variable OPENAI_API_KEY is not set" in out
    assert "(--assume-available counts every provider as up)" in out
