"""Local model discovery against the fake servers: listings, checks, unreachable servers."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from aegis_proxy import AegisLLMProxy
from aegis_proxy.call.discovery import (
    check_local_models,
    discover,
    listing_url,
    render_models,
    wanted_models,
)
from aegis_proxy.config import AegisConfig, load_config
from aegis_proxy.errors import ConfigError
from tests.conftest import CHEAP_KEY, OPENAI_KEY, Rig
from tests.fakeserver import DEFAULT_MODELS
from tests.logcapture import capture_events


def config_of(rig: Rig, data: dict[str, Any] | None = None) -> AegisConfig:
    return load_config(rig.write_config(data or rig.config_data()))


def with_local(rig: Rig, **fields: Any) -> dict[str, Any]:
    data = rig.config_data()
    data["providers"]["local_ollama"].update(fields)
    return data


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listing_paths(rig: Rig) -> dict[str, list[str]]:
    return {name: [r.path for r in server.requests] for name, server in rig.servers().items()}


def test_ollama_server_models_are_listed(rig: Rig) -> None:
    """An Ollama provider is listed through GET /api/tags; only local providers by default."""
    [server] = discover(config_of(rig))
    assert server.provider == "local_ollama"
    assert server.url == f"{rig.local.url}/api/tags"
    assert server.models == DEFAULT_MODELS
    assert server.error is None
    assert server.missing == ()
    assert listing_paths(rig) == {"local_ollama": ["/api/tags"], "openai": [], "ollama_cloud": []}


def test_openai_compatible_local_server_is_listed(rig: Rig) -> None:
    """A local OpenAI-compatible server (llama.cpp, vLLM) is listed through GET /v1/models."""
    rig.openai.models = ["smollm2-135m"]
    data = with_local(rig, sdk="openai", api_base=rig.openai.openai_base, model="smollm2-135m")
    [server] = check_local_models(config_of(rig, data), "fail")
    assert server.url == f"{rig.openai.url}/v1/models"
    assert server.models == ("smollm2-135m",)
    assert [r.path for r in rig.openai.requests] == ["/v1/models"]


def test_every_server_with_its_own_key_only(rig: Rig) -> None:
    """Listing every provider sends each key to its own server and none to the local one."""
    found = discover(config_of(rig), local_only=False)
    assert [s.provider for s in found] == ["local_ollama", "ollama_cloud", "openai"]
    assert all(s.error is None for s in found)
    [local], [cheap], [openai] = (s.requests for s in (rig.local, rig.cheap, rig.openai))
    assert "authorization" not in local.headers
    assert cheap.headers["authorization"] == f"Bearer {CHEAP_KEY}"
    assert openai.headers["authorization"] == f"Bearer {OPENAI_KEY}"


def test_missing_default_model_fails_naming_the_key(rig: Rig) -> None:
    """fail mode raises ConfigError at providers.<name>.model when the server lacks it."""
    rig.local.models = ["qwen2.5:7b"]
    config = config_of(rig)
    with pytest.raises(ConfigError) as info:
        check_local_models(config, "fail")
    assert info.value.key == "providers.local_ollama.model"
    assert info.value.path == config.source
    assert "llama3.2:3b" in info.value.problem
    assert "qwen2.5:7b" in info.value.problem


def test_missing_route_model_fails_naming_the_route_entry(rig: Rig) -> None:
    """A route entry naming a local model the server lacks is reported at that entry."""
    data = rig.config_data()
    data["routing"]["rules"][1]["route"] = [
        "ollama_cloud",
        {"provider": "local_ollama", "model": "mistral:7b"},
    ]
    config = config_of(rig, data)
    assert ("mistral:7b", "routing.rules[1].route[1].model") in wanted_models(config)[
        "local_ollama"
    ]
    with pytest.raises(ConfigError) as info:
        check_local_models(config, "fail")
    assert info.value.key == "routing.rules[1].route[1].model"
    rig.local.models = [*DEFAULT_MODELS, "mistral:7b"]
    assert check_local_models(config, "fail")[0].missing == ()


def test_warn_mode_logs_and_returns(rig: Rig) -> None:
    """warn mode logs local_model_missing with the config entry and does not raise."""
    rig.local.models = ["qwen2.5:7b"]
    with capture_events() as logs:
        [server] = check_local_models(config_of(rig), "warn")
    assert server.missing == (("llama3.2:3b", "providers.local_ollama.model"),)
    [event] = [e for e in logs if e["event"] == "local_model_missing"]
    assert event["log_level"] == "warning"
    assert event["config_entry"] == "providers.local_ollama.model"
    assert event["model"] == "llama3.2:3b"


def test_off_mode_calls_nothing(rig: Rig) -> None:
    """off mode checks nothing and sends no request."""
    rig.local.models = []
    assert check_local_models(config_of(rig), "off") == []
    assert rig.local.requests == []


def test_unreachable_server_fails_naming_api_base(rig: Rig) -> None:
    """A local server that refuses connections fails at providers.<name>.api_base."""
    data = with_local(rig, api_base=f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(ConfigError) as info:
        check_local_models(config_of(rig, data), "fail", timeout_s=1.0)
    assert info.value.key == "providers.local_ollama.api_base"
    assert "cannot list the models of local server" in info.value.problem
    assert "connection refused" in info.value.problem


def test_unreachable_server_warns_in_warn_mode(rig: Rig) -> None:
    """warn mode logs local_server_unreachable and reports the error in the listing."""
    data = with_local(rig, api_base=f"http://127.0.0.1:{closed_port()}")
    with capture_events() as logs:
        [server] = check_local_models(config_of(rig, data), "warn", timeout_s=1.0)
    assert server.error is not None
    assert server.missing == ()
    assert [e["event"] for e in logs] == ["local_server_unreachable"]
    assert "UNREACHABLE" in render_models([server])


def test_wrong_path_is_reported_as_http_status(rig: Rig) -> None:
    """An OpenAI-compatible base without /v1 answers 404: reported, not a crash."""
    data = with_local(rig, sdk="openai", api_base=rig.openai.url)
    [server] = discover(config_of(rig, data))
    assert server.error == "HTTP 404"
    assert server.models == ()


@pytest.mark.parametrize(
    ("configured", "served", "missing"),
    [
        ("llama3.2", ["llama3.2:latest"], False),
        ("llama3.2:latest", ["llama3.2"], False),
        ("llama3.2", ["llama3.2:3b"], True),
        ("llama3.2:3b", ["llama3.2:1b"], True),
    ],
)
def test_ollama_untagged_name_means_latest(
    rig: Rig, configured: str, served: list[str], missing: bool
) -> None:
    """A model name without a tag matches ':latest' and nothing else, as in Ollama."""
    rig.local.models = served
    [server] = discover(config_of(rig, with_local(rig, model=configured)))
    assert bool(server.missing) is missing


def test_listing_urls() -> None:
    """Ollama lists at /api/tags (also behind a /v1 base), OpenAI-compatible at <base>/models."""
    from aegis_proxy.config.providers import ProviderConfig

    ollama = ProviderConfig(sdk="ollama", model="m", api_base="http://h:1/v1/")
    assert listing_url(ollama) == "http://h:1/api/tags"
    default = ProviderConfig(sdk="ollama", model="m")
    assert listing_url(default) == "http://localhost:11434/api/tags"
    assert listing_url(ProviderConfig(sdk="openai", model="m", api_base="http://h/v1")) == (
        "http://h/v1/models"
    )
    assert listing_url(ProviderConfig(sdk="openai", model="m")) is None


def test_render_marks_configured_and_missing_models(rig: Rig) -> None:
    """The table stars the configured model and lists missing ones with their key."""
    rig.local.models = ["llama3.2:3b", "qwen2.5:7b"]
    data = rig.config_data()
    data["routing"]["default"] = [{"provider": "local_ollama", "model": "phi4:14b"}]
    found = discover(config_of(rig, data))
    table = render_models(found)
    assert "* llama3.2:3b" in table
    assert "  qwen2.5:7b" in table
    assert "! phi4:14b  MISSING (named by routing.default[0].model)" in table
    [entry] = json.loads(render_models(found, "json"))
    assert entry["missing"] == ["phi4:14b"]


def test_proxy_start_fails_fast_on_missing_local_model(rig: Rig) -> None:
    """With check_local_models: fail, from_config raises before serving anything."""
    rig.local.models = ["qwen2.5:7b"]
    data = {**rig.config_data(), "discovery": {"check_local_models": "fail"}}
    with pytest.raises(ConfigError) as info:
        AegisLLMProxy.from_config(rig.write_config(data))
    assert info.value.key == "providers.local_ollama.model"
    assert rig.local.chat_requests() == []


async def test_proxy_start_warns_and_serves(rig: Rig) -> None:
    """With check_local_models: warn, a missing local model is a warning; the proxy starts."""
    rig.local.models = ["qwen2.5:7b"]
    data = {**rig.config_data(), "discovery": {"check_local_models": "warn"}}
    with capture_events() as logs:
        proxy = AegisLLMProxy.from_config(rig.write_config(data))
    await proxy.aclose()
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["local_model_missing"]


def test_bare_yaml_off_turns_the_check_off(rig: Rig) -> None:
    """`check_local_models: off` (YAML false) checks nothing."""
    path = rig.write_config(rig.config_data())
    path.write_text(path.read_text() + "discovery:\n  check_local_models: off\n")
    AegisLLMProxy.from_config(path)
    assert rig.local.requests == []
