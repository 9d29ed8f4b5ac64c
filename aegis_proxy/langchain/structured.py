"""``ChatAegis.with_structured_output``: a model bound to a schema, and the parser of its answers.

Needs ``langchain-core``. What must always hold:

- ``json_schema`` (the default) binds ``response_format`` with the schema, which both
  SDKs of the example config honour (Ollama takes it as ``format``), so structured output
  works on every route; ``function_calling`` forces the schema's tool (Ollama providers
  cannot and are skipped); ``json_mode`` binds ``{"type": "json_object"}``;
- the schema's kind decides the answer's: a pydantic model (v1 or v2) gives an instance,
  a TypedDict or JSON schema gives a dict; ``include_raw`` adds the raw message and any
  parsing error instead of raising;
- tracing sees ``ls_structured_output_format`` with the method and the schema.
"""

from __future__ import annotations

from operator import itemgetter
from typing import TYPE_CHECKING, Any

from langchain_core.output_parsers import (
    BaseOutputParser,
    JsonOutputKeyToolsParser,
    JsonOutputParser,
    PydanticOutputParser,
    PydanticToolsParser,
)
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass

from aegis_proxy.errors import RequestValidationError

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel, LanguageModelInput

__all__ = ["structured_runnable"]

_METHODS = ("json_schema", "function_calling", "json_mode")


def structured_runnable(
    model: BaseChatModel,
    schema: dict[str, Any] | type,
    include_raw: bool,
    method: str,
    strict: bool | None,
    kwargs: dict[str, Any],
) -> Runnable[LanguageModelInput, Any]:
    """``model`` bound for ``method`` and piped into the parser for ``schema``."""
    if kwargs:
        raise RequestValidationError("with_structured_output", f"unknown options {sorted(kwargs)}")
    if method not in _METHODS:
        raise RequestValidationError("method", f"must be one of {list(_METHODS)}, got {method!r}")
    tracing = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
    is_model = isinstance(schema, type) and is_basemodel_subclass(schema)
    tool = convert_to_openai_tool(schema, strict=strict if method != "json_mode" else None)
    name = tool["function"]["name"]
    parser: BaseOutputParser[Any]
    if method == "function_calling":
        bound = model.bind_tools([schema], tool_choice=name, strict=strict,
                                 ls_structured_output_format=tracing)  # fmt: skip
        parser = (
            PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
            if is_model
            else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
        )
    else:
        response_format = (
            {"type": "json_object"} if method == "json_mode" else _json_schema_format(tool, strict)
        )
        bound = model.bind(response_format=response_format, ls_structured_output_format=tracing)
        parser = PydanticOutputParser(pydantic_object=schema) if is_model else JsonOutputParser()  # type: ignore[arg-type]
    if not include_raw:
        return bound | parser
    parsed = RunnablePassthrough.assign(
        parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
    )
    no_parse = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=bound) | parsed.with_fallbacks([no_parse], exception_key="parsing_error")


def _json_schema_format(tool: dict[str, Any], strict: bool | None) -> dict[str, Any]:
    function = tool["function"]
    spec: dict[str, Any] = {"name": function["name"], "schema": function["parameters"]}
    if function.get("description"):
        spec["description"] = function["description"]
    if strict is not None:
        spec["strict"] = strict
    return {"type": "json_schema", "json_schema": spec}
