"""What a cooperative model would answer: tool calls and JSON that fit the request's schemas.

The fake servers use it when ``cooperative`` is on, so LangChain's standard tests (tools,
``tool_choice``, structured output, JSON mode) can run without a real model. Pure
functions of the wire body; what must always hold:

- a request with tools gets a tool call unless ``tool_choice`` is ``none`` or the last
  message is a tool result; a named ``tool_choice`` is the tool called;
- arguments and JSON answers validate against the schema given (``$ref``/``$defs``,
  ``anyOf``, enums, bounds); numbers and quoted text are taken from the last user message
  in order, so "magic_function(3)" calls with ``{"input": 3}``;
- a JSON-mode request without a schema answers an object whose keys are the words quoted
  in the last user message ("with 'setup' and 'punchline' keys").
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["CooperativeAnswer", "cooperative_answer"]

_QUOTED = re.compile(r"'([^']+)'|\"([^\"]+)\"")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class CooperativeAnswer:
    """Either a tool call (name, arguments) or a JSON text to send as the content."""

    tool_call: tuple[str, dict[str, Any]] | None = None
    text: str | None = None


def cooperative_answer(body: dict[str, Any]) -> CooperativeAnswer | None:
    """The answer a cooperative model gives to ``body`` (either protocol); None: plain text."""
    prompt = _last_user_text(body.get("messages") or [])
    call = _tool_call(body, prompt)
    if call is not None:
        return CooperativeAnswer(tool_call=call)
    schema = _answer_schema(body)
    if schema is None:
        return None
    hints = _Hints(prompt)
    if schema == "keys":
        keys = [a or b for a, b in _QUOTED.findall(prompt)] or ["answer"]
        return CooperativeAnswer(text=json.dumps({k: f"a {k}" for k in keys}))
    return CooperativeAnswer(text=json.dumps(_value(schema, schema, hints, "answer")))


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _tool_call(body: dict[str, Any], prompt: str) -> tuple[str, dict[str, Any]] | None:
    tools = [t.get("function", t) for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice")
    messages = body.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    answered = last.get("role") == "tool"
    if not tools or choice == "none" or (answered and choice in (None, "auto")):
        return None
    named = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    tool = _pick(tools, named, prompt)
    schema = tool.get("parameters") or {"type": "object", "properties": {}}
    return str(tool["name"]), _value(schema, schema, _Hints(prompt), tool["name"])


def _pick(tools: list[dict[str, Any]], named: str | None, prompt: str) -> dict[str, Any]:
    if named is not None:
        return next(t for t in tools if t.get("name") == named)
    mentioned = [t for t in tools if str(t.get("name")) in prompt]
    return (mentioned or tools)[0]


def _answer_schema(body: dict[str, Any]) -> dict[str, Any] | str | None:
    """The JSON schema the answer must fit, ``"keys"`` for schema-less JSON mode, or None."""
    fmt = body.get("format")  # Ollama: "json" or a schema
    if fmt == "json":
        return "keys"
    if isinstance(fmt, dict):
        return fmt
    response_format = body.get("response_format")
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_object":
        return "keys"
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else None
    return None


class _Hints:
    """Numbers and quoted strings of the prompt, handed out in order."""

    def __init__(self, prompt: str) -> None:
        self.words: Iterator[str] = iter([a or b for a, b in _QUOTED.findall(prompt)])
        self.numbers: Iterator[str] = iter(_NUMBER.findall(prompt))

    def text(self, name: str) -> str:
        return next(self.words, f"a {name}")

    def number(self) -> float | None:
        found = next(self.numbers, None)
        return float(found) if found is not None else None


def _value(schema: dict[str, Any], root: dict[str, Any], hints: _Hints, name: str) -> Any:
    """A value that validates against ``schema``."""
    schema = _resolve(schema, root)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        typed = [o for o in options if _resolve(o, root).get("type") != "null"]
        return _value((typed or options)[0], root, hints, name)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties: dict[str, Any] = schema.get("properties") or {}
        return {k: _value(v, root, hints, k) for k, v in properties.items()}
    if kind == "array":
        return [_value(schema.get("items") or {}, root, hints, name)]
    if kind in ("integer", "number"):
        return _number(schema, hints.number(), integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return hints.text(name)


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while isinstance(schema.get("$ref"), str):
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = target
    return schema


def _number(schema: dict[str, Any], hint: float | None, *, integer: bool) -> int | float:
    def fits(v: float) -> bool:
        return not (
            ("minimum" in schema and v < schema["minimum"])
            or ("maximum" in schema and v > schema["maximum"])
            or ("exclusiveMinimum" in schema and v <= schema["exclusiveMinimum"])
            or ("exclusiveMaximum" in schema and v >= schema["exclusiveMaximum"])
        )

    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    candidates = [hint, 1.0, 0.0, low, None if low is None else low + 1, high, high and high - 1]
    value = next((float(c) for c in candidates if c is not None and fits(float(c))), 1.0)
    return int(value) if integer else value
