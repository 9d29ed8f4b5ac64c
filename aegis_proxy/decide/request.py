"""Check a chat request's messages before anything leaves, and the digest the ledger keeps.

What must always hold:
- a malformed request raises ``RequestValidationError`` before any network call or ledger row;
- the messages returned are a plain-JSON deep copy (``decide.payload.plain``): nothing the
  caller holds can change them afterwards; a content part needs a string ``type`` (an
  unknown one is kept, and counts as unscannable: ``decide.payload.part_kind``);
- ``query_hash`` is a one-way digest of the messages: the ledger keeps it instead of text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from aegis_proxy.decide.payload import plain
from aegis_proxy.errors import RequestValidationError

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def validate_messages(messages: object) -> list[dict[str, Any]]:
    """Return the messages as plain dicts or raise ``RequestValidationError``."""
    if not isinstance(messages, Sequence) or isinstance(messages, str | bytes) or not messages:
        raise RequestValidationError("messages", "must be a non-empty list of chat messages")
    return [_validate_message(i, m) for i, m in enumerate(messages)]


def _validate_message(index: int, message: object) -> dict[str, Any]:
    field = f"messages[{index}]"
    dump = getattr(message, "model_dump", None)
    if callable(dump):
        message = dump(exclude_none=True)
    if not isinstance(message, Mapping):
        raise RequestValidationError(field, "must be a mapping with a role")
    checked: dict[str, Any] = plain(dict(message), field)
    role = checked.get("role")
    if role not in _ROLES:
        raise RequestValidationError(f"{field}.role", f"unknown role {role!r}")
    _validate_content(field, role, checked)
    if role == "tool" and not isinstance(checked.get("tool_call_id"), str):
        raise RequestValidationError(f"{field}.tool_call_id", "a tool message needs tool_call_id")
    return checked


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
        if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
            raise RequestValidationError(f"{field}.content[{j}]", "a content part needs a type")


def has_images(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any message carries an ``image_url`` content part."""
    for message in messages:
        content = message.get("content")
        if isinstance(content, list) and any(
            isinstance(p, Mapping) and p.get("type") == "image_url" for p in content
        ):
            return True
    return False


_HASH_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str)
"""Built once: ``json.dumps`` with options builds a new encoder per call (the same text)."""


def query_hash(messages: Sequence[Mapping[str, Any]]) -> str:
    """A SHA-256 digest of the messages, stable across key order."""
    return hashlib.sha256(_HASH_ENCODER.encode(messages).encode()).hexdigest()
