"""The process-wide default proxy behind the module-level ``acompletion`` and ``completion``.

It is built lazily from ``$AEGIS_CONFIG``, else ``./config/aegis.yaml``, on first use.
HTTP clients belong to an event loop, so there is one default proxy per running loop
(held weakly: a finished loop releases its proxy).

``completion`` is the blocking twin for scripts: it runs its own event loop with a proxy
that lives for that call. Inside a running loop it refuses with a clear error instead of
bridging through a thread pool (such bridges deadlock under load).
"""

from __future__ import annotations

import asyncio
import os
import weakref
from typing import TYPE_CHECKING, Any, cast

from aegis_proxy.call.streaming import AegisStream as AegisStreamType
from aegis_proxy.config import AegisConfig, load_config
from aegis_proxy.errors import RequestValidationError
from aegis_proxy.proxy import AegisLLMProxy

if TYPE_CHECKING:
    from any_llm.types.completion import ChatCompletion

    from aegis_proxy.decide.rules import LLMTask

_configs: dict[tuple[str, float], AegisConfig] = {}

DEFAULT_CONFIG_PATH = "config/aegis.yaml"

_proxies: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AegisLLMProxy] = (
    weakref.WeakKeyDictionary()
)


def default_config_path() -> str:
    """``$AEGIS_CONFIG`` when set, else ``./config/aegis.yaml``."""
    return os.environ.get("AEGIS_CONFIG") or DEFAULT_CONFIG_PATH


def get_default_proxy() -> AegisLLMProxy:
    """The default proxy of the running event loop, built on first use."""
    loop = asyncio.get_running_loop()
    proxy = _proxies.get(loop)
    if proxy is None:
        proxy = AegisLLMProxy(_config())
        _proxies[loop] = proxy
    return proxy


async def acompletion(
    messages: object, task: LLMTask | None = None, **chat_params: Any
) -> ChatCompletion | AegisStreamType:
    """The drop-in call for LangGraph nodes: routes through the default proxy."""
    return await get_default_proxy().acompletion(messages, task, **chat_params)


async def close_default_proxy() -> None:
    """Close the running loop's default proxy (a new one is built on next use)."""
    proxy = _proxies.pop(asyncio.get_running_loop(), None)
    if proxy is not None:
        await proxy.aclose()


def completion(messages: object, task: LLMTask | None = None, **chat_params: Any) -> ChatCompletion:
    """Blocking ``acompletion`` for scripts; refuses inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RequestValidationError(
            "completion", "called inside a running event loop: use `await acompletion(...)`"
        )
    if chat_params.get("stream"):
        raise RequestValidationError("stream", "streams need `await acompletion(..., stream=True)`")
    return asyncio.run(_complete_once(messages, task, chat_params))


async def _complete_once(
    messages: object, task: LLMTask | None, chat_params: dict[str, Any]
) -> ChatCompletion:
    async with AegisLLMProxy(_config()) as proxy:
        response = await proxy.acompletion(messages, task, **chat_params)
    return cast("ChatCompletion", response)  # stream=True was refused above


def _config() -> AegisConfig:
    """The default config, re-read only when the file changes."""
    path = default_config_path()
    key = (path, os.stat(path).st_mtime if os.path.exists(path) else 0.0)
    if key not in _configs:
        _configs.clear()
        _configs[key] = load_config(path)
    return _configs[key]
