"""The input side of a reservation: how many prompt tokens an attempt can be billed for.

A reservation too low lets a budget overflow; one too high refuses work far below the
limit (a byte bound reserved 343 µ$ for 43 µ$ of real cost, and 49 of 50 concurrent calls
fell back at 7% of the budget). So:

- for OpenAI models (``sdk`` openai/azure, a model tiktoken knows, its encoding among the
  files bundled offline) the prompt is *counted* with the model's own encoding, the way
  OpenAI documents it: 3 tokens per message, 1 more per ``name``, 3 to prime the reply,
  plus the tokens of every value (role, content, tool calls). Tool definitions (and any
  other extra) count the tokens of their JSON plus ``EXTRA_OVERHEAD`` each, which is
  above OpenAI's compact rendering of them;
- everywhere else (a tokenizer we cannot run offline) the byte bound of
  ``pricing.input_token_bound`` stays: a byte-level BPE token is at least one byte;
- an image part counts ``IMAGE_TOKEN_BOUND`` either way.

``input_bound`` is the one entry point: the cost bound (``Job.cost_bound``) calls it with
the payload's messages and its extras, and multiplies the output side by ``n``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from aegis_proxy.reserve.pricing import IMAGE_TOKEN_BOUND, bundled_encoding, input_token_bound

PER_MESSAGE = 3
PER_NAME = 1
REPLY_PRIMING = 3
EXTRA_OVERHEAD = 16
"""Tokens added per extra (a tools list counts per tool)."""
_OPENAI_SDKS = frozenset({"openai", "azure", "azureopenai"})
_IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})


def input_bound(
    sdk: str,
    model: str,
    messages: Sequence[Mapping[str, Any]],
    extras: Sequence[object] = (),
) -> int:
    """An upper bound of the prompt tokens ``model`` on ``sdk`` bills for this payload.

    ``extras`` are the other things sent and billed as input (``tools``, ...), as sent.
    """
    encoding = exact_encoding(sdk, model)
    if encoding is None:
        total = input_token_bound(messages)
        return total + sum(len(_json(extra).encode()) for extra in extras)
    return counted_tokens(encoding, messages) + sum(_extra_tokens(encoding, e) for e in extras)


def exact_encoding(sdk: str, model: str) -> Any | None:
    """The tiktoken encoding of an OpenAI ``model``, when it can be loaded offline."""
    if sdk not in _OPENAI_SDKS:
        return None
    return _encoding_of(model)


@functools.cache
def _encoding_of(model: str) -> Any | None:
    from tiktoken.model import encoding_name_for_model

    try:
        name = encoding_name_for_model(model)
    except KeyError:
        return None
    return bundled_encoding(name)


def counted_tokens(encoding: Any, messages: Sequence[Mapping[str, Any]]) -> int:
    """Prompt tokens of ``messages`` as OpenAI counts them with ``encoding``."""
    total = REPLY_PRIMING
    for message in messages:
        total += PER_MESSAGE + (PER_NAME if message.get("name") else 0)
        for text in _texts(message):
            total += IMAGE_TOKEN_BOUND if text is None else len(encoding.encode_ordinary(text))
    return total


def _extra_tokens(encoding: Any, extra: object) -> int:
    items = len(extra) if isinstance(extra, list | tuple) else 1
    return len(encoding.encode_ordinary(_json(extra))) + EXTRA_OVERHEAD * max(items, 1)


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _texts(value: object) -> Iterator[str | None]:
    """Every text of a message (keys of nested objects too); None stands for an image."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        if value.get("type") in _IMAGE_PART_TYPES:
            yield None
            return
        for key, item in value.items():
            if not isinstance(item, str | Mapping | list | tuple):
                item = "" if item is None else str(item)
            if key not in ("role", "content", "name") and isinstance(item, str):
                yield key  # a nested field name (tool_calls' "arguments") is sent too
            yield from _texts(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _texts(item)
    else:
        dump = getattr(value, "model_dump", None)  # pydantic message objects
        if callable(dump):
            yield from _texts(dump())
