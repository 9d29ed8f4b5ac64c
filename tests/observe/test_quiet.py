"""The library is quiet: nothing on stdout without logging set up, warnings on stderr,
and the content filter in every logging configuration, not only ours."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.conftest import CHEAP_KEY, OPENAI_KEY, Rig

SCRIPT = """
import asyncio, sys
from aegis_proxy import AegisLLMProxy, LLMTask, NoProviderAvailableError

async def main(path):
    task = LLMTask(quality="critical", complexity="high")
    async with AegisLLMProxy.from_config(path) as proxy:
        await proxy.acompletion([{"role": "user", "content": "SECRETPROMPT one"}], task)
        stream = await proxy.acompletion(
            [{"role": "user", "content": "SECRETPROMPT two"}], task, stream=True
        )
        async for _ in stream:
            pass
        try:
            await proxy.acompletion([{"role": "user", "content": "SECRETPROMPT three"}])
        except NoProviderAvailableError:
            pass

asyncio.run(main(sys.argv[1]))
"""

CONFIGURED = """
import logging
logging.basicConfig(level=logging.DEBUG, format="%(name)s %(levelname)s %(message)s")
for noisy in ("httpx", "httpcore", "openai", "asyncio"):  # other libraries' debug logs
    logging.getLogger(noisy).setLevel(logging.WARNING)
"""


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(rig: Rig, prelude: str = "") -> subprocess.CompletedProcess[str]:
    data = rig.config_data()
    data["providers"]["local_ollama"]["api_base"] = f"http://127.0.0.1:{closed_port()}"
    for server in (rig.openai, rig.cheap):
        server.reply_text = "SECRETREPLY"
    path = rig.write_config(data)
    return subprocess.run(
        [sys.executable, "-c", prelude + SCRIPT, str(path)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip


def test_library_calls_print_nothing_on_stdout_and_warn_on_stderr(rig: Rig) -> None:
    """Without logging set up: stdout stays empty, info events stay hidden, a warning shows."""
    done = run(rig)
    assert done.stdout == ""
    assert len(rig.openai.chat_requests()) == 2  # the calls did happen
    lines = done.stderr.splitlines()
    assert [line.split()[0] for line in lines] == ["request_failed"]
    assert "rule=default" in lines[0]
    assert "provider_attempt" not in done.stderr


def test_the_filter_holds_under_the_applications_own_logging(rig: Rig) -> None:
    """With logging.basicConfig at DEBUG, our events show, without content or keys."""
    done = run(rig, CONFIGURED)
    assert done.stdout == ""
    ours = [line for line in done.stderr.splitlines() if line.startswith("aegis_proxy")]
    events = {line.split()[2] for line in ours}
    assert {"route_decided", "provider_attempt", "request_failed"} <= events
    for needle in ("SECRETPROMPT", "SECRETREPLY", OPENAI_KEY, CHEAP_KEY):
        assert needle not in "\n".join(ours), needle


def test_no_field_the_library_logs_is_dropped_by_its_own_filter() -> None:
    """Each keyword of each log call in aegis_proxy survives the filter with a text value."""
    import ast
    from pathlib import Path

    import aegis_proxy
    from aegis_proxy.observe.logs import is_sensitive

    methods = {"debug", "info", "warning", "error", "exception"}
    dropped = []
    for path in Path(aegis_proxy.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in methods:
                names = [kw.arg for kw in node.keywords if kw.arg]
                dropped += [f"{path.name}:{node.lineno} {n}" for n in names if is_sensitive(n, "x")]
    assert dropped == []


def test_an_exception_event_carries_its_traceback_masked() -> None:
    """log.exception renders the traceback as text with key-shaped strings masked."""
    from aegis_proxy.observe.logs import get_logger
    from tests.logcapture import capture_events

    with capture_events() as events:
        try:
            raise RuntimeError("upstream said: bad key sk-abcdefgh12345678")
        except RuntimeError:
            get_logger("aegis_proxy.test").exception("call_failed", provider="openai")
    [event] = events
    assert (event["event"], event["log_level"], event["provider"]) == (
        "call_failed", "error", "openai",
    )  # fmt: skip
    assert "RuntimeError: upstream said: bad key [REDACTED]" in event["exception"]
    assert "sk-abcdefgh" not in repr(events)
