"""``aegis-proxy demo``: the policy doing its job for real on a small ingestion pipeline.

A newcomer runs one command and sees every request of a LangGraph-like job go through a
real ``AegisLLMProxy``: a real local model (started here, or a running Ollama), a real
SQLite ledger in a fresh temp folder, real budget reservations. What must always hold:

- the output tells the truth: a provider without a key is shown as unavailable (never
  called), the ``simulated_cloud`` tier is labelled as answered by the local model, and
  every answer shown is what the model returned (the tables: ``demo_report``);
- the local model server is stopped when the demo ends, however it ends;
- no prompt or response text reaches the ledger or a log line (the proxy's invariants).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, cast

from aegis_proxy.config import AegisConfig, load_config
from aegis_proxy.decide.rules import LLMTask
from aegis_proxy.demo.local_model import LocalEndpoint, local_endpoint
from aegis_proxy.demo.local_model_child import MODEL_ALIAS
from aegis_proxy.demo.local_model_setup import MODEL_LABEL
from aegis_proxy.demo.report import (
    StepResult,
    intro,
    plural,
    quote,
    routing_table,
    served_label,
    truth,
    warning_line,
)
from aegis_proxy.observe.logs import EVENT_ATTR
from aegis_proxy.proxy import AegisLLMProxy
from aegis_proxy.reports.audit import audit_month, render_audit
from aegis_proxy.reports.render import render_summary
from aegis_proxy.settle.budget import budget_limits
from aegis_proxy.settle.records import current_month

if TYPE_CHECKING:
    from any_llm.types.completion import ChatCompletion

    from aegis_proxy.call.streaming import AegisStream

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "demo.yaml"
EMAIL = (
    "Summarise this customer email in one sentence: 'Hi, this is Jane Doe, "
    "jane.doe@example.com, phone +44 20 7946 0958. Please move my delivery to Friday.'"
)
CONTRACT = (
    "Clause 7: 'Risk passes to the Buyer when the goods are handed to the carrier.' "
    "Who carries the risk while the goods are in transit? Answer in one sentence."
)
EXPLAIN = "In two sentences, explain why a company keeps a ledger of what it spends."
SECTIONS = ("overview", "risks", "costs", "timeline", "staffing", "next steps")
CRITICAL = LLMTask(task_type="extraction", quality="critical", complexity="high")


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """How to run the demo; the defaults are the README's command."""

    config: str | None = None
    ledger: str | None = None
    local_base: str | None = None  # an OpenAI-compatible local server already running
    local_model: str | None = None  # its model name (default: the llama.cpp alias)
    use_ollama: bool = True


Work = Callable[[StepResult], Awaitable[None]]


def run_demo(options: DemoOptions, out: TextIO = sys.stdout) -> int:
    """Start (or find) the local model, run the pipeline, print the tables; exit code."""
    started = time.perf_counter()
    ledger = options.ledger or str(Path(tempfile.mkdtemp(prefix="aegis-demo-")) / "ledger.db")
    print("aegis_proxy demo: a small ingestion pipeline through a real AegisLLMProxy\n", file=out)
    with _warnings_to(out), _endpoint(options, out) as endpoint, _demo_env(endpoint, ledger):
        config = load_config(options.config or DEMO_CONFIG)
        intro(out, config, endpoint, fresh=options.ledger is None)
        asyncio.run(_run_pipeline(config, endpoint, out))
    print(f"\ndemo finished in {time.perf_counter() - started:.1f} s", file=out)
    return 0


class _DemoWarnings(logging.Handler):
    """Prints the library's warnings into the demo's output, as the demo's own lines."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(logging.WARNING)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, EVENT_ATTR, None) or {"event": record.getMessage()}
        print(warning_line(event), file=self.out, flush=True)


@contextlib.contextmanager
def _warnings_to(out: TextIO) -> Iterator[None]:
    """While the demo runs, the ``aegis_proxy`` loggers' warnings go to ``out`` only."""
    logger = logging.getLogger("aegis_proxy")
    saved = (logger.handlers[:], logger.propagate)
    logger.handlers = [_DemoWarnings(out)]
    logger.propagate = False
    try:
        yield
    finally:
        logger.handlers, logger.propagate = saved


@contextlib.contextmanager
def _endpoint(options: DemoOptions, out: TextIO) -> Iterator[LocalEndpoint]:
    if options.local_base:
        base, model = options.local_base, options.local_model or MODEL_ALIAS
        yield LocalEndpoint("external", "openai", base, model, f"{model} at {base}")
        return
    progress = _Progress(out)
    with local_endpoint(use_ollama=options.use_ollama, say=progress.say, on_wait=progress) as ep:
        progress.say(f"local model ready: {ep.label} at {ep.api_base}")
        yield ep


class _Progress:
    """One line that counts the seconds while the model loads (rewritten on a terminal)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.shown = False

    def __call__(self, elapsed: float) -> None:
        text = f"loading {MODEL_LABEL} into llama.cpp on 127.0.0.1 ... {elapsed:4.1f} s"
        if self.out.isatty():
            print(f"\r{text}", end="", file=self.out, flush=True)
        elif not self.shown:
            print(text.rsplit(" ... ", 1)[0] + " ...", file=self.out, flush=True)
        self.shown = True

    def say(self, text: str) -> None:
        end_line = "\n" if self.shown and self.out.isatty() else ""
        self.shown = False
        print(f"{end_line}{text}", file=self.out, flush=True)


@contextlib.contextmanager
def _demo_env(endpoint: LocalEndpoint, ledger: str) -> Iterator[None]:
    """Point config/demo.yaml's ${AEGIS_DEMO_*} at the local model and the demo's ledger."""
    values = {
        "AEGIS_DEMO_LOCAL_SDK": endpoint.sdk,
        "AEGIS_DEMO_LOCAL_BASE": endpoint.api_base,
        "AEGIS_DEMO_LOCAL_MODEL": endpoint.model,
        "AEGIS_DEMO_LEDGER": ledger,
    }
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


async def _run_pipeline(config: AegisConfig, endpoint: LocalEndpoint, out: TextIO) -> None:
    async with AegisLLMProxy(config) as proxy:
        steps = [
            await _step(out, "intake: email with personal data", _asking(proxy, EMAIL)),
            await _step(out, "contract risk: critical + high", _asking(proxy, CONTRACT)),
            await _step(out, "batch: 25 public filings", _batch(proxy)),
            await _step(out, "streamed answer", _streamed(proxy, out)),
            await _step(out, "supplier review: budgeted cloud", _report(proxy)),
        ]
        routing_table(out, steps, config, endpoint)
        summary = proxy.ledger.monthly_summary(None, budget_limits(config))
        print("\nthis month's ledger (aegis-proxy report):\n", file=out)
        print(render_summary(summary, "table", caching=config.cache.enabled), file=out)
        local = {name for name, provider in config.providers.items() if provider.local}
        audit = audit_month(proxy.ledger, current_month(), local)
        print("\nthe privacy audit (aegis-proxy audit):\n", file=out)
        print(render_audit(audit, "table"), file=out)
        truth(out, config, endpoint, Path(config.ledger.path))


async def _step(out: TextIO, title: str, work: Work) -> StepResult:
    result = StepResult(title)
    print(f"\n[{title}]", file=out, flush=True)
    started = time.perf_counter()
    await work(result)
    shown = list(zip(result.records, result.answers, strict=True))
    for record, answer in shown[:6]:
        print(f"  {served_label(record):<16} {quote(answer)}", file=out)
    if len(shown) > 6:
        print(f"  ... and {len(shown) - 6} more answers", file=out)
    print(f"  ({plural(len(shown), 'request')}, {time.perf_counter() - started:.1f} s)", file=out)
    return result


async def _ask(
    proxy: AegisLLMProxy, result: StepResult, prompt: str, task: LLMTask, max_tokens: int
) -> None:
    messages = [{"role": "user", "content": prompt}]
    answer = await proxy.acompletion(messages, task, max_tokens=max_tokens, temperature=0)
    response = cast("ChatCompletion", answer)
    result.records.append(response.aegis)  # type: ignore[attr-defined]  # set by the proxy
    result.answers.append(response.choices[0].message.content or "")


def _asking(proxy: AegisLLMProxy, prompt: str) -> Work:
    return lambda result: _ask(proxy, result, prompt, CRITICAL, 48)


def _batch(proxy: AegisLLMProxy) -> Work:
    task = LLMTask(task_type="summary", batch_size=25, agent="ingest")
    gate = asyncio.Semaphore(4)

    async def one(result: StepResult, i: int) -> None:
        async with gate:
            prompt = f"Summarise in five words: 'Filing {i}: revenue grew {i}% and costs fell.'"
            await _ask(proxy, result, prompt, task, 16)

    async def work(result: StepResult) -> None:
        await asyncio.gather(*(one(result, i) for i in range(1, 26)))

    return work


def _streamed(proxy: AegisLLMProxy, out: TextIO) -> Work:
    async def work(result: StepResult) -> None:
        messages = [{"role": "user", "content": EXPLAIN}]
        task = LLMTask(task_type="generation")
        opened = await proxy.acompletion(messages, task, stream=True, max_tokens=64, temperature=0)
        stream = cast("AegisStream", opened)
        print("  streaming: ", end="", file=out, flush=True)
        parts: list[str] = []
        async with stream:
            async for chunk in stream:
                text = (chunk.choices[0].delta.content if chunk.choices else None) or ""
                parts.append(text)
                print(text.replace("\n", " "), end="", file=out, flush=True)
        print(file=out)
        result.records.append(stream.aegis)
        result.answers.append("".join(parts))

    return work


def _report(proxy: AegisLLMProxy) -> Work:
    async def work(result: StepResult) -> None:
        for section in SECTIONS:
            prompt = f"Write one sentence for the '{section}' section of a supplier review."
            await _ask(proxy, result, prompt, LLMTask(task_type="report"), 48)

    return work
