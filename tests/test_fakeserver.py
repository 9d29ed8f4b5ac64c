"""The fake provider server, driven through the real any-llm SDK path (openai and ollama)."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx
import ollama
import openai
import pytest
from any_llm import AnyLLM
from any_llm.exceptions import (
    AnyLLMError,
    AuthenticationError,
    ModelNotFoundError,
    ProviderError,
    RateLimitError,
)

from tests.fakeserver import (
    FakeProviderServer,
    Fault,
    count_completion_tokens,
    count_prompt_tokens,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the weather in Paris today?"},
]
PROVIDERS = ["openai", "ollama"]
MODEL = {"openai": "gpt-4o-mini", "ollama": "llama3.2:3b"}


@pytest.fixture
def srv() -> Iterator[FakeProviderServer]:
    with FakeProviderServer() as server:
        yield server


def make_llm(provider: str, srv: FakeProviderServer) -> Any:
    if provider == "openai":
        return AnyLLM.create(
            "openai",
            api_key="sk-test",
            api_base=srv.openai_base,
            unified_exceptions=True,
            max_retries=0,
        )
    return AnyLLM.create("ollama", api_base=srv.url, unified_exceptions=True)


@pytest.fixture(params=PROVIDERS)
async def llm(request: pytest.FixtureRequest, srv: FakeProviderServer) -> AsyncIterator[Any]:
    client = make_llm(request.param, srv)
    yield client
    await client.client.close()


async def complete(llm: Any, stream: bool = False, **kwargs: Any) -> Any:
    """One completion; a stream is drained into a list of chunks."""
    if stream and llm.PROVIDER_NAME == "openai":
        kwargs.setdefault("stream_options", {"include_usage": True})
    result = await llm.acompletion(
        model=MODEL[llm.PROVIDER_NAME], messages=MESSAGES, stream=stream, **kwargs
    )
    if not stream:
        return result
    return [chunk async for chunk in result]


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (a server-side fact no event announces) for up to five seconds."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


def expected_usage(srv: FakeProviderServer) -> tuple[int, int]:
    prompt = count_prompt_tokens(srv.chat_requests()[-1].body)
    return prompt, count_completion_tokens(srv.reply_text, srv.tool_call)


@pytest.mark.parametrize(
    ("message", "tokens"),
    [
        ({"role": "user", "content": ""}, 1),
        ({"role": "user", "content": "abc"}, 1),
        ({"role": "user", "content": "abcd"}, 2),
        ({"role": "user", "content": "é" * 4}, 3),
        ({"role": "user", "content": [{"type": "text", "text": "abcd"}, {"type": "text"}]}, 2),
        ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x" * 40}}]}, 1),
        (
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"function": {"name": "f", "arguments": '{"a": 1234}'}}],
            },
            3,
        ),
        (
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": {}}}]},
            1,
        ),
    ],
)
def test_count_prompt_tokens_formula(message: dict[str, Any], tokens: int) -> None:
    """Each message costs its text bytes // 4 plus one, counting text parts and tool arguments."""
    assert count_prompt_tokens({"messages": [message]}) == tokens
    assert count_prompt_tokens({"messages": [message, message]}) == 2 * tokens


def test_count_prompt_tokens_is_at_least_one() -> None:
    """An empty or missing message list still costs one prompt token."""
    assert count_prompt_tokens({"messages": []}) == 1
    assert count_prompt_tokens(None) == 1


async def test_completion_returns_reply_and_formula_usage(
    llm: Any, srv: FakeProviderServer
) -> None:
    """A plain completion carries the configured reply and the documented token counts."""
    srv.reply_text = "the sky is clear"
    resp = await complete(llm)
    prompt, completion = expected_usage(srv)
    assert resp.choices[0].message.content == "the sky is clear"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.model == MODEL[llm.PROVIDER_NAME]
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (prompt, completion)
    assert resp.usage.total_tokens == prompt + completion == 13 + 4


async def test_stream_splits_words_and_reports_usage_last(
    llm: Any, srv: FakeProviderServer
) -> None:
    """A stream sends one chunk per word and ends with the usage, like the real provider."""
    srv.reply_text = "sunny and  mild\ntoday"
    chunks = await complete(llm, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "sunny and  mild\ntoday"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 4
    assert all(c.usage is None for c in chunks[:-1])
    prompt, completion = expected_usage(srv)
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (
        prompt,
        completion,
    )
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert finishes.count(None) == len(finishes) - 1


async def test_openai_stream_usage_only_when_asked(srv: FakeProviderServer) -> None:
    """Without stream_options.include_usage the OpenAI stream has no usage chunk at all."""
    llm = make_llm("openai", srv)
    try:
        chunks = await complete(llm, stream=True, stream_options=None)
    finally:
        await llm.client.close()
    assert all(c.usage is None and c.choices for c in chunks)
    assert "stream_options" not in srv.chat_requests()[-1].body


async def test_ollama_request_is_native_and_drops_stream_options(srv: FakeProviderServer) -> None:
    """any-llm's ollama provider posts /api/chat with stream true and no stream_options."""
    llm = make_llm("ollama", srv)
    try:
        await complete(llm, stream=True, stream_options={"include_usage": True})
        await complete(llm)
    finally:
        await llm.client.close()
    streamed, plain = (r.body for r in srv.chat_requests())
    assert (streamed["stream"], plain["stream"]) == (True, False)
    assert "stream_options" not in streamed


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_call_round_trip(llm: Any, srv: FakeProviderServer, stream: bool) -> None:
    """A configured tool call comes back as one OpenAI-shaped tool call with JSON arguments."""
    srv.tool_call = ("get_weather", {"city": "Paris", "unit": "celsius"})
    if stream:
        chunks = await complete(llm, stream=True)
        deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
        name = "".join(d.function.name or "" for d in deltas)
        arguments = "".join(d.function.arguments or "" for d in deltas)
        assert {d.index for d in deltas} == {0}
        usage = chunks[-1].usage
    else:
        resp = await complete(llm)
        (call,) = resp.choices[0].message.tool_calls
        name, arguments = call.function.name, call.function.arguments
        assert resp.choices[0].finish_reason == "tool_calls"
        assert not resp.choices[0].message.content
        usage = resp.usage
    assert name == "get_weather"
    assert json.loads(arguments) == {"city": "Paris", "unit": "celsius"}
    assert (usage.prompt_tokens, usage.completion_tokens) == expected_usage(srv)
    assert usage.completion_tokens == len(json.dumps(srv.tool_call[1])) // 4 + 1


async def test_tool_call_history_counts_in_prompt(llm: Any, srv: FakeProviderServer) -> None:
    """Assistant tool calls and tool results sent back are counted by the prompt formula."""
    history = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees"},
    ]
    resp = await llm.acompletion(model=MODEL[llm.PROVIDER_NAME], messages=history)
    body = srv.chat_requests()[-1].body
    assert resp.usage.prompt_tokens == count_prompt_tokens(body) == 13 + 5 + 3


@pytest.mark.parametrize(("provider", "stream"), [("openai", False), ("openai", True)])
async def test_omit_usage_openai(srv: FakeProviderServer, provider: str, stream: bool) -> None:
    """With omit_usage the OpenAI responses and streams carry no usage."""
    srv.omit_usage = True
    llm = make_llm(provider, srv)
    try:
        result = await complete(llm, stream=stream)
    finally:
        await llm.client.close()
    chunks = result if stream else [result]
    assert all(c.usage is None for c in chunks)


async def test_omit_usage_ollama(srv: FakeProviderServer) -> None:
    """With omit_usage Ollama streams lack usage, while any-llm fills zeros when not streaming."""
    srv.omit_usage = True
    llm = make_llm("ollama", srv)
    try:
        chunks = await complete(llm, stream=True)
        resp = await complete(llm)
    finally:
        await llm.client.close()
    assert all(c.usage is None for c in chunks)
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (0, 0)


STATUS_CASES = [
    (Fault.status(429, retry_after=1.5), RateLimitError, 429),
    (Fault.status(500), ProviderError, 500),
    (Fault.status(401), AuthenticationError, 401),
    (Fault.status(404), ModelNotFoundError, 404),
]
ORIGINAL = {
    ("openai", 429): openai.RateLimitError,
    ("openai", 500): openai.InternalServerError,
    ("openai", 401): openai.AuthenticationError,
    ("openai", 404): openai.NotFoundError,
}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("fault", "error", "status"), STATUS_CASES)
async def test_status_fault_maps_to_any_llm_error(
    llm: Any,
    srv: FakeProviderServer,
    fault: Fault,
    error: type[AnyLLMError],
    status: int,
    stream: bool,
) -> None:
    """Each status fault raises the exact any-llm class, with the SDK's own class underneath."""
    srv.add_fault(fault)
    with pytest.raises(AnyLLMError) as info:
        await complete(llm, stream=stream)
    provider = llm.PROVIDER_NAME
    assert type(info.value) is error
    assert info.value.status_code == status
    original = ORIGINAL.get((provider, status), ollama.ResponseError)
    assert type(info.value.original_exception) is original
    if status == 429:
        # The ollama SDK keeps only text and status, so Retry-After is lost on that path.
        assert info.value.retry_after == ("1.5" if provider == "openai" else None)
    assert len(srv.chat_requests()) == 1  # max_retries=0: no retry behind our back


async def test_retry_after_header_and_error_bodies(srv: FakeProviderServer) -> None:
    """Error bodies use each provider's shape and a 429 carries the Retry-After header."""
    srv.add_fault(Fault.status(429, retry_after=2))
    srv.add_fault(Fault.status(500, message="boom"))
    async with httpx.AsyncClient(base_url=srv.url) as http:
        limited = await http.post("/v1/chat/completions", json={"model": "m", "messages": []})
        failed = await http.post("/api/chat", json={"model": "m", "messages": []})
    assert limited.headers["retry-after"] == "2"
    assert limited.json()["error"]["type"] == "requests"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert failed.json() == {"error": "boom"}


@pytest.mark.parametrize("stream", [False, True])
async def test_drop_raises_provider_error(llm: Any, srv: FakeProviderServer, stream: bool) -> None:
    """A dropped connection surfaces as ProviderError wrapping the SDK's connection error."""
    srv.add_fault(Fault.drop())
    with pytest.raises(ProviderError) as info:
        await complete(llm, stream=stream)
    expected = (
        openai.APIConnectionError if llm.PROVIDER_NAME == "openai" else httpx.RemoteProtocolError
    )
    assert type(info.value.original_exception) is expected
    assert info.value.status_code is None


@pytest.mark.parametrize("stream", [False, True])
async def test_malformed_raises_provider_error(
    llm: Any, srv: FakeProviderServer, stream: bool
) -> None:
    """A 200 whose body (or stream line) is not JSON surfaces as ProviderError."""
    srv.add_fault(Fault.malformed())
    with pytest.raises(ProviderError) as info:
        await complete(llm, stream=stream)
    assert type(info.value.original_exception) is json.JSONDecodeError


async def test_delay_holds_one_request_without_blocking_others(
    llm: Any, srv: FakeProviderServer
) -> None:
    """A delayed request answers late and normally while another request is served at once."""
    srv.add_fault(Fault.delay(0.3))
    started = time.monotonic()
    slow = asyncio.create_task(complete(llm))
    await wait_until(lambda: len(srv.chat_requests()) == 1)
    await complete(llm)
    fast_elapsed = time.monotonic() - started
    resp = await slow
    assert fast_elapsed < 0.25
    assert time.monotonic() - started >= 0.3
    assert resp.choices[0].message.content == srv.reply_text


async def test_stall_after_first_chunk_pauses_then_finishes(
    llm: Any, srv: FakeProviderServer
) -> None:
    """A stalled stream delivers its first chunk, pauses, then completes normally."""
    srv.add_fault(Fault.stall_after_first_chunk(0.3))
    stream = await llm.acompletion(model=MODEL[llm.PROVIDER_NAME], messages=MESSAGES, stream=True)
    arrivals = [(time.monotonic(), chunk) async for chunk in stream]
    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(arrivals)]
    assert gaps[0] >= 0.29
    assert max(gaps[1:]) < 0.15
    text = "".join(c.choices[0].delta.content or "" for _, c in arrivals if c.choices)
    assert text == srv.reply_text


@pytest.mark.parametrize("stream", [False, True])
async def test_drop_after_first_chunk_raises_provider_error(
    llm: Any, srv: FakeProviderServer, stream: bool
) -> None:
    """A connection closed mid-answer raises ProviderError after any chunk already sent."""
    srv.add_fault(Fault.drop_after_first_chunk())
    received: list[Any] = []

    async def consume() -> None:
        result = await llm.acompletion(
            model=MODEL[llm.PROVIDER_NAME], messages=MESSAGES, stream=stream
        )
        async for chunk in result:
            received.append(chunk)

    with pytest.raises(ProviderError):
        await consume()
    assert len(received) == (1 if stream else 0)


async def test_faults_are_fifo_and_only_chat_requests_consume_them(
    llm: Any, srv: FakeProviderServer
) -> None:
    """Faults apply in order, one per chat request, and model listing never consumes one."""
    srv.add_fault(Fault.status(500), times=2)
    srv.add_fault(Fault.status(401))
    models = await llm.alist_models()
    assert {m.id for m in models} == set(srv.models)
    outcomes = []
    for _ in range(4):
        try:
            await complete(llm)
            outcomes.append("ok")
        except AnyLLMError as exc:
            outcomes.append(type(exc).__name__)
    assert outcomes == ["ProviderError", "ProviderError", "AuthenticationError", "ok"]


async def test_requests_are_recorded_and_cleared(srv: FakeProviderServer) -> None:
    """Every request is recorded with method, path, lower-case headers, parsed and raw body."""
    llm = make_llm("openai", srv)
    try:
        await llm.alist_models()
        await complete(llm)
    finally:
        await llm.client.close()
    listing, chat = srv.requests
    assert (listing.method, listing.path, listing.body) == ("GET", "/v1/models", None)
    assert (chat.method, chat.path) == ("POST", "/v1/chat/completions")
    assert chat.headers["authorization"] == "Bearer sk-test"
    assert chat.body == json.loads(chat.raw)
    assert chat.body["messages"] == MESSAGES
    assert srv.chat_requests() == [chat]
    srv.add_fault(Fault.drop())
    srv.clear()
    assert srv.requests == []
    async with httpx.AsyncClient(base_url=srv.url) as http:
        assert (await http.get("/nope")).status_code == 404
        ok = await http.post("/api/chat", json={"model": "m", "messages": [], "stream": False})
    assert ok.json()["done"] is True


async def test_ollama_show_and_tags(srv: FakeProviderServer) -> None:
    """The ollama SDK can list tags and show a model."""
    client = ollama.AsyncClient(host=srv.url)
    try:
        tags = await client.list()
        shown = await client.show("llama3.2:3b")
    finally:
        await client.close()
    assert [m.model for m in tags.models] == srv.models
    assert "tools" in (shown.capabilities or [])


async def test_two_hundred_concurrent_clients(srv: FakeProviderServer) -> None:
    """Two hundred concurrent completions over both protocols all succeed."""
    llms = [make_llm(provider, srv) for provider in PROVIDERS]
    try:
        results = await asyncio.gather(*(complete(llms[i % 2]) for i in range(200)))
        again = await asyncio.gather(*(complete(llms[i % 2], stream=True) for i in range(20)))
    finally:
        for llm in llms:
            await llm.client.close()
    assert {r.choices[0].message.content for r in results} == {srv.reply_text}
    assert all(chunks[-1].usage is not None for chunks in again)
    assert len(srv.chat_requests()) == 220


async def test_stop_is_fast_while_handlers_sleep_and_leaves_no_threads() -> None:
    """stop() wakes sleeping handlers, closes keep-alive connections and joins its threads."""
    before = set(threading.enumerate())
    server = FakeProviderServer().start()
    llm = make_llm("openai", server)
    try:
        await complete(llm)  # leaves an idle keep-alive connection open
        server.add_fault(Fault.delay(30))
        pending = asyncio.create_task(complete(llm))
        await wait_until(lambda: len(server.chat_requests()) == 2)
        started = time.monotonic()
        await asyncio.to_thread(server.stop)
        assert time.monotonic() - started < 1.0
        with pytest.raises(ProviderError):
            await pending
    finally:
        await llm.client.close()
        server.stop()
    leftovers = {t for t in set(threading.enumerate()) - before if t.name.startswith("fakeserver")}
    assert leftovers == set()
