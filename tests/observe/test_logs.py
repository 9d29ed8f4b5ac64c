"""Log set-up and the processor that keeps content and keys out of logs; and an end-to-end
check that no log line, span attribute or metric label holds a prompt, a reply or a key."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from aegis_proxy.observe.logs import REDACTED, configure_logging, drop_sensitive_fields, mask_keys
from tests.conftest import CHEAP_KEY, OPENAI_KEY, Rig
from tests.fakeserver import Fault


def clean(**fields: Any) -> dict[str, Any]:
    return dict(drop_sensitive_fields(None, "info", {"event": "something_happened", **fields}))


DROPPED: list[tuple[str, Any]] = [
    ("prompt", "Tell me about the merger"),
    ("messages", [{"role": "user", "content": "hi"}]),
    ("content", "hi"),
    ("system_prompt", "You are ..."),
    ("systemPrompt", "You are ..."),
    ("user_message", "hi"),
    ("response_text", "the answer"),
    ("completion", "the answer"),
    ("reply", "the answer"),
    ("tool_arguments", '{"to": "bob"}'),
    ("input", "hi"),
    ("output", "the answer"),
    ("body", '{"messages": []}'),
    ("headers", {"x-trace": "1"}),
    ("api_key", "abc"),
    ("apiKey", "abc"),
    ("x-api-key", "abc"),
    ("OPENAI_API_KEY", "abc"),
    ("Authorization", "Bearer abc"),
    ("access_token", "abc"),
    ("token", "abc"),
    ("client_secret", "abc"),
    ("password", 1234),
    ("cookie", "session=abc"),
]
KEPT: list[tuple[str, Any]] = [
    ("request_id", "5f0c8a9e0d6b4c2f9a1e3b7d2c4f6a8e"),
    ("provider", "openai"),
    ("model", "claude-3-5-sonnet-20241022"),
    ("input_tokens", 12),
    ("prompt_tokens", 7),
    ("messages", 3),
    ("message_count", 3),
    ("content_type", "application/json"),
    ("query_hash", "ab" * 32),
    ("error_type", "auth_error"),
    ("reason", "environment variable OPENAI_API_KEY is not set"),
    ("latency_ms", 12.5),
    ("contains_pii", True),
    ("pii_entities", ["EMAIL"]),
    ("breaker", "half_open"),
    ("output_tokens", None),
]


@pytest.mark.parametrize(("name", "value"), DROPPED, ids=[n for n, _ in DROPPED])
def test_content_and_secret_fields_are_dropped(name: str, value: Any) -> None:
    """A field whose name could carry content or a secret is removed from the event."""
    assert clean(**{name: value}) == {"event": "something_happened"}


@pytest.mark.parametrize(("name", "value"), KEPT, ids=[n for n, _ in KEPT])
def test_metadata_fields_are_kept_unchanged(name: str, value: Any) -> None:
    """Names, numbers, hashes and outcomes pass through untouched."""
    assert clean(**{name: value}) == {"event": "something_happened", name: value}


SECRETS = [
    ("openai", "key is sk-proj-Ab12Cd34Ef56Gh78", "sk-proj-Ab12Cd34Ef56Gh78"),
    ("anthropic", "sk-ant-api03-xyz0123456789", "sk-ant-api03-xyz0123456789"),
    ("bearer", "sent Authorization: Bearer eyZ.abc.def-123456", "eyZ.abc.def-123456"),
    ("aws", "id AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE"),
    ("google", "AIzaSyA-1234567890abcdefghijklmnopqrstu", "AIzaSyA-1234567890abcdefghij"),
    ("github", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abcdefghijklmnop"),
    ("huggingface", "hf_abcdefghijklmnopqrstuvwxyzABCD", "hf_abcdefghijklmnopqrst"),
    ("jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig", "eyJzdWIiOiIxMjM0In0"),
    ("query", "GET https://api.example.com/v1?key=s3cr3tvalue&x=1", "s3cr3tvalue"),
    ("url password", "postgres://bob:hunter2pass@db.example.com/x", "hunter2pass"),
]


@pytest.mark.parametrize(("kind", "text", "secret"), SECRETS, ids=[k for k, _, _ in SECRETS])
def test_key_shaped_strings_are_masked(kind: str, text: str, secret: str) -> None:
    """A key-shaped substring is masked in any field, and in the event text itself."""
    event = clean(detail=text)
    assert secret not in event["detail"]
    assert REDACTED in event["detail"]
    masked_event = drop_sensitive_fields(None, "info", {"event": f"failed: {text}"})
    assert secret not in masked_event["event"]


@pytest.mark.parametrize(
    "text",
    [
        "5f0c8a9e0d6b4c2f9a1e3b7d2c4f6a8e",
        "gpt-4o-mini-2024-07-18",
        "llama3.2:3b",
        "risk-assessment-quarterly",
        "https://api.openai.com/v1/chat/completions",
        "rule critical_to_openai matched (quality=critical, complexity=high)",
    ],
)
def test_ordinary_strings_are_not_masked(text: str) -> None:
    """Ids, model names, URLs without credentials and reasons are left as they are."""
    assert mask_keys(text) == text


def test_nested_fields_are_cleaned() -> None:
    """Sensitive keys inside nested mappings and lists are dropped too; keys are masked."""
    event = clean(
        request={"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4o"},
        items=[{"api_key": "abc", "n": 1}, "Bearer abcdefghijk"],
    )
    assert event["request"] == {"model": "gpt-4o"}
    assert event["items"] == [{"n": 1}, REDACTED]


def test_objects_are_replaced_by_their_type_name() -> None:
    """An arbitrary object is logged as its type name: its repr could hold content."""

    class ChatCompletion:
        def __repr__(self) -> str:
            return "ChatCompletion(content='the secret answer')"

    assert clean(result=ChatCompletion())["result"] == "<ChatCompletion>"


def test_unknown_level_is_refused() -> None:
    """configure_logging names the levels it accepts instead of failing with a KeyError."""
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        configure_logging(level="loud")


LOGGING_SCRIPT = """
import structlog
from aegis_proxy.observe.logs import configure_logging
configure_logging(json_output={json_output}, level={level!r})
log = structlog.get_logger("app")
log.debug("debug_event", n=1)
log.info("request_sent", provider="openai", prompt="SECRET PROMPT", api_key="sk-abcdefgh12345")
try:
    raise RuntimeError("upstream said: invalid key sk-zyxwvuts98765")
except RuntimeError:
    log.exception("call_failed", provider="openai")
"""


def run_logging(json_output: bool, level: str) -> str:
    code = LOGGING_SCRIPT.format(json_output=json_output, level=level)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stderr


def test_json_output_is_one_clean_object_per_line() -> None:
    """JSON mode writes one object per line, with level and time, without content or keys."""
    lines = [json.loads(line) for line in run_logging(True, "info").splitlines()]
    assert [line["event"] for line in lines] == ["request_sent", "call_failed"]
    sent, failed = lines
    assert sent["provider"] == "openai"
    assert "prompt" not in sent
    assert "api_key" not in sent
    assert sent["level"] == "info"
    assert sent["timestamp"].endswith("Z")
    assert "RuntimeError" in failed["exception"]
    assert "sk-zyxwvuts98765" not in failed["exception"]


def test_console_output_is_readable_and_filtered_by_level() -> None:
    """Console mode writes readable key=value lines, from the configured level up."""
    text = run_logging(False, "debug")
    assert "debug_event" in text
    assert "provider=openai" in text
    assert "SECRET PROMPT" not in text
    assert "sk-abcdefgh12345" not in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])
    assert "debug_event" not in run_logging(False, "warning")


LEAK_SCRIPT = """
import asyncio, json, sys
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest
from aegis_proxy import AegisLLMProxy, LLMTask
from aegis_proxy.observe.logs import configure_logging
from aegis_proxy.observe.metrics import PrometheusObserver
from aegis_proxy.observe.tracing import OTelObserver

async def main(path, prompt, pii_prompt):
    configure_logging(json_output=True, level="debug")
    registry, exporter, tracing = CollectorRegistry(), InMemorySpanExporter(), TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(exporter))
    task = LLMTask(quality="critical", complexity="high", user_id="user-QX81-unique")
    async with AegisLLMProxy.from_config(path) as proxy:
        PrometheusObserver(registry).bind(proxy)
        OTelObserver(tracing).bind(proxy)
        await proxy.acompletion([{"role": "user", "content": prompt}], task)
        stream = await proxy.acompletion([{"role": "user", "content": prompt}], task, stream=True)
        async for _ in stream:
            pass
        await proxy.acompletion([{"role": "user", "content": pii_prompt}], task)
    spans = [json.loads(span.to_json()) for span in exporter.get_finished_spans()]
    print(json.dumps({"metrics": generate_latest(registry).decode(), "spans": spans}))

asyncio.run(main(*sys.argv[1:]))
"""


def test_no_prompt_reply_or_key_in_logs_spans_or_metrics(rig: Rig) -> None:
    """After a fallback, a stream and a PII request, no log line, span or metric holds
    the prompt, the reply, the user id or a key."""
    prompt = "Draft the ZEPHYRQUOKKA term sheet for Marmalade Holdings."
    pii_prompt = "Email quokka.zephyr@example.org the ZEPHYRQUOKKA numbers."
    for server in (rig.openai, rig.cheap, rig.local):
        server.reply_text = "PAPAYA7731 confirmed"
    rig.openai.add_fault(Fault.status(500))  # the first request falls back to the cheap cloud
    path = rig.write_config()
    out = subprocess.run(
        [sys.executable, "-c", LEAK_SCRIPT, str(path), prompt, pii_prompt],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    logs = [json.loads(line) for line in out.stderr.splitlines()]
    report = json.loads(out.stdout)
    assert {"route_decided", "provider_attempt"} <= {line["event"] for line in logs}
    assert len(report["spans"]) == 7  # 3 requests, 4 attempts
    assert 'llm_fallbacks_total{provider="openai",reason="error"} 1.0' in report["metrics"]
    everything = out.stderr + out.stdout
    for needle in (
        "ZEPHYRQUOKKA", "Marmalade", "quokka.zephyr", "PAPAYA7731", "user-QX81-unique",
        OPENAI_KEY, CHEAP_KEY,
    ):  # fmt: skip
        assert needle not in everything, needle
