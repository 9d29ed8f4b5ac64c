"""Load and validate the YAML config into typed objects, once.

What must always hold:
- every bad input raises ``ConfigError`` naming the file and the dotted key
  (``providers.openai.timeout_s``, ``routing.rules[1].route[0]``), YAML syntax errors with
  their line;
- a key given twice in one mapping, at any depth, is a ``ConfigError`` naming the key and
  both lines: never "the last one wins" (a second ``privacy:`` block, a repeated
  ``local: true``);
- ``${VAR}`` (or ``${VAR:-default}``) is read from the environment; a provider whose
  variable is unset is *unavailable* (``ProviderConfig.unavailable_reason``), not an error;
- a paid (non-local) provider whose model has no price, neither ``price`` nor LiteLLM's
  cost map, is a ``ConfigError``: never a silent $0;
- API keys are ``SecretStr``: they never show in a repr, a log line or an error message.

The sections' models live in ``config_providers``, ``config_routing`` and
``config_sections``; every config name is importable from here.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import Field, ValidationError

from aegis_proxy.config.providers import (
    PriceConfig,
    ProviderConfig,
    check_sdks,
    known_sdks,
    resolve_providers,
)
from aegis_proxy.config.routing import (
    Complexity,
    DataClassification,
    Quality,
    RouteEntry,
    RoutingConfig,
    RoutingRule,
    RuleWhen,
    check_routes,
)
from aegis_proxy.config.sections import (
    BudgetsConfig,
    CacheConfig,
    DiscoveryConfig,
    LedgerConfig,
    PiiAction,
    PrivacyConfig,
    RecognizerConfig,
    ResilienceConfig,
    StrictModel,
)
from aegis_proxy.errors import ConfigError

__all__ = [
    "AegisConfig",
    "BudgetsConfig",
    "CacheConfig",
    "Complexity",
    "DataClassification",
    "DiscoveryConfig",
    "LedgerConfig",
    "PiiAction",
    "PriceConfig",
    "PrivacyConfig",
    "ProviderConfig",
    "Quality",
    "RecognizerConfig",
    "ResilienceConfig",
    "RouteEntry",
    "RoutingConfig",
    "RoutingRule",
    "RuleWhen",
    "known_sdks",
    "load_config",
]

DEFAULT_CONFIG_PATH = "config/aegis.yaml"
"""The default proxy's config when ``$AEGIS_CONFIG`` is unset (``aegis_proxy.default``)."""
_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class AegisConfig(StrictModel):
    providers: dict[str, ProviderConfig] = Field(min_length=1)
    routing: RoutingConfig
    privacy: PrivacyConfig = PrivacyConfig()
    ledger: LedgerConfig = LedgerConfig()
    budgets: BudgetsConfig = BudgetsConfig()
    resilience: ResilienceConfig = ResilienceConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()
    cache: CacheConfig = CacheConfig()
    source: str = "<memory>"


def load_config(path: str | os.PathLike[str]) -> AegisConfig:
    """Read, interpolate and validate a config file; raise ConfigError naming file and key."""
    name = str(path)
    raw = _read_yaml(name)
    missing: dict[str, list[str]] = {}
    data = _interpolate(raw, name, "", missing)
    if not isinstance(data, dict):
        raise ConfigError(name, "", "the top level must be a mapping")
    data["source"] = name
    try:
        config = AegisConfig.model_validate(data)
    except ValidationError as exc:
        raise _config_error(name, exc) from None
    check_routes(config.routing, config.providers, name)
    check_sdks(config.providers, name)
    resolve_providers(config.providers, config.routing, name, missing)
    return config


def _read_yaml(name: str) -> Any:
    try:
        text = Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(name, "", f"cannot read file: {exc.strerror}{_whence(name)}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader) or {}  # noqa: S506  # a SafeLoader
    except _DuplicateKeyError as exc:
        raise ConfigError(name, exc.key, exc.problem) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(name, "", f"YAML syntax error at {line}{problem}") from None


class _DuplicateKeyError(yaml.YAMLError):
    """A mapping names one key twice; ``key`` is its dotted path."""

    def __init__(self, key: str, first: int, second: int) -> None:
        self.key = key
        self.problem = f"duplicate key: line {second} repeats the key of line {first}"
        super().__init__(f"{key}: {self.problem}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (YAML says it is an
    error; PyYAML keeps the last one, so a second ``privacy:`` block silently replaced the
    first). Keys merged in with ``<<`` may still be overridden, as YAML intends.
    """

    def construct_document(self, node: yaml.Node) -> Any:
        self._paths: dict[int, str] = {}
        self._name_paths(node, "")
        return super().construct_document(node)

    def _name_paths(self, node: yaml.Node, path: str) -> None:
        self._paths[id(node)] = path
        if isinstance(node, yaml.SequenceNode):
            for i, child in enumerate(node.value):
                self._name_paths(child, f"{path}[{i}]")
        elif isinstance(node, yaml.MappingNode):
            for key_node, child in node.value:
                self._name_paths(child, _join(path, str(key_node.value)))

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, str | int | float | bool) or key is None:
                if key in seen:
                    path = _join(self._paths.get(id(node), ""), str(key))
                    raise _DuplicateKeyError(path, seen[key], line)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _interpolate(value: Any, name: str, key: str, missing: dict[str, list[str]]) -> Any:
    """Replace ${VAR} in every string; an unset VAR under providers.<p> marks p unavailable."""
    if isinstance(value, dict):
        return {k: _interpolate(v, name, _join(key, str(k)), missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, name, f"{key}[{i}]", missing) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    unset = [m.group(1) for m in _ENV_PATTERN.finditer(value) if _env(m) is None]
    if not unset:
        return _ENV_PATTERN.sub(lambda m: _env(m) or "", value)
    parts = key.split(".")
    if parts[0] != "providers" or len(parts) < 3:
        raise ConfigError(name, key, f"environment variable {unset[0]} is not set")
    missing.setdefault(parts[1], []).extend(unset)
    return None


def _whence(name: str) -> str:
    """Where a missing file's name came from, when it is the default proxy's config."""
    if os.environ.get("AEGIS_CONFIG") == name:
        return " (the file $AEGIS_CONFIG names)"
    if Path(name) == Path(DEFAULT_CONFIG_PATH):
        return f" (the default {DEFAULT_CONFIG_PATH}: set $AEGIS_CONFIG to your config file)"
    return ""


def _env(match: re.Match[str]) -> str | None:
    return os.environ.get(match.group(1), match.group(2))


def _join(key: str, part: str) -> str:
    return f"{key}.{part}" if key else part


def _config_error(name: str, exc: ValidationError) -> ConfigError:
    first = exc.errors()[0]
    key = ""
    for part in first["loc"]:
        key = f"{key}[{part}]" if isinstance(part, int) else _join(key, str(part))
    problem = first["msg"]
    if first["type"] == "extra_forbidden":
        problem = "unknown key" + _did_you_mean(first["loc"])
    return ConfigError(name, key, problem)


def _did_you_mean(loc: tuple[int | str, ...]) -> str:
    """`` (did you mean 'timeout_s'?)`` when the unknown key is close to a known one."""
    model: Any = AegisConfig
    for part in loc[:-1]:
        model = _inner(model, part)
    fields = getattr(_unwrapped(model), "model_fields", None)
    if not isinstance(fields, dict):
        return ""
    known = [field.alias or key for key, field in fields.items() if key != "source"]
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _inner(annotation: Any, part: int | str) -> Any:
    """The type found one step (``part``) inside a value of type ``annotation``."""
    annotation = _unwrapped(annotation)
    fields = getattr(annotation, "model_fields", None)
    if isinstance(fields, dict):
        field = fields.get(str(part))
        return field.annotation if field is not None else None
    args = get_args(annotation)
    if get_origin(annotation) is dict and len(args) == 2:
        return args[1]
    if get_origin(annotation) is list and args:
        return args[0]
    return None


def _unwrapped(annotation: Any) -> Any:
    """``Model`` for ``Model | None``; anything else as it is."""
    if get_origin(annotation) not in (Union, UnionType):
        return annotation
    models = [arg for arg in get_args(annotation) if hasattr(arg, "model_fields")]
    return models[0] if len(models) == 1 else annotation
