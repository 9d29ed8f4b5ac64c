"""A real local model on 127.0.0.1: SmolLM2-135M-Instruct served by llama.cpp, or Ollama.

The demo and the integration tests need a local tier that is a real LLM, with nothing
installed or running beforehand (``local_model_setup`` finds or installs what it needs).
An Ollama already running on localhost:11434 with a model pulled is used instead; else
llama.cpp's OpenAI-compatible server runs as a child process (``local_model_child``).
What must always hold:

- the server listens on 127.0.0.1 only, on a free port, and is ready (``/v1/models``
  answers) before ``start`` returns; a server that dies or stalls raises
  ``LocalModelError`` with the tail of its log;
- ``stop`` leaves no process behind: terminate, wait, kill. The child also exits by itself
  when its parent dies, so a killed demo cannot leak a server;
- the child honours OpenAI's ``max_completion_tokens`` (what any-llm sends for
  ``max_tokens``; llama-cpp-python's server reads only ``max_tokens``), so a caller's
  token cap, and with it every budget reservation, holds against the local model too;
- the server log keeps no prompt or response text and is deleted on a clean stop.

The names of ``local_model_setup`` and ``local_model_child`` are importable from here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from aegis_proxy.demo.local_model_child import MODEL_ALIAS
from aegis_proxy.demo.local_model_setup import (
    MODEL_LABEL,
    OLLAMA_URL,
    LocalModelError,
    Say,
    detect_ollama,
    ensure_gguf,
    llama_server_missing,
    quiet,
)

__all__ = [
    "LocalEndpoint",
    "LocalModelServer",
    "free_port",
    "local_endpoint",
    "serve_until_interrupted",
]


@dataclass(frozen=True, slots=True)
class LocalEndpoint:
    """Where the local model answers: the any-llm ``sdk`` id, its base URL and model."""

    kind: str  # "llama.cpp" | "ollama" | "external"
    sdk: str
    api_base: str
    model: str
    label: str


# -- llama.cpp's server as a child process -------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalModelServer:
    """llama.cpp's OpenAI-compatible server for one GGUF file, as a context manager."""

    def __init__(
        self,
        model_path: Path,
        *,
        port: int | None = None,
        n_ctx: int = 2048,
        startup_timeout_s: float = 120.0,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        self.model_path = model_path
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.n_ctx = n_ctx
        self.startup_timeout_s = startup_timeout_s
        self.on_wait = on_wait
        self.model = MODEL_ALIAS
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (ends in ``/v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    def endpoint(self) -> LocalEndpoint:
        return LocalEndpoint("llama.cpp", "openai", self.base_url, self.model, MODEL_LABEL)

    def start(self) -> Self:
        """Start the child and return once it answers; ``LocalModelError`` otherwise."""
        missing = llama_server_missing()
        if missing:
            raise LocalModelError(f"cannot serve the local model: {missing}")
        fd, name = tempfile.mkstemp(prefix="aegis-local-model-", suffix=".log")
        self.log_path = Path(name)
        with os.fdopen(fd, "wb") as log:
            self.process = subprocess.Popen(  # noqa: S603
                self._command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop(keep_log=True)
            raise
        return self

    def _command(self) -> list[str]:
        return [
            sys.executable, "-m", "aegis_proxy.demo.local_model_child",
            "--model", str(self.model_path), "--port", str(self.port),
            "--n-ctx", str(self.n_ctx), "--parent-pid", str(os.getpid()),
        ]  # fmt: skip

    def _wait_ready(self) -> None:
        started = time.monotonic()
        while not self._answers():
            elapsed = time.monotonic() - started
            if self.process is not None and self.process.poll() is not None:
                raise LocalModelError(
                    f"local model server exited early (log kept: {self.log_path}): "
                    f"{self.log_tail()}"
                )
            if elapsed > self.startup_timeout_s:
                raise LocalModelError(
                    f"local model server not ready after {self.startup_timeout_s:.0f} s"
                )
            if self.on_wait is not None:
                self.on_wait(elapsed)
            time.sleep(0.2)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=1.0) as answer:  # noqa: S310
                return bool(answer.status == 200)
        except OSError:
            return False

    def log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-4:]) or "(empty log)"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, *, keep_log: bool = False) -> None:
        """Terminate the child, wait, kill if needed; delete its log unless asked to keep it."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self.log_path is not None and not keep_log:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def local_endpoint(
    *,
    use_ollama: bool = True,
    install: bool = True,
    say: Say = quiet,
    on_wait: Callable[[float], None] | None = None,
    ollama_url: str = OLLAMA_URL,
) -> Iterator[LocalEndpoint]:
    """A running local model: an Ollama already serving a model, else llama.cpp (started)."""
    listed = detect_ollama(ollama_url) if use_ollama else None
    models = None if listed is None else [m for m in listed if "embed" not in m]  # chat only
    if models:
        say(f"Ollama is running at {ollama_url}: using its model {models[0]} as the local tier")
        yield LocalEndpoint("ollama", "ollama", ollama_url, models[0], f"Ollama {models[0]}")
        return
    if models == []:
        say(f"Ollama is running at {ollama_url} but has no chat model pulled: not using it")
    missing = llama_server_missing()
    if missing:
        raise LocalModelError(f"no local model: {missing}; or start Ollama with a model")
    path = ensure_gguf(install=install, say=say)
    with LocalModelServer(path, on_wait=on_wait) as server:
        yield server.endpoint()


def serve_until_interrupted(path: Path, port: int | None, say: Say) -> int:
    """``aegis-proxy local-model serve``: serve until Ctrl-C or SIGTERM; the exit code."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with LocalModelServer(path, port=port) as server:
        say(f"{MODEL_LABEL} answers at {server.base_url} (OpenAI API, model {server.model})")
        say(f"try: AEGIS_CONFIG=config/demo.yaml AEGIS_DEMO_LOCAL_BASE={server.base_url} ...")
        say("Ctrl-C stops it")
        while not stop.wait(0.5):
            if not server.running:
                say(f"the local model server died: {server.log_tail()}")
                return 1
    say("stopped")
    return 0
