"""LangChain's own conformance suite (``langchain-tests``) run against ``ChatAegis``.

The unit suite runs once; the integration suite runs on two routes of the test config:
one served by the OpenAI fake (critical + high complexity: OpenAI first) and one served
by the Ollama fake (the default route, local only). The fakes answer tools, tool choice
and JSON schemas as a cooperative model would (``tests.fakereply``). Feature flags say
what the route can really do: an Ollama provider cannot honour a forced ``tool_choice``
(the proxy skips it rather than drop the choice), so that route says it has none.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip(
    "langchain_tests",
    reason="LOUD: langchain-tests is not installed: LangChain's standard suite did NOT run",
)

from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from aegis_proxy import LLMTask, NoProviderAvailableError
from aegis_proxy.langchain.chat import ChatAegis
from tests.conftest import CHEAP_KEY, OPENAI_KEY
from tests.fakeserver import FakeProviderServer

CRITICAL = LLMTask(task_type="extraction", quality="critical", complexity="high")
_CONFIG: dict[str, str] = {}
_FORCED_ON_OLLAMA = pytest.mark.xfail(
    raises=NoProviderAvailableError,
    strict=True,
    reason="the test forces tool_choice='any' whatever has_tool_choice says; Ollama cannot "
    "force a tool, so the proxy skips its only provider instead of dropping the choice",
)


def _config(tmp: Path, local: str, openai: str, cheap: str) -> dict[str, Any]:
    return {
        "providers": {
            "local_ollama": {"sdk": "ollama", "api_base": local, "model": "llama3.2:3b",
                             "local": True},
            "ollama_cloud": {"sdk": "ollama", "api_base": cheap, "api_key": CHEAP_KEY,
                             "model": "gpt-oss:120b", "monthly_budget_usd": 120,
                             "price": {"input_per_mtok": 0.10, "output_per_mtok": 0.40}},
            "openai": {"sdk": "openai", "api_base": f"{openai}/v1", "api_key": OPENAI_KEY,
                       "model": "gpt-4o", "monthly_budget_usd": 80, "timeout_s": 5},
        },
        "routing": {
            "deadline_s": 10,
            "rules": [{"name": "critical_to_openai",
                       "when": {"quality": "critical", "complexity": "high"},
                       "route": ["openai", "ollama_cloud", "local_ollama"]}],
            "default": ["local_ollama"],
        },
        "ledger": {"path": str(tmp / "ledger.db")},
        "resilience": {"retries": 0},
    }  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def fake_providers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Three cooperative fakes and a config pointing at them, for the whole module."""
    tmp = tmp_path_factory.mktemp("standard")
    with (
        FakeProviderServer() as local,
        FakeProviderServer() as openai,
        FakeProviderServer() as cheap,
    ):
        for server in (local, openai, cheap):
            server.cooperative = True
        path = tmp / "aegis.yaml"
        path.write_text(yaml.safe_dump(_config(tmp, local.url, openai.url, cheap.url)))
        _CONFIG["path"] = str(path)
        yield


class TestChatAegisUnit(ChatModelUnitTests):
    """The unit half: construction, standard params, tool binding, structured output."""

    @property
    def chat_model_class(self) -> type[ChatAegis]:
        return ChatAegis

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"config_path": _CONFIG["path"], "task": CRITICAL}


class TestChatAegisOpenAIRoute(ChatModelIntegrationTests):
    """The integration half on a route the OpenAI fake serves."""

    @property
    def chat_model_class(self) -> type[ChatAegis]:
        return ChatAegis

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"config_path": _CONFIG["path"], "task": CRITICAL}

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        return False  # the route picks the model; the proxy refuses a `model` parameter


class TestChatAegisOllamaRoute(ChatModelIntegrationTests):
    """The integration half on the default route, which only the local Ollama fake serves."""

    @property
    def chat_model_class(self) -> type[ChatAegis]:
        return ChatAegis

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"config_path": _CONFIG["path"]}

    @property
    def has_tool_choice(self) -> bool:
        return False  # Ollama cannot force a tool: the proxy skips it rather than drop the choice

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        return False  # the route picks the model; the proxy refuses a `model` parameter

    @_FORCED_ON_OLLAMA
    def test_structured_few_shot_examples(self, model: Any, my_adder_tool: Any) -> None:
        super().test_structured_few_shot_examples(model, my_adder_tool)

    @_FORCED_ON_OLLAMA
    def test_unicode_tool_call_integration(self, model: Any, **kwargs: Any) -> None:
        super().test_unicode_tool_call_integration(model, **kwargs)
