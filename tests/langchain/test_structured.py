"""ChatAegis.with_structured_output on every route of config/aegis.yaml, against the fakes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip(
    "langchain_core",
    reason="LOUD: the 'langchain' extra is not installed: ChatAegis tests did NOT run",
)

from pydantic import BaseModel

from aegis_proxy import LLMTask, NoProviderAvailableError, RequestValidationError
from aegis_proxy.langchain.chat import ChatAegis
from tests.conftest import CHEAP_KEY, OPENAI_KEY, Rig

EXAMPLE = Path(__file__).absolute().parents[2] / "config" / "aegis.yaml"

# One task per route of the example config, and the provider that serves it first.
ROUTES = [
    pytest.param(LLMTask(quality="critical", complexity="high"), "openai", id="critical_to_openai"),
    pytest.param(LLMTask(batch_size=12), "ollama_cloud", id="batch_to_cloud"),
    pytest.param(LLMTask(), "local_ollama", id="default"),
]


class Joke(BaseModel):
    """Joke to tell user."""

    setup: str
    punchline: str


@pytest.fixture
def example_config(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> str:
    """config/aegis.yaml as shipped, its providers pointed at the fakes."""
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OLLAMA_API_KEY", CHEAP_KEY)
    data = yaml.safe_load(EXAMPLE.read_text())
    providers = data["providers"]
    providers["local_ollama"]["api_base"] = rig.local.url
    providers["ollama_cloud"]["api_base"] = rig.cheap.url
    providers["openai"]["api_base"] = rig.openai.openai_base
    data["ledger"]["path"] = str(rig.tmp_path / "ledger.db")
    for server in (rig.local, rig.cheap, rig.openai):
        server.cooperative = True
    return str(rig.write_config(data))


def body_of(rig: Rig, provider: str) -> dict[str, Any]:
    server = {"openai": rig.openai, "ollama_cloud": rig.cheap, "local_ollama": rig.local}
    [request] = server[provider].chat_requests()
    body: dict[str, Any] = request.body
    return body


@pytest.mark.parametrize(("task", "provider"), ROUTES)
def test_structured_output_works_on_every_route(
    example_config: str, rig: Rig, task: LLMTask, provider: str
) -> None:
    """A pydantic schema comes back as an instance on each route; the schema is what is sent."""
    model = ChatAegis(config_path=example_config, task=task)
    joke = model.with_structured_output(Joke).invoke("Tell me a joke about 'cats'.")
    model.close()
    assert isinstance(joke, Joke)
    body = body_of(rig, provider)
    if provider == "openai":
        sent = body["response_format"]["json_schema"]
        assert (body["response_format"]["type"], sent["name"]) == ("json_schema", "Joke")
        schema = sent["schema"]
    else:
        schema = body["format"]  # Ollama's structured output
    assert set(schema["properties"]) == {"setup", "punchline"}
    assert "tool_choice" not in body


@pytest.mark.parametrize(("task", "provider"), ROUTES)
async def test_structured_output_streams_on_every_route(
    example_config: str, task: LLMTask, provider: str
) -> None:
    """astream of a structured model ends with a complete dict on each route."""
    model = ChatAegis(config_path=example_config, task=task)
    schema = Joke.model_json_schema()
    chunks = [c async for c in model.with_structured_output(schema).astream("A joke, please.")]
    await model.aclose()
    last = chunks[-1]
    assert isinstance(last, dict)
    assert set(last) == {"setup", "punchline"}


def test_json_mode_and_include_raw(example_config: str) -> None:
    """json_mode parses the JSON answer; include_raw adds the message and no parsing error."""
    model = ChatAegis(config_path=example_config)
    out = model.with_structured_output(Joke, method="json_mode", include_raw=True).invoke(
        "Return JSON with 'setup' and 'punchline' keys."
    )
    model.close()
    assert isinstance(out["parsed"], Joke)
    assert out["parsing_error"] is None
    assert out["raw"].response_metadata["aegis"]["provider"] == "local_ollama"


def test_function_calling_on_an_ollama_only_route_says_why(example_config: str) -> None:
    """Forcing the schema's tool on a route of Ollama providers fails, naming the reason."""
    model = ChatAegis(config_path=example_config)
    chain = model.with_structured_output(Joke, method="function_calling")
    with pytest.raises(NoProviderAvailableError) as caught:
        chain.invoke("Tell me a joke.")
    model.close()
    [attempt] = caught.value.attempts
    assert attempt.outcome == "skipped"
    assert "tool_choice" in (attempt.reason or "")


@pytest.mark.parametrize(
    ("options", "field"),
    [({"method": "xml"}, "method"), ({"temperature": 2}, "with_structured_output")],
)
def test_unknown_structured_output_options_are_refused(
    example_config: str, options: dict[str, Any], field: str
) -> None:
    """An unknown method or option raises RequestValidationError naming it."""
    model = ChatAegis(config_path=example_config)
    with pytest.raises(RequestValidationError) as caught:
        model.with_structured_output(Joke, **options)
    model.close()
    assert caught.value.field == field
