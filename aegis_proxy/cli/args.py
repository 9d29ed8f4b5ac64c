"""The arguments of each ``aegis-proxy`` subcommand (argparse), apart from what they do.

What must always hold: parsing imports nothing but argparse and, for ``--month``, the
light ``aegis_proxy.reports.render`` (so ``report`` and the other ledger commands stay fast); a
bad ``--month`` is an argparse error naming the expected form, before anything runs.
"""

from __future__ import annotations

import argparse


def route_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="the prompt text (it is scanned, never stored)")
    parser.add_argument("--task-type", default="general")
    parser.add_argument("--quality", default="standard", choices=["standard", "high", "critical"])
    parser.add_argument("--complexity", default="medium", choices=["low", "medium", "high"])
    parser.add_argument("--complexity-score", type=int, default=None, help="1-10")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument(
        "--classification",
        default="internal",
        choices=["public", "internal", "confidential", "pii"],
    )
    parser.add_argument("--agent", default=None)
    parser.add_argument("--user-id", default=None)
    parser.add_argument("--tag", action="append", default=[])


def ledger_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--month", type=month, default=None, help="YYYY-MM (default: this month)")
    parser.add_argument("--ledger", default=None, help="ledger file or URL (default: config's)")


def report_args(parser: argparse.ArgumentParser) -> None:
    ledger_args(parser)
    parser.add_argument("--format", default="table", choices=["table", "json", "csv"])


def export_args(parser: argparse.ArgumentParser) -> None:
    ledger_args(parser)
    parser.add_argument("--format", default="csv", choices=["csv", "json"])


def simulate_args(parser: argparse.ArgumentParser) -> None:
    ledger_args(parser)
    parser.add_argument("--workload", default=None, help="JSONL workload file, not the ledger")
    parser.add_argument("--format", default="table", choices=["table", "json"])
    parser.add_argument(
        "--assume-available", action="store_true", help="count providers without keys as up"
    )


def models_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--all", action="store_true", help="every provider with a server")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per server")
    parser.add_argument("--format", default="table", choices=["table", "json"])


def demo_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ledger", default=None, help="ledger file (default: a fresh temp)")
    parser.add_argument("--local-base", default=None, help="use this running OpenAI API")
    parser.add_argument("--local-model", default=None, help="its model (with --local-base)")
    parser.add_argument("--no-ollama", action="store_true", help="ignore a running Ollama")


def local_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["serve", "path"])
    parser.add_argument("--port", type=int, default=None, help="default: a free port")


def metrics_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=9464, help="0: a free port")
    parser.add_argument("--addr", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--ledger", default=None, help="ledger file or URL (default: config's)")


def check_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--probe", action="store_true", help="also ask each provider's server for its models"
    )
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per server")


def month(value: str) -> str:
    from aegis_proxy.settle.summary import check_month

    try:
        check_month(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value
