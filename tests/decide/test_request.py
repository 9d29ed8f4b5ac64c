"""Bad input is a RequestValidationError naming its path, before any network call or row.

What must always hold: whatever junk a caller passes as messages, task or deadline_s, only
an ``AegisError`` comes out (never a RecursionError, UnicodeEncodeError, TypeError or
AttributeError), and nothing invalid reaches a fake provider or the ledger.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aegis_proxy import AegisError, AegisLLMProxy, LLMTask, RequestValidationError
from aegis_proxy.decide.request import validate_messages, validate_task
from aegis_proxy.decide.values import MAX_DEPTH, plain_copy
from tests.conftest import Rig

HELLO = [{"role": "user", "content": "hello"}]


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"inner": [value]}
    return value


def _cyclic_parts() -> list[Any]:
    parts: list[Any] = [{"type": "text", "text": "hi"}]
    parts.append(parts)
    return parts


def _cyclic_dict() -> dict[str, Any]:
    message: dict[str, Any] = {"role": "user", "content": "hi"}
    message["metadata"] = message
    return message


def _call(**changes: Any) -> dict[str, Any]:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    return {**call, **changes}


def _assistant(tool_calls: Any) -> list[dict[str, Any]]:
    return [*HELLO, {"role": "assistant", "content": None, "tool_calls": tool_calls}]


BAD_MESSAGES: list[tuple[str, Any, str]] = [
    ("not a list", {"role": "user", "content": "hi"}, "messages"),
    ("a string", "hello", "messages"),
    ("empty", [], "messages"),
    ("role not a string", [{"role": ["user"], "content": "x"}], "messages[0].role"),
    ("content a number", [{"role": "user", "content": 42}], "messages[0].content"),
    ("content a dict", [{"role": "user", "content": {"text": "x"}}], "messages[0].content"),
    ("text part not a string", [{"role": "user", "content": [{"type": "text", "text": 7}]}],
     "messages[0].content[0].text"),
    ("text part missing text", [{"role": "user", "content": [{"type": "text"}]}],
     "messages[0].content[0].text"),
    ("part not a mapping", [{"role": "user", "content": ["hello"]}], "messages[0].content[0]"),
    ("image part without url", [{"role": "user", "content": [{"type": "image_url",
     "image_url": {"detail": "low"}}]}], "messages[0].content[0].image_url"),
    ("lone surrogate in content", [{"role": "user", "content": "caf\ud800"}],
     "messages[0].content"),
    ("lone surrogate in a part", [*HELLO, {"role": "user", "content": [
        {"type": "text", "text": "ok"}, {"type": "text", "text": "\udfff"}]}],
     "messages[1].content[1].text"),
    ("lone surrogate in a key", [{"role": "user", "content": "x", "\ud800": 1}],
     "messages[0][key 2]"),
    ("lone surrogate in arguments", _assistant([_call(function={"name": "f",
     "arguments": '{"a": "\ud800"}'})]), "messages[1].tool_calls[0].function.arguments"),
    ("deep nesting", [{"role": "user", "content": "x", "metadata": _nested(MAX_DEPTH + 5)}],
     "messages[0].metadata" + ".inner[0]" * (MAX_DEPTH // 2 - 1) + ".inner"),
    ("cyclic parts", [{"role": "user", "content": _cyclic_parts()}], "messages[0].content[1]"),
    ("cyclic message", [_cyclic_dict()], "messages[0].metadata"),
    ("a set inside", [{"role": "user", "content": "x", "metadata": {"s": {1, 2}}}],
     "messages[0].metadata.s"),
    ("bytes inside", [{"role": "user", "content": "x", "audio": b"\x00"}], "messages[0].audio"),
    ("NaN inside", [{"role": "user", "content": "x", "metadata": {"n": math.nan}}],
     "messages[0].metadata.n"),
    ("non-string key", [{"role": "user", "content": "x", "metadata": {1: "a"}}],
     "messages[0].metadata[key 0]"),
    ("tool_calls a dict", _assistant(_call()), "messages[1].tool_calls"),
    ("tool_calls a string", _assistant("f()"), "messages[1].tool_calls"),
    ("tool call not a mapping", _assistant(["f"]), "messages[1].tool_calls[0]"),
    ("tool call without function", _assistant([{"id": "c", "type": "function"}]),
     "messages[1].tool_calls[0].function"),
    ("tool call id a number", _assistant([_call(id=3)]), "messages[1].tool_calls[0].id"),
    ("tool call wrong type", _assistant([_call(type="code")]), "messages[1].tool_calls[0].type"),
    ("function name missing", _assistant([_call(function={"arguments": "{}"})]),
     "messages[1].tool_calls[0].function.name"),
    ("arguments a dict", _assistant([_call(function={"name": "f", "arguments": {"a": 1}})]),
     "messages[1].tool_calls[0].function.arguments"),
    ("arguments not JSON", _assistant([_call(function={"name": "f", "arguments": "{a"})]),
     "messages[1].tool_calls[0].function.arguments"),
    ("tool_call_id a number", [*HELLO, {"role": "tool", "tool_call_id": 5, "content": "x"}],
     "messages[1].tool_call_id"),
    ("name a list", [{"role": "user", "content": "x", "name": ["a"]}], "messages[0].name"),
]  # fmt: skip


def _ledger_rows(rig: Rig) -> int:
    path = rig.tmp_path / "ledger.db"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM requests").fetchone()[0])


def _nothing_sent(rig: Rig) -> bool:
    return all(server.requests == [] for server in rig.servers().values())


@pytest.mark.parametrize(("messages", "field"), [(m, f) for _, m, f in BAD_MESSAGES],
                         ids=[name for name, _, _ in BAD_MESSAGES])  # fmt: skip
async def test_bad_messages_name_their_path(rig: Rig, messages: Any, field: str) -> None:
    """A malformed message is a RequestValidationError naming the exact path; nothing is sent."""
    async with rig.proxy() as proxy:
        with pytest.raises(RequestValidationError) as info:
            await proxy.acompletion(messages, max_tokens=8)
    assert info.value.field == field
    assert _nothing_sent(rig)
    assert _ledger_rows(rig) == 0


def test_the_problem_never_shows_the_value() -> None:
    """The error names the path, never the text that was refused."""
    secret = "BLUEHERON-4111111111111111\ud800"
    with pytest.raises(RequestValidationError) as info:
        validate_messages([{"role": "user", "content": secret}])
    assert "BLUEHERON" not in str(info.value)
    with pytest.raises(RequestValidationError) as info:
        validate_messages([{"role": "BLUEHERON is the code", "content": "x"}])
    assert "BLUEHERON" not in str(info.value)


def test_validated_messages_share_nothing_with_the_callers() -> None:
    """The checked copy is deep: changing the caller's parts afterwards changes nothing."""
    parts = [{"type": "text", "text": "hello"}]
    messages = [{"role": "user", "content": parts}]
    checked = validate_messages(messages)
    parts[0]["text"] = "changed"
    parts.append({"type": "text", "text": "more"})
    assert checked == [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]


def test_plain_copy_turns_tuples_and_models_into_json() -> None:
    """Tuples become lists and pydantic models are dumped without their None fields."""
    assert plain_copy({"a": (1, 2.5, None, True)}, "x") == {"a": [1, 2.5, None, True]}
    assert plain_copy([LLMTask(tags=["t"])], "x")[0]["tags"] == ["t"]


BAD_TASKS: list[tuple[Any, str]] = [
    ({"quality": "supreme"}, "task.quality"),
    ({"batch_size": 0}, "task.batch_size"),
    ({"tags": "a,b"}, "task.tags"),
    ({"colour": "red"}, "task.colour"),
    ({"user_id": "u\ud800"}, "task.user_id"),
    ({"tags": ["ok", "\udc00"]}, "task.tags[1]"),
    ("critical", "task"),
    (["quality", "critical"], "task"),
    (3, "task"),
    (LLMTask(user_id="u\ud800"), "task.user_id"),
]


@pytest.mark.parametrize(("task", "field"), BAD_TASKS)
async def test_bad_task_names_the_field(rig: Rig, task: Any, field: str) -> None:
    """A task of the wrong type, or a mapping with a bad field, names it; nothing is sent."""
    async with rig.proxy() as proxy:
        with pytest.raises(RequestValidationError) as info:
            await proxy.acompletion(HELLO, task)
    assert info.value.field == field
    assert _nothing_sent(rig)
    assert _ledger_rows(rig) == 0


async def test_task_as_a_mapping_is_taken_as_llmtask_fields(rig: Rig) -> None:
    """A dict task routes exactly as the LLMTask with those fields would."""
    fields = {"quality": "critical", "complexity": "high", "task_type": "support"}
    assert validate_task(fields) == LLMTask(**fields)
    async with rig.proxy() as proxy:
        response = await proxy.acompletion(HELLO, fields, max_tokens=8)
    assert (response.aegis.provider, response.aegis.rule) == ("openai", "critical_to_openai")
    assert len(rig.openai.chat_requests()) == 1


@pytest.mark.parametrize("deadline", ["x", -1, 0, True, math.nan, math.inf, [5]])
async def test_bad_deadline_is_refused(rig: Rig, deadline: Any) -> None:
    """deadline_s must be a positive finite number of seconds; anything else sends nothing."""
    async with rig.proxy() as proxy:
        with pytest.raises(RequestValidationError) as info:
            await proxy.acompletion(HELLO, deadline_s=deadline)
    assert info.value.field == "deadline_s"
    assert _nothing_sent(rig)


# -- junk of every shape --------------------------------------------------------------------

_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=8)
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | _TEXT | st.binary(max_size=4)
_JUNK = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3)
    | st.tuples(inner, inner)
    | st.dictionaries(_TEXT | st.sampled_from(["type", "text", "function", "id"]), inner,
                      max_size=3)
    | st.frozensets(st.integers(), max_size=2),
    max_leaves=12,
)  # fmt: skip
_ROLE = st.sampled_from(["user", "assistant", "tool", "system", "wizard"]) | _JUNK
_PART = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "file", "input_audio", "video"])},
    optional={"text": _JUNK, "image_url": _JUNK, "file": _JUNK, "input_audio": _JUNK},
)
_CALL = st.fixed_dictionaries({}, optional={"id": _JUNK, "type": _JUNK, "function": _JUNK})
_MESSAGE = st.fixed_dictionaries(
    {"role": _ROLE},
    optional={
        "content": _JUNK | _TEXT | st.lists(_PART | _JUNK, max_size=3),
        "tool_calls": _JUNK | st.lists(_CALL, max_size=2),
        "tool_call_id": _JUNK,
        "name": _JUNK,
    },
)
_MESSAGES = st.lists(_MESSAGE | _JUNK, max_size=3) | _JUNK
_TASK = (
    st.none()
    | _JUNK
    | st.dictionaries(
        st.sampled_from(["quality", "batch_size", "tags", "user_id", "x"]), _JUNK, max_size=2
    )
)
_DEADLINE = st.none() | _SCALARS


async def _one(path: Path, rig: Rig, messages: Any, task: Any, deadline: Any) -> None:
    for server in rig.servers().values():
        server.clear()
    proxy = AegisLLMProxy.from_config(path)
    try:
        await proxy.acompletion(messages, task, deadline_s=deadline, max_tokens=8)
    except RequestValidationError:
        assert _nothing_sent(rig)
    finally:
        await proxy.aclose()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(messages=_MESSAGES, task=_TASK, deadline=_DEADLINE)
def test_junk_only_ever_raises_aegis_errors(
    rig: Rig, messages: Any, task: Any, deadline: Any
) -> None:
    """Random junk as messages, task or deadline: a valid call or an AegisError, nothing else.

    A RequestValidationError leaves every fake server untouched; any other AegisError would
    mean junk got past validation (the default route is local, so privacy refuses nothing).
    """
    path = rig.write_config()
    try:
        asyncio.run(_one(path, rig, messages, task, deadline))
    except RequestValidationError:
        pass
    except AegisError as exc:  # pragma: no cover - a failure to report
        pytest.fail(f"junk passed validation and failed later: {exc!r}")


@settings(max_examples=300, deadline=None)
@given(value=_JUNK)
def test_plain_copy_is_json_or_a_named_refusal(value: Any) -> None:
    """Any junk either copies to a value JSON encodes (and decodes back to) or is refused."""
    try:
        copied = plain_copy({"junk": value}, "x")
    except RequestValidationError as exc:
        field = exc.field
        copied = None
    else:
        field = ""
    if copied is None and field:
        assert field.startswith("x.junk")
        return
    text = json.dumps(copied, ensure_ascii=False, allow_nan=False)
    text.encode("utf-8")
    assert json.loads(text) == copied
