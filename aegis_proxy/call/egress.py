"""The last check on the wire: the bytes about to leave for a cloud are the ones checked.

Why it exists: the PII scan and the cost bound run on the checked payload
(``decide.payload``), but the SDK builds the bytes. Whatever an SDK does (a quirk, a
future version, a parameter it forwards), the HTTP client of every non-local provider
carries a request hook of ours (``install_guard``) that reads the body about to be sent
and compares it with the payload the attempt checked, which the attempt loop hands over
in a context variable (``expecting``) around the SDK call.

What must always hold (fail closed):
- a body for a non-local provider goes out only if it parses as JSON, matches the
  checked payload in what matters (model, messages, ``n``, the token limit, tools) after
  the SDK's known translation (OpenAI: ``max_tokens`` -> ``max_completion_tokens``, ``n=1``
  omitted; Ollama's ``/api/chat``: text parts joined, data: images as base64 ``images``,
  ``options.num_predict``), has no field the payload did not have (but the few the SDK
  adds: ``WIRE_ADDS``), and a second scan of it finds no personal data (Ollama's
  ``images`` excepted: images follow their own rule, checked again here);
- a body sent outside a checked attempt (no expectation, or another provider's) is
  stopped; GET/HEAD requests carry no body and pass;
- a stopped body raises ``EgressBlockedError`` (also kept on the expectation, in case the
  SDK wraps it); it is never sent.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from aegis_proxy.decide.payload import part_kind, parts_of
from aegis_proxy.errors import EgressBlockedError, ProviderUnavailableError

Scan = Callable[[object], Mapping[str, int]]
_MATTERS = ("model", "messages", "n", "max_tokens", "max_completion_tokens", "tools")
WIRE_ADDS = {
    "openai": frozenset({"stream", "stream_options", "reasoning_effort"}),
    "ollama": frozenset(
        {"model", "messages", "tools", "stream", "think", "format", "options", "keep_alive",
         "logprobs", "top_logprobs"}
    ),
}  # fmt: skip
"""Fields an SDK may put in a body besides the payload's (Ollama: its whole format)."""


@dataclass(slots=True)
class Expected:
    """What one attempt checked: the body may hold this and nothing else."""

    provider: str
    wire: str  # "openai" (the OpenAI chat API) or "ollama" (its /api/chat)
    model: str
    messages: list[dict[str, Any]]
    params: dict[str, Any]
    scan: Scan  # entity counts of a value; fails closed (DETECTION_FAILED) by itself
    images_allowed: bool
    binary_allowed: bool
    blocked: EgressBlockedError | None = None


EXPECTED: ContextVar[Expected | None] = ContextVar("aegis_egress_expected", default=None)


@contextlib.contextmanager
def expecting(expected: Expected) -> Iterator[None]:
    """Let the guard of ``expected.provider`` send this attempt's body (and only it)."""
    token = EXPECTED.set(expected)
    try:
        yield
    finally:
        EXPECTED.reset(token)


def install_guard(sdk_client: Any, provider: str) -> None:
    """Hook the guard into the HTTP client of an any-llm client; else refuse the provider.

    The ollama SDK holds an ``httpx.AsyncClient``, the OpenAI SDK one of ``httpx2`` (its
    fork): both run ``event_hooks["request"]`` on every request, redirects included,
    right before it is sent.
    """
    http = getattr(getattr(sdk_client, "client", None), "_client", None)
    hooks = getattr(http, "event_hooks", None)
    if not isinstance(hooks, dict) or not isinstance(hooks.get("request"), list):
        raise ProviderUnavailableError(provider, "the egress guard cannot reach its HTTP client")
    hooks["request"] = [*hooks["request"], _guard(provider)]
    http.event_hooks = hooks  # type: ignore[union-attr]


def _guard(provider: str) -> Callable[[Any], Awaitable[None]]:
    async def aegis_egress_guard(request: Any) -> None:  # an httpx (or httpx2) Request
        if request.method in ("GET", "HEAD"):
            return
        expected = EXPECTED.get()
        if expected is None or expected.provider != provider:
            raise EgressBlockedError(provider, "a request outside a checked attempt")
        try:
            content = request.content
        except Exception:  # a streamed body: it cannot be read before it leaves
            content = b""
        problem, entities = check_body(expected, content)
        if problem is not None:
            expected.blocked = EgressBlockedError(provider, problem, entities)
            raise expected.blocked

    return aegis_egress_guard


def check_body(expected: Expected, content: bytes) -> tuple[str | None, tuple[str, ...]]:
    """What is wrong with this body for this attempt (and the entity types found), or None."""
    try:
        body = json.loads(content)
    except ValueError:
        return "the body is not JSON", ()
    if not isinstance(body, dict):
        return "the body is not a JSON object", ()
    differs = (
        _diff_openai(expected, body) if expected.wire == "openai" else _diff_ollama(expected, body)
    )
    if differs is not None:
        return f"{differs} (not the checked payload)", ()
    view: dict[str, Any] = {k: v for k, v in body.items() if k != "model"}
    if expected.wire == "ollama":
        view["messages"] = [_without_images(m) for m in body["messages"]]
    entities = expected.scan([view])
    if entities:
        return "a second scan found personal data", tuple(sorted(entities))
    return None, ()


def _diff_openai(expected: Expected, body: dict[str, Any]) -> str | None:
    wire: dict[str, Any] = {"model": expected.model, "messages": expected.messages}
    wire.update(expected.params)
    if "max_tokens" in wire:
        limit = wire.pop("max_tokens")
        wire.setdefault("max_completion_tokens", limit)
    if wire.get("n") == 1:
        del wire["n"]
    for name in _MATTERS:
        if body.get(name) != wire.get(name):
            return f"{name} differs"
    adds = WIRE_ADDS["openai"]
    for name, value in body.items():
        if name not in wire and name not in adds:
            return f"field {name!r} was added"
        if name in wire and name not in adds and value != wire[name]:
            return f"{name} differs"
    return _media_rule(expected, expected.messages)


def _diff_ollama(expected: Expected, body: dict[str, Any]) -> str | None:
    if extra := sorted(body.keys() - WIRE_ADDS["ollama"]):
        return f"field {extra[0]!r} was added"
    if body.get("model") != expected.model:
        return "model differs"
    params = expected.params
    if params.get("n", 1) != 1:
        return "n differs"
    limit = params.get("max_completion_tokens", params.get("max_tokens"))
    if (body.get("options") or {}).get("num_predict") != limit:
        return "max_tokens differs"
    names = [(t.get("function") or {}).get("name") for t in params.get("tools") or ()]
    if [(t.get("function") or {}).get("name") for t in body.get("tools") or ()] != names:
        return "tools differ"
    sent = body.get("messages")
    if not isinstance(sent, list) or len(sent) != len(expected.messages):
        return "messages differ"
    for index, (want, got) in enumerate(zip(expected.messages, sent, strict=True)):
        if not isinstance(got, dict) or _ollama_view(want) != _ollama_view(got, wire=True):
            return f"messages[{index}] differs"
    return _media_rule(expected, expected.messages)


def _ollama_view(message: Mapping[str, Any], *, wire: bool = False) -> tuple[Any, ...]:
    """(role, text, image count, tool calls) of a message, as either side spells it."""
    content = message.get("content")
    if isinstance(content, list):
        content = " ".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
    images = len(message.get("images") or ()) if wire else _data_images(message)
    calls = []
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        arguments = function.get("arguments") or {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError:
                arguments = {"": arguments}
        calls.append((function.get("name"), arguments))
    return message.get("role"), content or "", images, calls


def _data_images(message: Mapping[str, Any]) -> int:
    if message.get("role") != "user":
        return 0
    count = 0
    for part in parts_of([message]):
        url = (part.get("image_url") or {}) if part.get("type") == "image_url" else {}
        url = url.get("url", "") if isinstance(url, Mapping) else ""
        count += isinstance(url, str) and url.startswith("data:image/") and "," in url
    return count


def _without_images(message: Any) -> Any:
    if isinstance(message, dict) and "images" in message:
        return {k: v for k, v in message.items() if k != "images"}
    return message


def _media_rule(expected: Expected, messages: list[dict[str, Any]]) -> str | None:
    """Images and binary parts go to a cloud only where the privacy config allows them."""
    for part in parts_of(messages):
        kind = part_kind(part)
        if kind == "image" and not expected.images_allowed:
            return "an image part is not allowed to leave"
        if kind == "binary" and not expected.binary_allowed:
            return "a file or audio part is not allowed to leave"
    return None
