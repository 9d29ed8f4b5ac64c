"""LangChain messages <-> the OpenAI chat shapes the proxy speaks, for ``ChatAegis``.

Needs ``langchain-core`` (the ``langchain`` extra); only ``aegis_proxy.langchain`` imports
it. What must always hold:

- an assistant turn is sent as its text and its ``tool_calls``: LangChain's content blocks
  that repeat a tool call (``tool_call``, ``tool_use``, ...) or hold the model's own
  reasoning are not sent; any other block stays, so the proxy validates (or refuses) it;
- ``tool_choice`` in every LangChain spelling (``"any"``, ``True``, a tool name, an
  OpenAI dict) becomes an OpenAI choice naming a bound tool, or ``RequestValidationError``;
- an answer becomes an ``AIMessage`` (chunks: ``AIMessageChunk``) with ``tool_calls``,
  ``usage_metadata`` from the ledger's counts and the routing record in
  ``response_metadata["aegis"]``; a stream's usage and record ride on its last chunk only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, UsageMetadata
from langchain_core.messages import convert_to_openai_messages as _to_openai
from langchain_core.outputs import ChatGenerationChunk

from aegis_proxy.decide.record import AegisRecord
from aegis_proxy.errors import RequestValidationError

__all__ = [
    "ai_message",
    "closing_chunk",
    "generation_chunk",
    "openai_messages",
    "openai_tool_choice",
]

# Blocks of an assistant turn whose content travels elsewhere (``tool_calls``) or that are
# the model's own reasoning, which chat-completion APIs do not take back.
_NOT_SENT = frozenset(
    {"tool_call", "tool_call_chunk", "invalid_tool_call", "tool_use", "server_tool_call",
     "server_tool_result", "reasoning", "thinking", "redacted_thinking"}
)  # fmt: skip
_FORCED = frozenset({"any", "required"})


def openai_messages(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    """OpenAI chat messages for LangChain ones (v0 or v1 content blocks)."""
    converted = _to_openai(messages)
    listed = converted if isinstance(converted, list) else [converted]
    return [_assistant_turn(m) if m.get("role") == "assistant" else m for m in listed]


def _assistant_turn(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if not isinstance(content, list):
        return message
    kept = [p for p in content if not (isinstance(p, dict) and p.get("type") in _NOT_SENT)]
    if all(isinstance(p, dict) and p.get("type") == "text" for p in kept):
        return {**message, "content": "".join(str(p.get("text", "")) for p in kept)}
    return {**message, "content": kept}


def openai_tool_choice(choice: object, tools: Sequence[dict[str, Any]]) -> str | dict[str, Any]:
    """The OpenAI ``tool_choice`` for LangChain's ``choice`` over the bound ``tools``."""
    names = [str(tool["function"]["name"]) for tool in tools]
    if choice is True:
        return _named(names[0]) if len(names) == 1 else "required"
    if isinstance(choice, str):
        if choice in ("auto", "none"):
            return choice
        if choice in _FORCED:
            return "required"
        if choice in names:
            return _named(choice)
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if name in names:
            return _named(str(name))
    raise RequestValidationError(
        "tool_choice",
        f"must be auto, none, any, required, True or the name of a bound tool ({names}); "
        f"got {choice!r}",
    )


def _named(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


def _usage(record: AegisRecord) -> UsageMetadata:
    total = record.input_tokens + record.output_tokens
    return UsageMetadata(
        input_tokens=record.input_tokens, output_tokens=record.output_tokens, total_tokens=total
    )


def _metadata(record: AegisRecord, extra: dict[str, Any]) -> dict[str, Any]:
    return {"model_name": record.model, "aegis": record.model_dump(mode="json"), **extra}


def ai_message(response: Any) -> AIMessage:
    """The ``AIMessage`` of a proxy ``ChatCompletion``."""
    record: AegisRecord = response.aegis
    choice = response.choices[0]
    calls, invalid = _tool_calls(choice.message.tool_calls or [])
    return AIMessage(
        content=choice.message.content or "",
        tool_calls=calls,
        invalid_tool_calls=invalid,
        usage_metadata=_usage(record),
        response_metadata=_metadata(record, {"finish_reason": choice.finish_reason}),
        id=response.id,
    )


def _tool_calls(raw: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """Parsed tool calls, and those whose arguments are not a JSON object."""
    calls: list[Any] = []
    invalid: list[Any] = []
    for call in raw:
        name, arguments = call.function.name, call.function.arguments or "{}"
        try:
            args = json.loads(arguments)
        except ValueError:
            args = None
        if isinstance(args, dict):
            calls.append({"name": name, "args": args, "id": call.id, "type": "tool_call"})
        else:
            invalid.append(
                {"name": name, "args": arguments, "id": call.id, "type": "invalid_tool_call",
                 "error": "arguments are not a JSON object"}
            )  # fmt: skip
    return calls, invalid


def generation_chunk(chunk: Any) -> ChatGenerationChunk | None:
    """A LangChain chunk from an OpenAI one (None for a usage-only chunk)."""
    if not chunk.choices:
        return None
    choice = chunk.choices[0]
    delta = choice.delta
    pieces = [
        {
            "name": call.function.name if call.function else None,
            "args": call.function.arguments if call.function else None,
            "id": call.id,
            "index": call.index,
            "type": "tool_call_chunk",
        }
        for call in delta.tool_calls or []
    ]
    finish = {"finish_reason": choice.finish_reason} if choice.finish_reason else {}
    message = AIMessageChunk(
        content=delta.content or "",
        tool_call_chunks=pieces,  # type: ignore[arg-type]  # ToolCallChunk dicts
        response_metadata=finish,
    )
    return ChatGenerationChunk(message=message)


def closing_chunk(record: AegisRecord) -> ChatGenerationChunk:
    """The last chunk: the ledger's token counts and the routing record."""
    message = AIMessageChunk(
        content="",
        usage_metadata=_usage(record),
        response_metadata=_metadata(record, {}),
        chunk_position="last",
    )
    return ChatGenerationChunk(message=message)
