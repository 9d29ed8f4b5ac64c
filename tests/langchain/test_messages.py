"""ChatAegis's conversions: LangChain v1 content blocks and every spelling of tool_choice."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip(
    "langchain_core",
    reason="LOUD: the 'langchain' extra is not installed: ChatAegis tests did NOT run",
)

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from aegis_proxy import LLMTask, RequestValidationError
from aegis_proxy.langchain.chat import ChatAegis
from aegis_proxy.langchain.messages import openai_messages, openai_tool_choice
from tests.conftest import Rig

CRITICAL = LLMTask(task_type="extraction", quality="critical", complexity="high")
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {}}},
]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


def get_weather(city: str) -> str:
    """Return the weather of a city."""
    return f"sunny in {city}"


def v1_history() -> list[Any]:
    """A turn as LangChain v1 stores it: reasoning, text and a tool call as content blocks."""
    call = {"type": "tool_call", "id": "call_1", "name": "get_weather", "args": {"city": "Oslo"}}
    reasoning = {"type": "reasoning", "reasoning": "The user wants REASONING-SECRET weather."}
    return [
        HumanMessage("Weather in Oslo?"),
        AIMessage(
            content=[reasoning, {"type": "text", "text": "Let me look."}, call],  # type: ignore[list-item]
            tool_calls=[{"name": "get_weather", "args": {"city": "Oslo"}, "id": "call_1"}],
        ),
        ToolMessage("sunny", tool_call_id="call_1"),
    ]


def test_v1_assistant_blocks_become_text_and_tool_calls() -> None:
    """Reasoning and tool-call blocks of an assistant turn are not sent; text and calls are."""
    [_, assistant, _] = openai_messages(v1_history())
    assert assistant["content"] == "Let me look."
    [call] = assistant["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}


def test_an_unknown_assistant_block_is_kept_for_the_proxy_to_refuse() -> None:
    """A block ChatAegis does not know stays in the message (the proxy then refuses it)."""
    odd = AIMessage(content=[{"type": "text", "text": "hi"}, {"type": "hologram", "data": "x"}])
    [assistant] = openai_messages([odd])
    assert assistant["content"] == [
        {"type": "text", "text": "hi"},
        {"type": "hologram", "data": "x"},
    ]


async def test_v1_history_reaches_both_protocols(rig: Rig) -> None:
    """A v1 history is accepted on the OpenAI and the Ollama route; reasoning never leaves."""
    async with rig.proxy() as proxy:
        for task in (CRITICAL, LLMTask()):
            answer = await ChatAegis(proxy=proxy, task=task).ainvoke(v1_history())
            assert isinstance(answer, AIMessage)
    bodies = [r.raw for r in rig.openai.chat_requests() + rig.local.chat_requests()]
    assert len(bodies) == 2
    assert all(b"REASONING-SECRET" not in body for body in bodies)
    assert all(b"Let me look." in body for body in bodies)


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("any", "required"),
        ("required", "required"),
        (True, "required"),
        ("get_weather", NAMED),
        (NAMED, NAMED),
    ],
)
def test_tool_choice_spellings(choice: Any, sent: Any) -> None:
    """Every LangChain spelling of tool_choice becomes an OpenAI choice over bound tools."""
    assert openai_tool_choice(choice, TOOLS) == sent


def test_tool_choice_true_with_one_tool_names_it() -> None:
    """tool_choice=True with a single bound tool forces that tool by name."""
    assert openai_tool_choice(True, TOOLS[:1]) == NAMED


@pytest.mark.parametrize(
    "choice",
    ["get_news", {"type": "function", "function": {"name": "get_news"}}, 3, {"type": "x"}],
)
def test_a_tool_choice_naming_no_bound_tool_is_refused(choice: Any) -> None:
    """A choice naming no bound tool raises RequestValidationError on tool_choice."""
    with pytest.raises(RequestValidationError) as caught:
        openai_tool_choice(choice, TOOLS)
    assert caught.value.field == "tool_choice"


async def test_bind_tools_with_true_sends_the_named_choice(rig: Rig) -> None:
    """bind_tools(tool_choice=True) reaches OpenAI as the one tool's name, and it is called."""
    rig.openai.cooperative = True
    async with rig.proxy() as proxy:
        model = ChatAegis(proxy=proxy, task=CRITICAL).bind_tools([get_weather], tool_choice=True)
        answer = await model.ainvoke("What is the weather in 'Paris'?")
    assert answer.tool_calls[0]["args"] == {"city": "Paris"}
    [sent] = rig.openai.chat_requests()
    assert sent.body["tool_choice"] == NAMED
