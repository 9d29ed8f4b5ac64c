"""Streaming through the proxy: SSE and NDJSON, usage, fallback before the first chunk,
and a ledger row settled exactly once however the stream ends."""

from __future__ import annotations

import gc
import sqlite3
from typing import Any

import pytest

from aegis_proxy import AegisStream, LLMTask, ProviderCallError
from tests.conftest import Rig
from tests.fakeserver import Fault

CRITICAL = LLMTask(quality="critical", complexity="high")
HELLO = [{"role": "user", "content": "Write one sentence about the sea."}]


def rows(rig: Rig) -> list[dict[str, Any]]:
    with sqlite3.connect(rig.tmp_path / "ledger.db") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY id")]


async def _collect(stream: AegisStream) -> str:
    parts = []
    async for chunk in stream:
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
    return "".join(parts)


async def test_openai_stream_asks_for_usage_and_settles(rig: Rig) -> None:
    """An OpenAI stream requests include_usage and its row gets the reported tokens."""
    rig.openai.reply_text = "the sea is wide and deep"
    async with rig.proxy() as proxy:
        stream = await proxy.acompletion(HELLO, CRITICAL, stream=True, max_tokens=20)
        assert isinstance(stream, AegisStream)
        text = await _collect(stream)
    assert text.split() == ["the", "sea", "is", "wide", "and", "deep"]
    [sent] = rig.openai.chat_requests()
    assert sent.body["stream_options"] == {"include_usage": True}
    [row] = rows(rig)
    assert (row["status"], row["stream"], row["counted"]) == ("ok", 1, 0)
    assert row["output_tokens"] == 6
    assert row["cost_micros"] > 0
    assert stream.aegis.provider == "openai"


async def test_ollama_stream_usage_from_final_chunk(rig: Rig) -> None:
    """An Ollama NDJSON stream takes usage from its final chunk."""
    rig.local.reply_text = "waves roll in"
    async with rig.proxy() as proxy:
        stream = await proxy.acompletion(HELLO, stream=True)
        text = await _collect(stream)
    assert text.split() == ["waves", "roll", "in"]
    [row] = rows(rig)
    assert (row["status"], row["output_tokens"], row["counted"]) == ("ok", 3, 0)


async def test_stream_without_usage_is_counted(rig: Rig) -> None:
    """A stream that reports no usage is counted locally and marked counted."""
    rig.local.omit_usage = True
    async with rig.proxy() as proxy:
        await _collect(await proxy.acompletion(HELLO, stream=True))
    [row] = rows(rig)
    assert row["counted"] == 1
    assert row["input_tokens"] > 0
    assert row["output_tokens"] > 0


async def test_failure_before_first_chunk_falls_back(rig: Rig) -> None:
    """A stream failing before its first chunk falls back to the next provider."""
    rig.openai.add_fault(Fault.status(500))
    async with rig.proxy() as proxy:
        stream = await proxy.acompletion(HELLO, CRITICAL, stream=True)
        await _collect(stream)
    assert stream.aegis.provider == "ollama_cloud"
    assert [(r["provider"], r["status"]) for r in rows(rig)] == [
        ("openai", "error"),
        ("ollama_cloud", "ok"),
    ]


async def test_failure_after_first_chunk_raises(rig: Rig) -> None:
    """A stream dropped after its first chunk raises and is not replayed elsewhere."""
    rig.openai.reply_text = "one two three four five"
    rig.openai.add_fault(Fault.drop_after_first_chunk())
    async with rig.proxy() as proxy:
        stream = await proxy.acompletion(HELLO, CRITICAL, stream=True)
        with pytest.raises(ProviderCallError):
            await _collect(stream)
    assert rig.cheap.requests == []
    [row] = rows(rig)
    assert row["status"] == "error"


async def test_stalled_stream_hits_timeout(rig: Rig) -> None:
    """A stream that stalls mid-way raises a timeout within the attempt limit."""
    data = rig.config_data()
    data["providers"]["openai"]["timeout_s"] = 0.5
    rig.openai.add_fault(Fault.stall_after_first_chunk(5.0))
    async with rig.proxy(data) as proxy:
        stream = await proxy.acompletion(HELLO, CRITICAL, stream=True)
        with pytest.raises(ProviderCallError) as info:
            await _collect(stream)
    assert info.value.kind == "timeout"
    assert [r["error_type"] for r in rows(rig)] == ["timeout"]


async def test_early_close_settles_cancelled(rig: Rig) -> None:
    """Closing a stream early settles its row as cancelled with the tokens seen so far."""
    rig.local.reply_text = "a b c d e f g h"
    async with rig.proxy() as proxy:
        stream = await proxy.acompletion(HELLO, stream=True)
        async for _chunk in stream:
            break
        await stream.aclose()
    [row] = rows(rig)
    assert row["status"] == "cancelled"
    assert row["counted"] == 1
    assert row["output_tokens"] >= 1


async def test_abandoned_stream_is_settled_on_collection(rig: Rig) -> None:
    """A stream dropped without aclose is still settled once it is collected."""
    import asyncio

    async with rig.proxy() as proxy:
        stream = await proxy.acompletion(HELLO, stream=True)
        await stream.__anext__()
        del stream
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0.01)
        assert [r["status"] for r in rows(rig)] == ["cancelled"]
