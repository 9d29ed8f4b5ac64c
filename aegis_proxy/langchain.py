"""``ChatAegis``: a LangChain chat model whose every call goes through an AegisLLMProxy.

Nodes and agents that expect a ``BaseChatModel`` get the policy too: PII stays local,
budgets hold, each attempt is a ledger row. Needs the ``langchain`` extra
(``pip install 'aegis-proxy[langchain]'``); importing this module without it raises an
``ImportError`` that says so. What must always hold:

- messages become OpenAI chat messages (tool calls and tool results included) and the
  proxy's answer becomes an ``AIMessage`` with ``tool_calls``, ``usage_metadata`` (the
  ledger's token counts) and the routing record in ``response_metadata["aegis"]``;
- ``_astream`` closes the proxy's stream however the consumer stops, so its ledger row
  is settled; its last chunk carries the usage and the routing record;
- a ``ChatAegis`` and its proxy belong to one event loop; the blocking ``invoke`` runs a
  fresh proxy from the same config in its own loop (and refuses inside a running loop).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, cast

try:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForLLMRun,
        CallbackManagerForLLMRun,
    )
    from langchain_core.language_models import LanguageModelInput
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, UsageMetadata
    from langchain_core.messages import convert_to_openai_messages as _to_openai
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
    from langchain_core.runnables import Runnable
    from langchain_core.tools import BaseTool
    from langchain_core.utils.function_calling import convert_to_openai_tool
except ImportError as exc:  # the optional extra is missing
    raise ImportError(
        "aegis_proxy.langchain needs the 'langchain' extra: "
        "pip install 'aegis-proxy[langchain]' (langchain-core, langgraph)"
    ) from exc
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from aegis_proxy.decide.record import AegisRecord
from aegis_proxy.decide.rules import LLMTask
from aegis_proxy.default import default_config_path
from aegis_proxy.errors import RequestValidationError
from aegis_proxy.proxy import AegisLLMProxy

__all__ = ["ChatAegis"]

ToolLike = dict[str, Any] | type | Callable[..., Any] | BaseTool


class ChatAegis(BaseChatModel):
    """A chat model routed by AEGIS: ``ChatAegis(proxy=..., task=LLMTask(...))``.

    Give either ``proxy`` (an ``AegisLLMProxy``) or ``config_path`` (default:
    ``$AEGIS_CONFIG``, else ``config/aegis.yaml``). ``task`` describes every call; a call
    can pass its own: ``await model.ainvoke(messages, task=LLMTask(...))``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    proxy: AegisLLMProxy | None = Field(default=None, exclude=True)
    config_path: str | None = None
    task: LLMTask = Field(default_factory=LLMTask)
    max_tokens: int | None = None
    temperature: float | None = None
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    _owns_proxy: bool = PrivateAttr(default=False)

    @model_validator(mode="after")
    def _build_proxy(self) -> ChatAegis:
        if self.proxy is None:
            self.proxy = AegisLLMProxy.from_config(self.config_path or default_config_path())
            self._owns_proxy = True
        return self

    async def aclose(self) -> None:
        """Close the proxy built from ``config_path`` (a proxy passed in is the caller's)."""
        if self._owns_proxy:
            await self._proxy.aclose()

    @property
    def _llm_type(self) -> str:
        return "aegis-proxy"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"config": self._proxy.config.source, "task": self.task.model_dump()}

    @property
    def _proxy(self) -> AegisLLMProxy:
        assert self.proxy is not None  # set by the validator
        return self.proxy

    def bind_tools(
        self,
        tools: Sequence[ToolLike],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (functions, pydantic models, ``BaseTool``s or OpenAI tool dicts)."""
        kwargs["tools"] = [convert_to_openai_tool(tool) for tool in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = _tool_choice(tool_choice)
        return cast("Runnable[LanguageModelInput, AIMessage]", self.bind(**kwargs))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await self._complete(self._proxy, messages, stop, kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._complete_once(messages, stop, kwargs))
        raise RequestValidationError("invoke", "inside a running event loop: use `ainvoke`")

    async def _complete_once(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> ChatResult:
        async with AegisLLMProxy(self._proxy.config) as proxy:
            return await self._complete(proxy, messages, stop, kwargs)

    async def _complete(
        self,
        proxy: AegisLLMProxy,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
    ) -> ChatResult:
        task, params = self._request(stop, kwargs)
        response: Any = await proxy.acompletion(_openai_messages(messages), task, **params)
        return ChatResult(generations=[ChatGeneration(message=_ai_message(response))])

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        task, params = self._request(stop, kwargs)
        params["stream"] = True
        stream: Any = await self._proxy.acompletion(_openai_messages(messages), task, **params)
        async with stream:
            async for chunk in stream:
                piece = _chunk(chunk)
                if piece is None:
                    continue
                if run_manager is not None:
                    await run_manager.on_llm_new_token(str(piece.message.content), chunk=piece)
                yield piece
        yield _closing_chunk(stream.aegis)

    def _request(
        self, stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[LLMTask, dict[str, Any]]:
        """The task and the chat parameters of one call (call kwargs win)."""
        params: dict[str, Any] = dict(self.model_kwargs)
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if stop:
            params["stop"] = stop
        params.update(kwargs)
        task = params.pop("task", None) or self.task
        if not isinstance(task, LLMTask):
            raise RequestValidationError("task", "must be an aegis_proxy.LLMTask")
        return task, params


def _tool_choice(choice: str) -> str | dict[str, Any]:
    if choice in ("auto", "none", "required"):
        return choice
    if choice == "any":
        return "required"
    return {"type": "function", "function": {"name": choice}}


def _openai_messages(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    converted = _to_openai(messages)
    return converted if isinstance(converted, list) else [converted]


def _usage(record: AegisRecord) -> UsageMetadata:
    total = record.input_tokens + record.output_tokens
    return UsageMetadata(
        input_tokens=record.input_tokens, output_tokens=record.output_tokens, total_tokens=total
    )


def _metadata(record: AegisRecord, extra: dict[str, Any]) -> dict[str, Any]:
    return {"model_name": record.model, "aegis": record.model_dump(mode="json"), **extra}


def _ai_message(response: Any) -> AIMessage:
    record: AegisRecord = response.aegis
    choice = response.choices[0]
    calls, invalid = _tool_calls(choice.message.tool_calls or [])
    return AIMessage(
        content=choice.message.content or "",
        tool_calls=calls,
        invalid_tool_calls=invalid,
        usage_metadata=_usage(record),
        response_metadata=_metadata(record, {"finish_reason": choice.finish_reason}),
        id=response.id,
    )


def _tool_calls(raw: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """Parsed tool calls, and those whose arguments are not a JSON object."""
    calls: list[Any] = []
    invalid: list[Any] = []
    for call in raw:
        name, arguments = call.function.name, call.function.arguments or "{}"
        try:
            args = json.loads(arguments)
        except ValueError:
            args = None
        if isinstance(args, dict):
            calls.append({"name": name, "args": args, "id": call.id, "type": "tool_call"})
        else:
            invalid.append(
                {"name": name, "args": arguments, "id": call.id, "type": "invalid_tool_call",
                 "error": "arguments are not a JSON object"}
            )  # fmt: skip
    return calls, invalid


def _chunk(chunk: Any) -> ChatGenerationChunk | None:
    """A LangChain chunk from an OpenAI one (None for a usage-only chunk)."""
    if not chunk.choices:
        return None
    choice = chunk.choices[0]
    delta = choice.delta
    pieces = [
        {
            "name": call.function.name if call.function else None,
            "args": call.function.arguments if call.function else None,
            "id": call.id,
            "index": call.index,
            "type": "tool_call_chunk",
        }
        for call in delta.tool_calls or []
    ]
    finish = {"finish_reason": choice.finish_reason} if choice.finish_reason else {}
    message = AIMessageChunk(
        content=delta.content or "",
        tool_call_chunks=pieces,  # type: ignore[arg-type]  # ToolCallChunk dicts
        response_metadata=finish,
    )
    return ChatGenerationChunk(message=message)


def _closing_chunk(record: AegisRecord) -> ChatGenerationChunk:
    """The last chunk: the ledger's token counts and the routing record."""
    message = AIMessageChunk(
        content="",
        usage_metadata=_usage(record),
        response_metadata=_metadata(record, {}),
    )
    return ChatGenerationChunk(message=message)
