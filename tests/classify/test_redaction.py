"""Redact mode: placeholders out, original values back, streamed and not."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest

from aegis_proxy import LLMTask
from aegis_proxy.classify.detector import PiiDetector
from aegis_proxy.classify.redaction import Redaction, StreamRestorer
from tests.conftest import Rig

CRITICAL = LLMTask(quality="critical", complexity="high")
EMAIL = "jane.doe+legal@mail.example.co.uk"
PHONE = "+44 20 7946 0958"
CARD = "4111 1111 1111 1111"


def _config(rig: Rig) -> dict[str, Any]:
    data = rig.config_data()
    data["privacy"] = {"pii_action": "redact"}
    return data


def test_same_value_same_placeholder() -> None:
    """A value repeated across the request gets one placeholder; kinds are numbered apart."""
    redaction = Redaction(PiiDetector())
    messages = [
        {"role": "system", "content": f"Contact {EMAIL}."},
        {"role": "user", "content": f"Mail {EMAIL} or call {PHONE}."},
    ]
    out = redaction.redact_messages(messages)
    assert out[0]["content"] == "Contact <EMAIL_1>."
    assert out[1]["content"] == "Mail <EMAIL_1> or call <PHONE_1>."
    assert messages[1]["content"] == f"Mail {EMAIL} or call {PHONE}."  # originals untouched
    assert redaction.restore(out[1]["content"]) == messages[1]["content"]
    assert EMAIL not in repr(redaction)


def test_json_tool_parts_stay_valid_json() -> None:
    """Tool-call arguments and JSON tool results are redacted inside their strings."""
    redaction = Redaction(PiiDetector())
    messages = [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c", "type": "function",
                 "function": {"name": "mail", "arguments": json.dumps({"to": EMAIL})}}
            ],
        },
        {"role": "tool", "tool_call_id": "c", "content": json.dumps({"card": CARD, "ok": True})},
    ]  # fmt: skip
    out = redaction.redact_messages(messages)
    assert json.loads(out[0]["tool_calls"][0]["function"]["arguments"]) == {"to": "<EMAIL_1>"}
    assert json.loads(out[1]["content"]) == {"card": "<CREDIT_CARD_1>", "ok": True}


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_stream_restorer_handles_split_placeholders(size: int) -> None:
    """A placeholder split across pieces of any size is restored exactly once whole."""
    redaction = Redaction(PiiDetector())
    redacted = redaction.redact_text(f"Write to {EMAIL} and <b>{PHONE}</b> < 3")
    restorer = StreamRestorer(redaction)
    pieces = [redacted[i : i + size] for i in range(0, len(redacted), size)]
    out = "".join(restorer.feed(p) for p in pieces) + restorer.flush()
    assert out == f"Write to {EMAIL} and <b>{PHONE}</b> < 3"


def _rows(rig: Rig) -> list[dict[str, Any]]:
    with sqlite3.connect(rig.tmp_path / "ledger.db") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY id")]


async def test_redacted_request_reaches_cloud_without_values(rig: Rig) -> None:
    """The cloud receives placeholders only and the caller gets the values back."""
    rig.openai.reply_text = "I will write to <EMAIL_1> and call <PHONE_1> today"
    messages = [{"role": "user", "content": f"Draft a note to {EMAIL}, phone {PHONE}."}]
    async with rig.proxy(_config(rig)) as proxy:
        resp = await proxy.acompletion(messages, CRITICAL)
    assert resp.aegis.provider == "openai"
    raw = rig.openai.chat_requests()[0].raw.decode()
    assert EMAIL not in raw
    assert "+44" not in raw
    assert "<EMAIL_1>" in raw
    assert resp.choices[0].message.content == f"I will write to {EMAIL} and call {PHONE} today"
    assert resp.aegis.contains_pii
    assert "redacted" in resp.aegis.reason
    assert [r["contains_pii"] for r in _rows(rig)] == [1]


async def test_redacted_stream_restores_values(rig: Rig) -> None:
    """A streamed answer with placeholders reaches the caller with the values restored."""
    rig.openai.reply_text = "Reply sent to <EMAIL_1> now"
    messages = [{"role": "user", "content": f"Answer {EMAIL} politely."}]
    async with rig.proxy(_config(rig)) as proxy:
        stream = await proxy.acompletion(messages, CRITICAL, stream=True)
        text = ""
        async for chunk in stream:
            for choice in chunk.choices:
                text += choice.delta.content or ""
    assert text.split() == ["Reply", "sent", "to", EMAIL, "now"]
    assert EMAIL not in rig.openai.chat_requests()[0].raw.decode()


async def test_redacted_tool_call_arguments_restored(rig: Rig) -> None:
    """Tool-call arguments naming a placeholder come back with the original value."""
    rig.openai.tool_call = ("send_mail", {"to": "<EMAIL_1>"})
    messages = [{"role": "user", "content": f"Send the contract to {EMAIL}."}]
    async with rig.proxy(_config(rig)) as proxy:
        resp = await proxy.acompletion(messages, CRITICAL)
    call = resp.choices[0].message.tool_calls[0]
    assert json.loads(call.function.arguments) == {"to": EMAIL}


@pytest.mark.parametrize(
    ("messages", "task"),
    [
        ([{"role": "user", "content": "Summarise the file."}], LLMTask(data_classification="pii",
                                                                     quality="critical",
                                                                     complexity="high")),
        ([{"role": "user", "content": [
            {"type": "text", "text": f"Who is {EMAIL}?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}],
         CRITICAL),
    ],
    ids=["declared_pii", "image"],
)  # fmt: skip
async def test_unredactable_requests_stay_local(
    rig: Rig, messages: list[dict[str, Any]], task: LLMTask
) -> None:
    """Declared pii and images cannot be redacted: they stay local in redact mode."""
    async with rig.proxy(_config(rig)) as proxy:
        resp = await proxy.acompletion(messages, task)
    assert resp.aegis.provider == "local_ollama"
    assert rig.openai.requests == []


FORGED = [
    ("plain", "<EMAIL_1>"),
    ("percent-escaped", "%3CEMAIL_1%3E"),
    ("html-escaped", "&lt;EMAIL_1&gt;"),
    ("json-escaped", r'{"note": "\u003cEMAIL_1\u003e"}'),  # a JSON tool result
]


@pytest.mark.parametrize("forged", [f for _, f in FORGED], ids=[n for n, _ in FORGED])
def test_a_placeholder_the_caller_wrote_is_never_issued_or_restored(forged: str) -> None:
    """A placeholder-shaped string in the input (in any reading) never stands for a value."""
    redaction = Redaction(PiiDetector())
    messages = [
        {"role": "system", "content": f"Customer: {EMAIL}."},
        {"role": "user", "content": forged if forged.startswith("{") else f"What is {forged}?"},
    ]
    out = redaction.redact_messages(messages)
    assert out[0]["content"] == "Customer: <EMAIL_2>."
    assert redaction.restore("It is <EMAIL_1>.") == "It is <EMAIL_1>."
    assert redaction.restore("It is <EMAIL_2>.") == f"It is {EMAIL}."
    assert redaction.restore("<PHONE_1> <EMAIL_3>") == "<PHONE_1> <EMAIL_3>"


async def test_forged_placeholder_in_a_reply_stays_as_written(rig: Rig) -> None:
    """Through the proxy: the cloud echoing the caller's own '<EMAIL_1>' gets no real value."""
    rig.openai.reply_text = "You wrote <EMAIL_1>; the customer is <EMAIL_2>"
    messages = [
        {"role": "system", "content": f"The customer is {EMAIL}."},
        {"role": "user", "content": "Repeat <EMAIL_1> back to me."},
    ]
    async with rig.proxy(_config(rig)) as proxy:
        resp = await proxy.acompletion(messages, CRITICAL)
    assert resp.aegis.provider == "openai"
    assert resp.choices[0].message.content == f"You wrote <EMAIL_1>; the customer is {EMAIL}"
    sent = rig.openai.chat_requests()[0].body["messages"]
    assert [m["content"] for m in sent] == ["The customer is <EMAIL_2>.", messages[1]["content"]]


def test_ids_are_scanned_and_redacted_consistently() -> None:
    """Personal data in tool_call_id and tool_calls[].id is found, and redacted alike in both."""
    detector = PiiDetector()
    messages = [
        {"role": "user", "content": "Look up the order."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call:{EMAIL}", "type": "function",
             "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": f"call:{EMAIL}", "content": "shipped"},
    ]  # fmt: skip
    assert dict(detector.scan_messages(messages).entity_counts) == {"EMAIL": 2}
    out = Redaction(detector).redact_messages(messages)
    assert out[1]["tool_calls"][0]["id"] == out[2]["tool_call_id"] == "call:<EMAIL_1>"
    assert dict(detector.scan_messages(out).entity_counts) == {}


async def test_personal_data_in_an_id_keeps_the_request_local(rig: Rig) -> None:
    """An email hidden in a tool_call_id routes locally under route_local: ids are content."""
    messages = [
        {"role": "user", "content": "Look up the order."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call:{EMAIL}", "type": "function",
             "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": f"call:{EMAIL}", "content": "shipped"},
    ]  # fmt: skip
    async with rig.proxy() as proxy:
        resp = await proxy.acompletion(messages, CRITICAL)
    assert resp.aegis.provider == "local_ollama"
    assert resp.aegis.contains_pii
    assert rig.openai.requests == []
