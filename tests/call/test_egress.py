"""What is sent is exactly what was checked (CONTRACT 5.1), bullet by bullet, on real HTTP.

The bodies are the ones the fake servers received; nothing of ours is patched.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import pytest

from aegis_proxy import AegisLLMProxy, LLMTask
from aegis_proxy.call.client import ProviderClient
from aegis_proxy.call.egress import Expected, expecting
from aegis_proxy.classify.detector import PiiDetector, PiiReport
from aegis_proxy.config import load_config
from aegis_proxy.errors import (
    EgressBlockedError,
    NoProviderAvailableError,
    PrivacyViolationError,
    RequestValidationError,
)
from tests.conftest import Rig
from tests.fakeserver import Fault

CRITICAL = LLMTask(quality="critical", complexity="high", task_type="extraction")
ASK = [{"role": "user", "content": "Summarise the quarterly report in one line."}]
EMAIL = "alice.martin@corp.example"
CARD = "4111 1111 1111 1111"
PDF = "data:application/pdf;base64,JVBERi0x"


def rows(rig: Rig) -> list[dict[str, Any]]:
    with sqlite3.connect(rig.tmp_path / "ledger.db") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY id")]


def _openai_only(rig: Rig, **privacy: Any) -> dict[str, Any]:
    data = rig.config_data()
    data["routing"]["rules"][0]["route"] = ["openai", "local_ollama"]
    data["privacy"] = privacy
    return data


# -- escape hatches and parameter checks ------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["extra_body", "extra_headers", "extra_query", "api_base", "base_url", "api_key", "model",
     "client_args"],
)  # fmt: skip
async def test_escape_hatches_are_refused_before_any_request(rig: Rig, name: str) -> None:
    """A parameter that would bypass the checked payload is refused, naming it, before HTTP."""
    async with rig.proxy() as proxy:
        with pytest.raises(RequestValidationError) as info:
            await proxy.acompletion(ASK, CRITICAL, **{name: {"messages": [], "model": "o1-pro"}})
    assert info.value.field == name
    assert all(not s.chat_requests() for s in rig.servers().values())
    assert not (rig.tmp_path / "ledger.db").exists() or rows(rig) == []


async def test_a_typo_gets_a_did_you_mean_and_touches_no_breaker(rig: Rig) -> None:
    """``temprature`` is refused with a did-you-mean; five of them open no breaker."""
    async with rig.proxy() as proxy:
        for _ in range(6):
            with pytest.raises(RequestValidationError) as info:
                await proxy.acompletion(ASK, CRITICAL, temprature=0)
        assert info.value.field == "temprature"
        assert "did you mean 'temperature'" in info.value.problem
        assert {b.state for b in proxy.breakers.values()} == {"closed"}
    assert all(not s.chat_requests() for s in rig.servers().values())


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"n": "2"}, "n"),
        ({"n": 2.0}, "n"),
        ({"stream": "yes"}, "stream"),
        ({"temperature": "hot"}, "temperature"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"tools": {"type": "function"}}, "tools"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"tools": [{"type": "function", "function": {"name": "f", "x": {1, 2}}}]},
         "tools[0].function.x"),
        ({"user": "\ud800"}, "user"),
        ({"response_format": {"type": "json_schema", "n": float("nan")}}, "response_format.n"),
    ],
)  # fmt: skip
async def test_bad_parameter_values_are_refused(
    rig: Rig, params: dict[str, Any], field: str
) -> None:
    """Wrong types and values are a RequestValidationError naming the path; nothing is sent."""
    async with rig.proxy() as proxy:
        with pytest.raises(RequestValidationError) as info:
            await proxy.acompletion(ASK, CRITICAL, **params)
    assert info.value.field == field
    assert all(not s.chat_requests() for s in rig.servers().values())


async def test_a_message_that_is_not_plain_json_is_refused_by_path(rig: Rig) -> None:
    """An object inside a content part is refused with the path of the value."""
    messages = [{"role": "user", "content": [{"type": "text", "text": object()}]}]
    async with rig.proxy() as proxy:
        with pytest.raises(RequestValidationError) as info:
            await proxy.acompletion(messages, CRITICAL)
    assert info.value.field == "messages[0].content[0].text"


async def test_provider_params_go_only_where_allowed(rig: Rig) -> None:
    """``enable_thinking`` reaches the provider listing it (scanned); others are skipped."""
    data = rig.config_data()
    data["providers"]["ollama_cloud"]["allow_params"] = ["enable_thinking"]
    async with rig.proxy(data) as proxy:
        response = await proxy.acompletion(ASK, CRITICAL, enable_thinking=True, max_tokens=8)
        assert response.aegis.provider == "ollama_cloud"
        skipped = response.aegis.attempts[0]
        assert (skipped.provider, skipped.outcome) == ("openai", "skipped")
        assert "enable_thinking" in (skipped.reason or "")
        with pytest.raises(NoProviderAvailableError):  # scanned: local only, and local lacks it
            await proxy.acompletion(ASK, CRITICAL, enable_thinking=f"mail {EMAIL}",
                                    max_tokens=8)  # fmt: skip
    assert len(rig.cheap.chat_requests()) == 1
    assert rig.cheap.chat_requests()[0].body["options"]["enable_thinking"] is True
    without = rig.config_data()
    async with rig.proxy(without) as proxy:
        with pytest.raises(RequestValidationError) as info:
            await proxy.acompletion(ASK, CRITICAL, enable_thinking=True)
    assert info.value.field == "enable_thinking"


async def test_an_allowed_param_reaches_openai_in_the_body(rig: Rig) -> None:
    """An OpenAI-protocol provider gets its allowed parameter at the top of the body."""
    data = rig.config_data()
    data["providers"]["openai"]["allow_params"] = ["vl_high_resolution_images"]
    async with rig.proxy(data) as proxy:
        response = await proxy.acompletion(ASK, CRITICAL, vl_high_resolution_images=True)
    assert response.aegis.provider == "openai"
    assert rig.openai.chat_requests()[0].body["vl_high_resolution_images"] is True


# -- every string is scanned --------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"tools": [{"type": "function", "function": {"name": "lookup",
                    "description": f"ask {EMAIL}", "parameters": {"type": "object"}}}]},
        {"tools": [{"type": "function", "function": {"name": "lookup", "parameters": {
            "type": "object", "properties": {"who": {"type": "string", "enum": [EMAIL]}}}}}]},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "object", "description": f"card {CARD}"}}}},
        {"prediction": {"type": "content", "content": f"card {CARD}"}},
        {"user": EMAIL},
        {"metadata": {"owner": EMAIL}},
        {"stop": [EMAIL]},
    ],
)  # fmt: skip
async def test_pii_in_any_parameter_stays_local(rig: Rig, params: dict[str, Any]) -> None:
    """Personal data in tools, schemas, prediction, user, metadata or stop never leaves."""
    async with rig.proxy() as proxy:
        response = await proxy.acompletion(ASK, CRITICAL, **params)
    assert response.aegis.contains_pii
    assert response.aegis.provider == "local_ollama"
    assert not rig.openai.chat_requests()
    assert not rig.cheap.chat_requests()


async def test_pii_in_a_parameter_is_blocked_under_block(rig: Rig) -> None:
    """With pii_action: block, a parameter holding an email is refused like a message."""
    async with rig.proxy(_openai_only(rig, pii_action="block")) as proxy:
        with pytest.raises(PrivacyViolationError) as info:
            await proxy.acompletion(ASK, CRITICAL, user=EMAIL)
    assert info.value.blocked
    assert "EMAIL" in info.value.entity_types


async def test_pii_in_a_parameter_is_redacted_under_redact(rig: Rig) -> None:
    """With pii_action: redact, a parameter's email is replaced before it reaches the cloud."""
    async with rig.proxy(_openai_only(rig, pii_action="redact")) as proxy:
        response = await proxy.acompletion(ASK, CRITICAL, metadata={"owner": EMAIL})
    assert response.aegis.provider == "openai"
    sent = rig.openai.chat_requests()[0].body
    assert sent["metadata"] == {"owner": "<EMAIL_1>"}


@pytest.mark.parametrize("action", ["route_local", "redact", "block"])
async def test_a_data_prefix_in_text_exempts_nothing(rig: Rig, action: str) -> None:
    """Text after ``data:...;base64,`` in a text string is scanned like any other text."""
    text = f"data:text/plain;base64,hello {EMAIL}, call +44 20 7946 0958, card {CARD}"
    messages = [{"role": "user", "content": [{"type": "text", "text": text}]}]
    async with rig.proxy(_openai_only(rig, pii_action=action)) as proxy:
        if action == "block":
            with pytest.raises(PrivacyViolationError):
                await proxy.acompletion(messages, CRITICAL)
        else:
            response = await proxy.acompletion(messages, CRITICAL)
            assert response.aegis.contains_pii
    for body in [r.body for r in rig.openai.chat_requests()]:
        assert EMAIL not in json.dumps(body)
        assert "4111" not in json.dumps(body)


async def test_only_a_genuine_data_url_in_an_image_part_is_exempt(rig: Rig) -> None:
    """A base64 image URL is not text; text glued after its payload is scanned."""
    image = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    data = _openai_only(rig, images="allow_cloud")
    data["providers"]["openai"]["vision"] = True
    genuine = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}]}]
    glued = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": f"{image}, mail {EMAIL}"}}]}]  # fmt: skip
    async with rig.proxy(data) as proxy:
        assert (await proxy.acompletion(genuine, CRITICAL)).aegis.provider == "openai"
        plan = proxy.plan(glued, CRITICAL)
    assert plan.pii_entities == {"EMAIL": 1}
    assert plan.local_only
    assert len(rig.openai.chat_requests()) == 1


@pytest.mark.parametrize(
    "part",
    [
        {"type": "file", "file": {"filename": "a.pdf", "file_data": PDF}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "video", "video": {"url": "data:video/mp4;base64,AAAA"}},
    ],
)  # fmt: skip
async def test_binary_parts_count_as_personal_data(rig: Rig, part: dict[str, Any]) -> None:
    """File, audio and unknown parts stay local by default; binary_parts: allow_cloud lets
    them reach a cloud, their strings still scanned."""
    messages = [{"role": "user", "content": [{"type": "text", "text": "Read this."}, part]}]
    data = _openai_only(rig)
    data["providers"]["local_ollama"]["sdk"] = "openai"  # ollama's SDK drops such parts
    data["providers"]["local_ollama"]["api_base"] = rig.local.openai_base
    async with rig.proxy(data) as proxy:
        response = await proxy.acompletion(messages, CRITICAL)
        assert response.aegis.pii_entities == {"BINARY_PART": 1}
        assert response.aegis.provider == "local_ollama"
    allowed = _openai_only(rig, binary_parts="allow_cloud")
    allowed["routing"]["rules"][0]["route"] = ["openai"]
    async with rig.proxy(allowed) as proxy:
        if part["type"] == "video":  # no documented price: a budgeted provider cannot bound it
            with pytest.raises(NoProviderAvailableError) as info:
                await proxy.acompletion(messages, CRITICAL)
            assert "no documented price" in (info.value.attempts[0].reason or "")
            return
        response = await proxy.acompletion(messages, CRITICAL)
        assert response.aegis.provider == "openai"
        named = json.loads(json.dumps(messages).replace("Read this.", f"Read {EMAIL}."))
        with pytest.raises(NoProviderAvailableError):
            await proxy.acompletion(named, CRITICAL)
    assert rig.openai.chat_requests()[-1].body["messages"] == messages


# -- one payload, deep-copied -------------------------------------------------------------


async def test_a_change_during_retry_backoff_is_not_sent(rig: Rig) -> None:
    """The caller's list changed during the backoff: the retry sends what was checked."""
    data = rig.config_data()
    data["resilience"] = {"retries": 1, "backoff_s": 0.3}
    content = [{"type": "text", "text": "Summarise the report."}]
    messages = [{"role": "user", "content": content}]
    rig.openai.add_fault(Fault.status(503))
    async with rig.proxy(data) as proxy:
        task = asyncio.ensure_future(proxy.acompletion(messages, CRITICAL, max_tokens=8))
        while not rig.openai.chat_requests():  # noqa: ASYNC110  # the server is another thread
            await asyncio.sleep(0.01)
        content[0]["text"] = f"mail {EMAIL}"
        content.append({"type": "text", "text": CARD})
        response = await task
    assert response.aegis.provider == "openai"
    bodies = [r.body["messages"] for r in rig.openai.chat_requests()]
    assert (
        bodies
        == [[{"role": "user", "content": [{"type": "text", "text": "Summarise the report."}]}]] * 2
    )


async def test_openai_body_is_the_payload_plus_the_sdk_translation(rig: Rig) -> None:
    """The OpenAI body is the payload exactly; only max_tokens is spelled max_completion_tokens."""
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    params = {"temperature": 0.5, "max_tokens": 20, "n": 2, "seed": 7, "user": "u-1",
              "tools": tools}  # fmt: skip
    async with rig.proxy() as proxy:
        await proxy.acompletion(ASK, CRITICAL, **params)
    body = rig.openai.chat_requests()[0].body
    expected = {"model": "gpt-4o", "messages": ASK, **params}
    expected["max_completion_tokens"] = expected.pop("max_tokens")
    assert body == expected


async def test_ollama_body_is_the_payload_in_ollama_format(rig: Rig) -> None:
    """Ollama's /api/chat gets the same messages, the model, options.num_predict and tools."""
    tools = [{"type": "function", "function": {"name": "f", "description": "d",
              "parameters": {"type": "object", "properties": {}}}}]  # fmt: skip
    data = rig.config_data()
    data["routing"]["rules"][0]["route"] = ["ollama_cloud"]
    async with rig.proxy(data) as proxy:
        await proxy.acompletion(ASK, CRITICAL, temperature=0.5, tools=tools)
    body = rig.cheap.chat_requests()[0].body
    assert body["model"] == "gpt-oss:120b"
    assert body["messages"] == ASK
    assert body["options"] == {"temperature": 0.5, "num_predict": 1024}
    assert [t["function"]["name"] for t in body["tools"]] == ["f"]
    assert set(body) <= {"model", "messages", "tools", "stream", "options"}


# -- the last check on the wire -----------------------------------------------------------


async def _client(rig: Rig, provider: str) -> ProviderClient:
    config = load_config(rig.write_config()).providers[provider]
    return ProviderClient(provider, config)


def _expected(provider: str, wire: str, model: str, messages: Any, **params: Any) -> Expected:
    scan = PiiDetector()
    counts = lambda value: scan.scan_messages(value).entity_counts  # noqa: E731
    return Expected(provider, wire, model, messages, params, counts, False, False)


@pytest.mark.parametrize(("provider", "wire"), [("openai", "openai"), ("ollama_cloud", "ollama")])
async def test_the_guard_stops_a_body_other_than_the_checked_one(
    rig: Rig, provider: str, wire: str
) -> None:
    """Messages, model or limits that differ from the checked payload never leave."""
    client = await _client(rig, provider)
    model = client.config.model
    cases = [
        (_expected(provider, wire, model, [{"role": "user", "content": "other"}]), {}),
        (_expected(provider, wire, "o1-pro", ASK), {}),
        (_expected(provider, wire, model, ASK, max_tokens=10), {"max_tokens": 4000}),
    ]
    try:
        for expected, params in cases:
            with expecting(expected), pytest.raises(EgressBlockedError) as info:
                await client.complete(model, ASK, params)
            assert info.value.provider == provider
            assert "not the checked payload" in info.value.reason
            assert info.value.blocked
    finally:
        await client.aclose()
    assert rig.servers()[provider].chat_requests() == []


@pytest.mark.parametrize(("provider", "wire"), [("openai", "openai"), ("ollama_cloud", "ollama")])
async def test_the_guard_scans_the_body_again(rig: Rig, provider: str, wire: str) -> None:
    """A body holding personal data is stopped on the wire, with its entity types."""
    client = await _client(rig, provider)
    model = client.config.model
    messages = [{"role": "user", "content": f"mail {EMAIL}"}]
    try:
        expected = _expected(provider, wire, model, messages)
        with expecting(expected), pytest.raises(EgressBlockedError) as info:
            await client.complete(model, messages, {})
        assert info.value.entity_types == ("EMAIL",)
        with pytest.raises(EgressBlockedError) as outside:  # no checked attempt at all
            await client.complete(model, ASK, {})
        assert outside.value.reason == "a request outside a checked attempt"
    finally:
        await client.aclose()
    assert rig.servers()[provider].chat_requests() == []


class _SecondScanFinds:
    """A detector that sees nothing the first time it is asked, then sees an email."""

    def __init__(self) -> None:
        self.inner = PiiDetector()
        self.calls = 0

    def scan_messages(self, messages: Any) -> PiiReport:
        self.calls += 1
        if self.calls % 2 == 1:
            return PiiReport()
        return PiiReport({"EMAIL": 1})

    def scan_text(self, text: str) -> Any:
        return self.inner.scan_text(text)


async def test_a_stopped_body_ends_the_request_without_counting_against_the_provider(
    rig: Rig,
) -> None:
    """A stopped attempt settles at $0 as egress_blocked; the breaker never counts it."""
    data = _openai_only(rig)
    data["resilience"] = {"retries": 0, "breaker_failures": 2}
    proxy = AegisLLMProxy(load_config(rig.write_config(data)), detector=_SecondScanFinds())
    async with proxy:
        for _ in range(3):
            with pytest.raises(EgressBlockedError) as info:
                await proxy.acompletion(ASK, CRITICAL)
            assert info.value.entity_types == ("EMAIL",)
        assert proxy.breakers["openai"].state == "closed"
    assert rig.openai.chat_requests() == []
    assert rig.local.chat_requests() == []
    assert [(r["status"], r["error_type"], r["cost_micros"]) for r in rows(rig)] == [
        ("error", "egress_blocked", 0)
    ] * 3


# -- the cost bound and the breaker ---------------------------------------------------------


async def test_the_bound_covers_n_choices_and_all_input(rig: Rig) -> None:
    """n=4 and a large prediction are reserved; the fake bills all it got, under the bound."""
    rig.openai.bill_received = True
    prediction = {"type": "content", "content": "word " * 2000}
    async with rig.proxy() as proxy:
        await proxy.acompletion(ASK, CRITICAL, n=4, max_tokens=100, prediction=prediction)
    (row,) = rows(rig)
    assert row["status"] == "ok"
    assert row["cost_micros"] > 0
    assert row["reserved_micros"] >= row["cost_micros"]
    assert row["output_tokens"] == 400


async def test_a_request_whose_cost_cannot_be_bounded_skips_budgeted_providers(rig: Rig) -> None:
    """A file by id has no size: budgeted providers are skipped, a free local one serves."""
    part = {"type": "file", "file": {"file_id": "file-abc"}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "Read."}, part]}]
    data = _openai_only(rig, binary_parts="allow_cloud")
    data["providers"]["local_ollama"]["sdk"] = "openai"
    data["providers"]["local_ollama"]["api_base"] = rig.local.openai_base
    async with rig.proxy(data) as proxy:
        response = await proxy.acompletion(messages, CRITICAL)
    assert response.aegis.provider == "local_ollama"
    skipped = response.aegis.attempts[0]
    assert (
        skipped.reason
        == "cost bound cannot be computed: a file part by file_id has no size to bound"
    )


async def test_http_400s_never_open_the_breaker(rig: Rig) -> None:
    """Five context-length 400s fall back each time and leave the breaker closed."""
    rig.openai.add_fault(Fault.status(400, message="context_length_exceeded"), times=6)
    async with rig.proxy() as proxy:
        for _ in range(6):
            response = await proxy.acompletion(ASK, CRITICAL, max_tokens=8)
            assert response.aegis.provider == "ollama_cloud"
            assert response.aegis.attempts[0].error_type == "invalid_request"
        assert proxy.breakers["openai"].state == "closed"
    assert len(rig.openai.chat_requests()) == 6
    assert {r["error_type"] for r in rows(rig) if r["provider"] == "openai"} == {"invalid_request"}
