"""Nothing from the process environment reaches a provider unless its config names it.

The OpenAI SDK reads OPENAI_ORG_ID, OPENAI_PROJECT_ID, OPENAI_CUSTOM_HEADERS and
OPENAI_BASE_URL when it is not given them; these tests set all of them and look at the
headers the fake servers received (real HTTP through the real SDKs).
"""

from __future__ import annotations

import pytest

from aegis_proxy import LLMTask
from aegis_proxy.call.ambient import OLLAMA_DEFAULT_BASE
from aegis_proxy.call.client import ProviderClient
from aegis_proxy.config import load_config
from aegis_proxy.errors import ConfigError
from tests.conftest import Rig

CRITICAL = LLMTask(quality="critical", complexity="high")
HELLO = [{"role": "user", "content": "hello"}]
AMBIENT_HEADERS = ("openai-organization", "openai-project", "x-leak")


@pytest.fixture
def ambient(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> Rig:
    """The rig, in a process whose environment names another OpenAI account."""
    monkeypatch.setenv("OPENAI_ORG_ID", "org-from-environment")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-from-environment")
    monkeypatch.setenv("OPENAI_CUSTOM_HEADERS", "X-Leak: from-environment")
    monkeypatch.setenv("OPENAI_ADMIN_KEY", "sk-admin-from-environment")
    monkeypatch.setenv("OPENAI_BASE_URL", rig.cheap.openai_base)
    monkeypatch.setenv("OLLAMA_HOST", rig.cheap.url)
    return rig


async def test_environment_organization_and_project_are_not_sent(ambient: Rig) -> None:
    """With no organization/project in the config, no such header (nor an env header) is sent."""
    async with ambient.proxy() as proxy:
        response = await proxy.acompletion(HELLO, CRITICAL, max_tokens=8)
    assert response.aegis.provider == "openai"
    [chat] = ambient.openai.chat_requests()
    assert [h for h in AMBIENT_HEADERS if h in chat.headers] == []
    assert "from-environment" not in str(chat.headers)
    assert ambient.cheap.requests == []


async def test_configured_organization_and_project_are_sent(ambient: Rig) -> None:
    """A provider's own organization and project are its headers, whatever the environment."""
    data = ambient.config_data()
    data["providers"]["openai"] |= {"organization": "org-config", "project": "proj-config"}
    async with ambient.proxy(data) as proxy:
        await proxy.acompletion(HELLO, CRITICAL, max_tokens=8)
    [chat] = ambient.openai.chat_requests()
    assert (chat.headers["openai-organization"], chat.headers["openai-project"]) == (
        "org-config",
        "proj-config",
    )
    assert "x-leak" not in chat.headers


def test_a_provider_without_api_base_gets_the_sdk_default_not_the_environment(
    ambient: Rig,
) -> None:
    """OPENAI_BASE_URL / OLLAMA_HOST never redirect a provider whose config names no api_base."""
    data = ambient.config_data()
    del data["providers"]["openai"]["api_base"]
    del data["providers"]["local_ollama"]["api_base"]
    config = load_config(ambient.write_config(data))
    openai = ProviderClient("openai", config.providers["openai"])
    local = ProviderClient("local_ollama", config.providers["local_ollama"])
    openai.prepare()
    local.prepare()
    try:
        sdk_openai = openai._shards[0].client.client
        sdk_ollama = local._shards[0].client.client
        assert str(sdk_openai.base_url) == "https://api.openai.com/v1/"
        assert str(sdk_ollama._client.base_url) == OLLAMA_DEFAULT_BASE
        assert (sdk_openai.organization, sdk_openai.project, sdk_openai.admin_api_key) == (
            None,
            None,
            None,
        )
    finally:
        openai._shards.clear()
        local._shards.clear()


def test_organization_on_an_ollama_provider_is_a_config_error(rig: Rig) -> None:
    """The ollama SDK sends no organization: naming one there is a ConfigError, not ignored."""
    data = rig.config_data()
    data["providers"]["ollama_cloud"]["organization"] = "org-x"
    path = rig.write_config(data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "providers.ollama_cloud.organization"
