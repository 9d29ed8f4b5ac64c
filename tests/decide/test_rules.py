"""Routing policy: the AEGIS rules as a table, first match wins, privacy outside the rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from aegis_proxy.config import AegisConfig, load_config
from aegis_proxy.decide.rules import LLMTask, decide_route, restrict_to_local
from aegis_proxy.errors import PrivacyViolationError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "aegis.yaml"


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch) -> AegisConfig:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-policy")
    monkeypatch.setenv("OLLAMA_API_KEY", "ollama-policy")
    return load_config(EXAMPLE)


ROUTES = [
    ({"quality": "critical", "complexity": "high"}, "critical_to_openai",
     ("openai", "ollama_cloud", "local_ollama")),
    ({"quality": "critical", "complexity": "high", "batch_size": 50}, "critical_to_openai",
     ("openai", "ollama_cloud", "local_ollama")),
    ({"batch_size": 11}, "batch_to_cloud", ("ollama_cloud", "local_ollama")),
    ({"batch_size": 25, "quality": "critical"}, "batch_to_cloud", ("ollama_cloud", "local_ollama")),
    ({"batch_size": 10}, "default", ("local_ollama",)),
    ({"quality": "critical", "complexity": "medium"}, "default", ("local_ollama",)),
    ({"quality": "high", "complexity": "high"}, "default", ("local_ollama",)),
    ({}, "default", ("local_ollama",)),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "rule", "providers"), ROUTES)
def test_aegis_rules(
    config: AegisConfig, fields: dict[str, object], rule: str, providers: tuple[str, ...]
) -> None:
    """Each task lands on the rule and providers of the AEGIS policy."""
    route = decide_route(config.routing, LLMTask.model_validate(fields))
    assert route.rule == rule
    assert route.providers == providers


def test_reason_names_rule_and_conditions(config: AegisConfig) -> None:
    """The reason says which rule matched on which conditions."""
    route = decide_route(config.routing, LLMTask(quality="critical", complexity="high"))
    assert route.reason == "rule critical_to_openai matched (quality=critical, complexity=high)"


@pytest.mark.parametrize(
    ("when", "fields", "matches"),
    [
        ({"task_type": ["vision", "extraction"]}, {"task_type": "vision"}, True),
        ({"task_type": "vision"}, {"task_type": "query"}, False),
        ({"agent": "annotator"}, {"agent": "annotator"}, True),
        ({"agent": "annotator"}, {}, False),
        ({"tags": ["nightly", "bulk"]}, {"tags": ["bulk", "nightly", "x"]}, True),
        ({"tags": ["nightly", "bulk"]}, {"tags": ["bulk"]}, False),
        ({"data_classification": "public"}, {"data_classification": "public"}, True),
        ({"max_batch_size": 3}, {"batch_size": 4}, False),
        ({}, {}, True),
    ],
)
def test_conditions(
    tmp_path: Path, when: dict[str, object], fields: dict[str, object], matches: bool
) -> None:
    """Every condition kind matches exactly the tasks it names."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "providers:\n  l: {sdk: ollama, model: m, local: true}\n"
        f"routing:\n  rules: [{{name: r, when: {when}, route: [l]}}]\n  default: [l]\n"
    )
    route = decide_route(load_config(path).routing, LLMTask.model_validate(fields))
    assert (route.rule == "r") is matches


def test_first_match_wins(tmp_path: Path) -> None:
    """Of two matching rules, the first in the file wins."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "providers:\n  a: {sdk: ollama, model: m, local: true}\n"
        "  b: {sdk: ollama, model: n, local: true}\n"
        "routing:\n  rules:\n    - {name: first, when: {quality: high}, route: [a]}\n"
        "    - {name: second, when: {quality: high}, route: [b]}\n  default: [a]\n"
    )
    route = decide_route(load_config(path).routing, LLMTask(quality="high"))
    assert (route.rule, route.providers) == ("first", ("a",))


def test_restrict_to_local_keeps_only_local(config: AegisConfig) -> None:
    """PII removes every non-local provider of the route, and says which."""
    route = decide_route(config.routing, LLMTask(quality="critical", complexity="high"))
    local = restrict_to_local(route, config.providers, ["EMAIL"])
    assert local.providers == ("local_ollama",)
    assert local.removed == ("openai", "ollama_cloud")
    assert "personal data (EMAIL)" in local.reason


def test_restrict_to_local_falls_back_to_config_locals(tmp_path: Path) -> None:
    """A PII request on an all-cloud route goes to the config's local provider."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "providers:\n  l: {sdk: ollama, model: m, local: true}\n"
        "  c: {sdk: ollama, model: m, price: {input_per_mtok: 1, output_per_mtok: 1}}\n"
        "routing:\n  default: [c]\n"
    )
    config = load_config(path)
    route = restrict_to_local(decide_route(config.routing, LLMTask()), config.providers, ["PHONE"])
    assert route.providers == ("l",)
    assert route.removed == ("c",)


def test_restrict_to_local_without_local_provider_raises(tmp_path: Path) -> None:
    """With no local provider at all, PII raises PrivacyViolationError naming what was removed."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "providers:\n  c: {sdk: ollama, model: m, price: {input_per_mtok: 1, output_per_mtok: 1}}\n"
        "routing:\n  default: [c]\n"
    )
    config = load_config(path)
    with pytest.raises(PrivacyViolationError) as info:
        restrict_to_local(decide_route(config.routing, LLMTask()), config.providers, [])
    assert info.value.removed == ("c",)
    assert info.value.entity_types == ()


def test_task_rejects_unknown_values() -> None:
    """LLMTask refuses values outside the contract."""
    with pytest.raises(ValueError, match="quality"):
        LLMTask(quality="supreme")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        LLMTask(batch_size=0)


def _split_config(tmp_path: Path, percent: float) -> AegisConfig:
    path = tmp_path / "split.yaml"
    path.write_text(
        "providers:\n  a: {sdk: ollama, model: m, local: true}\n"
        "  b: {sdk: ollama, model: n, local: true}\n"
        f"routing:\n  rules: [{{name: canary, when: {{percent: {percent}}}, route: [b]}}]\n"
        "  default: [a]\n"
    )
    return load_config(path)


@pytest.mark.parametrize("percent", [0, 10, 50, 100])
def test_percent_split_share_and_stability(tmp_path: Path, percent: float) -> None:
    """A percent rule takes about that share of users, and always the same users."""
    routing = _split_config(tmp_path, percent).routing
    users = [f"user-{i}" for i in range(4000)]
    chosen = {u for u in users if decide_route(routing, LLMTask(user_id=u)).rule == "canary"}
    assert abs(len(chosen) / len(users) * 100 - percent) <= 2.5
    again = {u for u in users if decide_route(routing, LLMTask(user_id=u)).rule == "canary"}
    assert chosen == again


def test_percent_split_without_user_uses_query_key(tmp_path: Path) -> None:
    """Without a user_id, the traffic key (query hash) decides, deterministically."""
    routing = _split_config(tmp_path, 50).routing
    rules = {decide_route(routing, LLMTask(), f"q{i}").rule for i in range(200)}
    assert rules == {"canary", "default"}
    assert (
        decide_route(routing, LLMTask(), "q7").rule == decide_route(routing, LLMTask(), "q7").rule
    )


@pytest.mark.parametrize(
    ("score", "tier"),
    [(1, "small"), (3, "small"), (4, "mid"), (6, "mid"), (7, "strong"), (8, "strong"),
     (9, "strongest"), (10, "strongest"), (None, "default")],
)  # fmt: skip
def test_complexity_score_tiers(tmp_path: Path, score: int | None, tier: str) -> None:
    """The seeds' 1-10 complexity tiers map to models through score ranges."""
    path = tmp_path / "tiers.yaml"
    path.write_text(
        "providers:\n  l: {sdk: ollama, model: m, local: true}\n"
        "routing:\n  rules:\n"
        "    - {name: small, when: {max_complexity_score: 3}, route: [{provider: l, model: s}]}\n"
        "    - {name: mid, when: {min_complexity_score: 4, max_complexity_score: 6},"
        " route: [{provider: l, model: md}]}\n"
        "    - {name: strong, when: {min_complexity_score: 7, max_complexity_score: 8},"
        " route: [{provider: l, model: st}]}\n"
        "    - {name: strongest, when: {min_complexity_score: 9},"
        " route: [{provider: l, model: x}]}\n"
        "  default: [l]\n"
    )
    route = decide_route(load_config(path).routing, LLMTask(complexity_score=score))
    assert route.rule == tier
