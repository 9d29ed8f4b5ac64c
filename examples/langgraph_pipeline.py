"""A LangGraph ingestion graph whose every LLM call goes through aegis_proxy.

Three nodes (classify the question, extract facts from the document, answer) each call
``aegis_proxy.acompletion`` with an ``LLMTask`` that describes the work; the proxy decides
where each call goes (personal data stays local, budgets hold, every call is a ledger
row), and ``resp.aegis`` says where it went and why.

Run it on the real local model (no keys needed)::

    aegis-proxy local-model serve --port 8080 &
    AEGIS_CONFIG=config/demo.yaml python examples/langgraph_pipeline.py

The script waits (up to two minutes) until the config's local servers answer, so it can
be started right after the server, which takes a few seconds to load its model.
"""

from __future__ import annotations

import asyncio
import operator
import sys
import time
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph

from aegis_proxy import LLMTask, acompletion, close_default_proxy

CATEGORIES = ("billing", "legal", "technical", "shipping", "other")
CLASSIFY = LLMTask(task_type="query", complexity="low", agent="classifier")
EXTRACT = LLMTask(task_type="extraction", quality="critical", complexity="high", agent="extractor")
ANSWER = LLMTask(task_type="generation", agent="answerer")


class PipelineState(TypedDict, total=False):
    """What flows through the graph; ``served_by`` collects one entry per node."""

    question: str
    document: str
    category: str
    facts: str
    answer: str
    served_by: Annotated[list[str], operator.add]


async def ask(system: str, user: str, task: LLMTask, max_tokens: int) -> tuple[str, str]:
    """One call through the proxy: (answer text, 'provider (rule)')."""
    resp: Any = await acompletion(
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
        task=task,
        max_tokens=max_tokens,
        temperature=0,
    )
    return resp.choices[0].message.content or "", f"{resp.aegis.provider} ({resp.aegis.rule})"


async def classify(state: PipelineState) -> PipelineState:
    system = f"Classify the question with one word: {', '.join(CATEGORIES)}."
    text, served = await ask(system, state["question"], CLASSIFY, 8)
    category = next((c for c in CATEGORIES if c in text.lower()), "other")
    return {"category": category, "served_by": [f"classify: {served}"]}


async def extract(state: PipelineState) -> PipelineState:
    system = "List the facts of the document that matter for the question, one per line."
    user = f"Question: {state['question']}\n\nDocument: {state['document']}"
    text, served = await ask(system, user, EXTRACT, 64)
    return {"facts": text, "served_by": [f"extract: {served}"]}


async def answer(state: PipelineState) -> PipelineState:
    system = f"Answer the {state['category']} question in one sentence, from the facts only."
    user = f"Facts: {state['facts']}\n\nQuestion: {state['question']}"
    text, served = await ask(system, user, ANSWER, 48)
    return {"answer": text, "served_by": [f"answer: {served}"]}


def build_graph() -> Any:
    """classify -> extract -> answer."""
    graph = StateGraph(PipelineState)
    graph.add_node("classify", classify)
    graph.add_node("extract", extract)
    graph.add_node("answer", answer)
    graph.add_edge(START, "classify")
    graph.add_edge("classify", "extract")
    graph.add_edge("extract", "answer")
    graph.add_edge("answer", END)
    return graph.compile()


async def run(question: str, document: str) -> PipelineState:
    """Run the graph once; the process-wide proxy is closed afterwards."""
    try:
        result: PipelineState = await build_graph().ainvoke(
            {"question": question, "document": document}
        )
        return result
    finally:
        await close_default_proxy()


def wait_for_local_servers(timeout_s: float = 120.0) -> None:
    """Return once every local server of the default config lists its models."""
    from aegis_proxy.call.discovery import discover
    from aegis_proxy.config import load_config
    from aegis_proxy.default import default_config_path

    config = load_config(default_config_path())
    deadline = time.monotonic() + timeout_s
    while down := [server.url for server in discover(config, timeout_s=2.0) if server.error]:
        if time.monotonic() > deadline:
            raise SystemExit(f"no answer after {timeout_s:.0f} s from {', '.join(down)}")
        print(f"waiting for the local model server at {down[0]} ...", file=sys.stderr)
        time.sleep(1.0)


def main() -> None:
    wait_for_local_servers()
    state = asyncio.run(
        run(
            "Who pays for the return shipping?",
            "Returns policy, section 4: the customer pays return shipping unless the item "
            "arrived damaged, in which case the shop refunds it within 14 days.",
        )
    )
    for key in ("category", "facts", "answer"):
        print(f"{key}: {state.get(key, '').strip()}")
    print("served by:", *state.get("served_by", []), sep="\n  ")


if __name__ == "__main__":
    main()
