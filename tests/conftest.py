"""Shared fixtures: three fake provider servers and a config in tmp_path pointing at them.

``local`` speaks Ollama (``local: true``), ``openai`` speaks OpenAI and ``cheap`` speaks
Ollama as a paid cloud. Each is its own server on loopback, so a test can assert which
bodies reached which provider.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import settings

from aegis_proxy import AegisLLMProxy
from tests.fakeserver import FakeProviderServer

# The suite's property tests draw the same examples on every run, so a red CI is a change
# and never a dice roll; `HYPOTHESIS_PROFILE=hunt` draws fresh ones (and ten times as many
# where a test does not set its own count) to look for new counterexamples, which then
# become `@example`s.
settings.register_profile("suite", derandomize=True, print_blob=True)
settings.register_profile("hunt", max_examples=1000, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))

OPENAI_KEY = "sk-test-openai-0123456789abcdef"
CHEAP_KEY = "cheap-cloud-key-0123456789abcdef"


@dataclass
class Rig:
    """Three fake servers and a config writer."""

    tmp_path: Path
    local: FakeProviderServer
    openai: FakeProviderServer
    cheap: FakeProviderServer
    overrides: dict[str, Any] = field(default_factory=dict)

    def config_data(self) -> dict[str, Any]:
        return {
            "providers": {
                "local_ollama": {
                    "sdk": "ollama",
                    "api_base": self.local.url,
                    "model": "llama3.2:3b",
                    "local": True,
                    "vision": True,
                },
                "ollama_cloud": {
                    "sdk": "ollama",
                    "api_base": self.cheap.url,
                    "api_key": "${AEGIS_TEST_CHEAP_KEY}",
                    "model": "gpt-oss:120b",
                    "monthly_budget_usd": 120,
                    "price": {"input_per_mtok": 0.10, "output_per_mtok": 0.40},
                },
                "openai": {
                    "sdk": "openai",
                    "api_base": self.openai.openai_base,
                    "api_key": "${AEGIS_TEST_OPENAI_KEY}",
                    "model": "gpt-4o",
                    "monthly_budget_usd": 80,
                    "timeout_s": 5,
                },
            },
            "routing": {
                "deadline_s": 10,
                "rules": [
                    {
                        "name": "critical_to_openai",
                        "when": {"quality": "critical", "complexity": "high"},
                        "route": ["openai", "ollama_cloud", "local_ollama"],
                    },
                    {
                        "name": "batch_to_cloud",
                        "when": {"min_batch_size": 11},
                        "route": ["ollama_cloud", "local_ollama"],
                    },
                ],
                "default": ["local_ollama"],
            },
            "ledger": {"path": str(self.tmp_path / "ledger.db")},
            "resilience": {"retries": 0},  # tests of retries turn them on
        }

    def write_config(self, data: dict[str, Any] | None = None) -> Path:
        path = self.tmp_path / "aegis.yaml"
        path.write_text(yaml.safe_dump(data or self.config_data()))
        return path

    def proxy(self, data: dict[str, Any] | None = None) -> AegisLLMProxy:
        return AegisLLMProxy.from_config(self.write_config(data))

    def servers(self) -> dict[str, FakeProviderServer]:
        return {"local_ollama": self.local, "openai": self.openai, "ollama_cloud": self.cheap}


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    monkeypatch.setenv("AEGIS_TEST_OPENAI_KEY", OPENAI_KEY)
    monkeypatch.setenv("AEGIS_TEST_CHEAP_KEY", CHEAP_KEY)
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with (
        FakeProviderServer() as local,
        FakeProviderServer() as openai,
        FakeProviderServer() as cheap,
    ):
        yield Rig(tmp_path, local, openai, cheap)
