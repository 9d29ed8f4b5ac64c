"""ChatAegis end to end: LangChain messages through a real proxy to the fake providers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from typing import Any

import pytest

pytest.importorskip(
    "langchain_core",
    reason="LOUD: the 'langchain' extra is not installed: ChatAegis tests did NOT run",
)

from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage

from aegis_proxy import LedgerError, LLMTask
from aegis_proxy.langchain.chat import ChatAegis
from tests.conftest import Rig
from tests.fakeserver import count_prompt_tokens

CRITICAL = LLMTask(task_type="extraction", quality="critical", complexity="high")
QUERY = LLMTask(task_type="query")


def get_weather(city: str) -> str:
    """Return the weather of a city."""
    return f"sunny in {city}"


def rows(rig: Rig) -> list[dict[str, Any]]:
    with sqlite3.connect(rig.tmp_path / "ledger.db") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY id")]


async def test_ainvoke_answers_with_usage_and_routing_record(rig: Rig) -> None:
    """ainvoke returns the provider's text, the ledger's token counts and the routing record."""
    async with rig.proxy() as proxy:
        answer = await ChatAegis(proxy=proxy, task=QUERY).ainvoke("Summarise the report.")
    assert isinstance(answer, AIMessage)
    assert answer.content == rig.local.reply_text
    [row] = rows(rig)
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["input_tokens"] == row["input_tokens"] > 0
    assert answer.usage_metadata["output_tokens"] == row["output_tokens"] > 0
    assert answer.response_metadata["aegis"]["provider"] == "local_ollama"
    assert answer.response_metadata["aegis"]["rule"] == "default"


async def test_per_call_task_overrides_the_model_task(rig: Rig) -> None:
    """A task passed to ainvoke routes that call (critical + high goes to OpenAI)."""
    async with rig.proxy() as proxy:
        answer = await ChatAegis(proxy=proxy, task=QUERY).ainvoke("Rate this.", task=CRITICAL)
    assert answer.response_metadata["aegis"]["provider"] == "openai"
    assert len(rig.openai.chat_requests()) == 1
    assert not rig.local.chat_requests()


async def test_bind_tools_sends_tools_and_parses_the_call(rig: Rig) -> None:
    """bind_tools sends the OpenAI tool schema and tool_choice; the reply's call is parsed."""
    rig.openai.tool_call = ("get_weather", {"city": "Paris"})
    async with rig.proxy() as proxy:
        model = ChatAegis(proxy=proxy, task=CRITICAL).bind_tools(
            [get_weather], tool_choice="get_weather"
        )
        answer = await model.ainvoke("What is the weather in Paris?")
    [call] = answer.tool_calls
    assert (call["name"], call["args"]) == ("get_weather", {"city": "Paris"})
    [sent] = rig.openai.chat_requests()
    [tool] = sent.body["tools"]
    assert tool["function"]["name"] == "get_weather"
    assert tool["function"]["parameters"]["properties"]["city"]["type"] == "string"
    assert sent.body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


async def test_tool_round_trip_with_personal_data_stays_local(rig: Rig) -> None:
    """A tool result holding an email keeps a critical request off the cloud providers."""
    history = [
        HumanMessage("Who booked the room?"),
        AIMessage("", tool_calls=[{"name": "lookup", "args": {"room": 7}, "id": "call_1"}]),
        ToolMessage("booked by bob@corp.example", tool_call_id="call_1"),
    ]
    async with rig.proxy() as proxy:
        answer = await ChatAegis(proxy=proxy, task=CRITICAL).ainvoke(history)
    assert answer.response_metadata["aegis"]["provider"] == "local_ollama"
    assert answer.response_metadata["aegis"]["contains_pii"] is True
    assert not rig.openai.chat_requests()
    assert not rig.cheap.chat_requests()
    [sent] = rig.local.chat_requests()
    roles = [m["role"] for m in sent.body["messages"]]
    assert roles == ["user", "assistant", "tool"]
    assert sent.body["messages"][1]["tool_calls"][0]["function"]["name"] == "lookup"


async def test_astream_yields_text_then_usage(rig: Rig) -> None:
    """astream yields the reply piece by piece; the chunks add up to the ledger's usage."""
    async with rig.proxy() as proxy:
        model = ChatAegis(proxy=proxy, task=CRITICAL, max_tokens=32)
        chunks = [chunk async for chunk in model.astream("Explain the clause.")]
    assert len(chunks) > 3
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.content == rig.openai.reply_text
    [row] = rows(rig)
    assert row["status"] == "ok"
    assert row["stream"] == 1
    usage = merged.usage_metadata
    assert usage is not None
    assert usage["input_tokens"] == row["input_tokens"]
    assert usage["input_tokens"] == count_prompt_tokens(rig.openai.chat_requests()[0].body)
    assert usage["output_tokens"] == row["output_tokens"] > 0
    assert merged.response_metadata["aegis"]["provider"] == "openai"


async def test_astream_assembles_tool_call_chunks(rig: Rig) -> None:
    """Streamed tool-call pieces add up to one parsed tool call."""
    rig.openai.tool_call = ("get_weather", {"city": "Oslo"})
    async with rig.proxy() as proxy:
        model = ChatAegis(proxy=proxy, task=CRITICAL).bind_tools([get_weather])
        merged: AIMessageChunk | None = None
        async for chunk in model.astream("Weather in Oslo?"):
            assert isinstance(chunk, AIMessageChunk)
            merged = chunk if merged is None else merged + chunk
    assert merged is not None
    [call] = merged.tool_calls
    assert (call["name"], call["args"]) == ("get_weather", {"city": "Oslo"})


async def test_astream_stopped_early_settles_the_row_as_cancelled(rig: Rig) -> None:
    """Leaving astream after the first chunk settles the ledger row, as cancelled."""
    rig.local.reply_text = "one two three four five six seven eight"
    async with rig.proxy() as proxy:
        stream = ChatAegis(proxy=proxy, task=QUERY).astream("Count.")
        async for _ in stream:
            break
        await stream.aclose()
        [row] = rows(rig)
    assert row["status"] == "cancelled"


async def test_model_built_from_a_config_path_closes_its_proxy(rig: Rig) -> None:
    """A ChatAegis given a config path builds its proxy, answers, and closes it in aclose."""
    model = ChatAegis(config_path=str(rig.write_config()), task=QUERY)
    answer = await model.ainvoke("Summarise the report.")
    await model.aclose()
    assert answer.content == rig.local.reply_text
    assert [r["status"] for r in rows(rig)] == ["ok"]
    assert model.proxy is not None
    with pytest.raises(LedgerError, match="is closed"):
        model.proxy.ledger.budget_state("local_ollama", "2026-01")


def test_invoke_outside_a_loop_uses_its_own_proxy(rig: Rig) -> None:
    """The blocking invoke answers through a fresh proxy of the same config and ledger."""
    model = ChatAegis(config_path=str(rig.write_config()), task=QUERY)
    answer = model.invoke("Summarise the report.")
    assert answer.content == rig.local.reply_text
    assert [r["status"] for r in rows(rig)] == ["ok"]


def test_import_without_the_extra_says_which_extra() -> None:
    """Importing the adapter without langchain-core names the extra to install."""
    code = (
        "import sys; sys.modules['langchain_core'] = None\n"
        "try:\n    import aegis_proxy.langchain\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'aegis-proxy[langchain]'" in out.stdout
