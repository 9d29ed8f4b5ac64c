"""Replay and simulate: recorded months and workload files through another config."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aegis_proxy import LLMTask, NoProviderAvailableError
from aegis_proxy.config import AegisConfig, load_config
from aegis_proxy.errors import ConfigError, LedgerError
from aegis_proxy.reports.replay.plan import integer_rates
from aegis_proxy.reports.replay.render import render_simulation
from aegis_proxy.reports.replay.run import simulate_ledger, simulate_workload
from aegis_proxy.reports.replay.workload import load_workload
from aegis_proxy.reserve.pricing import Price, cost_micros
from aegis_proxy.settle.records import AttemptOutcome, AttemptStart, PrivacyDecision, current_month
from aegis_proxy.settle.sqlite.ledger import Ledger
from tests.conftest import Rig
from tests.fakeserver import Fault

EXAMPLE_WORKLOAD = Path(__file__).resolve().parents[2] / "examples" / "workload.jsonl"
HELLO = [{"role": "user", "content": "Summarise the quarterly report in one line."}]
LONGER = [{"role": "user", "content": "Draft a two-paragraph reply to the supplier. " * 20}]
EMAIL = [{"role": "user", "content": "Write to bob@corp.example about the invoice."}]
CRITICAL = LLMTask(quality="critical", complexity="high", task_type="extraction")
OCT = datetime(2026, 10, 5, 9, 0, tzinfo=UTC)


def config_of(rig: Rig, **changes: Any) -> AegisConfig:
    """The rig's config with top-level sections replaced, written to disk and loaded."""
    data = {**rig.config_data(), **changes}
    return load_config(rig.write_config(data))


def providers_with(rig: Rig, name: str, **fields: Any) -> dict[str, Any]:
    providers: dict[str, Any] = rig.config_data()["providers"]
    providers[name] = {**providers[name], **fields}
    return providers


def record(
    ledger: Ledger,
    n: int,
    provider: str,
    tokens: tuple[int, int],
    *,
    when: datetime = OCT,
    rule: str = "critical_to_openai",
    pii: bool = False,
    status: str = "ok",
    cost: int = 0,
    entities: dict[str, int] | None = None,
    **task: Any,
) -> None:
    """One settled attempt row, written through the ledger's own API.

    ``entities`` records the request's PII entity types as the proxy does since m004.
    """
    fields = {"quality": "critical", "complexity": "high", **task}
    decision = None if entities is None else PrivacyDecision(tuple(entities.items()), "redact")
    start = AttemptStart(
        request_id=f"req-{n}", attempt=1, provider=provider, model="m", rule=rule,
        task_type=fields.get("task_type", "extraction"), quality=fields["quality"],
        complexity=fields["complexity"], batch_size=fields.get("batch_size", 1),
        data_classification="internal", contains_pii=pii or bool(entities), stream=False,
        query_hash="0" * 16, privacy=decision,
    )  # fmt: skip
    row = ledger.reserve(start, 0, None, now=when)
    outcome = AttemptOutcome(status, 10.0, tokens[0], tokens[1], cost_micros=cost)
    ledger.settle(row, outcome, now=when)


# -- against the config that wrote the ledger ---------------------------------------------


async def test_replay_under_same_config_equals_ledger(rig: Rig) -> None:
    """Real requests through the proxy, replayed under the same config, cost the same."""
    async with rig.proxy() as proxy:
        await proxy.acompletion(HELLO, LLMTask(task_type="query"), max_tokens=32)
        await proxy.acompletion(LONGER, CRITICAL, max_tokens=64)
        await proxy.acompletion(HELLO, CRITICAL, max_tokens=16)
        await proxy.acompletion(LONGER, LLMTask(batch_size=25), max_tokens=64)
        await proxy.acompletion(EMAIL, CRITICAL, max_tokens=16)  # PII: stays local
        stream = await proxy.acompletion(LONGER, CRITICAL, stream=True, max_tokens=64)
        async for _ in stream:
            pass
    sim = simulate_ledger(config_of(rig), rig.tmp_path / "ledger.db", current_month())
    actual, projected = sim.actual, sim.projected
    assert actual is not None
    assert projected.spend_micros["openai"] > 0
    assert projected.spend_micros["ollama_cloud"] > 0
    assert projected.spend_micros == actual.spend_micros
    assert projected.served == actual.served == {"openai": 3, "ollama_cloud": 1, "local_ollama": 2}
    assert projected.rules == actual.rules
    assert projected.rules["critical_to_openai"] == 4
    assert projected.local_share == actual.local_share == pytest.approx(2 / 6)
    assert projected.requests == actual.requests == 6
    assert not projected.refusals


async def test_never_served_request_is_counted_not_replayed(rig: Rig) -> None:
    """A request every provider failed is flagged in the recorded side and not replayed."""
    for server in (rig.openai, rig.cheap, rig.local):
        server.add_fault(Fault.status(500))
    async with rig.proxy() as proxy:
        with pytest.raises(NoProviderAvailableError):
            await proxy.acompletion(HELLO, CRITICAL, max_tokens=16)
        await proxy.acompletion(HELLO, CRITICAL, max_tokens=16)
    sim = simulate_ledger(config_of(rig), rig.tmp_path / "ledger.db", current_month())
    assert sim.actual is not None
    assert sim.actual.unserved["never_served"] == 1
    assert sim.actual.requests == 2
    assert sim.projected.requests == 1
    assert sim.projected.served == {"openai": 1}
    assert "never_served 1" in render_simulation(sim)


async def test_fallback_request_is_replayed_at_the_first_candidate(rig: Rig) -> None:
    """A request that fell back after a 500 is projected at the provider the route prefers."""
    rig.openai.add_fault(Fault.status(500))
    async with rig.proxy() as proxy:
        resp = await proxy.acompletion(HELLO, CRITICAL, max_tokens=16)
    assert resp.aegis.provider == "ollama_cloud"
    sim = simulate_ledger(config_of(rig), rig.tmp_path / "ledger.db", current_month())
    assert sim.actual is not None
    assert sim.actual.served == {"ollama_cloud": 1}
    assert sim.projected.served == {"openai": 1}
    assert sim.projected.spend_micros["openai"] > sim.actual.spend_micros["ollama_cloud"]


# -- against another config -----------------------------------------------------------------


def test_other_rules_move_requests_and_spend(rig: Rig, tmp_path: Path) -> None:
    """Under a config that sends critical work to the cheap cloud, openai spend goes to it."""
    with Ledger(tmp_path / "l.db") as ledger:
        for n in range(4):
            record(ledger, n, "openai", (1000, 200), cost=4500)
        record(ledger, 9, "local_ollama", (50, 5), rule="default", quality="standard")
    routing = {
        "rules": [{"name": "critical_to_cloud", "when": {"quality": "critical"},
                   "route": ["ollama_cloud", "local_ollama"]}],
        "default": ["local_ollama"],
    }  # fmt: skip
    sim = simulate_ledger(config_of(rig, routing=routing), tmp_path / "l.db", "2026-10")
    assert sim.actual is not None
    assert sim.actual.spend_micros == {"openai": 4 * 4500}
    cheap = Price.per_mtok("0.10", "0.40")
    assert sim.projected.spend_micros == {"ollama_cloud": 4 * cost_micros(cheap, 1000, 200)}
    assert sim.projected.rules == {"critical_to_cloud": 4, "default": 1}
    assert sim.actual.rules == {"critical_to_openai": 4, "default": 1}
    assert sim.projected.local_share == pytest.approx(0.2)


def test_route_entry_model_is_priced_at_its_own_rate(rig: Rig, tmp_path: Path) -> None:
    """A route entry naming gpt-4o-mini is priced at gpt-4o-mini's rate, not gpt-4o's."""
    with Ledger(tmp_path / "l.db") as ledger:
        record(ledger, 1, "openai", (10_000, 1_000))
    routing = {
        "rules": [{"name": "mini", "when": {"quality": "critical"},
                   "route": [{"provider": "openai", "model": "gpt-4o-mini"}]}],
        "default": ["local_ollama"],
    }  # fmt: skip
    config = config_of(rig, routing=routing)
    sim = simulate_ledger(config, tmp_path / "l.db", "2026-10")
    mini = config.providers["openai"].price_of("gpt-4o-mini")
    assert mini != config.providers["openai"].price_of("gpt-4o")
    assert sim.projected.spend_micros == {"openai": cost_micros(mini, 10_000, 1_000)}


def test_monthly_budget_refuses_then_falls_back(rig: Rig, tmp_path: Path) -> None:
    """Spend stops at the budget: later requests fall back and the refusals are counted."""
    price = {"input_per_mtok": 100, "output_per_mtok": 0}  # 100 micro-dollars per token
    providers = providers_with(rig, "openai", monthly_budget_usd="0.001", price=price)
    with Ledger(tmp_path / "l.db") as ledger:
        for n in range(6):  # 300 micro-dollars each: three fit in 1,000
            record(ledger, n, "openai", (3, 0), when=OCT + timedelta(hours=n))
        record(ledger, 6, "openai", (1, 0), when=OCT + timedelta(hours=6))  # 100: fits exactly
        record(ledger, 7, "openai", (1, 0), when=OCT + timedelta(hours=7))  # nothing left
    sim = simulate_ledger(config_of(rig, providers=providers), tmp_path / "l.db", "2026-10")
    projected = sim.projected
    assert projected.spend_micros["openai"] == 1000 == sim.budgets["openai"]
    assert projected.served == {"openai": 4, "ollama_cloud": 4}
    assert projected.refusals == {"openai": 4}
    assert projected.first_refusal["openai"].startswith("2026-10-05T12:00")
    table = render_simulation(sim)
    assert "2026-10-05T12:00" in table
    assert "100.0%" in table  # the projected share of openai's budget


def test_route_with_no_room_left_leaves_requests_unserved(rig: Rig, tmp_path: Path) -> None:
    """When the only candidate's budget is spent, the request counts as unserved (budget)."""
    price = {"input_per_mtok": 100, "output_per_mtok": 0}
    providers = providers_with(rig, "openai", monthly_budget_usd="0.0005", price=price)
    routing = {"rules": [], "default": ["openai"]}
    with Ledger(tmp_path / "l.db") as ledger:
        for n in range(3):
            record(ledger, n, "openai", (3, 0), when=OCT + timedelta(minutes=n))
    config = config_of(rig, providers=providers, routing=routing)
    sim = simulate_ledger(config, tmp_path / "l.db", "2026-10")
    assert sim.projected.served == {"openai": 1}
    assert sim.projected.unserved == {"budget": 2}


def test_daily_budget_resets_the_next_day(rig: Rig, tmp_path: Path) -> None:
    """A daily budget refuses the second request of a day and serves the next day's."""
    price = {"input_per_mtok": 100, "output_per_mtok": 0}
    providers = providers_with(rig, "openai", daily_budget_usd="0.0003", price=price)
    with Ledger(tmp_path / "l.db") as ledger:
        for n, hours in enumerate((0, 1, 24)):
            record(ledger, n, "openai", (3, 0), when=OCT + timedelta(hours=hours))
    sim = simulate_ledger(config_of(rig, providers=providers), tmp_path / "l.db", "2026-10")
    assert sim.projected.served == {"openai": 2, "ollama_cloud": 1}
    assert sim.projected.first_refusal["openai"].startswith("2026-10-05T10:00")


def test_pii_rows_stay_local_whatever_the_rules(rig: Rig, tmp_path: Path) -> None:
    """Rows that held PII are projected on local providers even when the route is cloud."""
    with Ledger(tmp_path / "l.db") as ledger:
        record(ledger, 1, "local_ollama", (100, 10), pii=True)
        record(ledger, 2, "openai", (100, 10))
    routing = {"rules": [], "default": ["openai"]}
    sim = simulate_ledger(config_of(rig, routing=routing), tmp_path / "l.db", "2026-10")
    assert sim.projected.served == {"local_ollama": 1, "openai": 1}
    blocked = simulate_ledger(
        config_of(rig, routing=routing, privacy={"pii_action": "block"}),
        tmp_path / "l.db",
        "2026-10",
    )
    assert blocked.projected.unserved == {"pii_blocked": 1}


def test_pii_rows_unserved_without_a_local_provider(rig: Rig, tmp_path: Path) -> None:
    """A config with no local provider leaves PII rows unserved, never on a cloud."""
    providers = rig.config_data()["providers"]
    del providers["local_ollama"]
    routing = {"rules": [], "default": ["ollama_cloud"]}
    with Ledger(tmp_path / "l.db") as ledger:
        record(ledger, 1, "local_ollama", (100, 10), pii=True)
    config = config_of(rig, providers=providers, routing=routing)
    sim = simulate_ledger(config, tmp_path / "l.db", "2026-10")
    assert sim.projected.unserved == {"no_local_provider": 1}
    assert not sim.projected.served


def test_recorded_entity_types_decide_the_privacy_action(rig: Rig, tmp_path: Path) -> None:
    """Rows with recorded entity types take the strictest entity action; older rows pii_action."""
    with Ledger(tmp_path / "l.db") as ledger:
        record(ledger, 1, "openai", (100, 10), entities={"EMAIL": 2})  # redacted: cloud
        record(ledger, 2, "local_ollama", (100, 10), entities={"EMAIL": 1, "CREDIT_CARD": 1})
        record(ledger, 3, "local_ollama", (100, 10), entities={"PERSON": 1})  # pii_action
        record(ledger, 4, "local_ollama", (100, 10), pii=True)  # before m004: '{}'
        record(ledger, 5, "local_ollama", (100, 10), entities={"EMAIL": 1, "IMAGE": 1})
    with closing(sqlite3.connect(tmp_path / "l.db")) as conn:
        stored = [row[0] for row in conn.execute("SELECT pii_entities FROM requests ORDER BY id")]
    assert stored[0] == '{"EMAIL": 2}'
    assert stored[3] == "{}"
    routing = {"rules": [], "default": ["openai"]}
    privacy = {
        "pii_action": "route_local",
        "entity_actions": {"EMAIL": "redact", "IMAGE": "redact", "CREDIT_CARD": "block"},
    }
    sim = simulate_ledger(config_of(rig, routing=routing, privacy=privacy), tmp_path / "l.db",
                          "2026-10")  # fmt: skip
    assert sim.projected.served == {"openai": 1, "local_ollama": 3}  # an image stays local
    assert sim.projected.unserved == {"pii_blocked": 1}
    redact = config_of(rig, routing=routing, privacy={"pii_action": "redact"})
    sim = simulate_ledger(redact, tmp_path / "l.db", "2026-10")
    assert sim.projected.served == {"openai": 4, "local_ollama": 1}


def test_unavailable_provider_is_skipped_unless_assumed(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A provider whose key is unset is skipped and reported; assume_available serves it."""
    monkeypatch.delenv("AEGIS_TEST_OPENAI_KEY")
    with Ledger(tmp_path / "l.db") as ledger:
        record(ledger, 1, "openai", (100, 10))
    config = config_of(rig)
    sim = simulate_ledger(config, tmp_path / "l.db", "2026-10")
    assert sim.projected.served == {"ollama_cloud": 1}
    assert "AEGIS_TEST_OPENAI_KEY" in sim.unavailable["openai"]
    assert "openai treated as unavailable" in render_simulation(sim)
    assumed = simulate_ledger(config, tmp_path / "l.db", "2026-10", assume_available=True)
    assert assumed.projected.served == {"openai": 1}


def test_only_the_requested_month_is_replayed(rig: Rig, tmp_path: Path) -> None:
    """Rows of other months are neither replayed nor counted as recorded."""
    with Ledger(tmp_path / "l.db") as ledger:
        record(ledger, 1, "openai", (100, 10), when=datetime(2026, 9, 30, 23, tzinfo=UTC))
        record(ledger, 2, "openai", (100, 10), cost=7)
        record(ledger, 3, "openai", (100, 10), when=datetime(2026, 11, 1, tzinfo=UTC))
    sim = simulate_ledger(config_of(rig), tmp_path / "l.db", "2026-10")
    assert sim.actual is not None
    assert sim.actual.requests == sim.projected.requests == 1
    assert sim.actual.spend_micros == {"openai": 7}
    empty = simulate_ledger(config_of(rig), tmp_path / "l.db", "2026-08")
    assert empty.projected.requests == 0


def test_missing_ledger_file_is_a_ledger_error(rig: Rig, tmp_path: Path) -> None:
    """Simulating against a ledger file that does not exist names the path."""
    with pytest.raises(LedgerError, match="no ledger file"):
        simulate_ledger(config_of(rig), tmp_path / "absent.db", "2026-10")
    assert not (tmp_path / "absent.db").exists()


def test_json_rendering_carries_exact_micros(rig: Rig, tmp_path: Path) -> None:
    """The JSON form holds both sides with integer micro-dollars."""
    with Ledger(tmp_path / "l.db") as ledger:
        record(ledger, 1, "openai", (1000, 100), cost=3500)
    sim = simulate_ledger(config_of(rig), tmp_path / "l.db", "2026-10")
    data = json.loads(render_simulation(sim, "json"))
    assert data["actual"]["spend_micros"] == {"openai": 3500}
    assert data["projected"]["spend_micros"] == {"openai": 3500}
    assert data["projected"]["rules"] == {"critical_to_openai": 1}
    assert data["budgets_micros"]["openai"] == 80_000_000


# -- prices ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "tokens"),
    [
        (Price.per_mtok("2.5", "10"), (1234, 567, 0)),
        (Price.per_mtok("0.15", "0.6", "0.075"), (10_001, 333, 4_000)),
        (Price.per_mtok("0.10", "0.40"), (1, 1, 0)),
        (Price.per_mtok("3", "15", "0.3"), (100, 10, 500)),  # cached counted apart
        (Price.per_mtok("0.0000001", "1E+1"), (999_999, 7, 0)),
        (Price.per_mtok(0, 0), (5000, 5000, 0)),
    ],
)
def test_integer_rates_cost_equals_pricing(price: Price, tokens: tuple[int, int, int]) -> None:
    """The replay's integer cost equals pricing.cost_micros, rounding included."""
    rates, scale = integer_rates(price)
    tokens_in, tokens_out, cached = tokens
    uncached = tokens_in - cached if cached <= tokens_in else tokens_in
    exact = uncached * rates[0] + tokens_out * rates[1] + cached * rates[2]
    assert -(-exact // scale) == cost_micros(price, tokens_in, tokens_out, cached)
    assert all(isinstance(rate, int) for rate in rates)
    assert Decimal(rates[0]) / scale == price.input_per_mtok


# -- workload files ---------------------------------------------------------------------------


def test_example_workload_simulates(rig: Rig) -> None:
    """The shipped example workload loads and projects every line, PII lines locally."""
    lines = EXAMPLE_WORKLOAD.read_text().splitlines()
    assert len(lines) >= 200
    pii_lines = sum(1 for line in lines if json.loads(line).get("contains_pii"))
    routing = {"rules": [], "default": ["openai", "local_ollama"]}
    sim = simulate_workload(config_of(rig, routing=routing), EXAMPLE_WORKLOAD)
    assert sim.actual is None
    assert sim.projected.requests == len(lines)
    assert sim.projected.served == {"openai": len(lines) - pii_lines, "local_ollama": pii_lines}
    assert sim.months == ("2026-10",)
    table = render_simulation(sim)
    assert "actual" not in table
    assert "projected $" in table


def test_workload_without_timestamps_spreads_over_the_month(tmp_path: Path) -> None:
    """Lines without a timestamp fall on the days of the given month, in file order."""
    path = tmp_path / "w.jsonl"
    line = {"task_type": "query", "input_tokens": 10, "output_tokens": 2}
    path.write_text("\n".join(json.dumps(line) for _ in range(30)) + "\n\n")
    entries = load_workload(path, "2026-02")
    days = [stamp[:10] for stamp, *_ in entries]
    assert len(entries) == 30
    assert days[0] == "2026-02-01"
    assert days[-1] == "2026-02-28"
    assert days == sorted(days)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('{"quality": "top", "input_tokens": 1, "output_tokens": 1}', "line 2.quality"),
        ('{"input_tokens": -1, "output_tokens": 1}', "line 2.input_tokens"),
        ('{"input_tokens": 1}', "line 2.output_tokens"),
        ('{"input_tokens": 1, "output_tokens": 1, "colour": "red"}', "line 2.colour"),
        ('{"input_tokens": 1, "output_tokens": 1, "timestamp": "soon"}', "line 2.timestamp"),
        ("[1, 2]", "line 2"),
        ("{not json", "line 2"),
    ],
)
def test_bad_workload_line_names_file_and_line(tmp_path: Path, line: str, key: str) -> None:
    """A bad line raises ConfigError naming the file, the line and the field."""
    path = tmp_path / "w.jsonl"
    path.write_text('{"input_tokens": 1, "output_tokens": 1}\n' + line + "\n")
    with pytest.raises(ConfigError) as info:
        load_workload(path, "2026-10")
    assert info.value.path == str(path)
    assert info.value.key == key
