"""Benchmark of ``aegis-proxy simulate``: replaying a month of 1,000,000 recorded requests.

Run: ``python bench/bench_replay.py [--requests 1000000] [--runs 3]``. Target: the replay
of 1,000,000 requests (about 3% of them retried after a failed first attempt, so ~1.03 M rows)
through a config takes <= 10 s. The ledger is a tmp SQLite file created by ``Ledger(path)``
(so the migrations run) and filled with ``executemany``; its rows are what the proxy would
have written under ``BASE`` (rule and provider from ``decide_route``, cost from
``pricing.cost_micros``). Figures, each the median of ``--runs``:

- floor: the replay's own SELECT of the served rows, only iterated (what any replay that
  reads the rows in Python pays); naive: every row of the month with all its routing
  columns, only iterated (what grouping attempts by request_id in Python would read);
- replay under ``BASE`` (which must reproduce the recorded spend exactly: checked);
- replay under ``NEW`` (another rule set and a budget tight enough to refuse requests).

The runs are interleaved (rotating order) so that load from other processes hits each
variant alike; the figures go to ``bench/results/replay.json``.

``--write-workload PATH [--lines N]`` writes the example workload (``examples/workload.jsonl``)
from the same deterministic generator instead.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

sys.path.insert(0, str(Path(__file__).absolute().parents[1]))

from common import machine, save_json

from aegis_proxy.config import load_config
from aegis_proxy.decide.rules import LLMTask, decide_route, restrict_to_local
from aegis_proxy.reports.replay.run import (  # the replay's own query: the floor
    _ROWS,
    simulate_ledger,
)
from aegis_proxy.reserve.pricing import cost_micros
from aegis_proxy.settle.sqlite.ledger import Ledger

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from aegis_proxy.config import AegisConfig

MONTH = "2026-10"
TASK_TYPES = ("extraction", "generation", "query", "summary", "classification")
AGENTS = (None, "intake", "review", "drafting")
INSERT = (
    "INSERT INTO requests (request_id, attempt, timestamp, period, provider, model, user_id,"
    " agent, query_hash, rule, task_type, quality, complexity, batch_size,"
    " data_classification, tags, contains_pii, stream, status, error_type, input_tokens,"
    " output_tokens, cost_micros, latency_ms, pid, host, settled_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, 300.0, 1,"
    " 'bench', ?)"
)
SERVED_ROWS = _ROWS.format(identity="")
RANGE = "SELECT min(id), max(id) FROM requests WHERE period = ?"
SELECT = (  # what grouping attempts by request_id in Python would have to read
    "SELECT request_id, timestamp, provider, status, cost_micros, input_tokens,"
    " output_tokens, cached_input_tokens, rule, task_type, quality, complexity, batch_size,"
    " data_classification, agent, tags, contains_pii, user_id, query_hash"
    " FROM requests WHERE period = ? ORDER BY id"
)
PROVIDERS: dict[str, Any] = {
    "local_ollama": {"sdk": "ollama", "api_base": "http://127.0.0.1:11434",
                     "model": "llama3.2:3b", "local": True},
    "ollama_cloud": {"sdk": "ollama", "api_base": "https://ollama.com", "api_key": "k",
                     "model": "gpt-oss:120b", "monthly_budget_usd": 120,
                     "price": {"input_per_mtok": 0.10, "output_per_mtok": 0.40}},
    "openai": {"sdk": "openai", "api_key": "k", "model": "gpt-4o", "monthly_budget_usd": 5000},
}  # fmt: skip
BASE: dict[str, Any] = {
    "providers": PROVIDERS,
    "routing": {
        "rules": [
            {"name": "critical_to_openai", "when": {"quality": "critical", "complexity": "high"},
             "route": ["openai", "ollama_cloud", "local_ollama"]},
            {"name": "batch_to_cloud", "when": {"min_batch_size": 11},
             "route": ["ollama_cloud", "local_ollama"]},
        ],
        "default": ["local_ollama"],
    },
}  # fmt: skip
NEW: dict[str, Any] = {
    "providers": {**PROVIDERS, "openai": {**PROVIDERS["openai"], "monthly_budget_usd": 300}},
    "routing": {
        "rules": [
            {"name": "review_agent_to_mini", "when": {"agent": "review", "quality": "high"},
             "route": [{"provider": "openai", "model": "gpt-4o-mini"}, "local_ollama"]},
            {"name": "critical_to_openai", "when": {"quality": "critical"},
             "route": ["openai", "ollama_cloud", "local_ollama"]},
            {"name": "extraction_to_cloud", "when": {"task_type": "extraction"},
             "route": ["ollama_cloud", "local_ollama"]},
        ],
        "default": ["local_ollama"],
    },
}  # fmt: skip


def workload(count: int, seed: int = 9) -> Iterator[dict[str, Any]]:
    """``count`` requests of a plausible month, deterministic for a ``seed``."""
    rng = random.Random(seed)
    for n in range(count):
        second = n * (31 * 86400) // count
        day, rest = divmod(second, 86400)
        line: dict[str, Any] = {
            "timestamp": f"{MONTH}-{day + 1:02d}T{rest // 3600:02d}:{rest // 60 % 60:02d}:"
            f"{rest % 60:02d}Z",
            "task_type": rng.choice(TASK_TYPES),
            "quality": rng.choices(("standard", "high", "critical"), (6, 3, 1))[0],
            "complexity": rng.choices(("low", "medium", "high"), (3, 5, 2))[0],
            "batch_size": rng.choices((1, 5, 25, 60), (80, 10, 7, 3))[0],
            "user_id": f"user-{rng.randrange(200):03d}",
            "input_tokens": int(rng.lognormvariate(7.0, 0.8)),
            "output_tokens": int(rng.lognormvariate(5.5, 0.7)),
        }
        agent = rng.choice(AGENTS)
        if agent is not None:
            line["agent"] = agent
        if rng.random() < 0.08:
            line["contains_pii"] = True
        yield line


def write_workload(path: Path, lines: int) -> None:
    text = "".join(json.dumps(line) + "\n" for line in workload(lines))
    path.write_text(text, encoding="utf-8")


def ledger_rows(config: AegisConfig, count: int) -> Iterator[tuple[object, ...]]:
    """Rows the proxy would write under ``config``: 3% fail once, then are retried."""
    rng = random.Random(1)
    decisions: dict[tuple[object, ...], tuple[str, list[tuple[str, str, bool]]]] = {}
    for n, line in enumerate(workload(count)):
        pii = bool(line.get("contains_pii"))
        inputs = (line["task_type"], line["quality"], line["complexity"], line["batch_size"],
                  line.get("agent"), pii)  # fmt: skip
        if inputs not in decisions:
            decisions[inputs] = _decide(config, inputs)
        rule, route = decisions[inputs]
        stamp = line["timestamp"].replace("Z", ".000+00:00")
        common = (line.get("user_id"), line.get("agent"), f"{n:016x}", rule, *inputs[:4],
                  "internal", "[]", int(pii))  # fmt: skip
        provider, model, _ = route[0]
        attempt = 1
        if rng.random() < 0.03:  # a 5xx, then a successful retry at the same provider
            yield (f"r{n}", 1, stamp, MONTH, provider, model, *common, "error", "server_error",
                   0, 0, 0, stamp)  # fmt: skip
            attempt = 2
        price = config.providers[provider].price_of(model)
        tokens_in, tokens_out = line["input_tokens"], line["output_tokens"]
        cost = cost_micros(price, tokens_in, tokens_out)
        yield (f"r{n}", attempt, stamp, MONTH, provider, model, *common, "ok", None, tokens_in,
               tokens_out, cost, stamp)  # fmt: skip


def _decide(
    config: AegisConfig, inputs: tuple[Any, ...]
) -> tuple[str, list[tuple[str, str, bool]]]:
    task_type, quality, complexity, batch, agent, pii = inputs
    task = LLMTask(task_type=task_type, quality=quality, complexity=complexity,
                   batch_size=batch, agent=agent)  # fmt: skip
    route = decide_route(config.routing, task)
    if pii:
        route = restrict_to_local(route, config.providers, ())
    entries = [(e.provider, e.model or config.providers[e.provider].model,
                config.providers[e.provider].local) for e in route.candidates]  # fmt: skip
    return route.rule, entries


def config_file(folder: Path, name: str, data: dict[str, Any]) -> AegisConfig:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**data, "ledger": {"path": str(folder / "ledger.db")}}))
    return load_config(path)


def scan(path: Path, query: str, params: tuple[object, ...]) -> int:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    count = sum(1 for _ in conn.execute(query, params))
    conn.close()
    return count


def interleaved(actions: dict[str, Callable[[], object]], runs: int) -> dict[str, list[float]]:
    """Wall times of each action, the actions taking turns in a rotating order (drift)."""
    names = list(actions)
    times: dict[str, list[float]] = {name: [] for name in names}
    for n in range(runs):
        shift = n % len(names)
        for name in names[shift:] + names[:shift]:
            began = time.perf_counter()
            actions[name]()
            times[name].append(time.perf_counter() - began)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write-workload", type=Path, default=None)
    parser.add_argument("--lines", type=int, default=300)
    args = parser.parse_args()
    if args.write_workload:
        write_workload(args.write_workload, args.lines)
        print(f"wrote {args.lines} lines to {args.write_workload}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        run(Path(tmp), args.requests, args.runs)


def run(folder: Path, requests: int, runs: int) -> None:
    base, new = config_file(folder, "base", BASE), config_file(folder, "new", NEW)
    path = folder / "ledger.db"
    Ledger(path).close()  # creates the file and runs the migrations
    conn = sqlite3.connect(path, isolation_level=None)
    began = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany(INSERT, ledger_rows(base, requests))
    conn.execute("COMMIT")
    (rows,) = conn.execute("SELECT count(*) FROM requests").fetchone()
    span = (*conn.execute(RANGE, (MONTH,)).fetchone(), MONTH)
    conn.close()
    print(f"ledger: {requests:,} requests in {rows:,} rows, written in "
          f"{time.perf_counter() - began:.1f} s")  # fmt: skip
    same, other = simulate_ledger(base, path, MONTH), simulate_ledger(new, path, MONTH)
    assert same.actual is not None
    assert same.projected.spend_micros == same.actual.spend_micros
    assert same.projected.served == same.actual.served
    times = interleaved(
        {
            "floor: the replay's served-row SELECT, iterated only": lambda: scan(
                path, SERVED_ROWS, span
            ),
            "naive: every row, all routing columns, iterated only": lambda: scan(
                path, SELECT, (MONTH,)
            ),
            "replay under the recording config": lambda: simulate_ledger(base, path, MONTH),
            "replay under another config": lambda: simulate_ledger(new, path, MONTH),
        },
        runs,
    )
    floor = statistics.median(next(iter(times.values())))
    print(f"median (min-max) of {runs} interleaved runs, {os.cpu_count()} CPUs:")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"  {name:<55} {median:6.2f} s ({min(seconds):.2f}-{max(seconds):.2f}),"
              f" {median / floor:.2f}x floor, {requests / median:,.0f} requests/s")  # fmt: skip
    print("  recording config: projected spend and served counts == recorded, per provider")
    print(f"  another config: budget refusals {dict(other.projected.refusals)}, "
          f"rules {dict(other.projected.rules)}")  # fmt: skip
    refusals = dict(other.projected.refusals)
    save_json("replay", {"requests": requests, "rows": rows, "runs": runs, "seconds": times,
                         "machine": machine(), "other_config_refusals": refusals})  # fmt: skip


if __name__ == "__main__":
    main()
