"""What ``aegis-proxy demo`` prints: the providers, the routing table, and what was real.

The demo exists to show a newcomer the policy at work, so its output must tell the truth.
What must always hold:

- a provider without a key is shown as unavailable (never called); a paid tier whose
  ``api_base`` is the local model's is labelled ``SIMULATED cloud, answered by the local
  model`` wherever it appears (a ``*`` in the routing table);
- every answer and count shown comes from the proxy's records: nothing is made up here;
- nothing printed holds a key; answers are quoted on one line, cut at 90 characters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import groupby
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from aegis_proxy.config import AegisConfig
    from aegis_proxy.decide.record import AegisRecord
    from aegis_proxy.demo.local_model import LocalEndpoint


@dataclass(slots=True)
class StepResult:
    """One step of the pipeline: the routing record and the answer of each request."""

    title: str
    records: list[AegisRecord] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)


def intro(out: TextIO, config: AegisConfig, endpoint: LocalEndpoint, *, fresh: bool) -> None:
    """The config, the ledger file and each provider's state, before the pipeline runs."""
    note = " (a new file for this run)" if fresh else ""
    print(f"config: {config.source}\nledger: {config.ledger.path}{note}", file=out)
    print("providers:", file=out)
    for name in config.providers:
        print(f"  {name:<16} {_state(config, name, endpoint)}", file=out)


def _state(config: AegisConfig, name: str, endpoint: LocalEndpoint) -> str:
    provider = config.providers[name]
    if provider.unavailable_reason:
        return f"UNAVAILABLE: {provider.unavailable_reason} (never called)"
    if _simulated(config, name, endpoint):
        price = provider.resolved_price
        return (
            f"SIMULATED cloud, answered by the local model: made-up price "
            f"${price.input_per_mtok:.2f}/${price.output_per_mtok:.2f} per Mtok, real budget "
            f"${provider.monthly_budget_usd}/month"
        )
    if provider.local:
        return f"REAL local model: {endpoint.label}"
    return "REAL cloud provider: calls use your key and cost real money"


def _simulated(config: AegisConfig, name: str, endpoint: LocalEndpoint) -> bool:
    provider = config.providers[name]
    return not provider.local and provider.api_base == endpoint.api_base


def served_label(record: AegisRecord) -> str:
    """Who served a request, as the answer lines show it."""
    return f"{record.provider or 'nobody'}:"


def quote(text: str, width: int = 90) -> str:
    """An answer on one line, quoted, cut at ``width`` characters."""
    flat = " ".join(text.split())
    return f'"{flat[: width - 3]}..."' if len(flat) > width else f'"{flat}"'


def routing_table(
    out: TextIO, steps: list[StepResult], config: AegisConfig, endpoint: LocalEndpoint
) -> None:
    """Every request of the pipeline, grouped by outcome, and why each went where it did."""
    header = ("#", "step", "n", "rule", "personal data", "served by", "passed over", "tokens")
    rows: list[tuple[str, ...]] = [header]
    why: list[str] = []
    for number, step in enumerate(steps, start=1):
        rows += _step_rows(number, step, config, endpoint)
        why += [f"{number}. {line}" for line in _reasons(step.records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    print("\nrouting table (every request above, grouped; tokens are in/out):\n", file=out)
    for row in rows:
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        print(line.rstrip(), file=out)
    print("  * simulated cloud: a paid, budgeted tier served by the local model\n\nwhy:", file=out)
    print("\n".join(f"  {line}" for line in why), file=out)


def _step_rows(
    number: int, step: StepResult, config: AegisConfig, endpoint: LocalEndpoint
) -> list[tuple[str, ...]]:
    """One row per run of requests with the same outcome (a batch is one row)."""
    rows: list[tuple[str, ...]] = []
    for (served, passed), group in groupby(step.records, key=_outcome_key):
        records = list(group)
        first = records[0]
        star = "*" if _simulated(config, served, endpoint) else ""
        pii = ",".join(sorted(first.pii_entities)) or ("declared" if first.contains_pii else "-")
        tokens_in = sum(r.input_tokens for r in records)
        tokens_out = sum(r.output_tokens for r in records)
        rows.append(
            (str(number), step.title, str(len(records)), first.rule, pii,
             served + star, passed or "-", f"{tokens_in}/{tokens_out}")
        )  # fmt: skip
    return rows


def _outcome_key(record: AegisRecord) -> tuple[str, str]:
    passed = [label for label, _ in passed_over(record)]
    return record.provider or "nobody", ", ".join(passed)


def passed_over(record: AegisRecord) -> list[tuple[str, str]]:
    """(label, why) of each provider of the route that did not serve, in route order.

    The routing table's "passed over" column shows the labels, and the "why" lines
    repeat each label with its reason, so the two always name the same providers.
    """
    passed = [(f"{name} (personal data)", "kept away: not a local provider")
              for name in record.removed_providers]  # fmt: skip
    for a in record.attempts:
        if a.outcome not in ("ok", "cache_hit"):
            why = a.reason or a.error_type or a.outcome
            passed.append((f"{a.provider} ({_short(a.outcome, a.reason)})", why))
    return passed


def _short(outcome: str, reason: str | None) -> str:
    if reason and reason.startswith("environment variable"):
        return "no key"
    return {"budget_exceeded": "budget used up", "error": "failed"}.get(outcome, outcome)


def _reasons(records: list[AegisRecord]) -> list[str]:
    """Each distinct reason once: the rule's, the privacy restriction's, each pass-over's."""
    found: dict[str, str] = {}
    for record in records:
        found.setdefault(record.reason, record.reason)
        for label, why in passed_over(record):
            found.setdefault(label, f"{label}: {why}")
        if record.tokens_counted:
            found.setdefault("counted", f"{record.provider} sent no usage: tokens counted locally")
    return list(found.values())


def warning_line(event: Mapping[str, object]) -> str:
    """A library warning as the demo prints it: ``  ! budget_warning: provider=... share=0.8``."""
    fields = " ".join(f"{key}={value}" for key, value in event.items() if key != "event")
    return f"  ! {event.get('event', 'warning')}: {fields}".rstrip(": ")


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 request``, ``2 requests``."""
    return f"{count:,} {noun if count == 1 else nouns or noun + 's'}"


def truth(out: TextIO, config: AegisConfig, endpoint: LocalEndpoint, ledger: Path) -> None:
    """What was real and what simulated, and where the ledger file is."""
    print("\nwhat was real:", file=out)
    for name in config.providers:
        print(f"  {name:<16} {_state(config, name, endpoint)}", file=out)
    print(f"  {'ledger':<16} REAL SQLite file {ledger}", file=out)
    print(f"  {'':<16} (aegis-proxy export --ledger {ledger} --format csv)", file=out)
