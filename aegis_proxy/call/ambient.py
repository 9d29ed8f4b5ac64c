"""What a provider's SDK client would pick up from the process environment, and stopping it.

Why it exists: the SDKs fill in what they are not given from the environment. The OpenAI
SDK sends ``OPENAI_ORG_ID`` and ``OPENAI_PROJECT_ID`` as ``OpenAI-Organization`` and
``OpenAI-Project`` headers to *every* OpenAI-protocol server, adds the headers of
``OPENAI_CUSTOM_HEADERS``, and keeps ``OPENAI_ADMIN_KEY``; any-llm sends a provider without
an ``api_base`` to ``OPENAI_BASE_URL`` (or ``OLLAMA_HOST``, ...). In a process that also
talks to another OpenAI account, that sends one account's identifiers (and, through a
base URL, its key) to the wrong place.

What must always hold: a provider's client sends only what its config names: its
``api_base`` (else the SDK's documented default, never an environment variable), its
``api_key`` (``aegis_proxy.call.client``), its ``organization`` and ``project`` (else
none), and no header taken from the environment. Nothing here imports an SDK: it works on
the clients ``aegis_proxy.call.client`` made.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aegis_proxy.config.providers import ProviderConfig

OLLAMA_DEFAULT_BASE = "http://127.0.0.1:11434"
"""Where the ollama SDK goes when given no host (and no ``OLLAMA_HOST``)."""


def explicit_api_base(config: ProviderConfig, provider_class: type[Any] | None) -> str | None:
    """The base URL to hand the SDK: the config's, else the SDK's default, never the env's."""
    if config.api_base:
        return config.api_base
    if config.sdk == "ollama":
        return OLLAMA_DEFAULT_BASE
    default = getattr(provider_class, "API_BASE", None)
    return default if isinstance(default, str) and default else None


def drop_ambient_settings(client: Any, config: ProviderConfig) -> None:
    """Replace what an OpenAI SDK client read from the environment by the config's values.

    ``AsyncOpenAI`` reads them in its constructor when given None, so they are set after
    it: organization and project from the config (None sends no header), no admin key, no
    webhook secret, none of the headers of ``OPENAI_CUSTOM_HEADERS``.
    """
    inner = getattr(client, "client", None)
    if inner is None or not hasattr(inner, "organization") or not hasattr(inner, "project"):
        return  # not an OpenAI SDK client: nothing of this kind to drop
    inner.organization = config.organization
    inner.project = config.project
    for name, empty in (
        ("admin_api_key", None),
        ("webhook_secret", None),
        ("_ambient_authorizations", frozenset()),
    ):
        if hasattr(inner, name):
            setattr(inner, name, empty)
    headers = getattr(inner, "_custom_headers", None)
    if isinstance(headers, dict):
        for name in _environment_header_names():
            headers.pop(name, None)


def _environment_header_names() -> list[str]:
    """The header names in ``OPENAI_CUSTOM_HEADERS`` ("Name: value" lines), read as the SDK does."""
    lines = os.environ.get("OPENAI_CUSTOM_HEADERS", "").split("\n")
    return [line[: line.find(":")].strip() for line in lines if ":" in line]
