"""AegisLLMProxy end to end: real HTTP to fake providers, a real SQLite ledger."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from aegis_proxy import (
    AegisLLMProxy,
    LLMTask,
    NoProviderAvailableError,
    PrivacyViolationError,
    RequestValidationError,
)
from aegis_proxy.classify.detector import PiiReport
from tests.conftest import CHEAP_KEY, OPENAI_KEY, Rig
from tests.fakeserver import Fault, count_prompt_tokens
from tests.logcapture import capture_events

CRITICAL = LLMTask(quality="critical", complexity="high", task_type="extraction")
BATCH = LLMTask(batch_size=25, task_type="generation")
IBAN = "DE89370400440532013000"
EMAIL = "bob@corp.example"
HELLO = [{"role": "user", "content": "Summarise the quarterly report in one line."}]


def rows(rig: Rig) -> list[dict[str, Any]]:
    with sqlite3.connect(rig.tmp_path / "ledger.db") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY id")]


async def test_default_route_serves_locally(rig: Rig) -> None:
    """A plain task goes to the local provider and leaves one settled ledger row."""
    async with rig.proxy() as proxy:
        resp = await proxy.acompletion(HELLO, LLMTask(task_type="query"), max_tokens=32)
    assert resp.choices[0].message.content == rig.local.reply_text
    assert resp.aegis.provider == "local_ollama"
    assert resp.aegis.rule == "default"
    assert len(rig.local.chat_requests()) == 1
    assert not rig.openai.chat_requests()
    assert not rig.cheap.chat_requests()
    [row] = rows(rig)
    assert row["status"] == "ok"
    assert row["provider"] == "local_ollama"
    assert row["task_type"] == "query"
    assert row["input_tokens"] == count_prompt_tokens(rig.local.chat_requests()[0].body)
    assert row["cost_micros"] == 0


async def test_critical_high_goes_to_openai_with_its_key_only(rig: Rig) -> None:
    """critical + high reaches OpenAI; the OpenAI key is sent there and nowhere else."""
    async with rig.proxy() as proxy:
        resp = await proxy.acompletion(HELLO, CRITICAL, max_tokens=16)
    assert resp.aegis.provider == "openai"
    assert resp.aegis.rule == "critical_to_openai"
    [sent] = rig.openai.chat_requests()
    assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert sent.body["model"] == "gpt-4o"
    assert sent.body["max_completion_tokens"] == 16  # any-llm sends the current OpenAI name
    usage = resp.usage
    assert usage is not None
    # gpt-4o at $2.50 / $10.00 per Mtok, rounded up to whole micro-dollars
    expected = -(-(usage.prompt_tokens * 2_500_000 + usage.completion_tokens * 10_000_000) // 10**6)
    [row] = rows(rig)
    assert row["cost_micros"] == expected
    assert resp.aegis.cost_usd * 1_000_000 == expected


async def test_batch_goes_to_cheap_cloud_with_its_key(rig: Rig) -> None:
    """A 25-document batch goes to the cheap cloud, carrying its own key as a Bearer header."""
    async with rig.proxy() as proxy:
        resp = await proxy.acompletion(HELLO, BATCH)
    assert resp.aegis.provider == "ollama_cloud"
    [sent] = rig.cheap.chat_requests()
    assert sent.headers["authorization"] == f"Bearer {CHEAP_KEY}"
    assert sent.body["options"]["num_predict"] == 1024  # default max_tokens bounds the cost
    assert not rig.openai.chat_requests()
    assert not rig.local.chat_requests()


async def test_local_ollama_never_gets_env_key(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """OLLAMA_API_KEY in the environment is not sent to a provider without a configured key."""
    monkeypatch.setenv("OLLAMA_API_KEY", "env-key-that-must-not-leak")
    async with rig.proxy() as proxy:
        await proxy.acompletion(HELLO)
    [sent] = rig.local.chat_requests()
    assert "authorization" not in sent.headers


PII_REQUESTS: list[tuple[str, list[dict[str, Any]]]] = [
    ("system", [{"role": "system", "content": "Reply to jane.doe@example.com"}, *HELLO]),
    ("user", [{"role": "user", "content": "Call me on +44 20 7946 0958 please"}]),
    (
        "assistant",
        [*HELLO, {"role": "assistant", "content": "Card 4111 1111 1111 1111 noted."}, *HELLO],
    ),
    (
        "tool_result",
        [
            *HELLO,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "crm", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": json.dumps({"iban": IBAN})},
        ],
    ),
    (
        "tool_call_arguments",
        [
            *HELLO,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "mail", "arguments": json.dumps({"to": EMAIL})},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c2", "content": "sent"},
        ],
    ),
    (
        "content_parts",
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe this."},
                    {"type": "text", "text": "SSN 123-45-6789"},
                ],
            }
        ],
    ),
]  # fmt: skip


@pytest.mark.parametrize(("part", "messages"), PII_REQUESTS, ids=[p for p, _ in PII_REQUESTS])
async def test_pii_in_any_part_stays_local(
    rig: Rig, part: str, messages: list[dict[str, Any]]
) -> None:
    """PII in any message part is served locally even when the rule says OpenAI."""
    async with rig.proxy() as proxy:
        resp = await proxy.acompletion(messages, CRITICAL)
    assert resp.aegis.provider == "local_ollama", part
    assert resp.aegis.contains_pii
    assert resp.aegis.removed_providers == ["openai", "ollama_cloud"]
    assert rig.openai.requests == []
    assert rig.cheap.requests == []
    assert [r["contains_pii"] for r in rows(rig)] == [1]


async def test_pii_fallback_never_leaves_local(rig: Rig) -> None:
    """When the local provider fails on a PII request, nothing falls back to a cloud."""
    rig.local.add_fault(Fault.status(500))
    async with rig.proxy() as proxy:
        with pytest.raises(NoProviderAvailableError) as info:
            await proxy.acompletion(PII_REQUESTS[1][1], BATCH)
    assert rig.openai.requests == []
    assert rig.cheap.requests == []
    assert [a.outcome for a in info.value.attempts] == ["error"]  # type: ignore[attr-defined]
    assert [r["status"] for r in rows(rig)] == ["error"]


async def test_declared_pii_without_local_provider_fails_before_any_request(rig: Rig) -> None:
    """Declared pii with no local provider raises PrivacyViolationError and sends nothing."""
    data = rig.config_data()
    del data["providers"]["local_ollama"]
    data["routing"]["rules"][0]["route"] = ["openai", "ollama_cloud"]
    data["routing"]["rules"][1]["route"] = ["ollama_cloud"]
    data["routing"]["default"] = ["ollama_cloud"]
    async with rig.proxy(data) as proxy:
        with pytest.raises(PrivacyViolationError) as info:
            await proxy.acompletion(HELLO, LLMTask(data_classification="pii"))
    assert info.value.removed == ("ollama_cloud",)
    assert rig.openai.requests == []
    assert rig.cheap.requests == []
    assert rig.local.requests == []
    assert not (rig.tmp_path / "ledger.db").exists() or rows(rig) == []


class BrokenDetector:
    """A detector that fails, as a NER backend might."""

    def scan_messages(self, messages: Sequence[Mapping[str, Any]]) -> PiiReport:
        raise RuntimeError("model not loaded")


async def test_detector_failure_counts_as_pii(rig: Rig) -> None:
    """If detection fails, the request is treated as PII and stays local."""
    proxy = AegisLLMProxy.from_config(rig.write_config())
    proxy = AegisLLMProxy(proxy.config, detector=BrokenDetector())
    async with proxy:
        resp = await proxy.acompletion(HELLO, CRITICAL)
    assert resp.aegis.provider == "local_ollama"
    assert resp.aegis.pii_entities == {"DETECTION_FAILED": 1}
    assert rig.openai.requests == []


FAULTS = [
    ("429", Fault.status(429, retry_after=0), "rate_limited"),
    ("500", Fault.status(500), "server_error"),
    ("401", Fault.status(401), "auth_error"),
    ("404", Fault.status(404), "model_not_found"),
    ("drop", Fault.drop(), "connection_error"),
    ("malformed", Fault.malformed(), "server_error"),
    ("slow", Fault.delay(8.0), "timeout"),
]


@pytest.mark.parametrize(("name", "fault", "error_type"), FAULTS, ids=[f[0] for f in FAULTS])
async def test_fallback_on_each_fault(rig: Rig, name: str, fault: Fault, error_type: str) -> None:
    """A failing OpenAI attempt is recorded and the next provider of the route serves; one
    the provider answered costs $0, one whose outcome is unknown (dropped, timed out after
    it was sent) costs its bound."""
    rig.openai.add_fault(fault)
    data = rig.config_data()
    data["providers"]["openai"]["timeout_s"] = 1
    async with rig.proxy(data) as proxy:
        resp = await proxy.acompletion(HELLO, CRITICAL, max_tokens=8)
    assert resp.aegis.provider == "ollama_cloud"
    assert [(a.provider, a.outcome, a.error_type) for a in resp.aegis.attempts] == [
        ("openai", "error", error_type),
        ("ollama_cloud", "ok", None),
    ]
    ledger = rows(rig)
    assert [(r["provider"], r["status"], r["error_type"]) for r in ledger] == [
        ("openai", "error", error_type),
        ("ollama_cloud", "ok", None),
    ]
    unknown = name in ("drop", "slow")
    assert ledger[0]["cost_micros"] == (ledger[0]["reserved_micros"] if unknown else 0)
    assert ledger[0]["reserved_micros"] > 0
    assert ledger[0]["request_id"] == ledger[1]["request_id"] == resp.aegis.request_id


async def test_missing_key_makes_provider_unavailable(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unset key skips OpenAI with the reason noted, and the next provider serves."""
    monkeypatch.delenv("AEGIS_TEST_OPENAI_KEY")
    with capture_events() as logs:
        async with rig.proxy() as proxy:
            resp = await proxy.acompletion(HELLO, CRITICAL)
    assert resp.aegis.provider == "ollama_cloud"
    first = resp.aegis.attempts[0]
    assert (first.provider, first.outcome) == ("openai", "skipped")
    assert first.reason == "environment variable AEGIS_TEST_OPENAI_KEY is not set"
    assert rig.openai.requests == []
    assert [r["provider"] for r in rows(rig)] == ["ollama_cloud"]
    skipped = [e for e in logs if e.get("outcome") == "skipped"]
    assert skipped
    assert skipped[0]["provider"] == "openai"


async def test_every_candidate_failing_raises_with_attempts(rig: Rig) -> None:
    """When the whole route fails, NoProviderAvailableError lists every attempt."""
    rig.cheap.add_fault(Fault.status(500))
    rig.local.add_fault(Fault.status(500))
    async with rig.proxy() as proxy:
        with pytest.raises(NoProviderAvailableError) as info:
            await proxy.acompletion(HELLO, BATCH)
    assert info.value.rule == "batch_to_cloud"
    assert len(info.value.attempts) == 2
    assert [r["status"] for r in rows(rig)] == ["error", "error"]


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([], "messages"),
        ("hello", "messages"),
        ([{"role": "wizard", "content": "x"}], "messages[0].role"),
        ([{"role": "user"}], "messages[0].content"),
        ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id"),
        ([{"role": "user", "content": [{"url": "x"}]}], "messages[0].content[0]"),  # no type
    ],
)
async def test_malformed_request_fails_before_network(rig: Rig, messages: Any, field: str) -> None:
    """A malformed request raises RequestValidationError with no request and no row."""
    async with rig.proxy() as proxy:
        with pytest.raises(RequestValidationError) as info:
            await proxy.acompletion(messages)
    assert info.value.field == field
    assert rig.local.requests == []


async def test_bad_params_fail_before_network(rig: Rig) -> None:
    """A caller-chosen model or a bad max_tokens is refused before any call."""
    async with rig.proxy() as proxy:
        with pytest.raises(RequestValidationError) as info:
            await proxy.acompletion(HELLO, model="gpt-4o")
        assert info.value.field == "model"
        with pytest.raises(RequestValidationError):
            await proxy.acompletion(HELLO, max_tokens=0)
    assert rig.local.requests == []


async def test_no_prompt_text_or_key_in_logs_or_ledger(rig: Rig) -> None:
    """Neither log events nor ledger rows hold prompt text, reply text or keys."""
    secret_prompt = "The merger code name is BLUEHERON and the price is 41 dollars."
    rig.openai.reply_text = "BLUEHERON confirmed at 41 dollars"
    with capture_events() as logs:
        async with rig.proxy() as proxy:
            await proxy.acompletion([{"role": "user", "content": secret_prompt}], CRITICAL)
    dumped = json.dumps(logs, default=str) + json.dumps(rows(rig), default=str)
    for needle in ("BLUEHERON", "merger", OPENAI_KEY, CHEAP_KEY):
        assert needle not in dumped
    assert any(e["event"] == "route_decided" for e in logs)


async def test_module_level_acompletion_uses_aegis_config(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The module-level acompletion builds its proxy from $AEGIS_CONFIG."""
    from aegis_proxy import acompletion, close_default_proxy

    monkeypatch.setenv("AEGIS_CONFIG", str(rig.write_config()))
    try:
        resp = await acompletion(HELLO, LLMTask(batch_size=12))
    finally:
        await close_default_proxy()
    assert resp.aegis.provider == "ollama_cloud"
    assert len(rig.cheap.chat_requests()) == 1


async def test_tools_pass_through_and_tool_calls_return(rig: Rig) -> None:
    """tools and tool_choice reach the provider unchanged and tool calls come back."""
    rig.openai.tool_call = ("get_weather", {"city": "Paris"})
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    async with rig.proxy() as proxy:
        resp = await proxy.acompletion(HELLO, CRITICAL, tools=tools, tool_choice="auto")
    [sent] = rig.openai.chat_requests()
    assert sent.body["tools"] == tools
    assert sent.body["tool_choice"] == "auto"
    call = resp.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


IMAGE_REQUEST = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ],
    }
]


async def test_images_count_as_personal_data_by_default(rig: Rig) -> None:
    """An image request stays local by default: images cannot be scanned."""
    async with rig.proxy() as proxy:
        resp = await proxy.acompletion(IMAGE_REQUEST, CRITICAL)
    assert resp.aegis.provider == "local_ollama"
    assert resp.aegis.pii_entities == {"IMAGE": 1}
    assert rig.openai.requests == []
    [sent] = rig.local.chat_requests()
    assert sent.body["messages"][0]["images"] == ["iVBORw0KGgo="]
    [row] = rows(rig)
    assert (row["contains_pii"], row["status"]) == (1, "ok")


async def test_images_allowed_to_cloud_skip_non_vision_providers(rig: Rig) -> None:
    """With images: allow_cloud, providers without vision: true are skipped with a reason."""
    data = rig.config_data()
    data["privacy"] = {"images": "allow_cloud"}
    async with rig.proxy(data) as proxy:
        resp = await proxy.acompletion(IMAGE_REQUEST, CRITICAL)
    assert resp.aegis.provider == "local_ollama"
    assert [a.outcome for a in resp.aegis.attempts] == ["skipped", "skipped", "ok"]
    assert resp.aegis.attempts[0].reason == (
        "request has images and the provider is not declared vision: true"
    )
    data["providers"]["openai"]["vision"] = True
    async with rig.proxy(data) as proxy:
        resp = await proxy.acompletion(IMAGE_REQUEST, CRITICAL)
    assert resp.aegis.provider == "openai"
    [sent] = rig.openai.chat_requests()
    assert sent.body["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/png")


def test_sync_completion_outside_event_loop(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """completion() works from plain scripts, through the same policy and ledger."""
    from aegis_proxy import completion

    monkeypatch.setenv("AEGIS_CONFIG", str(rig.write_config()))
    resp = completion(HELLO, CRITICAL, max_tokens=8)
    assert resp.aegis.provider == "openai"  # type: ignore[attr-defined]
    assert [r["provider"] for r in rows(rig)] == ["openai"]


async def test_sync_completion_inside_event_loop_refuses(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """completion() inside a running loop raises a clear error and sends nothing."""
    from aegis_proxy import completion

    monkeypatch.setenv("AEGIS_CONFIG", str(rig.write_config()))
    with pytest.raises(RequestValidationError, match="await acompletion"):
        completion(HELLO)
    assert rig.local.requests == []


async def test_rule_max_cost_skips_expensive_candidates(rig: Rig) -> None:
    """A rule's max_cost_usd skips candidates whose cost bound exceeds it, with the reason."""
    data = rig.config_data()
    data["routing"]["rules"][0]["max_cost_usd"] = 0.001  # gpt-4o x 1024 tokens is above
    async with rig.proxy(data) as proxy:
        resp = await proxy.acompletion(HELLO, CRITICAL)
    assert resp.aegis.provider == "ollama_cloud"
    first = resp.aegis.attempts[0]
    assert (first.provider, first.outcome) == ("openai", "skipped")
    assert first.reason is not None
    assert "exceeds the rule's max_cost_usd $0.001000" in first.reason
    assert rig.openai.requests == []


async def test_route_entry_names_a_model(rig: Rig) -> None:
    """A route entry with a model sends that model, priced from the cost map."""
    data = rig.config_data()
    data["routing"]["rules"][0]["route"] = [{"provider": "openai", "model": "gpt-4o-mini"}]
    async with rig.proxy(data) as proxy:
        resp = await proxy.acompletion(HELLO, CRITICAL)
    assert resp.aegis.model == "gpt-4o-mini"
    assert rig.openai.chat_requests()[0].body["model"] == "gpt-4o-mini"
    usage = resp.usage
    assert usage is not None
    expected = -(-(usage.prompt_tokens * 150_000 + usage.completion_tokens * 600_000) // 10**6)
    assert [r["cost_micros"] for r in rows(rig)] == [expected]
