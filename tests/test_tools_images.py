"""Tool calls, structured output and images through policy, budget and ledger, both protocols.

What must always hold:
- a tool-call round trip (assistant ``tool_calls`` -> ``tool`` result -> final answer) reaches
  the provider in its own wire shape, and each turn is a budgeted, settled ledger row;
- personal data in a tool result keeps the next turn local, mid-conversation;
- ``response_format`` reaches an OpenAI-protocol provider unchanged;
- an image (URL or base64 data URL) is personal data by default (local only); with
  ``images: allow_cloud`` it reaches a ``vision: true`` cloud, whose reservation covers it.
"""

from __future__ import annotations

import json
import math
import sqlite3
from decimal import Decimal
from typing import Any

import pytest

from aegis_proxy import AegisStream, LLMTask, NoProviderAvailableError
from aegis_proxy.reserve.pricing import IMAGE_TOKEN_BOUND
from tests.conftest import Rig
from tests.fakeserver import FakeProviderServer, count_completion_tokens, count_prompt_tokens

CRITICAL = LLMTask(quality="critical", complexity="high", task_type="support")
BATCH = LLMTask(batch_size=25, task_type="support")
PROTOCOLS = {  # protocol -> (task, provider, rule, $ per Mtok in/out)
    "openai": (CRITICAL, "openai", "critical_to_openai", ("2.5", "10")),
    "ollama": (BATCH, "ollama_cloud", "batch_to_cloud", ("0.10", "0.40")),
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Find the shipping status of an order.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    }
]
CALL = ("lookup_order", {"order_id": "A-17"})
ASK = [{"role": "user", "content": "Where is order A-17?"}]
RESULT = json.dumps({"order_id": "A-17", "status": "shipped"})
ANSWER = "Order A-17 has shipped."


def _data(rig: Rig, **privacy: str) -> dict[str, Any]:
    data = rig.config_data()
    data["providers"]["openai"]["price"] = {"input_per_mtok": 2.5, "output_per_mtok": 10}
    if privacy:
        data["privacy"] = privacy
    return data


def _server(rig: Rig, protocol: str) -> FakeProviderServer:
    return rig.openai if protocol == "openai" else rig.cheap


def rows(rig: Rig) -> list[dict[str, Any]]:
    with sqlite3.connect(rig.tmp_path / "ledger.db") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY id")]


def budget(rig: Rig, provider: str) -> tuple[int, int]:
    """(spent, reserved) micro-dollars of ``provider`` this month (periods are YYYY-MM)."""
    query = (
        "SELECT sum(spent_micros), sum(reserved_micros) FROM budget_usage"
        " WHERE provider = ? AND length(period) = 7"
    )
    with sqlite3.connect(rig.tmp_path / "ledger.db") as conn:
        spent, reserved = conn.execute(query, (provider,)).fetchone()
    return spent or 0, reserved or 0


def assert_priced(rig: Rig, protocol: str, bodies: list[Any]) -> list[dict[str, Any]]:
    """One ok row per body: the server's token counts, priced exactly, within the reservation."""
    _, provider, rule, (price_in, price_out) = PROTOCOLS[protocol]
    ledger = rows(rig)
    assert [(r["provider"], r["status"], r["rule"]) for r in ledger] == [
        (provider, "ok", rule)
    ] * len(bodies)
    for row, body in zip(ledger, bodies, strict=True):
        assert row["input_tokens"] == count_prompt_tokens(body)
        cost = row["input_tokens"] * Decimal(price_in) + row["output_tokens"] * Decimal(price_out)
        assert row["cost_micros"] == math.ceil(cost)
        assert 0 < row["cost_micros"] <= row["reserved_micros"]
    assert budget(rig, provider) == (sum(r["cost_micros"] for r in ledger), 0)
    return ledger


# --- tools -------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_tool_call_round_trip(rig: Rig, protocol: str) -> None:
    """tool_calls -> tool result -> answer: wire shape kept, each turn budgeted and settled."""
    task, provider, _, _ = PROTOCOLS[protocol]
    server = _server(rig, protocol)
    server.tool_call = CALL
    async with rig.proxy(_data(rig)) as proxy:
        first = await proxy.acompletion(ASK, task, tools=TOOLS, tool_choice="auto", max_tokens=64)
        message = first.choices[0].message
        [call] = message.tool_calls
        server.tool_call, server.reply_text = None, ANSWER
        result = {"role": "tool", "tool_call_id": call.id, "content": RESULT}
        final = await proxy.acompletion([*ASK, message, result], task, tools=TOOLS, max_tokens=64)
    assert (call.function.name, json.loads(call.function.arguments)) == CALL
    assert final.choices[0].message.content == ANSWER
    assert [first.aegis.provider, final.aegis.provider] == [provider, provider]
    sent = [r.body for r in server.chat_requests()]
    assert [b["tools"] for b in sent] == [TOOLS, TOOLS]
    assistant, tool = sent[1]["messages"][1:]
    if protocol == "openai":
        assert sent[0]["tool_choice"] == "auto"
        assert [(c["id"], c["function"]) for c in assistant["tool_calls"]] == [
            (call.id, {"name": "lookup_order", "arguments": call.function.arguments})
        ]
        assert tool == result
    else:  # Ollama names the tool instead of an id, and takes arguments as a mapping
        assert assistant["tool_calls"] == [{"function": {"name": CALL[0], "arguments": CALL[1]}}]
        assert tool == {"role": "tool", "content": RESULT, "tool_name": "lookup_order"}
    ledger = assert_priced(rig, protocol, sent)
    assert ledger[0]["output_tokens"] == count_completion_tokens("", CALL)
    assert ledger[1]["output_tokens"] == len(ANSWER.split())
    assert first.aegis.cost_usd * 1_000_000 == ledger[0]["cost_micros"]


async def test_personal_data_in_a_tool_result_keeps_the_next_turn_local(rig: Rig) -> None:
    """A tool result holding an email moves the conversation's next turn to the local model."""
    rig.openai.tool_call = ("lookup_customer", {"customer_id": "C-9"})
    async with rig.proxy(_data(rig)) as proxy:
        first = await proxy.acompletion(ASK, CRITICAL, tools=TOOLS)
        message = first.choices[0].message
        [call] = message.tool_calls
        found = json.dumps({"email": "jane.doe@example.com"})
        result = {"role": "tool", "tool_call_id": call.id, "content": found}
        final = await proxy.acompletion([*ASK, message, result], CRITICAL, tools=TOOLS)
    assert (first.aegis.provider, final.aegis.provider) == ("openai", "local_ollama")
    assert final.aegis.removed_providers == ["openai", "ollama_cloud"]
    assert len(rig.openai.chat_requests()) == 1
    [sent] = rig.local.chat_requests()
    assert sent.body["messages"][2]["content"] == found
    assert [(r["provider"], r["contains_pii"]) for r in rows(rig)] == [
        ("openai", 0),
        ("local_ollama", 1),
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_streamed_tool_call_is_assembled_and_settled(rig: Rig, protocol: str) -> None:
    """A tool call streamed in pieces reassembles to the provider's arguments; the row is ok."""
    task, _, _, _ = PROTOCOLS[protocol]
    server = _server(rig, protocol)
    server.tool_call = CALL
    name, arguments = "", ""
    async with rig.proxy(_data(rig)) as proxy:
        stream = await proxy.acompletion(ASK, task, tools=TOOLS, stream=True, max_tokens=64)
        assert isinstance(stream, AegisStream)
        async for chunk in stream:
            for choice in chunk.choices:
                for piece in choice.delta.tool_calls or []:
                    name += piece.function.name or ""
                    arguments += piece.function.arguments or ""
    assert (name, json.loads(arguments)) == CALL
    [row] = assert_priced(rig, protocol, [r.body for r in server.chat_requests()])
    assert (row["stream"], row["counted"]) == (1, 0)
    assert row["output_tokens"] == count_completion_tokens("", CALL)


# --- structured output -------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {"status": {"type": "string"}},
    "required": ["status"],
    "additionalProperties": False,
}
RESPONSE_FORMATS = {
    "json_schema": {
        "type": "json_schema",
        "json_schema": {"name": "s", "strict": True, "schema": SCHEMA},
    },
    "json_object": {"type": "json_object"},
}


@pytest.mark.parametrize("kind", RESPONSE_FORMATS)
async def test_response_format_reaches_openai_unchanged(rig: Rig, kind: str) -> None:
    """response_format arrives byte-for-byte as given, and the call is budgeted as usual."""
    rig.openai.reply_text = '{"status": "shipped"}'
    async with rig.proxy(_data(rig)) as proxy:
        resp = await proxy.acompletion(ASK, CRITICAL, response_format=RESPONSE_FORMATS[kind])
    [sent] = rig.openai.chat_requests()
    assert sent.body["response_format"] == RESPONSE_FORMATS[kind]
    assert json.loads(resp.choices[0].message.content) == {"status": "shipped"}
    assert_priced(rig, "openai", [sent.body])


async def test_response_format_reaches_ollama_as_its_format(rig: Rig) -> None:
    """A json_schema response_format becomes Ollama's ``format`` with the same schema."""
    async with rig.proxy(_data(rig)) as proxy:
        await proxy.acompletion(ASK, BATCH, response_format=RESPONSE_FORMATS["json_schema"])
    [sent] = rig.cheap.chat_requests()
    assert sent.body["format"] == SCHEMA


# --- images ------------------------------------------------------------------------------

PIXEL = "iVBORw0KGgo="
IMAGES = {"url": "https://images.example/cat.png", "data_url": f"data:image/png;base64,{PIXEL}"}


def _image(url: str, text: str = "What is in this picture?") -> list[dict[str, Any]]:
    parts = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]
    return [{"role": "user", "content": parts}]


@pytest.mark.parametrize("kind", IMAGES)
async def test_image_reaches_a_vision_cloud_only_when_allowed(rig: Rig, kind: str) -> None:
    """By default an image stays local; with allow_cloud it reaches the vision cloud, budgeted."""
    data = _data(rig)
    data["providers"]["openai"]["vision"] = True
    async with rig.proxy(data) as proxy:
        kept = await proxy.acompletion(_image(IMAGES["data_url"]), CRITICAL)
    assert (kept.aegis.provider, kept.aegis.pii_entities) == ("local_ollama", {"IMAGE": 1})
    assert rig.openai.requests == []
    (rig.tmp_path / "ledger.db").unlink()
    data["privacy"] = {"images": "allow_cloud"}
    async with rig.proxy(data) as proxy:
        resp = await proxy.acompletion(_image(IMAGES[kind]), CRITICAL, max_tokens=32)
    assert (resp.aegis.provider, resp.aegis.contains_pii) == ("openai", False)
    [sent] = rig.openai.chat_requests()
    assert sent.body["messages"] == _image(IMAGES[kind])
    [row] = assert_priced(rig, "openai", [sent.body])
    assert row["contains_pii"] == 0
    assert row["reserved_micros"] >= IMAGE_TOKEN_BOUND * Decimal("2.5")  # the image's bound


@pytest.mark.parametrize("kind", ["input_image", "image"])
async def test_every_image_part_type_stays_local_by_default(rig: Rig, kind: str) -> None:
    """An image part by another type name (``input_image``, ``image``) is an image too."""
    data = _data(rig)
    data["providers"]["openai"]["vision"] = True
    parts = [{"type": "text", "text": "What is in this picture?"},
             {"type": kind, "image_url": IMAGES["data_url"]}]  # fmt: skip
    async with rig.proxy(data) as proxy:
        kept = await proxy.acompletion([{"role": "user", "content": parts}], CRITICAL)
    assert (kept.aegis.provider, kept.aegis.pii_entities) == ("local_ollama", {"IMAGE": 1})
    assert rig.openai.requests == []


async def test_image_reaches_an_ollama_vision_cloud_as_base64(rig: Rig) -> None:
    """With allow_cloud, a data-URL image reaches a vision Ollama cloud as base64, budgeted."""
    data = _data(rig, images="allow_cloud")
    data["providers"]["ollama_cloud"]["vision"] = True
    async with rig.proxy(data) as proxy:
        resp = await proxy.acompletion(_image(IMAGES["data_url"]), BATCH, max_tokens=32)
    assert resp.aegis.provider == "ollama_cloud"
    [sent] = rig.cheap.chat_requests()
    assert sent.body["messages"][0]["images"] == [PIXEL]
    [row] = assert_priced(rig, "ollama", [sent.body])
    assert row["reserved_micros"] >= IMAGE_TOKEN_BOUND * Decimal("0.10")


async def test_image_with_personal_text_stays_local_even_when_allowed(rig: Rig) -> None:
    """allow_cloud frees the image, not the text beside it: PII text still keeps it local."""
    data = _data(rig, images="allow_cloud")
    data["providers"]["openai"]["vision"] = True
    async with rig.proxy(data) as proxy:
        resp = await proxy.acompletion(
            _image(IMAGES["data_url"], "Call +44 20 7946 0958"), CRITICAL
        )
    assert resp.aegis.provider == "local_ollama"
    assert "IMAGE" not in resp.aegis.pii_entities
    assert rig.openai.requests == []
    assert [(r["provider"], r["contains_pii"]) for r in rows(rig)] == [("local_ollama", 1)]


async def test_image_without_a_vision_provider_fails_clearly(rig: Rig) -> None:
    """No local vision model: the request fails with the reason, and nothing is sent or billed."""
    data = _data(rig)
    data["providers"]["local_ollama"]["vision"] = False
    async with rig.proxy(data) as proxy:
        with pytest.raises(NoProviderAvailableError) as info:
            await proxy.acompletion(_image(IMAGES["data_url"]), CRITICAL)
    assert [(a.provider, a.outcome, a.reason) for a in info.value.attempts] == [  # type: ignore[attr-defined]
        (
            "local_ollama",
            "skipped",
            "request has images and the provider is not declared vision: true",
        )
    ]
    assert [s.requests for s in rig.servers().values()] == [[], [], []]
    assert not (rig.tmp_path / "ledger.db").exists() or rows(rig) == []


async def test_image_url_never_vanishes_on_the_way_to_ollama(rig: Rig) -> None:
    """An image URL reaches an Ollama provider, or that provider is skipped with a reason."""
    reasons: list[str] | None = None
    async with rig.proxy(_data(rig)) as proxy:
        try:
            await proxy.acompletion(_image(IMAGES["url"]))
        except NoProviderAvailableError as exc:
            reasons = [a.reason or "" for a in exc.attempts]  # type: ignore[attr-defined]
    if reasons is not None:
        assert any("image" in reason for reason in reasons)
        return
    [sent] = rig.local.chat_requests()
    assert sent.body["messages"][0].get("images"), "the image was dropped without a word"


@pytest.mark.parametrize(
    ("param", "value"),
    [("tool_choice", "required"), ("n", 2), ("logprobs", True)],
)
async def test_ollama_providers_are_skipped_for_parameters_they_would_drop(
    rig: Rig, param: str, value: object
) -> None:
    """A parameter the ollama SDK would silently drop skips Ollama providers, with the reason."""
    async with rig.proxy() as proxy:
        with pytest.raises(NoProviderAvailableError) as info:
            await proxy.acompletion(ASK, LLMTask(), tools=TOOLS, **{param: value})
    [attempt] = info.value.attempts
    assert attempt.provider == "local_ollama"
    assert attempt.reason == f"the ollama SDK cannot honour {param}={value!r}"
    assert rig.local.chat_requests() == []


async def test_openai_provider_serves_tool_choice_required(rig: Rig) -> None:
    """tool_choice=required skips an Ollama provider; the next, OpenAI-style one honours it."""
    rig.openai.tool_call = ("lookup_order", {"order_id": "A-1"})
    data = rig.config_data()
    data["routing"]["default"] = ["local_ollama", "openai"]
    async with rig.proxy(data) as proxy:
        resp = await proxy.acompletion(ASK, LLMTask(), tools=TOOLS, tool_choice="required")
    assert resp.aegis.provider == "openai"
    assert resp.aegis.attempts[0].outcome == "skipped"
    assert rig.local.chat_requests() == []
    assert rig.openai.chat_requests()[0].body["tool_choice"] == "required"
