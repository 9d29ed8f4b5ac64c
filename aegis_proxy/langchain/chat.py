"""``ChatAegis``: a LangChain chat model whose every call goes through an AegisLLMProxy.

Nodes and agents that expect a ``BaseChatModel`` get the policy too: PII stays local,
budgets hold, each attempt is a ledger row. Needs the ``langchain`` extra
(``pip install 'aegis-proxy[langchain]'``); importing this module without it raises an
``ImportError`` that says so. What must always hold:

- every call (``invoke``, ``stream``, ``ainvoke``, ``astream``, batches, structured
  output) reaches the proxy; answers carry ``tool_calls``, ``usage_metadata`` (the
  ledger's counts) and the routing record in ``response_metadata["aegis"]``;
- a stream is closed however the consumer stops, so its ledger row is settled;
- a proxy built from ``config_path`` runs on one background event-loop thread, so the
  model serves blocking callers and any number of event loops with one set of clients,
  breakers and ledger connection; it is closed by ``close()``/``aclose()``, when the
  model is garbage collected, or at interpreter exit (no ``-wal``/``-shm`` files left);
- a proxy passed in belongs to the caller's loop (used there from another loop it raises
  ``RequestValidationError``); blocking calls use a sibling proxy of its config;
- constructor options are honoured or refused: ``stop``, ``timeout`` (the request's
  deadline), ``max_retries`` (``resilience.retries``), ``streaming``; ``api_key`` is
  accepted for LangChain's standard constructor and never sent anywhere (provider keys
  come from the config); any other unknown option is refused.
"""

from __future__ import annotations

import atexit
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Literal, cast

try:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForLLMRun,
        CallbackManagerForLLMRun,
    )
    from langchain_core.language_models import LanguageModelInput
    from langchain_core.language_models.base import LangSmithParams
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, BaseMessage
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
    from langchain_core.runnables import Runnable
    from langchain_core.tools import BaseTool
    from langchain_core.utils.function_calling import convert_to_openai_tool

    from aegis_proxy.langchain import messages as lc
    from aegis_proxy.langchain.structured import structured_runnable
except ImportError as exc:  # the optional extra is missing
    raise ImportError(
        "aegis_proxy.langchain needs the 'langchain' extra: "
        "pip install 'aegis-proxy[langchain]' (langchain-core, langgraph)"
    ) from exc
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from aegis_proxy.call.discovery import check_local_models
from aegis_proxy.config import AegisConfig, load_config
from aegis_proxy.decide.rules import LLMTask, decide_route
from aegis_proxy.default import default_config_path
from aegis_proxy.errors import RequestValidationError
from aegis_proxy.loop_thread import BridgedIterator, LoopThread, bridge
from aegis_proxy.proxy import AegisLLMProxy

__all__ = ["ChatAegis"]

ToolLike = dict[str, Any] | type | Callable[..., Any] | BaseTool

_runner = LoopThread("aegis-langchain")
"""The loop of every proxy a ChatAegis builds (its own, or the sibling of one passed in)."""
atexit.register(_runner.stop)  # lets the closes that finalizers submitted finish


class _Built:
    """The proxies a model built; closed with it, or on the runner when it is collected."""

    def __init__(self) -> None:
        self.proxies: list[AegisLLMProxy] = []
        weakref.finalize(self, _release, self.proxies)


def _release(proxies: list[AegisLLMProxy]) -> None:
    """Close without waiting (a finalizer may run on any thread, the runner's too)."""
    for proxy in proxies:
        if _runner.running:
            _runner.submit(proxy.aclose())
        else:
            proxy.close_files()
    proxies.clear()


class ChatAegis(BaseChatModel):
    """A chat model routed by AEGIS: ``ChatAegis(proxy=..., task=LLMTask(...))``.

    Give either ``proxy`` (an ``AegisLLMProxy``) or ``config_path`` (default:
    ``$AEGIS_CONFIG``, else ``config/aegis.yaml``). ``task`` describes every call; a call
    can pass its own: ``await model.ainvoke(messages, task=LLMTask(...))``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    proxy: AegisLLMProxy | None = Field(default=None, exclude=True)
    config_path: str | None = None
    task: LLMTask = Field(default_factory=LLMTask)
    max_tokens: int | None = None
    temperature: float | None = None
    stop: list[str] | None = None
    timeout: float | None = Field(default=None, gt=0)
    """The whole request's deadline in seconds, fallbacks included (``routing.deadline_s``)."""
    max_retries: int | None = Field(default=None, ge=0)
    """Extra attempts at the same provider (``resilience.retries`` of the model's proxy)."""
    streaming: bool = False
    api_key: SecretStr | None = Field(default=None, exclude=True, repr=False)
    """Accepted and never used: each provider's key comes from the config."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    _owns_proxy: bool = PrivateAttr(default=False)
    _built: _Built = PrivateAttr(default_factory=_Built)

    @model_validator(mode="after")
    def _build_proxy(self) -> ChatAegis:
        if self.proxy is None:
            self.proxy = _owned_proxy(self.config_path or default_config_path(), self.max_retries)
            self._owns_proxy = True
            self._built.proxies.append(self.proxy)
        elif self.max_retries is not None:
            retries = self.proxy.config.resilience.retries
            if retries != self.max_retries:
                raise RequestValidationError(
                    "max_retries",
                    f"the proxy passed in retries {retries} times (its config's "
                    "resilience.retries): set it there, or pass config_path",
                )
        return self

    # -- lifetime -----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the proxies this model built (a proxy passed in is the caller's)."""
        for proxy in self._drain():
            if _runner.running:
                await _runner.arun(proxy.aclose())
            else:
                proxy.close_files()

    def close(self) -> None:
        """Blocking ``aclose``."""
        for proxy in self._drain():
            if _runner.running:
                _runner.run(proxy.aclose(), "close")
            else:
                proxy.close_files()

    def _drain(self) -> list[AegisLLMProxy]:
        proxies = list(self._built.proxies)
        self._built.proxies.clear()
        return proxies

    # -- what LangChain asks of a chat model --------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "aegis-proxy"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"config": self._proxy.config.source, "task": self.task.model_dump()}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop or self.stop, **kwargs)
        params["ls_provider"] = "aegis"
        model, task = kwargs.get("model"), kwargs.get("task")
        if not isinstance(model, str):
            model = _planned_model(
                self._proxy.config, task if isinstance(task, LLMTask) else self.task
            )
        params["ls_model_name"] = model
        return params

    @property
    def _proxy(self) -> AegisLLMProxy:
        assert self.proxy is not None  # set by the validator
        return self.proxy

    def bind_tools(
        self,
        tools: Sequence[ToolLike],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (functions, pydantic models, ``BaseTool``s or OpenAI tool dicts).

        ``tool_choice``: ``auto``, ``none``, ``any``/``required``/``True`` (some tool), a
        bound tool's name, or an OpenAI ``{"type": "function", ...}`` dict. An Ollama
        provider cannot force a tool: a forced choice skips it (the route moves on).
        """
        formatted = [convert_to_openai_tool(tool, strict=strict) for tool in tools]
        kwargs["tools"] = formatted
        if tool_choice is not None and tool_choice is not False:
            kwargs["tool_choice"] = lc.openai_tool_choice(tool_choice, formatted)
        return cast("Runnable[LanguageModelInput, AIMessage]", self.bind(**kwargs))

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: Literal["json_schema", "function_calling", "json_mode"] = "json_schema",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """Answers parsed into ``schema`` (a pydantic model, TypedDict or JSON schema).

        ``json_schema`` (the default) sends the schema as ``response_format``, which every
        provider of the example config honours (Ollama as its ``format``);
        ``function_calling`` forces a tool call (not on Ollama); ``json_mode`` asks for JSON.
        """
        return structured_runnable(self, schema, include_raw, method, strict, kwargs)

    # -- calls --------------------------------------------------------------------------

    def _serving(self, *, blocking: bool) -> tuple[AegisLLMProxy, bool]:
        """The proxy for a call, and whether it runs on the runner (else on the caller's loop)."""
        if self._owns_proxy:
            return self._proxy, True
        if not blocking:
            return self._proxy, False
        if not self._built.proxies:
            self._built.proxies.append(AegisLLMProxy(self._proxy.config))
        return self._built.proxies[0], True

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        proxy, remote = self._serving(blocking=False)
        work = self._complete(proxy, messages, stop, kwargs)
        return await (_runner.arun(work) if remote else work)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        proxy, _ = self._serving(blocking=True)
        return _runner.run(self._complete(proxy, messages, stop, kwargs), "invoke")

    async def _complete(
        self,
        proxy: AegisLLMProxy,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
    ) -> ChatResult:
        task, params = self._request(stop, kwargs)
        response: Any = await proxy.acompletion(lc.openai_messages(messages), task, **params)
        return ChatResult(generations=[ChatGeneration(message=lc.ai_message(response))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        proxy, _ = self._serving(blocking=True)
        with BridgedIterator(_runner, self._pieces(proxy, messages, stop, kwargs)) as pieces:
            for piece in pieces:
                if run_manager is not None:
                    run_manager.on_llm_new_token(piece.text, chunk=piece)
                yield piece

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        proxy, remote = self._serving(blocking=False)
        pieces = self._pieces(proxy, messages, stop, kwargs)
        source = bridge(_runner, pieces) if remote else pieces
        try:
            async for piece in source:
                if run_manager is not None:
                    await run_manager.on_llm_new_token(piece.text, chunk=piece)
                yield piece
        finally:
            await source.aclose()

    async def _pieces(
        self,
        proxy: AegisLLMProxy,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
    ) -> AsyncGenerator[ChatGenerationChunk, None]:
        """The chunks of one proxy stream, then the closing chunk (usage and record)."""
        task, params = self._request(stop, kwargs)
        params["stream"] = True
        stream: Any = await proxy.acompletion(lc.openai_messages(messages), task, **params)
        async with stream:
            async for chunk in stream:
                piece = lc.generation_chunk(chunk)
                if piece is not None:
                    yield piece
        yield lc.closing_chunk(stream.aegis)

    def _request(
        self, stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[LLMTask, dict[str, Any]]:
        """The task and the chat parameters of one call (call kwargs win)."""
        params: dict[str, Any] = dict(self.model_kwargs)
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.timeout is not None:
            params["deadline_s"] = self.timeout
        if stop or self.stop:
            params["stop"] = stop or self.stop
        params.update(kwargs)
        params.pop("stream", None)  # LangChain's own switch; streams set it themselves
        task = params.pop("task", None) or self.task
        if not isinstance(task, LLMTask):
            raise RequestValidationError("task", "must be an aegis_proxy.LLMTask")
        return task, params


def _owned_proxy(path: str, retries: int | None) -> AegisLLMProxy:
    """A proxy of the config at ``path`` (``retries`` replacing ``resilience.retries``)."""
    config = load_config(path)
    if retries is not None:
        resilience = config.resilience.model_copy(update={"retries": retries})
        config = config.model_copy(update={"resilience": resilience})
    discovery = config.discovery
    check_local_models(config, discovery.check_local_models, timeout_s=discovery.timeout_s)
    return AegisLLMProxy(config)


def _planned_model(config: AegisConfig, task: LLMTask) -> str:
    """The model the task's route tries first (what traces name the model)."""
    candidates = decide_route(config.routing, task).candidates
    if not candidates:
        return "aegis-proxy"
    first = candidates[0]
    return first.model or config.providers[first.provider].model
