"""Properties of the egress guarantee over generated requests, judged by what servers received.

Hypothesis places personal data anywhere a request can carry it (messages, parts, tool
calls, every parameter), tries escape hatches and typos, and changes the caller's objects
while the request is in flight. Whatever it generates: no personal data at a non-local
server, no body other than the request as it was when it was made, and a reservation at
least the cost the fake bills (it bills all it receives: every string, n x max_tokens).
"""

from __future__ import annotations

import asyncio
import copy
import json
import sqlite3
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from aegis_proxy import LLMTask
from aegis_proxy.classify.detector import PiiDetector
from aegis_proxy.decide.params import CHAT_PARAMS, ESCAPE_HATCHES
from aegis_proxy.errors import AegisError, RequestValidationError
from tests.conftest import Rig

CRITICAL = LLMTask(quality="critical", complexity="high", task_type="extraction")
PII_VALUES = (
    "alice.martin@corp.example",
    "bob_smith@mail.example.org",
    "4111 1111 1111 1111",
    "5500-0000-0000-0004",
    "DE89370400440532013000",
    "GB82 WEST 1234 5698 7654 32",
    "+44 20 7946 0958",
    "+1 415-555-2671",
)
SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _luhn(digits: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return digits + str((10 - total % 10) % 10)


cards = st.from_regex(r"4[0-9]{14}", fullmatch=True).map(_luhn)
pii = st.one_of(st.sampled_from(PII_VALUES), cards)
words = st.text(alphabet="abcdefghij klmnop", min_size=1, max_size=30)


def _place(where: str, value: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A request carrying ``value`` at ``where`` (messages, params)."""
    text = f"please contact {value} today"
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Summarise the notes."}]
    params: dict[str, Any] = {}
    tool = {"type": "function", "function": {"name": "lookup", "description": "Find a record",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}  # fmt: skip
    if where == "content":
        messages[0]["content"] = text
    elif where == "part":
        messages[0]["content"] = [{"type": "text", "text": "hi"}, {"type": "text", "text": text}]
    elif where == "tool_args":
        messages = [
            {"role": "user", "content": "Look it up."},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
             "function": {"name": "lookup", "arguments": json.dumps({"q": value})}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "none found"},
        ]  # fmt: skip
    elif where == "tool_result":
        messages = [
            {"role": "user", "content": "Look it up."},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
             "function": {"name": "lookup", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": json.dumps({"owner": value})},
        ]  # fmt: skip
    elif where == "tool_description":
        tool["function"]["description"] = text
        params["tools"] = [tool]
    elif where == "tool_enum":
        tool["function"]["parameters"]["properties"]["q"]["enum"] = [value]
        params["tools"] = [tool]
    elif where == "schema":
        schema = {"type": "object", "description": text}
        params["response_format"] = {"type": "json_schema",
                                     "json_schema": {"name": "r", "schema": schema}}  # fmt: skip
    elif where == "prediction":
        params["prediction"] = {"type": "content", "content": text}
    elif where in ("user", "stop"):
        params[where] = value if where == "user" else [value]
    elif where == "metadata":
        params["metadata"] = {"note": text}
    elif where == "data_prefix":
        messages[0]["content"] = f"data:text/plain;base64,{text}"
    if "tools" in params or where.startswith("tool_"):
        params.setdefault("tools", [tool])
    return messages, params


PLACES = ("content", "part", "tool_args", "tool_result", "tool_description", "tool_enum",
          "schema", "prediction", "user", "stop", "metadata", "data_prefix")  # fmt: skip


def _config(rig: Rig, action: str) -> dict[str, Any]:
    data = rig.config_data()
    data["routing"]["rules"][0]["route"] = ["openai", "ollama_cloud", "local_ollama"]
    data["privacy"] = {"pii_action": action}
    return data


def _cloud_bodies(rig: Rig) -> list[str]:
    return [json.dumps(r.body, ensure_ascii=False) for s in (rig.openai, rig.cheap)
            for r in s.chat_requests()]  # fmt: skip


def _rows(rig: Rig) -> list[dict[str, Any]]:
    path = rig.tmp_path / "ledger.db"
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM requests")]


def _clear(rig: Rig) -> None:
    for server in rig.servers().values():
        server.clear()
        server.bill_received = True


async def _send(rig: Rig, action: str, messages: Any, params: dict[str, Any], mutate: bool) -> Any:
    async with rig.proxy(_config(rig, action)) as proxy:
        task = asyncio.ensure_future(proxy.acompletion(messages, CRITICAL, **params))
        if mutate:  # the caller's objects change while the request is in flight
            await asyncio.sleep(0)
            _mutate(messages, params)
        try:
            return await task
        except AegisError as exc:
            return exc


def _mutate(messages: list[dict[str, Any]], params: dict[str, Any]) -> None:
    leak = f"now mail {PII_VALUES[0]} card {PII_VALUES[2]}"
    messages.append({"role": "user", "content": leak})
    first = messages[0]
    if isinstance(first.get("content"), list):
        first["content"].append({"type": "text", "text": leak})
    else:
        first["content"] = leak
    params["user"] = PII_VALUES[1]
    for tool in params.get("tools") or ():
        tool["function"]["description"] = leak


@SETTINGS
@given(
    where=st.sampled_from(PLACES),
    value=pii,
    action=st.sampled_from(["route_local", "redact", "block"]),
    mutate=st.booleans(),
)
def test_no_personal_data_reaches_a_cloud(
    rig: Rig, where: str, value: str, action: str, mutate: bool
) -> None:
    """Personal data placed anywhere, with any action, never appears in a cloud's body."""
    _clear(rig)
    messages, params = _place(where, value)
    params["max_tokens"] = 16
    asyncio.run(_send(rig, action, messages, params, mutate))
    digits = "".join(ch for ch in value if ch.isalnum())
    for body in _cloud_bodies(rig):
        assert value not in body
        assert PII_VALUES[0] not in body
        assert PII_VALUES[1] not in body
        assert digits not in "".join(ch for ch in body if ch.isalnum())


@SETTINGS
@given(
    text=words,
    n=st.integers(1, 4),
    max_tokens=st.integers(1, 300),
    temperature=st.floats(0, 2, allow_nan=False),
    with_tools=st.booleans(),
    mutate=st.booleans(),
)
def test_clouds_receive_exactly_the_checked_request_within_its_reservation(
    rig: Rig,
    text: str,
    n: int,
    max_tokens: int,
    temperature: float,
    with_tools: bool,
    mutate: bool,
) -> None:
    """A clean request reaches OpenAI as it was made (whatever the caller changes after),
    and every reservation covers what the fake bills for the body it received."""
    _clear(rig)
    messages, params = _place("content", "x")
    messages[0]["content"] = f"Summarise: {text}"
    params.update(n=n, max_tokens=max_tokens, temperature=temperature)
    if with_tools:
        params["tools"] = _place("tool_description", "x")[1]["tools"]
        params["tools"][0]["function"]["description"] = text
    original = copy.deepcopy((messages, params))
    result = asyncio.run(_send(rig, "route_local", messages, params, mutate))
    assert not isinstance(result, AegisError), result
    (sent,) = rig.openai.chat_requests()
    want_messages, want_params = original
    expected = {"model": "gpt-4o", "messages": want_messages, **want_params}
    expected["max_completion_tokens"] = expected.pop("max_tokens")
    if n == 1:
        del expected["n"]
    assert sent.body == expected
    for row in _rows(rig):
        assert row["reserved_micros"] >= row["cost_micros"] > 0


@SETTINGS
@given(
    name=st.one_of(
        st.sampled_from(sorted(ESCAPE_HATCHES)),
        st.sampled_from(["temprature", "max_token", "top-p", "tool", "functionz", "streem"]),
        st.from_regex(r"[a-z]{3,12}_[a-z]{3,8}", fullmatch=True),
    ),
    value=st.one_of(st.none(), st.integers(), st.text(max_size=5),
                    st.just({"messages": [{"role": "user", "content": PII_VALUES[0]}]})),
)  # fmt: skip
def test_escape_hatches_and_typos_never_reach_a_server(rig: Rig, name: str, value: Any) -> None:
    """Any parameter outside the chat API is refused, naming it, before any request."""
    assume(name not in CHAT_PARAMS | {"messages", "task", "deadline_s"})  # those are ours
    _clear(rig)
    result = asyncio.run(_send(rig, "route_local", [{"role": "user", "content": "hi"}],
                               {name: value}, mutate=False))  # fmt: skip
    assert isinstance(result, RequestValidationError)
    assert result.field == name
    assert all(not s.chat_requests() for s in rig.servers().values())


@SETTINGS
@given(value=pii)
def test_the_generated_pii_is_detectable(value: str) -> None:
    """Every generated value is one the detector finds (else the properties would prove nothing)."""
    assert PiiDetector().scan_text(f"please contact {value} today")
