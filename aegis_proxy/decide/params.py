"""Which chat parameters a caller may pass, and what each must look like.

Why it exists: the SDKs send on whatever they are given. A parameter such as
``extra_body`` or ``base_url`` would replace the checked payload on the wire, and a typo
(``temprature``) makes the SDK raise locally, which looked like a provider failure. So
every parameter is checked here, before anything else, against the OpenAI chat
completions API.

What must always hold:
- a parameter that would bypass the checked payload (``ESCAPE_HATCHES``) is refused, always;
- a parameter the OpenAI chat API does not define is refused, with a did-you-mean for a
  near miss, unless some configured provider lists it in ``allow_params`` (then only
  the providers that list it may be called with it: ``provider_refuses``);
- a known parameter of the wrong type or range is refused; every refusal is a
  ``RequestValidationError`` naming the parameter, raised before any network call.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aegis_proxy.errors import RequestValidationError

ESCAPE_HATCHES = frozenset(
    {"extra_body", "extra_headers", "extra_query", "api_base", "base_url", "api_key",
     "model", "client_args", "messages", "http_client", "organization", "project",
     "default_headers", "default_query"}
)  # fmt: skip
"""Parameters that would change what is sent, or where, behind the checked payload."""


def _int(low: int, high: int | None = None) -> Callable[[object], bool]:
    def check(value: object) -> bool:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
        return ok and (high is None or value <= high)  # type: ignore[operator]

    return check


def _number(low: float, high: float) -> Callable[[object], bool]:
    def check(value: object) -> bool:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return number and low <= value <= high  # type: ignore[operator]

    return check


def _of(*types: type) -> Callable[[object], bool]:
    def check(value: object) -> bool:
        if isinstance(value, bool):
            return bool in types
        return isinstance(value, types)

    return check


def _stop(value: object) -> bool:
    if isinstance(value, str):
        return True
    return isinstance(value, list) and len(value) <= 4 and all(isinstance(s, str) for s in value)


def _tools(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(tool, dict) for tool in value)


def _str_map(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


_ANY: Callable[[object], bool] = lambda value: True  # noqa: E731  # shape checked by the API
_CHAT_PARAMS: dict[str, tuple[Callable[[object], bool], str]] = {
    "audio": (_of(dict), "must be an object"),
    "frequency_penalty": (_number(-2, 2), "must be a number from -2 to 2"),
    "function_call": (_of(str, dict), "must be a string or an object"),
    "functions": (_tools, "must be a list of objects"),
    "logit_bias": (_of(dict), "must be an object"),
    "logprobs": (_of(bool), "must be true or false"),
    "max_completion_tokens": (_int(1), "must be a positive integer"),
    "max_tokens": (_int(1), "must be a positive integer"),
    "metadata": (_str_map, "must be an object of strings"),
    "modalities": (_ANY, ""),
    "n": (_int(1, 128), "must be an integer from 1 to 128"),
    "parallel_tool_calls": (_of(bool), "must be true or false"),
    "prediction": (_of(dict), "must be an object"),
    "presence_penalty": (_number(-2, 2), "must be a number from -2 to 2"),
    "prompt_cache_key": (_of(str), "must be a string"),
    "reasoning_effort": (_of(str), "must be a string"),
    "response_format": (_of(dict), "must be an object"),
    "safety_identifier": (_of(str), "must be a string"),
    "seed": (_int(-(2**63)), "must be an integer"),
    "service_tier": (_of(str), "must be a string"),
    "stop": (_stop, "must be a string or a list of at most 4 strings"),
    "store": (_of(bool), "must be true or false"),
    "stream": (_of(bool), "must be true or false"),
    "stream_options": (_of(dict), "must be an object"),
    "temperature": (_number(0, 2), "must be a number from 0 to 2"),
    "tool_choice": (_of(str, dict), "must be a string or an object"),
    "tools": (_tools, "must be a list of objects"),
    "top_logprobs": (_int(0, 20), "must be an integer from 0 to 20"),
    "top_p": (_number(0, 1), "must be a number from 0 to 1"),
    "user": (_of(str), "must be a string"),
    "verbosity": (_of(str), "must be a string"),
    "web_search_options": (_of(dict), "must be an object"),
}
CHAT_PARAMS = frozenset(_CHAT_PARAMS)
"""Every parameter of the OpenAI chat completions API (besides model and messages)."""


def validate_params(params: Mapping[str, Any], allowed: Iterable[str] = ()) -> None:
    """Refuse escape hatches, unknown parameters (but ``allowed`` ones) and bad values."""
    extra = frozenset(allowed)
    for name, value in params.items():
        if name in ESCAPE_HATCHES:
            raise RequestValidationError(
                name, "would bypass the checked request; the routing policy chooses it"
            )
        known = _CHAT_PARAMS.get(name)
        if known is None:
            if name in extra:
                continue
            raise RequestValidationError(name, _unknown(name, extra))
        check, problem = known
        if not check(value):
            raise RequestValidationError(name, problem)


def _unknown(name: str, extra: frozenset[str]) -> str:
    close = difflib.get_close_matches(name, sorted(CHAT_PARAMS | extra), n=1, cutoff=0.75)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (
        "is not a parameter of the OpenAI chat completions API "
        f"(a provider may allow it with providers.<name>.allow_params){hint}"
    )


def provider_refuses(params: Mapping[str, Any], allow_params: Iterable[str]) -> str | None:
    """Why a provider may not get these parameters (one it does not allow); None if it may."""
    allowed = frozenset(allow_params)
    for name in params:
        if name not in CHAT_PARAMS and name not in allowed:
            return f"parameter {name!r} is not in this provider's allow_params"
    return None
