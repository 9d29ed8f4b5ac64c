"""Check a chat request before anything leaves, and read what a response cost in tokens.

What must always hold:
- a malformed request raises ``RequestValidationError`` before any network call or ledger row;
- the routing record (``AegisRecord``) holds names, numbers and outcomes only: never prompt
  text, response text or keys;
- ``query_hash`` is a one-way digest of the messages: the ledger keeps it instead of text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

from aegis_proxy.errors import RequestValidationError

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal"})
_OUR_PARAMS = frozenset({"model", "messages"})  # chosen by the route, not the caller


class Attempt(BaseModel):
    """One provider the proxy tried or skipped, and what came of it."""

    model_config = ConfigDict(frozen=True)

    provider: str
    model: str
    outcome: str  # ok | error | skipped | budget_exceeded | cancelled
    breaker: str = "closed"  # the provider's circuit state when tried: closed|open|half_open
    error_type: str | None = None
    reason: str | None = None
    latency_ms: float | None = None


class AegisRecord(BaseModel):
    """The routing record attached to every response as ``resp.aegis``."""

    request_id: str
    provider: str | None = None
    model: str | None = None
    rule: str
    reason: str
    cost_usd: Decimal = Decimal(0)
    input_tokens: int = 0
    output_tokens: int = 0
    tokens_counted: bool = False
    contains_pii: bool
    pii_entities: dict[str, int] = {}
    removed_providers: list[str] = []
    privacy_action: str = "none"  # none | route_local | redact (see privacy.pii_action)
    attempts: list[Attempt] = []


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
    role = message.get("role")
    if role not in _ROLES:
        raise RequestValidationError(f"{field}.role", f"unknown role {role!r}")
    _validate_content(field, role, message)
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise RequestValidationError(f"{field}.tool_call_id", "a tool message needs tool_call_id")
    return dict(message)


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
        if not isinstance(part, Mapping) or part.get("type") not in _PART_TYPES:
            raise RequestValidationError(f"{field}.content[{j}]", "unknown content part")


def validate_params(params: Mapping[str, Any]) -> None:
    """Reject parameters the proxy owns or that cannot be right."""
    for name in _OUR_PARAMS & params.keys():
        raise RequestValidationError(name, "is chosen by the routing policy; use a route entry")
    for name in ("max_tokens", "max_completion_tokens"):
        value = params.get(name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise RequestValidationError(name, "must be a positive integer")
    if "stream" in params and not isinstance(params["stream"], bool):
        raise RequestValidationError("stream", "must be true or false")


def has_images(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any message carries an ``image_url`` content part."""
    for message in messages:
        content = message.get("content")
        if isinstance(content, list) and any(
            isinstance(p, Mapping) and p.get("type") == "image_url" for p in content
        ):
            return True
    return False


def has_remote_images(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether an ``image_url`` part points at an http(s) URL rather than a data: URL."""
    for message in messages:
        content = message.get("content")
        for part in content if isinstance(content, list) else ():
            url = part.get("image_url") if isinstance(part, Mapping) else None
            url = url.get("url") if isinstance(url, Mapping) else url
            if isinstance(url, str) and not url.startswith("data:"):
                return True
    return False


_OLLAMA_DEFAULTS: dict[str, tuple[object, ...]] = {  # what the ollama SDK can honour of each
    "tool_choice": (None, "auto"),
    "n": (None, 1),
    "logprobs": (None, False),
    "top_logprobs": (None,),
    "parallel_tool_calls": (None, True),
}


def ollama_cannot_honour(params: Mapping[str, Any]) -> str | None:
    """Why an Ollama provider would silently drop one of these parameters; None if it would not.

    any-llm's ollama provider passes unknown parameters as model options, which the server
    ignores: a tool_choice of ``required`` or ``n=3`` would be lost without a word.
    """
    for name, honoured in _OLLAMA_DEFAULTS.items():
        if name in params and params[name] not in honoured:
            return f"the ollama SDK cannot honour {name}={params[name]!r}"
    return None


_HASH_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str)
"""Built once: ``json.dumps`` with options builds a new encoder per call (the same text)."""


def query_hash(messages: Sequence[Mapping[str, Any]]) -> str:
    """A SHA-256 digest of the messages, stable across key order."""
    return hashlib.sha256(_HASH_ENCODER.encode(messages).encode()).hexdigest()


def usage_tokens(usage: Any) -> tuple[int, int, int, int] | None:
    """(input, output, cached input, reasoning) from an OpenAI-style usage, or None."""
    if usage is None:
        return None
    prompt = getattr(usage, "prompt_tokens", None)
    completion = getattr(usage, "completion_tokens", None)
    if not prompt and not completion:  # any-llm's Ollama answers zeros when counts are absent
        return None
    cached = getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", None)
    reasoning = getattr(getattr(usage, "completion_tokens_details", None), "reasoning_tokens", None)
    return int(prompt or 0), int(completion or 0), int(cached or 0), int(reasoning or 0)


def response_text(message: Any) -> str:
    """All text a response message carries (content and tool-call arguments), for counting."""
    if message is None:
        return ""
    parts = [getattr(message, "content", None) or ""]
    for call in getattr(message, "tool_calls", None) or []:
        function = getattr(call, "function", None)
        parts.append(getattr(function, "name", "") or "")
        parts.append(getattr(function, "arguments", "") or "")
    return "".join(parts)
