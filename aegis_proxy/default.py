"""The process-wide default proxy behind the module-level ``acompletion``.

It is built lazily from ``$AEGIS_CONFIG``, else ``./config/aegis.yaml``, on first use.
HTTP clients belong to an event loop, so there is one default proxy per running loop
(held weakly: a finished loop releases its proxy).
"""

from __future__ import annotations

import asyncio
import os
import weakref
from typing import TYPE_CHECKING, Any

from aegis_proxy.proxy import AegisLLMProxy

if TYPE_CHECKING:
    from any_llm.types.completion import ChatCompletion

    from aegis_proxy.policy import LLMTask
    from aegis_proxy.streaming import AegisStream

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
        proxy = AegisLLMProxy.from_config(default_config_path())
        _proxies[loop] = proxy
    return proxy


async def acompletion(
    messages: object, task: LLMTask | None = None, **chat_params: Any
) -> ChatCompletion | AegisStream:
    """The drop-in call for LangGraph nodes: routes through the default proxy."""
    return await get_default_proxy().acompletion(messages, task, **chat_params)


async def close_default_proxy() -> None:
    """Close the running loop's default proxy (a new one is built on next use)."""
    proxy = _proxies.pop(asyncio.get_running_loop(), None)
    if proxy is not None:
        await proxy.aclose()
