"""The privacy audit trail: each row's decision, refusals, per-entity actions, the proof."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aegis_proxy import LLMTask
from aegis_proxy.errors import ConfigError, PrivacyViolationError
from aegis_proxy.reports.audit import audit_month, render_audit
from aegis_proxy.settle.records import current_month
from aegis_proxy.settle.sqlite.ledger import Ledger
from aegis_proxy.settle.sqlite.migrations import m001_initial, m002_usage_counters, m003_cache_hit
from tests.conftest import Rig

CRITICAL = LLMTask(quality="critical", complexity="high")
EMAIL = "jane.doe+legal@mail.example.co.uk"
CARD = "4111 1111 1111 1111"
PHONE = "+44 20 7946 0958"


def _config(rig: Rig, **privacy: Any) -> dict[str, Any]:
    data = rig.config_data()
    data["privacy"] = privacy
    return data


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _query(rig: Rig, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(rig.tmp_path / "ledger.db") as conn:
        return conn.execute(sql).fetchall()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AEGIS_TEST_OPENAI_KEY": "sk-x", "AEGIS_TEST_CHEAP_KEY": "c-x"}
    return subprocess.run(
        [sys.executable, "-m", "aegis_proxy.cli", "audit", *args],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


async def test_route_local_row_records_types_counts_and_removed_providers(rig: Rig) -> None:
    """A PII request kept local records its entity counts, action and the providers removed."""
    async with rig.proxy() as proxy:
        resp = await proxy.acompletion(_user(f"Mail {EMAIL} and {EMAIL}, call {PHONE}"), CRITICAL)
    assert resp.aegis.privacy_action == "route_local"
    [row] = _query(rig, "SELECT provider, pii_entities, privacy_action, providers_removed,"
                        " redacted, provider_local, contains_pii FROM requests")  # fmt: skip
    assert row[0] == "local_ollama"
    assert json.loads(row[1]) == {"EMAIL": 2, "PHONE": 1}  # occurrences, never the values
    assert row[2:] == ("route_local", '["openai", "ollama_cloud"]', 0, 1, 1)


async def test_clean_request_records_no_decision(rig: Rig) -> None:
    """A request without personal data records action none and its provider's locality."""
    async with rig.proxy() as proxy:
        await proxy.acompletion(_user("Summarise the quarterly plan"), CRITICAL)
    rows = _query(rig, "SELECT provider, pii_entities, privacy_action, redacted, provider_local,"
                       " contains_pii FROM requests")  # fmt: skip
    assert rows == [("openai", "{}", "none", 0, 0, 0)]


async def test_redacted_row_went_to_cloud_and_the_proof_holds(rig: Rig) -> None:
    """A redacted request reaches the cloud marked redacted; the audit proof still holds."""
    async with rig.proxy(_config(rig, pii_action="redact")) as proxy:
        await proxy.acompletion(_user(f"Write to {EMAIL}"), CRITICAL)
        audit = audit_month(proxy.ledger, current_month(), {"local_ollama"})
    assert EMAIL not in rig.openai.chat_requests()[0].raw.decode()
    [row] = audit.attempts
    assert (row["provider"], row["provider_local"], row["redacted"]) == ("openai", 0, 1)
    assert row["privacy_action"] == "redact"
    assert audit.proven
    assert audit.breaches == []


async def test_block_is_refused_recorded_and_never_sent(rig: Rig) -> None:
    """pii_action block refuses before any call and records a refusal, not an attempt row."""
    async with rig.proxy(_config(rig, pii_action="block")) as proxy:
        with pytest.raises(PrivacyViolationError) as info:
            await proxy.acompletion(_user(f"Card {CARD}"), CRITICAL)
        audit = audit_month(proxy.ledger, current_month(), {"local_ollama"})
    assert info.value.blocked
    assert [s.chat_requests() for s in rig.servers().values()] == [[], [], []]
    assert _query(rig, "SELECT count(*) FROM requests") == [(0,)]
    [refusal] = audit.refusals
    assert (refusal["reason"], refusal["privacy_action"]) == ("blocked", "block")
    assert json.loads(str(refusal["pii_entities"])) == {"CREDIT_CARD": 1}
    assert audit.actions() == {"block (refused)": 1}


async def test_no_local_provider_refusal_is_recorded(rig: Rig) -> None:
    """PII with no local provider in the config is refused and the refusal recorded."""
    data = rig.config_data()
    del data["providers"]["local_ollama"]
    data["routing"]["default"] = ["ollama_cloud"]
    data["routing"]["rules"][0]["route"] = ["openai", "ollama_cloud"]
    data["routing"]["rules"][1]["route"] = ["ollama_cloud"]
    async with rig.proxy(data) as proxy:
        with pytest.raises(PrivacyViolationError):
            await proxy.acompletion(_user(f"Mail {EMAIL}"), CRITICAL)
    rows = _query(rig, "SELECT reason, privacy_action, providers_removed FROM privacy_refusals")
    assert rows == [("no_local_provider", "route_local", '["openai", "ollama_cloud"]')]


@pytest.mark.parametrize(
    ("text", "served_by", "action"),
    [
        (f"Write to {EMAIL}", "openai", "redact"),  # EMAIL: redact
        (f"Call {PHONE}", "local_ollama", "route_local"),  # pii_action
        (f"Write to {EMAIL}, call {PHONE}", "local_ollama", "route_local"),  # strictest wins
    ],
)
async def test_entity_actions_take_the_strictest(
    rig: Rig, text: str, served_by: str, action: str
) -> None:
    """Per-entity actions override pii_action; a mix of types takes the strictest action."""
    config = _config(rig, pii_action="route_local", entity_actions={"EMAIL": "redact"})
    async with rig.proxy(config) as proxy:
        resp = await proxy.acompletion(_user(text), CRITICAL)
    assert (resp.aegis.provider, resp.aegis.privacy_action) == (served_by, action)
    assert all(EMAIL not in r.raw.decode() for r in rig.openai.chat_requests())


async def test_entity_action_block_beats_redact(rig: Rig) -> None:
    """A card set to block refuses the request even when the rest would be redacted."""
    config = _config(rig, pii_action="redact", entity_actions={"CREDIT_CARD": "block"})
    async with rig.proxy(config) as proxy:
        await proxy.acompletion(_user(f"Write to {EMAIL}"), CRITICAL)  # redacted, served
        with pytest.raises(PrivacyViolationError) as info:
            await proxy.acompletion(_user(f"Write to {EMAIL} about {CARD}"), CRITICAL)
    assert info.value.blocked
    assert info.value.entity_types == ("CREDIT_CARD", "EMAIL")
    assert len(rig.openai.chat_requests()) == 1


def test_unknown_entity_action_names_the_key(rig: Rig) -> None:
    """An entity_actions key no detector reports is a ConfigError naming file and key."""
    path = rig.write_config(_config(rig, entity_actions={"EMAILS": "redact"}))
    with pytest.raises(ConfigError) as info:
        rig.proxy(_config(rig, entity_actions={"EMAILS": "redact"}))
    assert (info.value.path, info.value.key) == (str(path), "privacy.entity_actions.EMAILS")


async def test_audit_cli_proves_and_lists_decisions(rig: Rig) -> None:
    """audit prints decisions without values, proves no leak and exits 0; JSON agrees."""
    config = rig.write_config(_config(rig, pii_action="redact", entity_actions={"PHONE": "block"}))
    async with rig.proxy(_config(rig, pii_action="redact", entity_actions={"PHONE": "block"})) as p:
        await p.acompletion(_user(f"Write to {EMAIL}"), CRITICAL)
        with pytest.raises(PrivacyViolationError):
            await p.acompletion(_user(f"Call {PHONE}"), CRITICAL)
    table = _cli("--config", str(config))
    assert table.returncode == 0, table.stderr
    assert "proof: no row with contains_pii = 1" in table.stdout
    assert EMAIL not in table.stdout
    assert PHONE not in table.stdout
    data = json.loads(_cli("--config", str(config), "--format", "json").stdout)
    assert data["proven"] is True
    assert data["actions"] == {"redact": 1, "block (refused)": 1}
    assert data["entity_types"] == {"EMAIL": 1, "PHONE": 1}


async def test_audit_cli_fails_on_a_leaked_row(rig: Rig) -> None:
    """A row holding PII that reached a non-local provider unredacted fails the proof (exit 1)."""
    config = rig.write_config()
    async with rig.proxy() as proxy:
        await proxy.acompletion(_user(f"Write to {EMAIL}"), CRITICAL)
    with sqlite3.connect(rig.tmp_path / "ledger.db") as conn:  # what a bug would have written
        conn.execute("UPDATE requests SET provider = 'openai', provider_local = 0")
    out = _cli("--config", str(config))
    assert out.returncode == 1
    assert "PROOF FAILED: 1 rows" in out.stdout


def _pre_audit_ledger(path: Path, provider: str) -> None:
    """A ledger file as m003 left it, with one PII row served by ``provider``."""
    conn = sqlite3.connect(path, isolation_level=None)
    for migration in (m001_initial, m002_usage_counters, m003_cache_hit):
        migration(conn)
    conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for name in ("m001_initial", "m002_usage_counters", "m003_cache_hit"):
        conn.execute("INSERT INTO _migrations VALUES (?, '2026-01-01')", (name,))
    conn.execute(
        "INSERT INTO requests (request_id, attempt, timestamp, period, provider, model,"
        " query_hash, rule, task_type, quality, complexity, batch_size, data_classification,"
        " contains_pii, stream, status, pid, host) VALUES ('old', 1, ?, ?, ?, 'm', 'h', 'r',"
        " 'general', 'standard', 'medium', 1, 'internal', 1, 0, 'ok', 1, 'h')",
        (f"{current_month()}-01T00:00:00.000+00:00", current_month(), provider),
    )
    conn.close()


@pytest.mark.parametrize(
    ("provider", "local", "proven", "unverifiable"),
    [
        ("local_ollama", {"local_ollama"}, True, 0),
        ("openai", {"local_ollama"}, False, 0),
        ("openai", None, False, 1),
    ],
)
def test_rows_from_before_the_audit_are_judged_by_the_config(
    tmp_path: Path, provider: str, local: set[str] | None, proven: bool, unverifiable: int
) -> None:
    """m004 marks old PII rows unrecorded; the audit judges them by the config's local providers."""
    path = tmp_path / "ledger.db"
    _pre_audit_ledger(path, provider)
    with Ledger(path) as ledger:
        audit = audit_month(ledger, current_month(), local)
    [row] = audit.attempts
    assert (row["privacy_action"], row["provider_local"]) == ("unrecorded", None)
    assert (audit.proven, len(audit.unverifiable)) == (proven, unverifiable)
    assert ("PROOF FAILED" in render_audit(audit, "table")) == (not proven and not unverifiable)


def test_audit_csv_has_one_line_per_decision(tmp_path: Path) -> None:
    """The CSV lists each attempt and refusal on its own line, with its kind."""
    path = tmp_path / "ledger.db"
    _pre_audit_ledger(path, "local_ollama")
    with Ledger(path) as ledger:
        lines = render_audit(audit_month(ledger, current_month(), {"local_ollama"}), "csv")
    header, line = lines.splitlines()
    assert header.startswith("kind,timestamp,request_id,provider")
    assert line.startswith("attempt,")
    assert ",local_ollama," in line
