"""Errors a newcomer reads: one line per failed attempt, and did-you-mean for config typos."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from aegis_proxy import AegisLLMProxy, LLMTask, NoProviderAvailableError
from aegis_proxy.config import load_config
from aegis_proxy.decide.record import Attempt
from aegis_proxy.errors import ConfigError
from tests.conftest import Rig
from tests.fakeserver import Fault

CRITICAL = LLMTask(task_type="extraction", quality="critical", complexity="high")
HELLO = [{"role": "user", "content": "hello"}]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_no_provider_error_reads_one_line_per_attempt(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each attempt is one line: provider, model, and what happened (key, 401, refused)."""
    monkeypatch.delenv("AEGIS_TEST_OPENAI_KEY")
    rig.cheap.add_fault(Fault.status(401))
    data = rig.config_data()
    refused = f"http://127.0.0.1:{closed_port()}"
    data["providers"]["local_ollama"]["api_base"] = refused
    async with AegisLLMProxy.from_config(rig.write_config(data)) as proxy:
        with pytest.raises(NoProviderAvailableError) as caught:
            await proxy.acompletion(HELLO, CRITICAL)
    assert str(caught.value).splitlines() == [
        "no provider could serve the request (rule critical_to_openai):",
        "  - openai (gpt-4o): skipped: environment variable AEGIS_TEST_OPENAI_KEY is not set",
        "  - ollama_cloud (gpt-oss:120b): failed: authentication failed (HTTP 401)",
        f"  - local_ollama (llama3.2:3b): failed: connection refused at {refused}",
    ]
    assert caught.value.rule == "critical_to_openai"
    assert [a.outcome for a in caught.value.attempts] == ["skipped", "error", "error"]
    assert caught.value.attempts[2].error_type == "connection_error"


def test_budget_and_breaker_attempts_read_as_words() -> None:
    """Over-budget and breaker-open attempts say so, after provider and model."""
    attempts = [
        Attempt(provider="openai", model="gpt-4o", outcome="budget_exceeded",
                reason="budget of openai for 2026-12 would be exceeded"),
        Attempt(provider="cheap", model="m", outcome="skipped", reason="circuit breaker open"),
    ]  # fmt: skip
    error = NoProviderAvailableError("default", attempts)
    assert str(error).splitlines()[1:] == [
        "  - openai (gpt-4o): over budget: budget of openai for 2026-12 would be exceeded",
        "  - cheap (m): skipped: circuit breaker open",
    ]
    assert error.attempts == tuple(attempts)


def test_an_attempt_url_never_shows_its_password() -> None:
    """A failure's URL keeps scheme, host, port and path: no user, password or query."""
    from aegis_proxy.errors import ProviderConnectionError, ProviderServerError
    from aegis_proxy.job import failure_text

    refused = ProviderConnectionError("p", "connection refused")
    url = "https://bob:hunter2@llm.example:8443/v1?key=abc"
    assert failure_text(refused, url) == "connection refused at https://llm.example:8443/v1"
    server = ProviderServerError("p", "server error", 503)
    assert failure_text(server, url) == "server error (HTTP 503)"


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "aegis.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


BASE: dict[str, Any] = {
    "providers": {"local_ollama": {"sdk": "ollama", "model": "m", "local": True}},
    "routing": {"default": ["local_ollama"]},
}


TYPO_PRICE = {"input_per_mtok": 0, "output_per_mtok": 0, "input_per_mtk": 0}


@pytest.mark.parametrize(
    ("change", "key", "suggestion"),
    [
        ({"providers": {"local_ollama": {"sdk": "ollama", "model": "m", "lokal": True}}},
         "providers.local_ollama.lokal", "local"),
        ({"routing": {"default": ["local_ollama"], "deadline": 5}}, "routing.deadline",
         "deadline_s"),
        ({"routing": {"default": ["local_ollama"],
                      "rules": [{"name": "r", "wen": {}, "route": ["local_ollama"]}]}},
         "routing.rules[0].wen", "when"),
        ({"routing": {"default": ["local_ollama"],
                      "rules": [{"name": "r", "when": {"qualty": "high"},
                                 "route": ["local_ollama"]}]}},
         "routing.rules[0].when.qualty", "quality"),
        ({"budget": {}}, "budget", "budgets"),
        ({"providers": {"local_ollama": {"sdk": "ollama", "model": "m", "local": True,
                                         "price": TYPO_PRICE}}},
         "providers.local_ollama.price.input_per_mtk", "input_per_mtok"),
    ],
)  # fmt: skip
def test_unknown_config_key_suggests_the_closest(
    tmp_path: Path, change: dict[str, Any], key: str, suggestion: str
) -> None:
    """An unknown key is a ConfigError naming the key and the closest known one."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, {**BASE, **change}))
    assert caught.value.key == key
    assert caught.value.problem == f"unknown key (did you mean {suggestion!r}?)"


def test_unknown_key_far_from_any_says_only_unknown(tmp_path: Path) -> None:
    """A key close to nothing known gets no guess."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, {**BASE, "zzzzqqq": 1}))
    assert (caught.value.key, caught.value.problem) == ("zzzzqqq", "unknown key")


def test_unknown_provider_in_a_route_suggests_the_closest(tmp_path: Path) -> None:
    """A misspelt provider name in a route gets a did-you-mean and the known names."""
    data = {**BASE, "routing": {"default": ["local_olama"]}}
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, data))
    assert caught.value.key == "routing.default[0]"
    assert caught.value.problem == (
        "unknown provider 'local_olama' (did you mean 'local_ollama'? known: local_ollama)"
    )


def test_missing_default_config_names_aegis_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the default file, the error says to set $AEGIS_CONFIG."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AEGIS_CONFIG", raising=False)
    with pytest.raises(ConfigError) as caught:
        load_config("config/aegis.yaml")
    assert "set $AEGIS_CONFIG to your config file" in caught.value.problem


def test_missing_file_named_by_aegis_config_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A $AEGIS_CONFIG naming a missing file is named as coming from $AEGIS_CONFIG."""
    missing = str(tmp_path / "nowhere.yaml")
    monkeypatch.setenv("AEGIS_CONFIG", missing)
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert caught.value.path == missing
    assert "(the file $AEGIS_CONFIG names)" in caught.value.problem
