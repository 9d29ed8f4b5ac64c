"""The outbound payload: one plain-JSON deep copy of the request, checked once, sent as is.

Why it exists: the checks (PII scan, cost bound) and the bytes on the wire must see the
same thing. The caller's objects stay in the caller's hands (a list it changes during a
retry backoff, a pydantic model, a dict a callback mutates), so the request is copied
once, at the start, into values nothing else holds: ``dict``, ``list``, ``str``, ``int``,
``float``, ``bool``, ``None``. The PII scan, the redaction, the cost bound and every
attempt's body are made from that copy (each attempt gets a fresh copy of it, so an SDK
that changes what it is given cannot change the next attempt).

What must always hold:
- the copy is ``decide.values.plain_copy``'s: a structure that shares no container with
  the caller's, or a ``RequestValidationError`` naming the path of the first value that
  is not plain JSON (bytes, a set, a non-string key, a lone surrogate, NaN, a cycle,
  nesting deeper than ``decide.values.MAX_DEPTH``); never anything else;
- ``part_kind`` sorts a content part into text, image or binary (``file``,
  ``input_audio`` and any unknown part type: unscannable, so personal data unless
  ``privacy.binary_parts: allow_cloud``);
- ``unbounded_reason`` names what makes an attempt's cost impossible to bound (a file by
  id, audio output, web search, a priority tier): such a request is refused for a
  budgeted provider.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
TEXT_PARTS = frozenset({"text", "refusal"})
BINARY_PARTS = frozenset({"file", "input_audio"})
"""Part types known to carry data no text scan reads; every unknown type counts as such."""


def copy_json(value: Any) -> Any:
    """A fresh copy of a value ``decide.values.plain_copy`` made (no checks: it is plain)."""
    if type(value) is dict:
        return {key: copy_json(child) for key, child in value.items()}
    if type(value) is list:
        return [copy_json(item) for item in value]
    return value


def part_kind(part: Mapping[str, Any]) -> str:
    """``text``, ``image`` or ``binary`` (file, audio, or a part type we do not know)."""
    kind = part.get("type")
    if kind in TEXT_PARTS:
        return "text"
    if kind in IMAGE_PARTS:
        return "image"
    return "binary"


def parts_of(messages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Every content part of every message."""
    found: list[Mapping[str, Any]] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            found += [part for part in content if isinstance(part, Mapping)]
    return found


def has_images(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any message carries an image part (``image_url``, ``input_image``, ``image``)."""
    return any(part_kind(part) == "image" for part in parts_of(messages))


def has_binary(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any message carries a part no text scan reads besides images."""
    return any(part_kind(part) == "binary" for part in parts_of(messages))


_PRICED_TIERS = frozenset({"auto", "default", "flex"})


def unbounded_reason(
    messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]
) -> str | None:
    """What makes this request's cost impossible to bound in advance; None if it can be."""
    for part in parts_of(messages):
        if part_kind(part) != "binary":
            continue
        body = part.get(part.get("type"))  # type: ignore[arg-type]
        if part.get("type") == "file" and not (isinstance(body, Mapping) and body.get("file_data")):
            return "a file part by file_id has no size to bound"
        if part.get("type") not in BINARY_PARTS:
            return f"a {part.get('type')!r} part has no documented price"
    if "audio" in params or "audio" in (params.get("modalities") or ()):
        return "audio output is billed at audio rates the price does not give"
    if "web_search_options" in params:
        return "web search is billed per call"
    if params.get("service_tier", "auto") not in _PRICED_TIERS:
        return f"service_tier {params['service_tier']!r} is billed above the listed price"
    return None
