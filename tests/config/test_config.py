"""Config loading: typed models, ${VAR} interpolation, and errors that name file and key."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from aegis_proxy.config import load_config
from aegis_proxy.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "aegis.yaml"


def _base() -> dict[str, object]:
    return {
        "providers": {
            "local": {"sdk": "ollama", "model": "llama3.2:3b", "local": True},
            "cloud": {
                "sdk": "openai",
                "model": "gpt-4o",
                "api_key": "sk-test",
                "monthly_budget_usd": 10,
            },
        },
        "routing": {
            "rules": [
                {"name": "crit", "when": {"quality": "critical"}, "route": ["cloud", "local"]}
            ],
            "default": ["local"],
        },
    }


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "aegis.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_example_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example config of the repository loads with the three AEGIS rules."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-example")
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)
    config = load_config(EXAMPLE)
    assert [r.name for r in config.routing.rules] == ["critical_to_openai", "batch_to_cloud"]
    assert config.providers["openai"].unavailable_reason is None
    assert config.providers["ollama_cloud"].unavailable_reason == (
        "environment variable OLLAMA_API_KEY is not set"
    )
    assert config.providers["openai"].api_key is not None
    assert config.providers["openai"].api_key.get_secret_value() == "sk-example"
    assert "sk-example" not in repr(config)


def test_unset_key_makes_provider_unavailable_not_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A provider whose ${VAR} is unset loads as unavailable with the variable named."""
    monkeypatch.delenv("AEGIS_TEST_UNSET", raising=False)
    data = _base()
    data["providers"]["cloud"]["api_key"] = "${AEGIS_TEST_UNSET}"  # type: ignore[index]
    config = load_config(_write(tmp_path, data))
    assert config.providers["cloud"].unavailable_reason == (
        "environment variable AEGIS_TEST_UNSET is not set"
    )


def test_env_default_syntax(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """${VAR:-default} uses the default when VAR is unset."""
    monkeypatch.delenv("AEGIS_TEST_BASE", raising=False)
    data = _base()
    data["providers"]["local"]["api_base"] = "${AEGIS_TEST_BASE:-http://127.0.0.1:9}"  # type: ignore[index]
    config = load_config(_write(tmp_path, data))
    assert config.providers["local"].api_base == "http://127.0.0.1:9"


def test_price_from_cost_map_and_override(tmp_path: Path) -> None:
    """gpt-4o is priced from the LiteLLM map; an explicit price wins over the map."""
    data = _base()
    config = load_config(_write(tmp_path, data))
    assert config.providers["cloud"].resolved_price.input_per_mtok == Decimal("2.5")
    data["providers"]["cloud"]["price"] = {"input_per_mtok": 1, "output_per_mtok": 2}  # type: ignore[index]
    config = load_config(_write(tmp_path, data))
    assert config.providers["cloud"].resolved_price.output_per_mtok == Decimal(2)
    assert config.providers["local"].resolved_price.is_free


def _set(data: dict[str, object], dotted: str, value: object) -> None:
    node: object = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]  # type: ignore[index]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value  # type: ignore[index]


BAD_CONFIGS = [
    ("routing.rules.0.route", ["nowhere"], "routing.rules[0].route[0]", "unknown provider"),
    ("routing.default", [], "routing.default", "at least 1"),
    ("routing.rules.0.route", [], "routing.rules[0].route", "at least 1"),
    ("providers.cloud.sdk", "no_such_sdk", "providers.cloud.sdk", "unknown any-llm provider"),
    ("providers.cloud.timeout_s", "soon", "providers.cloud.timeout_s", "valid number"),
    (
        "providers.cloud.monthly_budget_usd",
        -1,
        "providers.cloud.monthly_budget_usd",
        "greater than or equal to 0",
    ),
    ("providers.cloud.colour", "blue", "providers.cloud.colour", "unknown key"),
    ("routing.rules.0.when.quality", "supreme", "routing.rules[0].when.quality[0]", "standard"),
    ("providers.cloud.model", "gpt-unheard-of-9", "providers.cloud.price", "no price"),
    (
        "routing.rules.0.when.min_batch_size",
        0,
        "routing.rules[0].when.min_batch_size",
        "greater than or equal to 1",
    ),
]


@pytest.mark.parametrize(("key", "value", "named", "problem"), BAD_CONFIGS)
def test_bad_config_names_file_and_key(
    tmp_path: Path, key: str, value: object, named: str, problem: str
) -> None:
    """Each bad input raises ConfigError naming the file and the dotted key."""
    data = _base()
    _set(data, key, value)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == str(path)
    assert info.value.key == named
    assert problem in info.value.problem
    assert str(path) in str(info.value)


def test_duplicate_rule_names(tmp_path: Path) -> None:
    """Two rules with one name are refused, naming the second."""
    data = _base()
    rules = data["routing"]["rules"]  # type: ignore[index]
    rules.append(dict(rules[0]))
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, data))
    assert info.value.key == "routing.rules[1].name"
    assert "duplicate" in info.value.problem


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    """A YAML syntax error names the file and the line."""
    path = tmp_path / "broken.yaml"
    path.write_text("providers:\n  a: {sdk: ollama\nrouting: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == str(path)
    assert "line 3" in info.value.problem


def test_missing_file(tmp_path: Path) -> None:
    """A missing file is a ConfigError naming it."""
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match="cannot read file") as info:
        load_config(path)
    assert info.value.path == str(path)


def test_unset_var_outside_providers_is_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unset ${VAR} outside a provider cannot make anything unavailable: it is an error."""
    monkeypatch.delenv("AEGIS_TEST_LEDGER", raising=False)
    data = _base()
    data["ledger"] = {"path": "${AEGIS_TEST_LEDGER}"}
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, data))
    assert info.value.key == "ledger.path"
    assert "AEGIS_TEST_LEDGER" in info.value.problem


def test_route_entry_with_model(tmp_path: Path) -> None:
    """A route entry may name a model other than the provider's default."""
    data = _base()
    data["routing"]["default"] = [{"provider": "local", "model": "qwen2:0.5b"}]  # type: ignore[index]
    config = load_config(_write(tmp_path, data))
    assert config.routing.default[0].model == "qwen2:0.5b"


_PROVIDERS = "providers:\n  a: {sdk: ollama, model: m, local: true}\nrouting:\n  default: [a]\n"
DUPLICATES = [
    (
        "privacy",
        "privacy:\n  pii_action: block\n" + _PROVIDERS + "privacy:\n  pii_action: route_local\n",
        "line 7 repeats the key of line 1",
    ),
    (
        "providers.cloud.local",
        "providers:\n  cloud:\n    sdk: openai\n    model: gpt-4o\n    local: false\n"
        "    api_key: k\n    local: true\nrouting:\n  default: [cloud]\n",
        "line 7 repeats the key of line 5",
    ),
    (
        "routing.rules[0].when.quality",
        _PROVIDERS + "  rules:\n    - name: r\n      when:\n        quality: critical\n"
        "        quality: standard\n      route: [a]\n",
        "line 9 repeats the key of line 8",
    ),
]


@pytest.mark.parametrize(("key", "text", "lines"), DUPLICATES, ids=[d[0] for d in DUPLICATES])
def test_duplicate_yaml_key_names_key_and_both_lines(
    tmp_path: Path, key: str, text: str, lines: str
) -> None:
    """A key given twice in one mapping, at any depth, is a ConfigError with both lines."""
    path = tmp_path / "aegis.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.path, info.value.key) == (str(path), key)
    assert info.value.problem == f"duplicate key: {lines}"


def test_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    """A key merged in with << and then set explicitly is no duplicate (YAML's intent)."""
    path = tmp_path / "aegis.yaml"
    path.write_text(
        "providers:\n  a: &base {sdk: ollama, model: m, local: true}\n"
        "  b:\n    <<: *base\n    model: other\nrouting:\n  default: [a, b]\n"
    )
    assert load_config(path).providers["b"].model == "other"


@pytest.mark.parametrize(
    ("ledger", "key"),
    [
        ({"path": ""}, "ledger.path"),
        ({"path": "   "}, "ledger.path"),
        ({"url": "sqlite://ledger.db"}, "ledger.url"),
        ({"url": "sqlite:///"}, "ledger.url"),
        ({"url": "postgresql://host:notaport/db"}, "ledger.url"),
        ({"url": "postgresql://host:99999/db"}, "ledger.url"),
        ({"url": "postgresql://[::1/db"}, "ledger.url"),
        ({"url": "postgresql://host/db name"}, "ledger.url"),
        ({"url": "mysql://host/db"}, "ledger.url"),
    ],
)
def test_bad_ledger_place_fails_at_load(tmp_path: Path, ledger: dict[str, str], key: str) -> None:
    """An empty ledger.path or a malformed ledger.url is a ConfigError at load time."""
    data = _base()
    data["ledger"] = ledger
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.path, info.value.key) == (str(path), key)


def test_good_ledger_urls_load(tmp_path: Path) -> None:
    """sqlite:///PATH and libpq URLs (with or without host, port, query) are accepted."""
    for url in (
        "sqlite:///x.db",
        "postgresql://u@127.0.0.1:5432/test",
        "postgresql:///t?host=/tmp",
    ):
        data = _base()
        data["ledger"] = {"url": url}
        assert load_config(_write(tmp_path, data)).ledger.url == url
