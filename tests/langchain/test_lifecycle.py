"""ChatAegis's lifetime and options: blocking streams, event loops, closing, constructor args."""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "langchain_core",
    reason="LOUD: the 'langchain' extra is not installed: ChatAegis tests did NOT run",
)

from langchain_core.messages import AIMessage, AIMessageChunk
from pydantic import ValidationError

from aegis_proxy import LedgerError, LLMTask, NoProviderAvailableError, RequestValidationError
from aegis_proxy.langchain.chat import ChatAegis
from tests.conftest import Rig
from tests.fakeserver import Fault

CRITICAL = LLMTask(task_type="extraction", quality="critical", complexity="high")


def rows(rig: Rig) -> list[dict[str, Any]]:
    with sqlite3.connect(rig.tmp_path / "ledger.db") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY id")]


def owned(rig: Rig, **options: Any) -> ChatAegis:
    return ChatAegis(config_path=str(rig.write_config()), **options)


def test_blocking_stream_yields_pieces_then_usage(rig: Rig) -> None:
    """stream() yields the reply piece by piece, then the ledger's usage on the last chunk."""
    model = owned(rig, task=CRITICAL)
    chunks = list(model.stream("Explain the clause."))
    model.close()
    assert len(chunks) > 3
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.content == rig.openai.reply_text
    [row] = rows(rig)
    assert (row["status"], row["stream"]) == ("ok", 1)
    assert merged.usage_metadata is not None
    assert merged.usage_metadata["output_tokens"] == row["output_tokens"] > 0
    assert chunks[-1].chunk_position == "last"


def test_blocking_stream_left_early_settles_as_cancelled(rig: Rig) -> None:
    """Closing stream() after its first chunk settles the ledger row as cancelled."""
    rig.local.reply_text = "one two three four five six seven eight"
    model = owned(rig)
    stream = model.stream("Count.")
    next(stream)
    stream.close()
    model.close()
    [row] = rows(rig)
    assert row["status"] == "cancelled"


def test_blocking_calls_on_a_passed_proxy_use_its_config(rig: Rig) -> None:
    """invoke on a model given a proxy answers through a sibling proxy of the same config."""
    proxy = rig.proxy()
    model = ChatAegis(proxy=proxy)
    answer = model.invoke("Summarise the report.")
    model.close()
    assert answer.content == rig.local.reply_text
    assert [r["status"] for r in rows(rig)] == ["ok"]
    proxy.close_files()


def test_one_model_serves_two_event_loops(rig: Rig) -> None:
    """One ChatAegis from a config path answers on two loops in turn and two at once."""
    model = owned(rig)
    answers = [asyncio.run(model.ainvoke("One.")), asyncio.run(model.ainvoke("Two."))]

    def in_its_own_loop() -> None:
        answers.append(asyncio.run(model.ainvoke("Three.")))

    workers = [threading.Thread(target=in_its_own_loop) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    model.close()
    assert [a.content for a in answers] == [rig.local.reply_text] * 4
    assert [r["status"] for r in rows(rig)] == ["ok"] * 4


def test_a_passed_proxy_on_another_loop_is_refused_clearly(rig: Rig) -> None:
    """A proxy used from a second event loop raises RequestValidationError, sends nothing."""
    proxy = rig.proxy()
    model = ChatAegis(proxy=proxy)
    first = asyncio.new_event_loop()
    try:
        first.run_until_complete(model.ainvoke("First."))
        with pytest.raises(RequestValidationError) as caught:
            asyncio.run(model.ainvoke("Second."))
    finally:
        first.run_until_complete(proxy.aclose())  # on the loop its clients belong to
        first.close()
    assert caught.value.field == "event loop"
    assert len(rig.local.chat_requests()) == 1


def test_a_collected_model_closes_its_proxy(rig: Rig) -> None:
    """A model built from a config path closes its proxy once it is garbage collected."""
    model = owned(rig)
    model.invoke("Hello.")
    proxy = model.proxy
    assert proxy is not None
    del model
    gc.collect()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            proxy.ledger.budget_state("local_ollama", "2026-01")
        except LedgerError:
            return
        time.sleep(0.05)
    pytest.fail("the collected model's proxy was not closed")


def test_a_script_that_never_closes_its_model_leaves_no_wal_files(rig: Rig) -> None:
    """A script that invokes a ChatAegis and just exits closes its ledger at exit.

    The script's exit handler, registered first, runs after ours (atexit is LIFO).
    """
    wal = rig.tmp_path / "ledger.db-wal"
    code = (
        "import atexit, os, sys\n"
        "atexit.register(lambda: print('wal left' if os.path.exists(sys.argv[1]) else 'closed'))\n"
        "from aegis_proxy.langchain import ChatAegis\n"
        "model = ChatAegis(config_path=sys.argv[2])\n"
        "model.invoke('Hello.')\n"
        "print('answered', os.path.exists(sys.argv[1]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).absolute().parents[2])}
    command = [sys.executable, "-c", code, str(wal), str(rig.write_config())]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    said = [
        line for line in out.stdout.splitlines() if line in ("answered True", "closed", "wal left")
    ]
    assert said == ["answered True", "closed"], out.stderr
    assert sorted(p.name for p in rig.tmp_path.iterdir() if "-" in p.name) == []


async def test_invoke_inside_a_running_loop_answers(rig: Rig) -> None:
    """The blocking invoke works inside a running loop (a notebook), on the model's loop."""
    model = owned(rig)
    answer = model.invoke("Hello.")
    await model.aclose()
    assert answer.content == rig.local.reply_text


def test_constructor_stop_is_sent(rig: Rig) -> None:
    """stop given to the constructor reaches the provider; a call's own stop wins."""
    model = owned(rig, task=CRITICAL, stop=["END"])
    model.invoke("Hello.")
    model.invoke("Hello.", stop=["HALT"])
    model.close()
    assert [r.body["stop"] for r in rig.openai.chat_requests()] == [["END"], ["HALT"]]


def test_constructor_timeout_is_the_request_deadline(rig: Rig) -> None:
    """timeout bounds the whole request: a provider that stalls past it is given up on."""
    rig.local.add_fault(Fault.delay(5))
    model = owned(rig, timeout=0.5)
    began = time.monotonic()
    with pytest.raises(NoProviderAvailableError):
        model.invoke("Hello.")
    model.close()
    assert time.monotonic() - began < 3


@pytest.mark.parametrize(("retries", "answers"), [(1, True), (0, False)])
def test_constructor_max_retries_is_resilience_retries(
    rig: Rig, retries: int, answers: bool
) -> None:
    """max_retries=1 retries a 500 at the same provider; max_retries=0 does not."""
    rig.local.add_fault(Fault.status(500))
    model = owned(rig, max_retries=retries)
    try:
        if answers:
            assert model.invoke("Hello.").content == rig.local.reply_text
        else:
            with pytest.raises(NoProviderAvailableError):
                model.invoke("Hello.")
    finally:
        model.close()
    assert len(rig.local.chat_requests()) == retries + 1


def test_max_retries_unlike_a_passed_proxy_is_refused(rig: Rig) -> None:
    """max_retries that differs from a passed proxy's config is refused, naming the option."""
    proxy = rig.proxy()
    with pytest.raises(RequestValidationError) as caught:
        ChatAegis(proxy=proxy, max_retries=3)
    assert caught.value.field == "max_retries"
    proxy.close_files()


def test_constructor_streaming_makes_invoke_stream(rig: Rig) -> None:
    """streaming=True makes invoke use the provider's stream (the row says stream)."""
    model = owned(rig, streaming=True)
    answer = model.invoke("Hello.")
    model.close()
    assert isinstance(answer, AIMessage)
    assert answer.content == rig.local.reply_text
    [row] = rows(rig)
    assert row["stream"] == 1


def test_an_unknown_constructor_option_is_refused(rig: Rig) -> None:
    """An option ChatAegis does not have (model=...) is refused, not silently dropped."""
    with pytest.raises(ValidationError, match="model"):
        ChatAegis(config_path=str(rig.write_config()), model="gpt-4o")


def test_an_api_key_given_to_the_constructor_is_never_sent(rig: Rig) -> None:
    """api_key is accepted (LangChain's standard params) and reaches no provider."""
    model = owned(rig, task=CRITICAL, api_key="sk-langchain-should-stay-home")
    model.invoke("Hello.")
    model.close()
    sent = [r.raw + str(r.headers).encode() for r in rig.openai.requests + rig.local.requests]
    assert sent
    assert all(b"sk-langchain-should-stay-home" not in s for s in sent)
    assert "sk-langchain" not in repr(model)


def test_ls_params_name_the_model_the_route_tries_first(rig: Rig) -> None:
    """Traces name the first model of the task's route, or a per-call model override."""
    model = owned(rig, stop=["END"])
    assert model._get_ls_params()["ls_model_name"] == "llama3.2:3b"
    assert model._get_ls_params(task=CRITICAL)["ls_model_name"] == "gpt-4o"
    assert model._get_ls_params(model="other")["ls_model_name"] == "other"
    assert model._get_ls_params()["ls_stop"] == ["END"]
    assert model._get_ls_params()["ls_provider"] == "aegis"
    model.close()
