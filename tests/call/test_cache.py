"""The response cache end to end: real HTTP to fake providers, real SQLite ledger and cache."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aegis_proxy import LLMTask
from aegis_proxy.call.cache import cache_key, cacheable, scoped_key
from aegis_proxy.settle.records import AttemptStart, BudgetLimit
from tests.conftest import Rig

CRITICAL = LLMTask(quality="critical", complexity="high", task_type="extraction")
HELLO = [{"role": "user", "content": "Summarise the quarterly report in one line."}]
EMAIL = "bob@corp.example"
PII = [{"role": "user", "content": f"Draft a reply to {EMAIL} about the invoice."}]


def cached_config(rig: Rig, **cache: Any) -> dict[str, Any]:
    data = rig.config_data()
    data["cache"] = {"enabled": True, **cache}
    return data


def rows(rig: Rig) -> list[dict[str, Any]]:
    with sqlite3.connect(rig.tmp_path / "ledger.db") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY id")]


def cache_file_text(rig: Rig) -> str:
    with sqlite3.connect(rig.tmp_path / "response_cache.db") as conn:
        return "".join(text for (text,) in conn.execute("SELECT response FROM response_cache"))


# -- keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"temperature": 0}, True),
        ({"seed": 7, "temperature": 0.7}, True),
        ({"temperature": 0.7}, False),
        ({}, False),
        ({"temperature": 0, "stream": True}, False),
        ({"temperature": 0, "n": 2}, False),
    ],
)
def test_only_deterministic_requests_are_cacheable(params: dict[str, Any], expected: bool) -> None:
    """temperature 0 or a seed, one choice, no stream: anything else is not cacheable."""
    assert cacheable(params) is expected


def test_pii_keys_are_scoped_to_the_user() -> None:
    """A PII request is keyed per user_id and not keyed at all without one."""
    params = {"temperature": 0}
    alice = scoped_key("local", "m", PII, params, contains_pii=True, user_id="alice")
    bob = scoped_key("local", "m", PII, params, contains_pii=True, user_id="bob")
    assert alice is not None
    assert bob is not None
    assert alice != bob
    assert scoped_key("local", "m", PII, params, contains_pii=True, user_id=None) is None
    plain = scoped_key("local", "m", HELLO, params, contains_pii=False, user_id="alice")
    assert plain == cache_key("local", "m", HELLO, params, None)  # shared across users


# -- through the proxy --------------------------------------------------------------------


async def test_miss_then_hit_costs_nothing_the_second_time(rig: Rig) -> None:
    """The second identical request is served from the cache: no call, one $0 ledger row."""
    async with rig.proxy(cached_config(rig)) as proxy:
        first = await proxy.acompletion(HELLO, CRITICAL, max_tokens=16, temperature=0)
        second = await proxy.acompletion(HELLO, CRITICAL, max_tokens=16, temperature=0)
    assert len(rig.openai.chat_requests()) == 1
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second.usage is not None
    assert first.usage is not None
    assert second.usage.prompt_tokens == first.usage.prompt_tokens
    assert (second.aegis.provider, second.aegis.model) == ("openai", "gpt-4o")
    assert second.aegis.cost_usd == 0
    assert first.aegis.cost_usd > 0
    assert [a.outcome for a in second.aegis.attempts] == ["cache_hit"]
    miss, hit = rows(rig)
    assert (miss["cache_hit"], hit["cache_hit"]) == (0, 1)
    assert miss["cost_micros"] > 0
    assert (hit["status"], hit["cost_micros"], hit["reserved_micros"]) == ("ok", 0, 0)
    assert (hit["input_tokens"], hit["output_tokens"]) == (
        miss["input_tokens"],
        miss["output_tokens"],
    )
    assert (rig.tmp_path / "response_cache.db").exists()  # beside the ledger by default


async def test_cache_is_off_by_default(rig: Rig) -> None:
    """Without cache.enabled every request reaches the provider and no cache file appears."""
    async with rig.proxy() as proxy:
        for _ in range(2):
            await proxy.acompletion(HELLO, temperature=0)
    assert len(rig.local.chat_requests()) == 2
    assert [row["cache_hit"] for row in rows(rig)] == [0, 0]
    assert not (rig.tmp_path / "response_cache.db").exists()


async def test_entry_expires_after_its_ttl(rig: Rig) -> None:
    """Past its TTL an answer is not served: the provider is called again."""
    async with rig.proxy(cached_config(rig, ttl_s=0.3)) as proxy:
        await proxy.acompletion(HELLO, temperature=0)
        await proxy.acompletion(HELLO, temperature=0)
        await asyncio.sleep(0.5)
        await proxy.acompletion(HELLO, temperature=0)
    assert len(rig.local.chat_requests()) == 2
    assert [row["cache_hit"] for row in rows(rig)] == [0, 1, 0]


@pytest.mark.parametrize(
    ("params", "calls"),
    [
        ({"temperature": 0.7}, 2),
        ({}, 2),
        ({"temperature": 0.7, "seed": 42}, 1),
    ],
)
async def test_non_deterministic_requests_are_not_cached(
    rig: Rig, params: dict[str, Any], calls: int
) -> None:
    """Sampling without a seed reaches the provider every time; a seed makes it cacheable."""
    async with rig.proxy(cached_config(rig)) as proxy:
        for _ in range(2):
            await proxy.acompletion(HELLO, **params)
    assert len(rig.local.chat_requests()) == calls


async def test_streams_are_neither_served_nor_stored(rig: Rig) -> None:
    """A stream always reaches the provider and leaves nothing for a later request."""
    async with rig.proxy(cached_config(rig)) as proxy:
        for _ in range(2):
            stream = await proxy.acompletion(HELLO, temperature=0, stream=True)
            async for _chunk in stream:
                pass
        await proxy.acompletion(HELLO, temperature=0)
        stream = await proxy.acompletion(HELLO, temperature=0, stream=True)
        text = ""
        async for chunk in stream:
            text += "".join(choice.delta.content or "" for choice in chunk.choices)
    assert len(rig.local.chat_requests()) == 4
    assert text == rig.local.reply_text
    assert [row["cache_hit"] for row in rows(rig)] == [0, 0, 0, 0]


async def test_pii_answers_are_not_shared_across_users(rig: Rig) -> None:
    """A PII answer is served again to its user only; without a user_id it is never cached."""
    alice, bob, nobody = (LLMTask(user_id="alice"), LLMTask(user_id="bob"), LLMTask())
    async with rig.proxy(cached_config(rig)) as proxy:
        for task in (alice, alice, bob, nobody, nobody):
            resp = await proxy.acompletion(PII, task, temperature=0)
            assert resp.aegis.provider == "local_ollama"
    assert len(rig.local.chat_requests()) == 4
    assert [row["cache_hit"] for row in rows(rig)] == [0, 1, 0, 0, 0]
    assert [row["user_id"] for row in rows(rig) if row["cache_hit"]] == ["alice"]


async def test_rule_ttl_zero_disables_the_cache_for_that_rule(rig: Rig) -> None:
    """A rule with cache_ttl_s 0 is never cached while other routes are."""
    data = cached_config(rig)
    data["routing"]["rules"][0]["cache_ttl_s"] = 0  # critical_to_openai
    async with rig.proxy(data) as proxy:
        for _ in range(2):
            await proxy.acompletion(HELLO, CRITICAL, max_tokens=16, temperature=0)
            await proxy.acompletion(HELLO, temperature=0)
    assert len(rig.openai.chat_requests()) == 2
    assert len(rig.local.chat_requests()) == 1


async def test_rule_ttl_overrides_the_config_ttl(rig: Rig) -> None:
    """With ttl_s 0 in the config, only the rule that sets cache_ttl_s is cached."""
    data = cached_config(rig, ttl_s=0)
    data["routing"]["rules"][0]["cache_ttl_s"] = 60
    async with rig.proxy(data) as proxy:
        for _ in range(2):
            await proxy.acompletion(HELLO, CRITICAL, max_tokens=16, temperature=0)
            await proxy.acompletion(HELLO, temperature=0)
    assert len(rig.openai.chat_requests()) == 1
    assert len(rig.local.chat_requests()) == 2


async def test_cached_answer_needs_its_provider_to_pass_its_checks(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unavailable provider's cached answer is not served: the next candidate serves."""
    async with rig.proxy(cached_config(rig)) as proxy:
        await proxy.acompletion(HELLO, CRITICAL, max_tokens=16, temperature=0)
    monkeypatch.delenv("AEGIS_TEST_OPENAI_KEY")
    async with rig.proxy(cached_config(rig)) as proxy:
        resp = await proxy.acompletion(HELLO, CRITICAL, max_tokens=16, temperature=0)
    assert resp.aegis.provider == "ollama_cloud"
    assert [a.outcome for a in resp.aegis.attempts] == ["skipped", "ok"]
    assert len(rig.cheap.chat_requests()) == 1
    assert [row["cache_hit"] for row in rows(rig)] == [0, 0]


async def test_hit_is_served_when_the_budget_is_spent(rig: Rig) -> None:
    """A cached answer costs $0, so a provider whose budget is used up still serves it."""
    async with rig.proxy(cached_config(rig)) as proxy:
        await proxy.acompletion(HELLO, CRITICAL, max_tokens=16, temperature=0)
        spent, reserved = proxy.ledger.budget_state("openai", rows(rig)[0]["period"])
        holder = AttemptStart(
            "holder", 1, "openai", "gpt-4o", "test", "general", "standard", "medium", 1,
            "internal", False, False, "0" * 16,
        )  # fmt: skip
        limit = BudgetLimit(80_000_000)
        proxy.ledger.reserve(holder, 80_000_000 - spent - reserved, limit)
        resp = await proxy.acompletion(HELLO, CRITICAL, max_tokens=16, temperature=0)
        refused = await proxy.acompletion(HELLO, CRITICAL, max_tokens=17, temperature=0)
    assert resp.aegis.provider == "openai"
    assert [a.outcome for a in resp.aegis.attempts] == ["cache_hit"]
    assert refused.aegis.attempts[0].outcome == "budget_exceeded"  # a new key: a real call
    assert len(rig.openai.chat_requests()) == 1


async def test_redacted_answers_are_cached_with_placeholders_and_restored(rig: Rig) -> None:
    """The cache keeps the provider's placeholders; each hit is restored with its own values."""
    data = cached_config(rig)
    data["privacy"] = {"pii_action": "redact"}
    rig.openai.reply_text = "Sent to <EMAIL_1> today"
    task = LLMTask(quality="critical", complexity="high", user_id="alice")
    other = "carol@corp.example"
    async with rig.proxy(data) as proxy:
        first = await proxy.acompletion(PII, task, max_tokens=16, temperature=0)
        messages = [{"role": "user", "content": PII[0]["content"].replace(EMAIL, other)}]
        second = await proxy.acompletion(messages, task, max_tokens=16, temperature=0)
    assert len(rig.openai.chat_requests()) == 1
    assert first.choices[0].message.content == f"Sent to {EMAIL} today"
    assert second.choices[0].message.content == f"Sent to {other} today"
    assert [a.outcome for a in second.aegis.attempts] == ["cache_hit"]
    stored = cache_file_text(rig)
    assert "<EMAIL_1>" in stored
    assert EMAIL not in stored
    assert other not in stored


async def test_report_shows_the_hit_ratio(rig: Rig) -> None:
    """report prints the cache hit ratio per provider in table, JSON and CSV."""
    config = rig.write_config(cached_config(rig))
    async with rig.proxy(cached_config(rig)) as proxy:
        for _ in range(4):
            await proxy.acompletion(HELLO, CRITICAL, max_tokens=16, temperature=0)
    table, as_json, as_csv = (report(config, fmt) for fmt in ("table", "json", "csv"))
    [header, *lines] = table.splitlines()
    openai_cells = next(line for line in lines if line.startswith("openai")).split()
    assert "cache hit %" in header
    assert openai_cells[4] == "75.0%"
    by_provider = {row["provider"]: row for row in json.loads(as_json)}
    assert (by_provider["openai"]["requests"], by_provider["openai"]["cache_hits"]) == (4, 3)
    assert by_provider["openai"]["hit_ratio"] == 0.75
    assert by_provider["ollama_cloud"]["hit_ratio"] is None
    csv_rows = {row["provider"]: row for row in csv.DictReader(io.StringIO(as_csv))}
    assert csv_rows["openai"]["hit_ratio"] == "0.75"


def report(config: Path, fmt: str) -> str:
    env = {"AEGIS_TEST_OPENAI_KEY": "sk-x", "AEGIS_TEST_CHEAP_KEY": "c-x"}
    out = subprocess.run(
        [sys.executable, "-m", "aegis_proxy.cli", "report", "--config", str(config),
         "--format", fmt],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout
