"""The ``aegis-proxy`` command: each subcommand parses, calls the library, prints.

Logging is configured here and only here. ``report``, ``export``, ``route`` and
``check-config`` never import any-llm (a test checks the wall time of ``report``).
``report``, ``export``, ``audit`` and ``metrics`` open the ledger read-only: a ledger that
does not exist is an error (exit 2), never a new empty file. A closed pipe on stdout
(``export | head``) ends the command quietly.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from aegis_proxy.cli.args import (
    check_config_args,
    demo_args,
    export_args,
    local_model_args,
    metrics_args,
    models_args,
    report_args,
    route_args,
    simulate_args,
)
from aegis_proxy.errors import AegisError, LedgerError

if TYPE_CHECKING:
    from aegis_proxy.config import AegisConfig
    from aegis_proxy.settle.backend import LedgerBackend
    from aegis_proxy.settle.records import BudgetLimit

# Each command imports what it uses when it runs (``audit`` stays light too); the
# arguments of each are in ``cli_args``. The module docstring is the --help text.
Command = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = _parser().parse_args(argv)
    from aegis_proxy.observe.logs import configure_logging

    configure_logging(json_output=False, level=args.log_level)
    command: Command = args.command
    try:
        code = command(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except AegisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (``| head``): stop without a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return code


DESCRIPTION = (
    "A policy layer between an application's LLM calls and its providers: personal data "
    "stays on local providers, budgets are reserved before each call, and every call is a "
    "row in the ledger. Each command takes --config (default: $AEGIS_CONFIG, else "
    "./config/aegis.yaml)."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aegis-proxy", description=DESCRIPTION)
    parser.add_argument("--log-level", default="warning", help="debug, info, warning, error")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    for name, (command, help_, add_arguments) in _COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_, description=help_)
        command_parser.set_defaults(command=command)
        if name != "local-model":
            command_parser.add_argument("--config", default=None, help="config file")
        add_arguments(command_parser)
    return parser


def _load(args: argparse.Namespace) -> AegisConfig:
    from aegis_proxy.config import load_config
    from aegis_proxy.default import default_config_path

    return load_config(args.config or default_config_path())


def _route(args: argparse.Namespace) -> int:
    from aegis_proxy.decide.rules import LLMTask
    from aegis_proxy.proxy import AegisLLMProxy

    proxy = AegisLLMProxy(_load(args))
    task = LLMTask(
        task_type=args.task_type,
        quality=args.quality,
        complexity=args.complexity,
        batch_size=args.batch_size,
        data_classification=args.classification,
        agent=args.agent,
        user_id=args.user_id,
        tags=args.tag,
        complexity_score=args.complexity_score,
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


def _ledger_and_budgets(
    args: argparse.Namespace,
) -> tuple[str, dict[str, BudgetLimit | None], bool | None]:
    """The ledger to read, the config's budgets, and whether its cache is on (None: no config)."""
    from aegis_proxy.settle.budget import budget_limits

    if args.ledger and not args.config:
        return args.ledger, {}, None
    config = _load(args)
    where = args.ledger or config.ledger.url or config.ledger.path
    return where, budget_limits(config), config.cache.enabled


def _open_read_only(where: str) -> LedgerBackend:
    """The ledger at ``where`` for reading; a URL of no known kind is an ``AegisError``."""
    from aegis_proxy.settle.open import open_ledger

    try:
        return open_ledger(where, read_only=True)
    except ValueError as exc:  # a malformed or unsupported URL ("mysql://..."), not a bug
        raise LedgerError("open", str(exc)) from exc


def _report(args: argparse.Namespace) -> int:
    from aegis_proxy.reports.render import render_summary

    where, budgets, caching = _ledger_and_budgets(args)
    ledger = _open_read_only(where)
    try:
        rows = ledger.monthly_summary(args.month, budgets)
    finally:
        ledger.close()
    print(render_summary(rows, args.format, caching=caching))
    return 0


def _export(args: argparse.Namespace) -> int:
    from aegis_proxy.reports.render import write_export
    from aegis_proxy.settle.records import current_month

    where, _, _ = _ledger_and_budgets(args)
    ledger = _open_read_only(where)
    try:
        write_export(ledger.export_rows(args.month or current_month()), args.format, sys.stdout)
    finally:
        ledger.close()
    return 0


def _audit(args: argparse.Namespace) -> int:
    """Print the month's privacy decisions; exit 1 unless the no-leak proof holds."""
    from aegis_proxy.reports.audit import audit_month, render_audit
    from aegis_proxy.settle.records import current_month

    where, local = args.ledger, None  # a ledger without a config: old rows unverifiable
    if args.config or not args.ledger:
        config = _load(args)
        where = args.ledger or config.ledger.url or config.ledger.path
        local = {name for name, provider in config.providers.items() if provider.local}
    ledger = _open_read_only(where)
    try:
        audit = audit_month(ledger, args.month or current_month(), local)
    finally:
        ledger.close()
    print(render_audit(audit, args.format))
    return 0 if audit.proven else 1


def _simulate(args: argparse.Namespace) -> int:
    from aegis_proxy.reports.replay.render import render_simulation
    from aegis_proxy.reports.replay.run import simulate_ledger, simulate_workload
    from aegis_proxy.settle.records import current_month

    config = _load(args)
    available = args.assume_available
    if args.workload:
        simulation = simulate_workload(
            config, args.workload, month=args.month, assume_available=available
        )
    else:
        ledger = args.ledger or config.ledger.path
        month = args.month or current_month()
        simulation = simulate_ledger(config, ledger, month, assume_available=available)
    print(render_simulation(simulation, args.format))
    return 0


def _models(args: argparse.Namespace) -> int:
    from aegis_proxy.call.discovery import discover, render_models

    found = discover(_load(args), local_only=not args.all, timeout_s=args.timeout)
    print(render_models(found, args.format))
    return 1 if any(server.error or server.missing for server in found) else 0


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
    if not args.probe:
        print("not checked: whether each server answers and takes its key (--probe asks them)")
        return 0
    return _probe(config, args.timeout)


def _probe(config: AegisConfig, timeout_s: float) -> int:
    """Ask every provider with a server for its models; 1 if one fails or lacks a model."""
    from aegis_proxy.call.discovery import discover, render_models

    found = discover(config, local_only=False, timeout_s=timeout_s)
    print(render_models(found, "table"))
    unprobed = sorted(set(config.providers) - {server.provider for server in found})
    if unprobed:
        print(f"not probed (no api_base to list models from): {', '.join(unprobed)}")
    return 1 if any(server.error or server.missing for server in found) else 0


def _demo(args: argparse.Namespace) -> int:
    from aegis_proxy.demo.run import DemoOptions, run_demo

    options = DemoOptions(
        config=args.config,
        ledger=args.ledger,
        local_base=args.local_base,
        local_model=args.local_model,
        use_ollama=not args.no_ollama,
    )
    return run_demo(options)


def _local_model(args: argparse.Namespace) -> int:
    from aegis_proxy.demo.local_model import serve_until_interrupted
    from aegis_proxy.demo.local_model_setup import ensure_gguf

    path = ensure_gguf(install=True, say=_to_stderr)
    if args.action == "path":
        print(path)
        return 0
    return serve_until_interrupted(path, args.port, _to_stderr)


def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _metrics(args: argparse.Namespace) -> int:
    from aegis_proxy.observe.metrics import start_metrics_server
    from aegis_proxy.observe.metrics_ledger import ledger_registry

    where, budgets, _ = _ledger_and_budgets(args)
    ledger = _open_read_only(where)
    server = start_metrics_server(args.port, ledger_registry(ledger, budgets), addr=args.addr)
    print(f"serving http://{args.addr}:{server.server_port}/metrics", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        ledger.close()
    return 0


_COMMANDS: dict[str, tuple[Command, str, Callable[[argparse.ArgumentParser], None]]] = {
    "demo": (_demo, "run the demo pipeline on a real local model", demo_args),
    "route": (_route, "explain the routing decision for a prompt and a task", route_args),
    "report": (_report, "spend per provider and month against budgets", report_args),
    "export": (_export, "export a month's ledger rows (no content)", export_args),
    "audit": (_audit, "a month's privacy decisions, and the no-leak proof", report_args),
    "check-config": (
        _check_config,
        "validate a config file and show its providers (--probe: ask their servers)",
        check_config_args,
    ),
    "simulate": (_simulate, "replay a month (or a workload) through a config", simulate_args),
    "metrics": (_metrics, "serve the ledger's spend vs budgets to Prometheus", metrics_args),
    "models": (_models, "list local servers' models and check the config's", models_args),
    "local-model": (
        _local_model,
        "serve the local model (SmolLM2) or print its file",
        local_model_args,
    ),
}


if __name__ == "__main__":
    raise SystemExit(main())
