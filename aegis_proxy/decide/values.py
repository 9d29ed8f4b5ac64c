"""The caller's values as plain JSON, copied once, or a clear error naming where they break.

Why it exists: a request is sent as JSON, and any value the SDK cannot encode fails deep
inside it (``RecursionError`` on a cycle, ``UnicodeEncodeError`` on a lone surrogate,
``TypeError`` on a set), after the proxy has chosen a provider, opened a ledger row and
perhaps counted a failure against the provider's health. ``plain_copy`` finds those
values first, so they are the caller's error, before anything leaves.

What must always hold:
- ``plain_copy`` returns a deep copy made only of ``dict`` (string keys), ``list``,
  ``str``, ``int``, ``float`` (finite), ``bool`` and ``None``: nothing the caller holds is
  shared with it, so changing the caller's objects afterwards changes nothing sent;
- mappings become dicts, tuples become lists, pydantic models are dumped (``None`` fields
  left out, as the SDK's own models are sent); anything else is refused;
- every refusal is a ``RequestValidationError`` naming the path of the value
  (``messages[2].content[0].text``), never the value itself: a key that is not a plain
  identifier is named by its position (``messages[0].metadata[key 3]``);
- a container nested deeper than ``MAX_DEPTH`` or holding itself is refused: the copy
  never recurses without bound.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from aegis_proxy.errors import RequestValidationError

MAX_DEPTH = 32
"""Containers nested below the value given (a chat message needs 4)."""
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def plain_copy(value: object, path: str) -> Any:
    """A deep plain-JSON copy of ``value``, or ``RequestValidationError`` naming the path.

    The common case (valid input) takes a fast pass that builds no paths; only a value it
    refuses is walked again, slowly, to name where.
    """
    try:
        return _fast_copy(value, ())
    except _Refused:
        return _copy(value, path, ())  # raises, naming the path


class _Refused(Exception):
    """The fast pass met something it does not copy (the slow pass says what and where)."""


def _fast_copy(value: object, parents: tuple[int, ...]) -> Any:
    if type(value) is str:
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise _Refused from None
        return value
    if type(value) is int or type(value) is bool or value is None:
        return value
    if type(value) is list or type(value) is dict:
        if id(value) in parents or len(parents) >= MAX_DEPTH:
            raise _Refused
        inside = (*parents, id(value))
        if type(value) is dict:
            return _fast_copy_dict(value, inside)
        return [_fast_copy(item, inside) for item in value]
    if type(value) is float and math.isfinite(value):
        return value
    raise _Refused  # tuples, other mappings, models, and what is refused: the slow pass


def _fast_copy_dict(value: dict[Any, Any], parents: tuple[int, ...]) -> dict[str, Any]:
    copied = {}
    for key, item in value.items():
        if type(key) is not str or not key.isascii():
            raise _Refused
        copied[key] = _fast_copy(item, parents)
    return copied


def check_text(text: str, path: str) -> str:
    """``text`` if it can be encoded as UTF-8 (no lone surrogate), else the error."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestValidationError(
                path, "holds a lone surrogate: not valid Unicode text"
            ) from None
    return text


def _copy(value: object, path: str, parents: tuple[int, ...]) -> Any:
    if isinstance(value, str):
        return check_text(value, path)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RequestValidationError(path, "must be a finite number (JSON has no NaN)")
        return value
    if id(value) in parents:
        raise RequestValidationError(path, "holds itself (a cycle): not a JSON value")
    if len(parents) >= MAX_DEPTH:
        raise RequestValidationError(path, f"nested deeper than {MAX_DEPTH} levels")
    inside = (*parents, id(value))
    if isinstance(value, Mapping):
        return _copy_mapping(value, path, inside)
    if isinstance(value, list | tuple):
        return [_copy(item, f"{path}[{i}]", inside) for i, item in enumerate(value)]
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return _copy(dump(exclude_none=True), path, inside)
    raise RequestValidationError(path, f"a {type(value).__name__} is not a JSON value")


def _copy_mapping(value: Mapping[Any, Any], path: str, parents: tuple[int, ...]) -> Any:
    copied: dict[str, Any] = {}
    for index, (key, item) in enumerate(value.items()):
        if not isinstance(key, str):
            raise RequestValidationError(f"{path}[key {index}]", "a key must be a string")
        where = f"{path}.{key}" if _IDENTIFIER.fullmatch(key) else f"{path}[key {index}]"
        copied[check_text(key, where)] = _copy(item, where, parents)
    return copied
