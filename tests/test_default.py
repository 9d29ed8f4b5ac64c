"""The module-level default proxy: the blocking ``completion`` on its background loop thread."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aegis_proxy import LLMTask, close_default_proxy, completion
from aegis_proxy.default import SyncStream
from tests.conftest import Rig

HELLO = [{"role": "user", "content": "Say hello."}]
CRITICAL = LLMTask(task_type="extraction", quality="critical", complexity="high")
REPO = Path(__file__).absolute().parent.parent


def rows(rig: Rig) -> list[dict[str, Any]]:
    with sqlite3.connect(rig.tmp_path / "ledger.db") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY id")]


@pytest.fixture
def default_config(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    """$AEGIS_CONFIG points at the rig; the blocking default proxy is closed afterwards."""
    monkeypatch.setenv("AEGIS_CONFIG", str(rig.write_config()))
    yield rig
    close_default_proxy()


def test_breaker_state_is_shared_between_calls(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A breaker opened by one blocking call is still open for the next (one proxy, kept)."""
    data = rig.config_data()
    data["resilience"] = {"retries": 0, "breaker_failures": 1, "breaker_cooldown_s": 60}
    monkeypatch.setenv("AEGIS_CONFIG", str(rig.write_config(data)))
    rig.openai.add_fault(rig_fault_500())
    try:
        first = completion(HELLO, CRITICAL)
        second = completion(HELLO, CRITICAL)
    finally:
        close_default_proxy()
    assert [a.outcome for a in first.aegis.attempts] == ["error", "ok"]  # type: ignore[attr-defined]
    skipped = second.aegis.attempts[0]  # type: ignore[attr-defined]
    assert (skipped.provider, skipped.outcome, skipped.reason) == (
        "openai",
        "skipped",
        "circuit breaker open",
    )
    assert len(rig.openai.chat_requests()) == 1


def rig_fault_500() -> Any:
    from tests.fakeserver import Fault

    return Fault.status(500)


def test_two_hundred_threads_at_once_all_finish(default_config: Rig) -> None:
    """200 threads calling completion() together all get answers: no deadlock, 200 rows."""
    barrier = threading.Barrier(200)
    answers: list[str] = []
    failures: list[BaseException] = []

    def call() -> None:
        barrier.wait(30)
        try:
            resp = completion(HELLO)
            answers.append(resp.choices[0].message.content or "")
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(exc)

    workers = [threading.Thread(target=call, daemon=True) for _ in range(200)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w for w in workers if w.is_alive()] == []
    assert failures == []
    assert answers == [default_config.local.reply_text] * 200
    assert [r["status"] for r in rows(default_config)] == ["ok"] * 200


def test_blocking_stream_is_a_sync_iterator_that_settles(default_config: Rig) -> None:
    """completion(stream=True) yields chunks in this thread; the row settles when it ends."""
    stream = completion(HELLO, stream=True)
    assert isinstance(stream, SyncStream)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == default_config.local.reply_text
    assert stream.aegis.provider == "local_ollama"
    [row] = rows(default_config)
    assert (row["status"], row["stream"]) == ("ok", 1)


def test_blocking_stream_closed_early_is_settled_as_cancelled(default_config: Rig) -> None:
    """Leaving a blocking stream after one chunk (with-block) settles its row as cancelled."""
    default_config.local.reply_text = "one two three four five six seven eight"
    with completion(HELLO, stream=True) as stream:
        next(stream)
    [row] = rows(default_config)
    assert row["status"] == "cancelled"


def test_close_default_proxy_leaves_no_wal_files(default_config: Rig) -> None:
    """close_default_proxy() (blocking) closes the ledger: no -wal/-shm files stay."""
    completion(HELLO)
    ledger = default_config.tmp_path / "ledger.db"
    assert ledger.with_name("ledger.db-wal").exists()  # open: SQLite keeps its WAL
    close_default_proxy()
    leftovers = sorted(p.name for p in default_config.tmp_path.iterdir() if "-" in p.name)
    assert leftovers == []
    assert completion(HELLO).aegis.provider == "local_ollama"  # type: ignore[attr-defined]


def test_a_script_that_never_closes_leaves_no_wal_files(default_config: Rig) -> None:
    """A script that calls completion() and just exits is closed at exit: no -wal/-shm.

    The script's own exit handler, registered first, runs after ours (atexit is LIFO) and
    before the interpreter tears anything down: it sees whether the ledger was closed.
    """
    wal = default_config.tmp_path / "ledger.db-wal"
    code = (
        "import atexit, os, sys\n"
        "atexit.register(lambda: print('wal left' if os.path.exists(sys.argv[1]) else 'closed'))\n"
        "from aegis_proxy import completion\n"
        "completion([{'role': 'user', 'content': 'Say hello.'}])\n"
        "print('answered', os.path.exists(sys.argv[1]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(wal)], capture_output=True, text=True, timeout=120,
        env=env,
    )  # fmt: skip
    said = [
        line for line in out.stdout.splitlines() if line in ("answered True", "closed", "wal left")
    ]
    assert said == ["answered True", "closed"], out.stderr
    leftovers = sorted(p.name for p in default_config.tmp_path.iterdir() if "-" in p.name)
    assert leftovers == []


async def test_await_close_default_proxy_closes_the_loops_proxy(default_config: Rig) -> None:
    """``await close_default_proxy()`` still closes the running loop's default proxy."""
    from aegis_proxy import acompletion, get_default_proxy

    await acompletion(HELLO)
    proxy = get_default_proxy()
    await close_default_proxy()
    assert get_default_proxy() is not proxy
    await close_default_proxy()


@pytest.fixture
def other_config(default_config: Rig, tmp_path: Path) -> Path:
    """A second config file, a copy of the rig's."""
    other = tmp_path / "other.yaml"
    other.write_text(Path(os.environ["AEGIS_CONFIG"]).read_text())
    return other


async def test_a_new_aegis_config_gets_a_new_default_proxy(
    other_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When $AEGIS_CONFIG names another file, the loop's default proxy is rebuilt from it."""
    from aegis_proxy import get_default_proxy

    first = get_default_proxy()
    other = other_config
    monkeypatch.setenv("AEGIS_CONFIG", str(other))
    second = get_default_proxy()
    assert second is not first
    assert second.config.source == str(other)
    await close_default_proxy()
