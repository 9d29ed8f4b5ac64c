"""Redact mode: personal data replaced by placeholders before a request leaves, restored after.

What must always hold:
- every detected value in every part of the request (text, content parts, tool results,
  tool-call arguments, ``tool_call_id`` and ``tool_calls[].id``) is replaced by a stable
  placeholder (``<EMAIL_1>``, ``<PHONE_2>``): the same value gets the same placeholder
  everywhere in the request (so a tool call and its result still pair up);
- placeholders are unforgeable: a placeholder-shaped string the caller wrote anywhere in
  the request (also JSON-, %- or HTML-escaped) is never issued, so a reply echoing it is
  never "restored" to a real value; only placeholders this redaction issued are restored.
  This is deterministic (no random nonce): the same request redacts the same way, so the
  response cache still serves redacted requests;
- the mapping lives only in memory, for that one request; it is never logged or stored;
- restoring is exact, also when a placeholder arrives split across streamed chunks
  (``StreamRestorer`` holds back a possible placeholder prefix until it is complete);
- JSON strings (tool-call arguments, JSON tool results) stay valid JSON both ways.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from aegis_proxy.classify.detector import PiiMatch
from aegis_proxy.classify.walk import decoded_views, iter_strings

_PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*?)_(\d+)>")
_MAYBE_PLACEHOLDER = re.compile(r"[<%&\\]")  # a placeholder, or an escape that could hide one
_MAX_PLACEHOLDER = 40  # longest "<ENTITY_N>" we ever hold back while streaming


class TextScanner(Protocol):
    def scan_text(self, text: str) -> list[PiiMatch]: ...


class Redaction:
    """One request's value <-> placeholder map."""

    def __init__(self, scanner: TextScanner) -> None:
        self._scanner = scanner
        self._placeholders: dict[tuple[str, str], str] = {}
        self._values: dict[str, str] = {}
        self._counts: dict[str, int] = {}
        self._taken: set[str] = set()  # placeholder-shaped strings the caller wrote

    def __repr__(self) -> str:  # never show values
        return f"Redaction({len(self._values)} placeholders)"

    @property
    def count(self) -> int:
        return len(self._values)

    def reserve_written(self, value: object) -> None:
        """Never issue a placeholder that ``value`` holds already (in any reading of it)."""
        for text in iter_strings(value):
            self._taken.update(_placeholders_in(text))

    def redact_text(self, text: str) -> str:
        """``text`` with every detected value replaced by its placeholder."""
        self._taken.update(_placeholders_in(text))
        matches = sorted(self._scanner.scan_text(text), key=lambda m: m.start)
        pieces, last = [], 0
        for match in matches:
            if match.start < last:
                continue
            pieces += [text[last : match.start], self._placeholder(match, text)]
            last = match.end
        return "".join([*pieces, text[last:]]) if matches else text

    def _placeholder(self, match: PiiMatch, text: str) -> str:
        key = (match.entity_type, text[match.start : match.end])
        if key not in self._placeholders:
            number = self._counts.get(match.entity_type, 0) + 1
            while f"<{match.entity_type}_{number}>" in self._taken:
                number += 1  # the caller wrote this one: it must not stand for a value
            self._counts[match.entity_type] = number
            placeholder = f"<{match.entity_type}_{number}>"
            self._placeholders[key] = placeholder
            self._values[placeholder] = key[1]
        return self._placeholders[key]

    def restore(self, text: str) -> str:
        """``text`` with our placeholders put back to their original values."""
        if "<" not in text or not self._values:
            return text
        return _PLACEHOLDER.sub(lambda m: self._values.get(m.group(0), m.group(0)), text)

    def restore_json_text(self, text: str) -> str:
        """Restore inside a JSON document so that it stays valid JSON."""
        return _map_json_text(text, self.restore)

    def redact_messages(self, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """A redacted copy of the messages; the originals are left untouched."""
        self.reserve_written(messages)
        return [self._redact_message(m) for m in messages]

    def redact_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A redacted copy of chat parameters: every string value (not keys) rewritten."""
        return {name: _map_strings(value, self.redact_text) for name, value in params.items()}

    def _redact_message(self, message: Mapping[str, Any]) -> dict[str, Any]:
        copy = dict(message)
        content = message.get("content")
        if isinstance(content, str):
            redact = self.redact_text
            copy["content"] = (
                _map_json_text(content, redact) if _is_json(content) else redact(content)
            )
        elif isinstance(content, list):
            copy["content"] = [self._redact_part(p) for p in content]
        if message.get("tool_calls"):
            copy["tool_calls"] = [self._redact_call(c) for c in message["tool_calls"]]
        if isinstance(message.get("tool_call_id"), str):
            copy["tool_call_id"] = self.redact_text(message["tool_call_id"])
        return copy

    def _redact_part(self, part: Any) -> Any:
        if isinstance(part, Mapping) and part.get("type") == "text":
            return {**part, "text": self.redact_text(str(part.get("text", "")))}
        return part

    def _redact_call(self, call: Any) -> Any:
        if not isinstance(call, Mapping):
            return call
        copy = dict(call)
        if isinstance(call.get("id"), str):
            copy["id"] = self.redact_text(call["id"])
        function = call.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("arguments"), str):
            arguments = _map_json_text(function["arguments"], self.redact_text)
            copy["function"] = {**function, "arguments": arguments}
        return copy


class StreamRestorer:
    """Restores placeholders in a stream of text pieces, across piece boundaries."""

    def __init__(self, redaction: Redaction) -> None:
        self._redaction = redaction
        self._held = ""

    def feed(self, piece: str) -> str:
        """Text safe to emit now; a possible placeholder prefix is held back."""
        text = self._held + piece
        cut = _holdback_start(text)
        self._held = text[cut:]
        return self._redaction.restore(text[:cut])

    def flush(self) -> str:
        """Whatever is still held back, restored, at the end of the stream."""
        text, self._held = self._held, ""
        return self._redaction.restore(text)


def _placeholders_in(text: str) -> set[str]:
    """Placeholder-shaped strings in ``text`` and in its decoded readings (JSON, %, HTML)."""
    if not _MAYBE_PLACEHOLDER.search(text):
        return set()
    found = {m.group(0) for m in _PLACEHOLDER.finditer(text)}
    for view in decoded_views(text):
        for decoded in view:
            found.update(m.group(0) for m in _PLACEHOLDER.finditer(decoded))
    return found


def _holdback_start(text: str) -> int:
    """Index from which ``text`` might be the start of an unfinished placeholder."""
    start = text.rfind("<")
    if start == -1 or ">" in text[start:] or len(text) - start > _MAX_PLACEHOLDER:
        return len(text)
    return start


def _is_json(text: str) -> bool:
    stripped = text.lstrip()
    return stripped[:1] in ("{", "[")


def _map_json_text(text: str, change: Callable[[str], str]) -> str:
    """Apply ``change`` to every string inside a JSON document (or to plain text)."""
    try:
        document = json.loads(text)
    except ValueError:
        return change(text)
    return json.dumps(_map_strings(document, change), ensure_ascii=False)


def _map_strings(value: Any, change: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return change(value)
    if isinstance(value, list):
        return [_map_strings(v, change) for v in value]
    if isinstance(value, dict):
        return {k: _map_strings(v, change) for k, v in value.items()}
    return value


def restore_message(message: Any, redaction: Redaction) -> None:
    """Put original values back into a response message (content and tool-call arguments)."""
    if message is None:
        return
    if isinstance(getattr(message, "content", None), str):
        message.content = redaction.restore(message.content)
    for call in getattr(message, "tool_calls", None) or []:
        function = getattr(call, "function", None)
        if function is not None and isinstance(function.arguments, str):
            function.arguments = redaction.restore_json_text(function.arguments)


class ChunkRestorer:
    """Restores placeholders in streamed chunks: one ``StreamRestorer`` per text channel."""

    def __init__(self, redaction: Redaction) -> None:
        self._redaction = redaction
        self._channels: dict[tuple[int, int], StreamRestorer] = {}
        self._last: Any = None

    def restore(self, chunk: Any) -> Any:
        """The chunk with every complete placeholder restored (in place)."""
        if getattr(chunk, "choices", None):
            self._last = chunk
        for choice in getattr(chunk, "choices", None) or []:
            delta = getattr(choice, "delta", None)
            if delta is None:
                continue
            if isinstance(delta.content, str):
                delta.content = self._channel(choice.index, -1).feed(delta.content)
            for call in getattr(delta, "tool_calls", None) or []:
                function = getattr(call, "function", None)
                if function is not None and isinstance(function.arguments, str):
                    function.arguments = self._channel(choice.index, call.index).feed(
                        function.arguments
                    )
        return chunk

    def _channel(self, choice: int, call: int) -> StreamRestorer:
        return self._channels.setdefault((choice, call), StreamRestorer(self._redaction))

    def leftover_chunk(self) -> Any | None:
        """A last chunk carrying text still held back at the end of the stream, if any."""
        held = {key: channel.flush() for key, channel in self._channels.items()}
        held = {key: text for key, text in held.items() if text}
        if not held or self._last is None:
            return None
        from any_llm.types.completion import ChoiceDeltaToolCall, ChoiceDeltaToolCallFunction

        chunk = self._last.model_copy(deep=True)
        chunk.usage = None
        for choice in chunk.choices:
            choice.delta.content = held.get((choice.index, -1), "")
            calls = [(key[1], text) for key, text in held.items() if key[0] == choice.index]
            choice.delta.tool_calls = [
                ChoiceDeltaToolCall(
                    index=index, function=ChoiceDeltaToolCallFunction(arguments=text)
                )
                for index, text in calls
                if index >= 0
            ] or None
            choice.finish_reason = None
        return chunk
