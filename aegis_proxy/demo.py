"""``aegis-proxy demo``: the AEGIS policy explained on a small ingestion pipeline.

This version decides routes only (no provider is called): it shows, for each step of a
LangGraph-like job, which rule matched, which providers the request may reach, and why.
"""

from __future__ import annotations

import os
from pathlib import Path

from aegis_proxy.config import load_config
from aegis_proxy.policy import LLMTask
from aegis_proxy.proxy import AegisLLMProxy

EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "config" / "aegis.yaml"

STEPS: list[tuple[str, str, LLMTask]] = [
    (
        "extract parties (personal data)",
        "Extract the parties: Jane Doe, jane.doe@example.com, +44 20 7946 0958.",
        LLMTask(task_type="extraction", quality="critical", complexity="high"),
    ),
    (
        "critical contract analysis",
        "Which clauses of this supply contract shift liability to the buyer?",
        LLMTask(task_type="extraction", quality="critical", complexity="high"),
    ),
    (
        "batch summary of 25 documents",
        "Summarise each of the following 25 public filings in two lines.",
        LLMTask(task_type="generation", batch_size=25),
    ),
    (
        "query decomposition",
        "Split: what changed in the refund policy between 2023 and 2024?",
        LLMTask(task_type="query", complexity="low"),
    ),
    (
        "declared confidential HR record",
        "Draft a summary of the attached performance review.",
        LLMTask(task_type="generation", data_classification="pii"),
    ),
]


async def run_demo(config_path: str | None = None) -> int:
    """Print the routing decision of each demo step; returns the exit code."""
    path = config_path or os.environ.get("AEGIS_CONFIG") or str(EXAMPLE_CONFIG)
    proxy = AegisLLMProxy(load_config(path))
    print(f"aegis_proxy demo — routing decisions from {path} (no provider is called)\n")
    print(f"{'step':<34} {'rule':<20} {'pii':<5} candidates (first available serves)")
    for title, prompt, task in STEPS:
        plan = proxy.plan([{"role": "user", "content": prompt}], task)
        candidates = ", ".join(_show(proxy, entry.provider) for entry in plan.route.candidates)
        pii = "yes" if plan.contains_pii else "no"
        print(f"{title:<34} {plan.route.rule:<20} {pii:<5} {candidates}")
        print(f"{'':<34} reason: {plan.route.reason}")
    return 0


def _show(proxy: AegisLLMProxy, name: str) -> str:
    reason = proxy.config.providers[name].unavailable_reason
    return f"{name} (unavailable: {reason})" if reason else name
