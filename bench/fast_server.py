"""A fast fake OpenAI-compatible server for benchmarks, run in its own process.

Why it exists: ``tests/fakeserver.py`` (stdlib ``http.server``, one thread per connection)
is built to be inspected, not to be fast; at a few thousand requests per second it would
be the thing measured. This server is a raw asyncio protocol on HTTP/1.1 keep-alive that
answers every ``POST .../chat/completions`` with one canned ChatCompletion (with usage),
without parsing the body. What must always hold:

- it counts every chat request it received and every connection opened (``GET /stats``
  -> ``{"chat": n, "connections": m}``; ``POST /reset`` zeroes both), so a benchmark can
  compare ledger rows with provider calls, and see a client's connection churn;
- it listens on 127.0.0.1 only, and stops with its parent (``FastServer`` is a context
  manager that starts and kills the process);
- an optional fixed delay per answer (``--delay-ms``) stands in for a provider's latency.

Run alone: ``python bench/fast_server.py --port 0`` prints ``PORT <n>`` and serves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from typing import Any

COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "The parties are Acme and Beta."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 114, "completion_tokens": 9, "total_tokens": 123},
}
PROMPT_TOKENS = 114  # what OpenAI counts for bench/common.MESSAGES (the bench checks it)
COMPLETION_TOKENS = 9


def _response(status: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


CHAT_REPLY = _response("200 OK", json.dumps(COMPLETION).encode())
NOT_FOUND = _response("404 Not Found", b'{"error": {"message": "not found"}}')


class Counter:
    """Requests served since start or the last reset."""

    def __init__(self) -> None:
        self.chat = 0
        self.connections = 0


class BenchProtocol(asyncio.Protocol):
    """One keep-alive connection: split requests by Content-Length, answer each."""

    def __init__(self, counter: Counter, delay_s: float) -> None:
        self.counter = counter
        self.delay_s = delay_s
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.counter.connections += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = _content_length(head)
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self._answer(head)

    def _answer(self, head: bytes) -> None:
        line = head.split(b"\r\n", 1)[0]
        method, _, rest = line.partition(b" ")
        path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
        if method == b"POST" and path.endswith(b"/chat/completions"):
            self.counter.chat += 1
            self._send(CHAT_REPLY)
        elif path == b"/stats":
            stats = {"chat": self.counter.chat, "connections": self.counter.connections}
            self._send(_response("200 OK", json.dumps(stats).encode()))
        elif method == b"POST" and path == b"/reset":
            self.counter.chat = self.counter.connections = 0
            self._send(_response("200 OK", b"{}"))
        else:
            self._send(NOT_FOUND)

    def _send(self, payload: bytes) -> None:
        if self.transport is None:
            return
        if self.delay_s > 0:
            asyncio.get_running_loop().call_later(self.delay_s, self._write, payload)
        else:
            self.transport.write(payload)

    def _write(self, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def _content_length(head: bytes) -> int:
    lower = head.lower()
    at = lower.find(b"content-length:")
    if at < 0:
        return 0
    end = lower.find(b"\r\n", at)
    return int(lower[at + 15 : end if end >= 0 else None].strip())


async def serve(port: int, delay_s: float) -> None:
    counter = Counter()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: BenchProtocol(counter, delay_s), "127.0.0.1", port, backlog=4096
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"PORT {bound}", flush=True)
    async with server:
        await server.serve_forever()


class FastServer:
    """Start ``fast_server.py`` in a child process; ``url`` is its OpenAI base URL."""

    def __init__(self, delay_ms: float = 0.0) -> None:
        self.delay_ms = delay_ms
        self.process: subprocess.Popen[str] | None = None
        self.port = 0

    def __enter__(self) -> FastServer:
        command = [sys.executable, __file__, "--port", "0", "--delay-ms", str(self.delay_ms)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            self.process.kill()
            raise RuntimeError(f"fast server did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.root}/v1"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.root}/stats", timeout=5) as reply:  # noqa: S310 (loopback)
            result: dict[str, Any] = json.loads(reply.read())
        return result

    def reset(self) -> None:
        url = f"{self.root}/reset"
        request = urllib.request.Request(url, data=b"", method="POST")  # noqa: S310 (loopback)
        with urllib.request.urlopen(request, timeout=5):  # noqa: S310 (loopback)
            pass


async def _raw_client(port: int, stop: float, body: bytes, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    size = len(CHAT_REPLY)
    while time.perf_counter() < stop:
        writer.write(request)
        await reader.readexactly(size)
        counts[0] += 1
    writer.close()


async def _capacity(port: int, connections: int, seconds: float) -> float:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    counts = [0]
    began = time.perf_counter()
    stop = began + seconds
    await asyncio.gather(*(_raw_client(port, stop, body, counts) for _ in range(connections)))
    return counts[0] / (time.perf_counter() - began)


def server_capacity(port: int, connections: int = 64, seconds: float = 2.0) -> float:
    """Requests/s the server answers to a minimal raw-socket client (its ceiling here)."""
    return asyncio.run(_capacity(port, connections, seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
