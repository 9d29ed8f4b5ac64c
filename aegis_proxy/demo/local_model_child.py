"""Inside the local model's child process: llama.cpp's server, kept honest and mortal.

``LocalModelServer`` (``aegis_proxy.demo.local_model``) starts this module as
``python -m aegis_proxy.demo.local_model_child``; nothing else imports llama.cpp. What must
always hold:

- the server listens on 127.0.0.1 only, and serves the model under ``MODEL_ALIAS``;
- ``max_completion_tokens`` (what any-llm sends for ``max_tokens``) is copied into
  ``max_tokens`` (all llama-cpp-python's server reads), so a caller's token cap, and with
  it every budget reservation, holds against the local model too;
- the child exits by itself when its parent dies, so a killed demo cannot leak a server;
- it logs no prompt or response text (uvicorn at ``warning``, llama.cpp not verbose).
"""

from __future__ import annotations

import importlib
import json
import os
import threading
import time
from typing import Any

MODEL_ALIAS = "smollm2-135m-instruct"


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
