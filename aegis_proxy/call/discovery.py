"""Which models a local server really has, and whether the config's routes name only those.

A route that names a model the local Ollama never pulled fails on the first private
request, at the worst moment: personal data has nowhere else to go. This module lists the
models a server offers (Ollama ``GET /api/tags``, OpenAI-compatible ``GET /v1/models``)
and checks them against every model the config can send to a ``local: true`` provider,
once, when a proxy starts. What must always hold:

- only listing endpoints are called, with a short timeout; never a chat request, and a
  provider's API key (if any) goes only to that provider's own server;
- ``check_local_models`` in ``fail`` mode raises ``ConfigError`` naming the config key of
  the missing model (``providers.local_ollama.model``, ``routing.rules[0].route[1].model``)
  or of the server (``providers.local_ollama.api_base``) when it cannot be reached; in
  ``warn`` mode it logs the same as a warning and returns;
- an Ollama name without a tag means ``:latest``, as Ollama itself reads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import httpx

from aegis_proxy.errors import ConfigError
from aegis_proxy.observe.logs import get_logger

if TYPE_CHECKING:
    from aegis_proxy.config import AegisConfig
    from aegis_proxy.config.providers import ProviderConfig

CheckMode = Literal["off", "warn", "fail"]

OLLAMA_DEFAULT_BASE = "http://localhost:11434"
DEFAULT_TIMEOUT_S = 2.0

log = get_logger("aegis_proxy.discovery")


@dataclass(frozen=True, slots=True)
class ServerModels:
    """What one provider's server lists, and which of the config's models it lacks."""

    provider: str
    url: str
    models: tuple[str, ...]
    wanted: tuple[tuple[str, str], ...]  # (model, config key) the config may send here
    error: str | None = None  # why the server could not be listed

    @property
    def missing(self) -> tuple[tuple[str, str], ...]:
        """The wanted (model, key) pairs the server does not list (none if unreachable)."""
        if self.error is not None:
            return ()
        have = {_canonical(name) for name in self.models}
        return tuple((m, key) for m, key in self.wanted if _canonical(m) not in have)

    def to_dict(self) -> dict[str, object]:
        return {
            "provider": self.provider,
            "url": self.url,
            "models": list(self.models),
            "wanted": [m for m, _ in self.wanted],
            "missing": [m for m, _ in self.missing],
            "error": self.error,
        }


def listing_url(provider: ProviderConfig) -> str | None:
    """The URL that lists the provider's models, or None when it has no known server."""
    if provider.sdk == "ollama":
        base = (provider.api_base or OLLAMA_DEFAULT_BASE).rstrip("/")
        return f"{base.removesuffix('/v1')}/api/tags"
    if provider.api_base is None:
        return None
    return f"{provider.api_base.rstrip('/')}/models"  # OpenAI-compatible: base ends in /v1


def list_models(provider: ProviderConfig, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[str]:
    """The model names the provider's server lists; raises ``httpx.HTTPError`` or
    ``ValueError`` (for an answer that is not a model list)."""
    url = listing_url(provider)
    if url is None:
        raise ValueError("no api_base to list models from")
    headers = {}
    if provider.api_key is not None:  # its own key, to its own server only
        headers["Authorization"] = f"Bearer {provider.api_key.get_secret_value()}"
    response = httpx.get(url, headers=headers, timeout=timeout_s)
    response.raise_for_status()
    return _names(response.json(), ollama=url.endswith("/api/tags"))


def discover(
    config: AegisConfig, *, local_only: bool = True, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[ServerModels]:
    """List the models of each local provider (or of every provider with a server)."""
    wanted = wanted_models(config)
    found = []
    for name, provider in config.providers.items():
        url = listing_url(provider)
        if url is None or (local_only and not provider.local):
            continue
        try:
            models, error = tuple(list_models(provider, timeout_s=timeout_s)), None
        except (httpx.HTTPError, ValueError) as exc:
            models, error = (), _problem(exc)
        found.append(ServerModels(name, url, models, tuple(wanted.get(name, ())), error))
    return found


def check_local_models(
    config: AegisConfig, mode: CheckMode = "warn", *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[ServerModels]:
    """Check that each local server has every model the config may route to it.

    ``fail`` raises ``ConfigError`` at the first problem; ``warn`` logs each one; ``off``
    checks nothing. Returns what was found.
    """
    if mode == "off":
        return []
    found = discover(config, local_only=True, timeout_s=timeout_s)
    for server in found:
        _report(config, server, mode)
    return found


def wanted_models(config: AegisConfig) -> dict[str, list[tuple[str, str]]]:
    """Per provider, each model the config may send it, with the key that names it.

    A provider's default ``model`` always counts: PII falls back to every local provider.
    """
    wanted = {name: [(p.model, f"providers.{name}.model")] for name, p in config.providers.items()}
    routes = [(f"routing.rules[{i}].route", r.route) for i, r in enumerate(config.routing.rules)]
    routes.append(("routing.default", config.routing.default))
    for key, route in routes:
        for j, entry in enumerate(route):
            named = [m for m, _ in wanted[entry.provider]]
            if entry.model is not None and entry.model not in named:
                wanted[entry.provider].append((entry.model, f"{key}[{j}].model"))
    return wanted


def render_models(found: list[ServerModels], fmt: str = "table") -> str:
    """``aegis-proxy models`` output: each server's models, the config's marked."""
    if fmt == "json":
        return json.dumps([server.to_dict() for server in found], indent=2)
    if fmt != "table":
        raise ValueError(f"unknown models format: {fmt!r}")
    if not found:
        return "no provider with a server to list (local providers need an api_base)"
    return "\n".join(line for server in found for line in _server_lines(server))


def _server_lines(server: ServerModels) -> list[str]:
    head = f"{server.provider}  {server.url}"
    if server.error is not None:
        return [f"{head}  UNREACHABLE: {server.error}"]
    wanted = {_canonical(m) for m, _ in server.wanted}
    lines = [f"{head}  ({len(server.models)} models)"]
    lines += [f"  {'*' if _canonical(m) in wanted else ' '} {m}" for m in server.models]
    lines += [f"  ! {m}  MISSING (named by {key})" for m, key in server.missing]
    return lines


def _report(config: AegisConfig, server: ServerModels, mode: CheckMode) -> None:
    if server.error is not None:
        problem = f"cannot list the models of local server {server.url}: {server.error}"
        _raise_or_warn(config, f"providers.{server.provider}.api_base", problem, mode, server)
    for model, key in server.missing:
        have = ", ".join(server.models) or "none"
        problem = f"local server {server.url} has no model {model!r} (it has: {have})"
        _raise_or_warn(config, key, problem, mode, server, model=model)


def _raise_or_warn(
    config: AegisConfig, key: str, problem: str, mode: CheckMode, server: ServerModels, **extra: Any
) -> None:
    if mode == "fail":
        raise ConfigError(config.source, key, problem)
    event = "local_model_missing" if extra else "local_server_unreachable"
    # the config key as `config_entry`: a field named `key` is dropped by the log filter
    log.warning(event, provider=server.provider, config_entry=key, url=server.url,
                error=server.error, **extra)  # fmt: skip


def _names(body: Any, *, ollama: bool) -> list[str]:
    items = body.get("models" if ollama else "data") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise ValueError("the answer is not a model list")
    field = ("name", "model") if ollama else ("id",)
    names = [next((item[f] for f in field if isinstance(item.get(f), str)), None)
             for item in items if isinstance(item, dict)]  # fmt: skip
    return [name for name in names if name]


def _canonical(name: str) -> str:
    """Ollama reads ``llama3.2`` as ``llama3.2:latest``; other servers' ids are unchanged."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _problem(exc: BaseException) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unreachable"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
