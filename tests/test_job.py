"""Tokens counted locally (a stream that sends no usage) agree with a provider's own count.

The provider here is the fake OpenAI server counting prompt tokens as OpenAI documents
it (cl100k_base tokens of each message, 3 per message + 3, plus the tool definitions), so
the test fails if the local count left out a message, the system prompt or the tools.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import tiktoken

from aegis_proxy import AegisLLMProxy, LLMTask
from aegis_proxy.reserve.pricing import count_tokens
from tests.fakeserver import FakeProviderServer

PROMPT = (
    "Summarise the following clause of a supply contract in two sentences. The supplier "
    "shall deliver the goods described in Schedule 1 to the buyer's warehouse within thirty "
    "days of each purchase order, in the quantities stated in that order. Risk in the goods "
    "passes to the buyer on delivery; title passes on payment in full. Late deliveries "
    "entitle the buyer to a reduction of the price by one percent per week of delay."
)
SYSTEM = (
    "You are a careful legal assistant. Answer in plain English, cite the clause you rely "
    "on, and say so when the text does not settle the question."
)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Look up an order in the shop's database by its id and return "
            "its status, its items and the expected delivery date.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string", "description": "the order id"}},
                "required": ["order_id"],
            },
        },
    }
]
CASES = {
    "one user message": ([{"role": "user", "content": PROMPT}], None),
    "system and user": (
        [{"role": "system", "content": SYSTEM},
         {"role": "user", "content": PROMPT}],
        None,
    ),
    "with tools": ([{"role": "user", "content": "Where is order 42? " + PROMPT}], TOOLS),
}  # fmt: skip


def openai_prompt_tokens(body: dict[str, Any] | None) -> int:
    """Prompt tokens as OpenAI's cookbook counts them, tool definitions included."""
    count_tokens([])  # points tiktoken at the bundled cl100k file (no download)
    encoding = tiktoken.get_encoding("cl100k_base")
    body = body or {}
    total = 3
    for message in body.get("messages", []):
        total += 3 + len(encoding.encode(str(message.get("content") or "")))
    for tool in body.get("tools") or []:
        total += 8 + len(encoding.encode(json.dumps(tool["function"])))
    return total


def ledger_rows(path: Path) -> list[tuple[int, int, int]]:
    with sqlite3.connect(path) as conn:
        query = "SELECT stream, counted, input_tokens FROM requests ORDER BY id"
        return [tuple(row) for row in conn.execute(query)]


@pytest.mark.parametrize("case", list(CASES))
async def test_a_counted_stream_agrees_with_usage_within_ten_percent(
    tmp_path: Path, case: str
) -> None:
    """The same request, answered once with usage and once streamed without: input tokens
    in the two ledger rows differ by less than 10%."""
    messages, tools = CASES[case]
    extra = {"tools": tools} if tools else {}
    with FakeProviderServer() as server:
        server.count_prompt = openai_prompt_tokens
        config = {
            "providers": {"openai": {"sdk": "openai", "api_base": server.openai_base,
                                     "api_key": "sk-test-counting-0123456789", "model": "gpt-4o"}},
            "routing": {"default": ["openai"]},
            "ledger": {"path": str(tmp_path / "ledger.db")},
        }  # fmt: skip
        path = tmp_path / "aegis.yaml"
        path.write_text(json.dumps(config))
        async with AegisLLMProxy.from_config(path) as proxy:
            await proxy.acompletion(messages, LLMTask(), max_tokens=16, **extra)
            server.omit_usage = True
            stream = await proxy.acompletion(
                messages, LLMTask(), max_tokens=16, stream=True, **extra
            )
            async for _ in stream:
                pass
    [(_, usage_counted, reported), (streamed, counted, local)] = ledger_rows(tmp_path / "ledger.db")
    assert (usage_counted, streamed, counted) == (0, 1, 1)
    assert reported == openai_prompt_tokens({"messages": messages, **extra})
    assert abs(local - reported) / reported < 0.10, (local, reported)
