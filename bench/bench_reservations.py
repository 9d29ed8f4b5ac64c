"""How well reservations fit: reserved / billed input per tokenizer, and calls served under
a tight budget with the byte bound (before issue 16) and the exact count (after).

Run: ``python bench/bench_reservations.py`` (writes ``bench/results/reservations.json``).

- *Ratios.* For English prose, JSON and Python code prompts (4-16 KB), the input side of
  the reservation (``reserve.input_bound``) over what the provider bills for the input.
  For an OpenAI model (gpt-4o, o200k_base, bundled offline) the bill is OpenAI's
  documented count (3 per message + 3 + the tokens of each value), computed with the
  real tokenizer; "before" is the byte bound the proxy used for every model. For a model
  whose tokenizer we cannot run (an Ollama cloud model) the byte bound stays; its ratio is
  shown against cl100k_base as a stand-in for a byte-level BPE of that class.
- *Served under a tight budget.* 50 calls reserve at once on a real SQLite ledger (every
  reservation made before any settle: the worst case of concurrency), with the budget
  worth 15 calls' real cost (input + 60 output tokens); the same workload with each
  bound. Then each accepted call settles at its real cost.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).absolute().parent.parent))
sys.path.insert(0, str(Path(__file__).absolute().parent))

import contextlib

import common as c

from aegis_proxy.errors import BudgetExceededError
from aegis_proxy.reserve.input_bound import counted_tokens, exact_encoding, input_bound
from aegis_proxy.reserve.pricing import Price, bundled_encoding, cost_micros, input_token_bound
from aegis_proxy.settle.records import AttemptOutcome, AttemptStart, BudgetLimit
from aegis_proxy.settle.sqlite.ledger import Ledger

PRICE = Price.per_mtok("2.5", "10")
MAX_TOKENS = 256
OUTPUT_TOKENS = 60
CALLS = 50
BUDGET_CALLS = 15

ENGLISH = (
    "The committee met on Tuesday to review the quarterly figures. Revenue grew modestly, "
    "while costs rose faster than expected because of new hires and higher rent. Several "
    "members asked whether the marketing budget should be cut, and the chair proposed a "
    "smaller pilot before any decision. "
)
CODE = '''def settle(self, row_id: int, outcome: AttemptOutcome) -> None:
    """Record how attempt row_id ended."""
    for attempt in range(3):
        try:
            self._write(row_id, outcome)
            return
        except LedgerError as exc:
            if attempt == 2:
                raise
            time.sleep(0.05 * (attempt + 1))
'''


def prompts() -> dict[str, list[dict[str, str]]]:
    records = [
        {"id": n, "name": f"customer {n}", "city": "Lisbon", "balance": n * 13.5, "active": True}
        for n in range(120)
    ]
    system = {"role": "system", "content": "You are a careful assistant. Answer briefly."}
    return {
        "english": [system, {"role": "user", "content": ENGLISH * 24}],
        "json": [system, {"role": "user", "content": json.dumps(records)}],
        "code": [system, {"role": "user", "content": "Review this:\n" + CODE * 20}],
    }


def ratios() -> dict[str, Any]:
    o200k, cl100k = exact_encoding("openai", "gpt-4o"), bundled_encoding("cl100k_base")
    assert o200k is not None, "o200k_base must load offline"
    out: dict[str, Any] = {}
    for name, messages in prompts().items():
        billed_openai = counted_tokens(o200k, messages)
        billed_other = counted_tokens(cl100k, messages)
        after = input_bound("openai", "gpt-4o", messages)
        byte_bound = input_token_bound(messages)
        out[name] = {
            "bytes": sum(len(m["content"].encode()) for m in messages),
            "openai_billed": billed_openai,
            "openai_reserved_after": after,
            "openai_ratio_after": after / billed_openai,
            "openai_reserved_before": byte_bound,
            "openai_ratio_before": byte_bound / billed_openai,
            "byte_bound_model_reserved": input_bound("ollama", "gpt-oss:120b", messages),
            "byte_bound_model_ratio": input_bound("ollama", "gpt-oss:120b", messages)
            / billed_other,
        }
    return out


def _start(n: int) -> AttemptStart:
    return AttemptStart(
        f"r{n}", 1, "openai", "gpt-4o", "r", "general", "standard", "medium", 1,
        "internal", False, False, "0" * 16,
    )  # fmt: skip


def served(bound_of: Any) -> dict[str, Any]:
    messages = prompts()["english"]
    o200k = exact_encoding("openai", "gpt-4o")
    real_in = counted_tokens(o200k, messages)
    real = cost_micros(PRICE, real_in, OUTPUT_TOKENS)
    reservation = cost_micros(PRICE, bound_of(messages), MAX_TOKENS)
    budget = BudgetLimit(monthly_micros=real * BUDGET_CALLS)
    with tempfile.TemporaryDirectory() as folder, Ledger(Path(folder) / "l.db") as ledger:
        accepted = []
        for n in range(CALLS):
            with contextlib.suppress(BudgetExceededError):
                accepted.append(ledger.reserve(_start(n), reservation, budget))
        for row_id in accepted:
            outcome = AttemptOutcome("ok", 1.0, real_in, OUTPUT_TOKENS, cost_micros=real)
            ledger.settle(row_id, outcome)
        spent = ledger.monthly_summary()[0].spend_micros
    return {
        "reservation_micros": reservation,
        "real_cost_micros": real,
        "budget_micros": budget.monthly_micros,
        "served": len(accepted),
        "fell_back": CALLS - len(accepted),
        "spent_share": spent / (budget.monthly_micros or 1),
    }


def main() -> None:
    c.configure_quiet_logging()
    before = served(input_token_bound)
    after = served(lambda messages: input_bound("openai", "gpt-4o", messages))
    results = {"ratios": ratios(), "served_before": before, "served_after": after}
    c.save_json("reservations", results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
