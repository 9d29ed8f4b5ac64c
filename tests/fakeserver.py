"""A fake LLM provider that speaks the real OpenAI and Ollama wire protocols on loopback.

Tests point the real SDKs (``openai``, ``ollama``, through ``any-llm``) at it, so nothing
of ours is patched. It serves, on one port:

- ``POST /v1/chat/completions`` (JSON, or SSE when ``stream`` is true) and ``GET /v1/models``;
- ``POST /api/chat`` (JSON when ``stream`` is false, else NDJSON), ``GET /api/tags`` and
  ``POST /api/show``.

With ``cooperative = True`` it answers tools, ``tool_choice`` and JSON schemas the way a
willing model would (``tests.fakereply``); a configured ``tool_call`` still wins.

What must always hold:

- Token counts are a pure function of the wire body and the configured reply
  (:func:`count_prompt_tokens`, :func:`count_completion_tokens`), so tests can compute them.
- Faults queue FIFO and each one is consumed by exactly one chat request; other paths never
  consume faults. Every request, faulted or not, is recorded before it is answered.
- ``stop()`` returns quickly even while handlers sleep (they wait on an Event that stop
  sets), closes idle keep-alive connections and joins every thread it started.

JSON bodies carry a Content-Length and are written in two halves, so a stall or drop
"after the first chunk" also works on non-streaming requests (the client gets half a
body). Streams use chunked transfer-encoding over keep-alive HTTP/1.1.
"""

from __future__ import annotations

import contextlib
import enum
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import urlsplit

from tests.fakereply import cooperative_answer

__all__ = [
    "FakeProviderServer",
    "Fault",
    "FaultKind",
    "RecordedRequest",
    "billed_completion_tokens",
    "billed_prompt_tokens",
    "count_completion_tokens",
    "count_prompt_tokens",
]

CHAT_PATHS = frozenset({"/v1/chat/completions", "/api/chat"})
DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "llama3.2:3b")
_JOIN_TIMEOUT_S = 5.0

Protocol = Literal["openai", "ollama"]


# --- token accounting -------------------------------------------------------------------


def _message_text_bytes(message: dict[str, Any]) -> int:
    """UTF-8 length of a message's string content, text parts and tool-call arguments."""
    size = 0
    content = message.get("content")
    if isinstance(content, str):
        size += len(content.encode())
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                size += len(part["text"].encode())
    for call in message.get("tool_calls") or []:
        arguments = (call.get("function") or {}).get("arguments")
        if not isinstance(arguments, str):  # Ollama sends a mapping
            arguments = json.dumps(arguments)
        size += len(arguments.encode())
    return size


def count_prompt_tokens(body: dict[str, Any] | None) -> int:
    """Prompt tokens the fake reports: sum of (text bytes // 4 + 1) per message, at least 1.

    ``body`` is the request body as received on the wire (``RecordedRequest.body``), for
    either protocol. Text bytes are counted by :func:`_message_text_bytes`: string content,
    the ``text`` of content parts, and tool-call arguments (a mapping is JSON-dumped first).
    """
    messages = (body or {}).get("messages") or []
    total = sum(_message_text_bytes(m) // 4 + 1 for m in messages if isinstance(m, dict))
    return max(total, 1)


WORST_IMAGE_TOKENS = 1445
"""What one image bills at worst (OpenAI gpt-4o, high detail: 85 + 170 x 8 tiles)."""
_IMAGE_TYPES = frozenset({"image_url", "input_image", "image"})


def _billed(value: Any, count: Callable[[str], int], *, keys: bool) -> int:
    """``count`` of every string (numbers as text; keys when ``keys``) in ``value``."""
    if isinstance(value, str):
        return count(value)
    if isinstance(value, bool) or value is None:
        return 0
    if isinstance(value, int | float):
        return count(str(value))
    if isinstance(value, dict):
        if value.get("type") in _IMAGE_TYPES:
            return WORST_IMAGE_TOKENS
        named = sum(count(str(k)) for k in value) if keys else 0
        return named + sum(_billed(v, count, keys=keys) for v in value.values())
    if isinstance(value, list):
        return sum(_billed(item, count, keys=keys) for item in value)
    return count(str(value))


def billed_prompt_tokens(body: dict[str, Any] | None) -> int:
    """What a provider billing *everything it received* would charge as input, at most.

    For a model whose tokenizer is public (OpenAI's, through tiktoken's files), every
    string it received is counted in tokens the way OpenAI bills: each message's values
    plus 3 per message and 3 per request, and every other field of the body (tools,
    schemas, parameters) keys and values alike. For any other model every string counts
    one token per byte (a byte-level BPE never makes more). An image part, or an entry of
    Ollama's ``images``, counts ``WORST_IMAGE_TOKENS``.
    """
    body = dict(body or {})
    encoding = _openai_encoding(body.pop("model", None))
    count = (lambda text: len(encoding.encode_ordinary(text))) if encoding else _utf8_bytes
    messages = body.pop("messages", None) or []
    total = 3 + _billed(body, count, keys=True)
    for message in messages:
        message = dict(message)
        images = message.pop("images", None) or []
        keys = encoding is None  # OpenAI bills a message's values, not its JSON keys
        total += 3 + _billed(message, count, keys=keys) + WORST_IMAGE_TOKENS * len(images)
    return total


def _utf8_bytes(text: str) -> int:
    return len(text.encode())


def _openai_encoding(model: object) -> Any | None:
    """tiktoken's encoding of an OpenAI ``model`` from the bundled files, or None."""
    if not isinstance(model, str):
        return None
    from tiktoken.model import encoding_name_for_model

    from aegis_proxy.reserve.pricing import bundled_encoding

    try:
        return bundled_encoding(encoding_name_for_model(model))
    except KeyError:
        return None


def billed_completion_tokens(body: dict[str, Any] | None) -> int:
    """``n`` choices times the token limit the body gives (OpenAI or Ollama spelling)."""
    body = body or {}
    options = body.get("options") or {}
    limits = [body.get("max_tokens"), body.get("max_completion_tokens"), options.get("num_predict")]
    limit = max((v for v in limits if isinstance(v, int)), default=0)
    return int(body.get("n") or 1) * limit


def count_completion_tokens(reply_text: str, tool_call: tuple[str, dict[str, Any]] | None) -> int:
    """Completion tokens: words in the reply, or ``len(json.dumps(arguments)) // 4 + 1``."""
    if tool_call is not None:
        return len(json.dumps(tool_call[1])) // 4 + 1
    return len(reply_text.split())


# --- faults and records -----------------------------------------------------------------


class FaultKind(enum.StrEnum):
    STATUS = "status"
    DELAY = "delay"
    DROP = "drop"
    MALFORMED = "malformed"
    STALL_AFTER_FIRST_CHUNK = "stall_after_first_chunk"
    DROP_AFTER_FIRST_CHUNK = "drop_after_first_chunk"
    HOLD = "hold"


@dataclass(frozen=True)
class Fault:
    """One misbehaviour applied to one chat request; build it with the class methods."""

    kind: FaultKind
    status_code: int = 200
    retry_after: float | str | None = None
    seconds: float = 0.0
    message: str | None = None

    @classmethod
    def status(
        cls, code: int, retry_after: float | str | None = None, message: str | None = None
    ) -> Fault:
        """Answer with the provider's error body for ``code`` (and ``Retry-After`` if given)."""
        return cls(FaultKind.STATUS, status_code=code, retry_after=retry_after, message=message)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Sleep before sending headers, then answer normally."""
        return cls(FaultKind.DELAY, seconds=seconds)

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without sending anything."""
        return cls(FaultKind.DROP)

    @classmethod
    def malformed(cls) -> Fault:
        """Answer 200 with a body (or stream line) that is not valid JSON."""
        return cls(FaultKind.MALFORMED)

    @classmethod
    def stall_after_first_chunk(cls, seconds: float) -> Fault:
        """Send the first chunk, sleep, then finish normally."""
        return cls(FaultKind.STALL_AFTER_FIRST_CHUNK, seconds=seconds)

    @classmethod
    def hold(cls) -> Fault:
        """Record the request (it is billed), then answer only after ``release_held()``."""
        return cls(FaultKind.HOLD)

    @classmethod
    def drop_after_first_chunk(cls) -> Fault:
        """Send the first chunk, then close the connection."""
        return cls(FaultKind.DROP_AFTER_FIRST_CHUNK)


@dataclass(frozen=True)
class RecordedRequest:
    """A request as received: ``headers`` has lower-case keys, ``body`` is JSON or None."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes

    @property
    def is_chat(self) -> bool:
        return self.method == "POST" and urlsplit(self.path).path in CHAT_PATHS


# --- response building (pure) ------------------------------------------------------------


@dataclass
class _Answer:
    """What to write: JSON bodies have two pieces, streams one piece per chunk."""

    status: int
    content_type: str
    pieces: list[bytes]
    streaming: bool = False
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Reply:
    """The configured reply, snapshotted when a request arrives."""

    model: str
    text: str
    tool_call: tuple[str, dict[str, Any]] | None
    prompt_tokens: int
    completion_tokens: int
    with_usage: bool


def _json_answer(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> _Answer:
    data = json.dumps(payload).encode()
    half = len(data) // 2
    return _Answer(status, "application/json", [data[:half], data[half:]], headers=headers or {})


def _split_words(text: str) -> list[str]:
    """Split text into word pieces that concatenate back to exactly ``text``."""
    parts = re.findall(r"\s*\S+", text)
    tail = text[len("".join(parts)) :]
    if not parts:
        return [text]
    parts[-1] += tail
    return parts


def _split_even(text: str, pieces: int = 3) -> list[str]:
    size = max(1, -(-len(text) // pieces))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _openai_usage(reply: _Reply) -> dict[str, int]:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


def _openai_tool_call(reply: _Reply, call_id: str) -> dict[str, Any]:
    assert reply.tool_call is not None
    name, arguments = reply.tool_call
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


def _openai_completion(reply: _Reply) -> _Answer:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
    finish = "stop"
    if reply.tool_call is not None:
        message["content"] = None
        message["tool_calls"] = [_openai_tool_call(reply, f"call_{uuid.uuid4().hex[:24]}")]
        finish = "tool_calls"
    payload: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "system_fingerprint": "fp_fake",
    }
    if reply.with_usage:
        payload["usage"] = _openai_usage(reply)
    return _json_answer(payload)


def _openai_deltas(reply: _Reply) -> list[tuple[dict[str, Any], str | None]]:
    """(delta, finish_reason) for each choice chunk, in OpenAI's order."""
    if reply.tool_call is None:
        words = [({"content": w}, None) for w in _split_words(reply.text)]
        return [({"role": "assistant", "content": ""}, None), *words, ({}, "stop")]
    call = _openai_tool_call(reply, f"call_{uuid.uuid4().hex[:24]}")
    head = {**call, "index": 0, "function": {"name": call["function"]["name"], "arguments": ""}}
    args = [
        ({"tool_calls": [{"index": 0, "function": {"arguments": a}}]}, None)
        for a in _split_even(call["function"]["arguments"])
    ]
    return [
        ({"role": "assistant", "content": None, "tool_calls": [head]}, None),
        *args,
        ({}, "tool_calls"),
    ]


def _openai_stream(reply: _Reply, include_usage: bool) -> _Answer:
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": reply.model,
        "system_fingerprint": "fp_fake",
    }
    usage_field = {"usage": None} if include_usage else {}
    chunks = [
        {
            **base,
            "choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": f}],
            **usage_field,
        }
        for d, f in _openai_deltas(reply)
    ]
    if include_usage and reply.with_usage:
        chunks.append({**base, "choices": [], "usage": _openai_usage(reply)})
    pieces = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]
    return _Answer(200, "text/event-stream; charset=utf-8", pieces, streaming=True)


def _ollama_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _ollama_stats(reply: _Reply) -> dict[str, int]:
    if not reply.with_usage:
        return {}
    load, prompt_ns, eval_ns = (
        1_000_000,
        reply.prompt_tokens * 100_000,
        reply.completion_tokens * 1_000_000,
    )
    return {
        "total_duration": load + prompt_ns + eval_ns,
        "load_duration": load,
        "prompt_eval_count": reply.prompt_tokens,
        "prompt_eval_duration": prompt_ns,
        "eval_count": reply.completion_tokens,
        "eval_duration": eval_ns,
    }


def _ollama_message(reply: _Reply, content: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reply.tool_call is not None:
        name, arguments = reply.tool_call
        message["tool_calls"] = [{"function": {"name": name, "arguments": arguments}}]
    return message


def _ollama_completion(reply: _Reply) -> _Answer:
    content = "" if reply.tool_call is not None else reply.text
    payload = {
        "model": reply.model,
        "created_at": _ollama_now(),
        "message": _ollama_message(reply, content),
        "done": True,
        "done_reason": "stop",
        **_ollama_stats(reply),
    }
    return _json_answer(payload)


def _ollama_stream(reply: _Reply) -> _Answer:
    def line(message: dict[str, Any], **extra: Any) -> bytes:
        obj = {"model": reply.model, "created_at": _ollama_now(), "message": message, **extra}
        return (json.dumps(obj) + "\n").encode()

    if reply.tool_call is not None:
        pieces = [line(_ollama_message(reply, ""), done=False)]
    else:
        pieces = [
            line({"role": "assistant", "content": w}, done=False) for w in _split_words(reply.text)
        ]
    final = {"done": True, "done_reason": "stop", **_ollama_stats(reply)}
    pieces.append(line({"role": "assistant", "content": ""}, **final))
    return _Answer(200, "application/x-ndjson", pieces, streaming=True)


_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Request not allowed."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded."),
}
_OLLAMA_ERRORS = {401: "unauthorized", 404: "model not found", 429: "too many requests"}


def _error_answer(protocol: Protocol, fault: Fault) -> _Answer:
    code = fault.status_code
    headers = {} if fault.retry_after is None else {"Retry-After": format(fault.retry_after, "")}
    if protocol == "ollama":
        text = fault.message or _OLLAMA_ERRORS.get(code, "internal server error")
        return _json_answer({"error": text}, code, headers)
    kind, err_code, text = _OPENAI_ERRORS.get(code, ("server_error", None, "Upstream error."))
    error = {"message": fault.message or text, "type": kind, "param": None, "code": err_code}
    return _json_answer({"error": error}, code, headers)


def _malformed_answer(protocol: Protocol, streaming: bool) -> _Answer:
    if not streaming:
        return _Answer(200, "application/json", [b'{"id": "broken", ', b'"choices": [{"ind'])
    if protocol == "ollama":
        return _Answer(
            200, "application/x-ndjson", [b'{"model": "broken", "mess\n'], streaming=True
        )
    pieces = [b'data: {"id": "broken", "cho\n\n', b"data: [DONE]\n\n"]
    return _Answer(200, "text/event-stream; charset=utf-8", pieces, streaming=True)


# --- transport ---------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Reads one request at a time off a keep-alive connection and lets the owner answer it."""

    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: pytest output is for the tests."""

    def do_GET(self) -> None:
        self.server.owner._handle(self)

    def do_POST(self) -> None:
        self.server.owner._handle(self)

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _read_chunked(self) -> bytes:
        data = bytearray()
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            data += self.rfile.read(size)
            self.rfile.readline()
        while self.rfile.readline().strip():  # trailers, then the blank line
            pass
        return bytes(data)

    def start(self, answer: _Answer) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if answer.streaming:
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-cache")
        else:
            self.send_header("Content-Length", str(sum(map(len, answer.pieces))))
        self.end_headers()

    def write_piece(self, answer: _Answer, piece: bytes) -> None:
        if answer.streaming:
            piece = b"%X\r\n%s\r\n" % (len(piece), piece) if piece else b""
        if piece:
            self.wfile.write(piece)

    def finish_answer(self, answer: _Answer) -> None:
        if answer.streaming:
            self.wfile.write(b"0\r\n\r\n")


class _HTTPServer(ThreadingHTTPServer):
    """Tracks each connection and its thread so stop() can close and join them all."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], owner: FakeProviderServer) -> None:
        self.owner = owner
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._workers: set[threading.Thread] = set()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        worker = threading.Thread(
            target=self._serve_connection, args=(request, client_address), name="fakeserver-conn"
        )
        worker.daemon = True
        with self._lock:
            self._connections.add(request)
            self._workers.add(worker)
        worker.start()

    def _serve_connection(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except OSError:
            pass  # the client (or stop()) closed the connection under us
        finally:
            with self._lock:
                self._connections.discard(request)
            self.shutdown_request(request)
            with self._lock:
                self._workers.discard(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connection errors are expected here (faults, early closes); never print them."""

    def close_connections_and_join(self) -> None:
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            workers = list(self._workers)
        deadline = time.monotonic() + _JOIN_TIMEOUT_S
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))


class FakeProviderServer:
    """OpenAI + Ollama compatible fake on 127.0.0.1:<free port>; see the module docstring."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.reply_text = "four words of reply"
        self.tool_call: tuple[str, dict[str, Any]] | None = None
        self.omit_usage = False
        self.count_prompt: Callable[[dict[str, Any] | None], int] = count_prompt_tokens
        """How usage counts prompt tokens (a test can put a real tokenizer here)."""
        self.cooperative = False  # answer tools and JSON schemas (tests/fakereply.py)
        self.bill_received = False
        """Report usage as a provider billing all it received: ``billed_prompt_tokens`` and
        ``billed_completion_tokens`` (n x the token limit), whatever the reply."""
        self.models: list[str] = list(DEFAULT_MODELS)
        self._address = (host, port)
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        self._stopping = threading.Event()
        self._released = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> FakeProviderServer:
        if self._httpd is not None:
            raise RuntimeError("FakeProviderServer already started")
        self._stopping.clear()
        self._httpd = _HTTPServer(self._address, self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, name="fakeserver"
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread, self._httpd, self._thread = self._httpd, self._thread, None, None
        if httpd is None or thread is None:
            return
        self._stopping.set()
        self._released.set()
        httpd.shutdown()
        thread.join(_JOIN_TIMEOUT_S)
        httpd.close_connections_and_join()
        httpd.server_close()

    def __enter__(self) -> FakeProviderServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # addresses

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("FakeProviderServer is not running")
        return f"http://{self._address[0]}:{self._httpd.server_port}"

    @property
    def openai_base(self) -> str:
        return f"{self.url}/v1"

    # faults and records

    def add_fault(self, fault: Fault, times: int = 1) -> None:
        """Queue ``fault`` for the next ``times`` chat requests (after those already queued)."""
        with self._lock:
            self._faults.extend([fault] * times)

    def release_held(self) -> None:
        """Let every held request (and any later one) be answered."""
        self._released.set()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.is_chat]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._faults.clear()

    def _record(self, request: RecordedRequest) -> Fault | None:
        with self._lock:
            self._requests.append(request)
            if request.is_chat and self._faults:
                return self._faults.pop(0)
        return None

    # answering

    def _handle(self, handler: _Handler) -> None:
        raw = handler.read_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in handler.headers.items()}
        request = RecordedRequest(handler.command, handler.path, headers, body, raw)
        fault = self._record(request)
        try:
            self._answer(handler, request, fault)
        except OSError:
            handler.close_connection = True  # client went away mid-answer

    def _answer(self, handler: _Handler, request: RecordedRequest, fault: Fault | None) -> None:
        kind = fault.kind if fault else None
        if kind is FaultKind.HOLD:
            while not self._released.wait(0.01):
                if self._stopping.is_set():
                    handler.close_connection = True
                    return
        if kind is FaultKind.DROP or (
            kind is FaultKind.DELAY and fault is not None and self._stopping.wait(fault.seconds)
        ):
            handler.close_connection = True
            return
        answer = self._build(request, fault)
        handler.start(answer)
        first, *rest = answer.pieces
        handler.write_piece(answer, first)
        if kind is FaultKind.DROP_AFTER_FIRST_CHUNK or (
            kind is FaultKind.STALL_AFTER_FIRST_CHUNK
            and fault is not None
            and self._stopping.wait(fault.seconds)
        ):
            handler.close_connection = True
            return
        for piece in rest:
            handler.write_piece(answer, piece)
        handler.finish_answer(answer)

    def _build(self, request: RecordedRequest, fault: Fault | None) -> _Answer:
        path = urlsplit(request.path).path
        route = (request.method, path)
        body = request.body if isinstance(request.body, dict) else {}
        if route == ("GET", "/v1/models"):
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models
            ]
            return _json_answer({"object": "list", "data": data})
        if route == ("GET", "/api/tags"):
            return _json_answer({"models": [self._ollama_model(m) for m in self.models]})
        if route == ("POST", "/api/show"):
            return _json_answer(
                {
                    "modelfile": "",
                    "parameters": "",
                    "template": "{{ .Prompt }}",
                    "details": {"format": "gguf", "family": "llama"},
                    "model_info": {},
                    "capabilities": ["completion", "tools"],
                }
            )
        if path not in CHAT_PATHS or request.method != "POST":
            return _json_answer({"error": f"{request.method} {path} not found"}, 404)
        protocol: Protocol = "openai" if path == "/v1/chat/completions" else "ollama"
        streaming = bool(body.get("stream", protocol == "ollama"))
        if fault is not None and fault.kind is FaultKind.STATUS:
            return _error_answer(protocol, fault)
        if fault is not None and fault.kind is FaultKind.MALFORMED:
            return _malformed_answer(protocol, streaming)
        reply = self._reply(body)
        if protocol == "ollama":
            return _ollama_stream(reply) if streaming else _ollama_completion(reply)
        if streaming:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return _openai_stream(reply, include_usage)
        return _openai_completion(reply)

    def _reply(self, body: dict[str, Any]) -> _Reply:
        text, tool_call = self.reply_text, self.tool_call
        answer = cooperative_answer(body) if self.cooperative and tool_call is None else None
        if answer is not None:
            text, tool_call = answer.text or text, answer.tool_call
        billed = self.bill_received
        return _Reply(
            model=str(body.get("model", "unknown")),
            text=text,
            tool_call=tool_call,
            prompt_tokens=billed_prompt_tokens(body) if billed else self.count_prompt(body),
            completion_tokens=billed_completion_tokens(body)
            if billed
            else count_completion_tokens(text, tool_call),
            with_usage=not self.omit_usage,
        )

    @staticmethod
    def _ollama_model(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "model": name,
            "modified_at": "2025-01-01T00:00:00Z",
            "size": 2_000_000_000,
            "digest": uuid.uuid5(uuid.NAMESPACE_URL, name).hex * 2,
            "details": {"format": "gguf", "family": "llama", "parameter_size": "3B"},
        }
