"""Walk an OpenAI chat request and yield every string a value could hide in.

Why it exists: personal data reaches a request in many places besides ``content``: tool
results (often JSON with escapes), tool-call arguments, names, image URLs, unknown keys,
pydantic models and dataclasses. ``PiiDetector.scan_messages`` and the NER backend
(``classify.ner``) both need the same walk; it lives here, apart from the matching itself.

What must always hold:
- ``iter_strings`` yields every string reachable from its argument: keys of mappings
  (except OpenAI field names) and their values (except string values of
  ``skipped_keys``), items of any collection, ints as text, bytes decoded, pydantic
  models and dataclasses dumped, objects through ``vars``; it visits each container
  once, so cycles end;
- ``decoded_views`` offers every other reading that could hide a value (JSON with
  escapes, percent-encoding, HTML entities);
- the only text never yielded is the payload of a genuine ``data:<media>;base64,<base64>``
  URL in the place an image or a file travels (``image_url.url`` of an ``image_url``
  part, ``file.file_data`` of a ``file`` part): such a part is unscannable and follows
  the images / binary-parts rule instead. The same prefix anywhere else (a text part, a
  parameter, a tool result) is text like any other, and so is anything after a comma
  that is not base64 all the way to the end;
- nothing is caught here: an error while walking reaches the caller, which fails closed.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING
from urllib.parse import unquote

if TYPE_CHECKING:
    from collections.abc import Iterator

SKIPPED_KEYS = frozenset({"role", "type"})
"""Keys whose string values are protocol tokens, not content (walked if not strings).

Ids (``tool_call_id``, ``tool_calls[].id``) are not among them: a caller can put anything
in an id, and it is sent like the rest."""
_FIELD_NAMES = frozenset(
    {"role", "content", "name", "tool_calls", "function", "arguments", "type", "text",
     "image_url", "url", "detail", "tool_call_id", "id", "function_call", "refusal"}
)  # fmt: skip
"""OpenAI field names: keys not worth scanning as text (every other key is scanned)."""
MAX_DECODE_DEPTH = 3
_JSON_START = re.compile(r"\s*[\[{\"]")
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")  # "12.4%" alone is no escape
_HTML_ENTITY = re.compile(r"&(?:#[0-9]+|#[xX][0-9A-Fa-f]+|[A-Za-z][A-Za-z0-9]*);?")
_DATA_URL = re.compile(
    r"(data:[A-Za-z0-9.+-]+/[A-Za-z0-9.+-]+(?:;[A-Za-z0-9.+-]+=[A-Za-z0-9.+-]+)*;base64,)"
    r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
)
_DATA_URL_FIELDS = {"image_url": "url", "file": "file_data"}
"""Part type -> the field of its body where a data: URL carries the image or file."""


def iter_strings(value: object, skipped_keys: frozenset[str] = frozenset()) -> Iterator[str]:
    """Every string in a nested structure: keys, values, numbers, model dumps, objects."""
    stack: list[object] = [value]
    seen: dict[int, object] = {}  # holds each container, so no id is reused during the walk
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, (bool, float)) or item is None:
            continue
        elif isinstance(item, int):
            yield str(item)
        elif isinstance(item, (bytes, bytearray)):
            yield bytes(item).decode("utf-8", "replace")
        elif id(item) not in seen:
            seen[id(item)] = item
            stack.extend(_children(item, skipped_keys))


def _children(item: object, skipped_keys: frozenset[str]) -> Iterator[object]:
    if type(item) is list:  # the usual shapes first: ABC checks are slow
        yield from item
    elif type(item) is dict or isinstance(item, Mapping):
        kind = item.get("type")
        body_key = _DATA_URL_FIELDS.get(kind) if isinstance(kind, str) else None
        for key, child in item.items():
            if key not in _FIELD_NAMES:
                yield key
            if key in skipped_keys and isinstance(child, str):
                continue
            if body_key is not None and key == kind and isinstance(child, Mapping):
                yield {k: _data_url_head(v) if k == body_key else v for k, v in child.items()}
            else:
                yield child
    elif isinstance(item, Collection):  # list, tuple, set, deque, dict views...
        yield from item
    elif callable(getattr(item, "model_dump", None)):
        yield item.model_dump()  # type: ignore[attr-defined]  # a pydantic model
    elif dataclasses.is_dataclass(item) and not isinstance(item, type):
        yield dataclasses.asdict(item)
    elif isinstance(item, type) or callable(item):
        return  # code, not data
    elif hasattr(item, "__dict__"):
        yield vars(item)
    else:
        yield str(item)


def decoded_views(text: str) -> Iterator[list[str]]:
    """Other readings of ``text`` that could hide a value: JSON, %-encoding, HTML.

    JSON is decoded only when it holds a backslash: without an escape, every decoded
    string and number appears verbatim in the text, which was scanned already.
    """
    if "\\" in text and _JSON_START.match(text):
        try:
            decoded = json.loads(text)
        except ValueError:  # not JSON after all: the text itself was scanned already
            pass
        else:
            yield list(iter_strings(decoded))
    if _PERCENT_ESCAPE.search(text):
        yield [unquote(text)]
    if _HTML_ENTITY.search(text):
        yield [html.unescape(text)]


def _data_url_head(value: object) -> object:
    """A genuine base64 ``data:`` URL without its payload; any other value as it is."""
    if isinstance(value, str) and value.startswith("data:"):
        match = _DATA_URL.fullmatch(value)
        if match is not None:
            return match.group(1)
    return value
