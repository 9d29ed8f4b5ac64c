"""The ``aegis-proxy`` command: each subcommand parses, calls the library, prints.

Logging is configured here and only here. ``report``, ``export``, ``route`` and
``check-config`` never import any-llm (a test checks the wall time of ``report``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from aegis_proxy.errors import AegisError

if TYPE_CHECKING:
    from aegis_proxy.config import AegisConfig

Command = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = _parser().parse_args(argv)
    from aegis_proxy.logs import configure_logging

    configure_logging(json_output=False, level=args.log_level)
    command: Command = args.command
    try:
        return command(args)
    except AegisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aegis-proxy", description=__doc__)
    parser.add_argument("--log-level", default="warning", help="debug, info, warning, error")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    _add(sub, "route", _route, "explain the routing decision for a prompt and a task")
    _add(sub, "report", _report, "spend per provider and month against budgets")
    _add(sub, "export", _export, "export a month's ledger rows (no content)")
    _add(sub, "check-config", _check_config, "validate a config file and show its providers")
    _add(sub, "demo", _demo, "run the demo pipeline")
    return parser


def _add(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, fn: Command, help_: str
) -> None:
    parser = sub.add_parser(name, help=help_, description=help_)
    parser.add_argument(
        "--config", default=None, help="config file (default: $AEGIS_CONFIG or config/aegis.yaml)"
    )
    parser.set_defaults(command=fn)
    if name == "route":
        parser.add_argument("prompt", help="the prompt text (it is scanned, never stored)")
        parser.add_argument("--task-type", default="general")
        parser.add_argument(
            "--quality", default="standard", choices=["standard", "high", "critical"]
        )
        parser.add_argument("--complexity", default="medium", choices=["low", "medium", "high"])
        parser.add_argument("--batch-size", type=int, default=1)
        parser.add_argument(
            "--classification",
            default="internal",
            choices=["public", "internal", "confidential", "pii"],
        )
        parser.add_argument("--agent", default=None)
        parser.add_argument("--tag", action="append", default=[])
    if name in ("report", "export"):
        parser.add_argument("--month", default=None, help="YYYY-MM (default: this month, UTC)")
        parser.add_argument("--ledger", default=None, help="ledger file (default: from the config)")
    if name == "report":
        parser.add_argument("--format", default="table", choices=["table", "json", "csv"])
    if name == "export":
        parser.add_argument("--format", default="csv", choices=["csv", "json"])


def _load(args: argparse.Namespace) -> AegisConfig:
    from aegis_proxy.config import load_config
    from aegis_proxy.default import default_config_path

    return load_config(args.config or default_config_path())


def _route(args: argparse.Namespace) -> int:
    from aegis_proxy.policy import LLMTask
    from aegis_proxy.proxy import AegisLLMProxy

    proxy = AegisLLMProxy(_load(args))
    task = LLMTask(
        task_type=args.task_type,
        quality=args.quality,
        complexity=args.complexity,
        batch_size=args.batch_size,
        data_classification=args.classification,
        agent=args.agent,
        tags=args.tag,
    )
    plan = proxy.plan([{"role": "user", "content": args.prompt}], task)
    print(f"rule:         {plan.route.rule}")
    print(f"reason:       {plan.route.reason}")
    print(f"contains_pii: {plan.contains_pii} {sorted(plan.pii_entities) or ''}".rstrip())
    if plan.route.removed:
        print(f"removed:      {', '.join(plan.route.removed)} (not local)")
    print("candidates:")
    for i, entry in enumerate(plan.route.candidates, start=1):
        provider = proxy.config.providers[entry.provider]
        state = provider.unavailable_reason or "available"
        print(f"  {i}. {entry.provider:<16} {entry.model or provider.model:<24} {state}")
    return 0


def _ledger_and_budgets(args: argparse.Namespace) -> tuple[str, dict[str, object]]:
    from aegis_proxy.proxy import budget_limits

    if args.ledger and not args.config:
        return args.ledger, {}
    config = _load(args)
    return args.ledger or config.ledger.path, dict(budget_limits(config))


def _report(args: argparse.Namespace) -> int:
    from aegis_proxy.ledger import Ledger
    from aegis_proxy.reports import render_summary

    path, budgets = _ledger_and_budgets(args)
    with Ledger(path) as ledger:
        rows = ledger.monthly_summary(args.month, budgets)  # type: ignore[arg-type]
    print(render_summary(rows, args.format))
    return 0


def _export(args: argparse.Namespace) -> int:
    from aegis_proxy.ledger import Ledger, current_month
    from aegis_proxy.reports import write_export

    path, _ = _ledger_and_budgets(args)
    with Ledger(path) as ledger:
        write_export(ledger.export_rows(args.month or current_month()), args.format, sys.stdout)
    return 0


def _check_config(args: argparse.Namespace) -> int:
    config = _load(args)
    print(f"{config.source}: ok")
    for name, provider in config.providers.items():
        where = "local" if provider.local else "cloud"
        budget = (
            f"budget ${provider.monthly_budget_usd}/month"
            if provider.monthly_budget_usd
            else "no budget"
        )
        state = provider.unavailable_reason or "available"
        print(
            f"  {name:<16} {provider.sdk:<10} {provider.model:<24} {where:<6} {budget:<22} {state}"
        )
    names = [rule.name for rule in config.routing.rules]
    default = [e.provider for e in config.routing.default]
    print(f"  rules: {', '.join(names) or '(none)'}; default: {default}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from aegis_proxy.demo import run_demo

    return asyncio.run(run_demo(args.config))


def _dump(value: object) -> str:
    return json.dumps(value, indent=2, default=str)


if __name__ == "__main__":
    raise SystemExit(main())
