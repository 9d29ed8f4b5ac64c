"""The process-wide default proxy behind the module-level ``acompletion`` and ``completion``.

It is built lazily from ``$AEGIS_CONFIG``, else ``./config/aegis.yaml``, on first use.
HTTP clients belong to an event loop, so there is one default proxy per running loop
(held weakly: a finished loop releases its proxy).

``completion`` is the blocking twin for scripts and threads: one background event-loop
thread runs one default proxy, and every blocking call (from any number of threads) is a
coroutine submitted to it, so its clients, circuit breakers and ledger connection are
shared and built once. What must always hold:

- ``completion`` inside a running event loop refuses (``RequestValidationError``) before
  anything is sent: blocking there would stall that loop; ``await acompletion`` instead;
- ``completion(stream=True)`` returns a blocking iterator of chunks whose row settles
  however it ends (``close()``, ``with``, or abandoning it);
- ``close_default_proxy()`` closes the blocking entry's proxy and stops its thread
  (awaiting its result also closes the running loop's proxy); it runs at exit too, so
  the SQLite ledger leaves no ``-wal``/``-shm`` files behind.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
import weakref
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Literal, overload

from aegis_proxy.call.streaming import AegisStream as AegisStreamType
from aegis_proxy.config import AegisConfig, load_config
from aegis_proxy.errors import RequestValidationError
from aegis_proxy.loop_thread import BridgedIterator, LoopThread
from aegis_proxy.proxy import AegisLLMProxy

if TYPE_CHECKING:
    from any_llm.types.completion import ChatCompletion

    from aegis_proxy.decide.record import AegisRecord
    from aegis_proxy.decide.rules import LLMTask

_configs: dict[tuple[str, float], AegisConfig] = {}

DEFAULT_CONFIG_PATH = "config/aegis.yaml"

_proxies: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[AegisLLMProxy, str]] = (
    weakref.WeakKeyDictionary()
)  # each loop's proxy, and the config path it was built from
_retiring: set[asyncio.Task[None]] = set()
_runner = LoopThread("aegis-default-proxy")
_exit_hook = threading.Lock()
_exit_registered: list[bool] = []


def default_config_path() -> str:
    """``$AEGIS_CONFIG`` when set, else ``./config/aegis.yaml``."""
    return os.environ.get("AEGIS_CONFIG") or DEFAULT_CONFIG_PATH


def get_default_proxy() -> AegisLLMProxy:
    """The default proxy of the running event loop, built on first use.

    When ``$AEGIS_CONFIG`` names another file than the one it was built from, a new proxy
    replaces it (the old one closes in the background).
    """
    loop = asyncio.get_running_loop()
    path = default_config_path()
    held = _proxies.get(loop)
    if held is not None and held[1] == path:
        return held[0]
    proxy = AegisLLMProxy(_config())
    _proxies[loop] = (proxy, path)
    if held is not None:
        closing = loop.create_task(held[0].aclose())
        _retiring.add(closing)
        closing.add_done_callback(_retiring.discard)
    return proxy


async def acompletion(
    messages: object, task: LLMTask | None = None, **chat_params: Any
) -> ChatCompletion | AegisStreamType:
    """The drop-in call for LangGraph nodes: routes through the default proxy."""
    return await get_default_proxy().acompletion(messages, task, **chat_params)


class SyncStream(BridgedIterator[Any]):  # of ChatCompletionChunk (any_llm loads lazily)
    """``completion(stream=True)``: a blocking iterator of chunks with ``.aegis``."""

    def __init__(self, runner: LoopThread, stream: AegisStreamType) -> None:
        super().__init__(runner, stream)
        self.aegis: AegisRecord = stream.aegis


@overload
def completion(
    messages: object, task: LLMTask | None = None, *, stream: Literal[True], **chat_params: Any
) -> SyncStream: ...


@overload
def completion(
    messages: object,
    task: LLMTask | None = None,
    *,
    stream: Literal[False] = False,
    **chat_params: Any,
) -> ChatCompletion: ...


def completion(
    messages: object, task: LLMTask | None = None, **chat_params: Any
) -> ChatCompletion | SyncStream:
    """Blocking ``acompletion`` for scripts and threads; refuses inside a running event loop."""
    _refuse_inside_a_loop()
    _close_at_exit()
    response = _runner.run(acompletion(messages, task, **chat_params), "completion")
    if isinstance(response, AegisStreamType):
        return SyncStream(_runner, response)
    return response


def _refuse_inside_a_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RequestValidationError(
        "completion", "called inside a running event loop: use `await acompletion(...)`"
    )


class _Closing:
    """What ``close_default_proxy()`` returns: already done, or awaitable for the loop's proxy."""

    def __await__(self) -> Generator[Any, None, None]:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        held = _proxies.pop(loop, None)
        if held is not None:
            yield from held[0].aclose().__await__()


def close_default_proxy() -> _Closing:
    """Close the default proxies: the blocking entry's now (and its thread); awaiting the
    result (``await close_default_proxy()``) also closes the running loop's.

    A new default proxy is built on next use.
    """
    if _runner.running:
        if not _runner.in_loop_thread():
            _runner.run(_close_loop_proxy(), "close_default_proxy")
        _runner.stop()
    return _Closing()


async def _close_loop_proxy() -> None:
    held = _proxies.pop(asyncio.get_running_loop(), None)
    if held is not None:
        await held[0].aclose()


def _close_at_exit() -> None:
    """Register, once, the close that runs at interpreter exit."""
    if _exit_registered:
        return
    with _exit_hook:
        if not _exit_registered:
            atexit.register(_close_all_at_exit)
            _exit_registered.append(True)


def _close_all_at_exit() -> None:
    close_default_proxy()
    for proxy, _ in list(_proxies.values()):  # per-loop proxies nobody closed: their files
        proxy.close_files()


def _config() -> AegisConfig:
    """The default config, re-read only when the file changes."""
    path = default_config_path()
    key = (path, os.stat(path).st_mtime if os.path.exists(path) else 0.0)
    if key not in _configs:
        _configs.clear()
        _configs[key] = load_config(path)
    return _configs[key]
