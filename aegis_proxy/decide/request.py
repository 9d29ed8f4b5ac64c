"""Check a chat request's messages before anything leaves, and the digest the ledger keeps.

What must always hold:
- a malformed request raises ``RequestValidationError`` naming the path of the bad value
  (``messages[2].content[0].text``, ``task.quality``, ``deadline_s``) before any network
  call or ledger row: never a ``RecursionError``, ``UnicodeEncodeError``, ``TypeError`` or
  ``AttributeError`` from deeper down;
- ``validate_messages`` returns a deep plain-JSON copy (``aegis_proxy.decide.values``):
  deeply nested or cyclic content, lone surrogates, non-string text parts, a ``content``
  or ``tool_calls`` of the wrong type and malformed tool calls (``function.name`` a string,
  ``function.arguments`` JSON text) are refused; nothing after it sees the caller's objects;
  a content part needs a string ``type``: an unknown one is kept, and counts as unscannable
  (``decide.payload.part_kind``);
- ``task`` may be an ``LLMTask`` or a mapping of its fields (checked like one); anything
  else is refused;
- ``query_hash`` is a one-way digest of the messages, kept in memory only (it splits
  traffic for ``percent`` rules); the ledger stores it keyed with its own secret
  (``aegis_proxy.settle.records.keyed_hash``), never as computed here.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from aegis_proxy.decide.rules import LLMTask
from aegis_proxy.decide.values import plain_copy
from aegis_proxy.errors import RequestValidationError

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal"})
"""The part types whose value is checked for shape; any other type is kept as it is."""


def validate_messages(messages: object) -> list[dict[str, Any]]:
    """A deep plain copy of the messages, or ``RequestValidationError`` naming the path."""
    if not isinstance(messages, list | tuple) or not messages:
        raise RequestValidationError("messages", "must be a non-empty list of chat messages")
    return [_validate_message(i, m) for i, m in enumerate(messages)]


def _validate_message(index: int, message: object) -> dict[str, Any]:
    field = f"messages[{index}]"
    dump = getattr(message, "model_dump", None)
    if callable(dump) and not isinstance(message, type):
        message = dump(exclude_none=True)
    if not isinstance(message, Mapping):
        raise RequestValidationError(field, "must be a mapping with a role")
    role = message.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        raise RequestValidationError(f"{field}.role", f"unknown role {_shown(role)}")
    copy: dict[str, Any] = plain_copy(message, field)
    _validate_content(field, role, copy)
    for key in ("name", "tool_call_id"):
        if key in copy and not isinstance(copy[key], str):
            raise RequestValidationError(f"{field}.{key}", "must be a string")
    if role == "tool" and not isinstance(copy.get("tool_call_id"), str):
        raise RequestValidationError(f"{field}.tool_call_id", "a tool message needs tool_call_id")
    if copy.get("tool_calls") is not None:
        _validate_tool_calls(f"{field}.tool_calls", copy["tool_calls"])
    if copy.get("function_call") is not None:
        _validate_function(f"{field}.function_call", copy["function_call"])
    return copy


def _validate_content(field: str, role: str, message: Mapping[str, Any]) -> None:
    content = message.get("content")
    if content is None:
        if role != "assistant" or not (message.get("tool_calls") or message.get("function_call")):
            raise RequestValidationError(f"{field}.content", "content is missing")
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise RequestValidationError(f"{field}.content", "must be a string or a list of parts")
    for j, part in enumerate(content):
        _validate_part(f"{field}.content[{j}]", part)


def _validate_part(field: str, part: object) -> None:
    """A known part's value has its shape; an unknown type is kept (and is unscannable:
    ``decide.payload.part_kind`` counts it as personal data unless the config allows it)."""
    if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
        raise RequestValidationError(field, "a content part needs a type")
    kind = part["type"]
    if kind not in _PART_TYPES:
        return
    value = part.get(kind)
    if kind in ("text", "refusal"):
        if not isinstance(value, str):
            raise RequestValidationError(f"{field}.{kind}", f"a {kind} part needs a string")
    elif kind == "image_url":
        url = value.get("url") if isinstance(value, Mapping) else value
        if not isinstance(url, str):
            raise RequestValidationError(f"{field}.image_url", "needs a url string")
    elif not isinstance(value, Mapping):
        raise RequestValidationError(f"{field}.{kind}", f"a {kind} part needs a mapping")


def _validate_tool_calls(field: str, calls: object) -> None:
    if not isinstance(calls, list):
        raise RequestValidationError(field, "must be a list of tool calls")
    for j, call in enumerate(calls):
        where = f"{field}[{j}]"
        if not isinstance(call, Mapping):
            raise RequestValidationError(where, "must be a mapping with a function")
        if "id" in call and not isinstance(call["id"], str):
            raise RequestValidationError(f"{where}.id", "must be a string")
        if call.get("type", "function") != "function":
            raise RequestValidationError(f"{where}.type", "must be 'function'")
        _validate_function(f"{where}.function", call.get("function"))


def _validate_function(field: str, function: object) -> None:
    """A called function: a string ``name`` and ``arguments`` as JSON text."""
    if not isinstance(function, Mapping):
        raise RequestValidationError(field, "must be a mapping with name and arguments")
    if not isinstance(function.get("name"), str) or not function["name"]:
        raise RequestValidationError(f"{field}.name", "must be a non-empty string")
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        raise RequestValidationError(f"{field}.arguments", "must be a string of JSON")
    if arguments.strip():
        try:
            json.loads(arguments)
        except ValueError:
            raise RequestValidationError(f"{field}.arguments", "is not valid JSON") from None


def _shown(value: object) -> str:
    """A short, safe rendering of a bad protocol value (never more than a few characters)."""
    if isinstance(value, str) and len(value) <= 20 and value.isprintable() and value.isascii():
        return repr(value)
    return f"of type {type(value).__name__}" if not isinstance(value, str) else "(not shown)"


def validate_task(task: object) -> LLMTask:
    """The task as an ``LLMTask``: given as one, as a mapping of its fields, or None.

    A mapping is taken as ``LLMTask`` fields (the gateway's body field ``aegis`` is one); a
    bad field is a ``RequestValidationError`` naming it (``task.quality``). Any other type
    is refused. Every string must be valid Unicode: the ledger stores them.
    """
    if task is None:
        return LLMTask()
    if isinstance(task, Mapping):
        fields = plain_copy(task, "task")
        try:
            task = LLMTask.model_validate(fields)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(["task", *(str(part) for part in first["loc"])])
            problem = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
            raise RequestValidationError(where, problem) from None
    if not isinstance(task, LLMTask):
        raise RequestValidationError("task", "must be an LLMTask or a mapping of its fields")
    plain_copy(task, "task")  # a lone surrogate in user_id or a tag never reaches the ledger
    return task


def validate_deadline(deadline_s: object) -> float | None:
    """The request's deadline in seconds (a positive, finite number), or None."""
    if deadline_s is None:
        return None
    if isinstance(deadline_s, bool) or not isinstance(deadline_s, int | float):
        raise RequestValidationError("deadline_s", "must be a number of seconds")
    if not math.isfinite(deadline_s) or deadline_s <= 0:
        raise RequestValidationError("deadline_s", "must be a positive, finite number of seconds")
    return float(deadline_s)


_HASH_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str)
"""Built once: ``json.dumps`` with options builds a new encoder per call (the same text)."""


def query_hash(messages: Sequence[Mapping[str, Any]]) -> str:
    """A SHA-256 digest of the messages, stable across key order."""
    return hashlib.sha256(_HASH_ENCODER.encode(messages).encode()).hexdigest()
