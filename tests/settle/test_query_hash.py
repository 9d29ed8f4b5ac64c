"""Through the proxy: the ledger's query_hash is keyed, so it cannot be brute-forced.

A templated prompt ("Call me at +1 555 01xx") has few variants; a plain SHA-256 of the
messages in the ledger gives each one away in seconds. The ledger stores HMAC-SHA256 under
a key of its own (m005) instead.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from aegis_proxy.decide.request import query_hash, validate_messages
from tests.conftest import Rig
from tests.logcapture import capture_events

PROMPT = [{"role": "user", "content": "Call me back at +1 415 555 0132 about the invoice."}]


def _stored(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT query_hash FROM requests ORDER BY id")]


def _key(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("SELECT value FROM ledger_secrets").fetchone()[0])


async def test_stored_query_hash_is_keyed_per_ledger(rig: Rig) -> None:
    """Same messages: one stored hash per ledger, never the plain digest, another elsewhere."""
    paths = [rig.tmp_path / "a.db", rig.tmp_path / "b.db"]
    with capture_events() as logs:
        for path in paths:
            data = rig.config_data()
            data["ledger"]["path"] = str(path)
            async with rig.proxy(data) as proxy:
                await proxy.acompletion(PROMPT, max_tokens=8)
                await proxy.acompletion(PROMPT, max_tokens=8)
    plain = query_hash(validate_messages(PROMPT))
    text = json.dumps(PROMPT, sort_keys=True, ensure_ascii=False)
    naive = hashlib.sha256(text.encode()).hexdigest()
    first, second = _stored(paths[0]), _stored(paths[1])
    assert first == [first[0]] * 2
    assert second == [second[0]] * 2
    assert first[0] != second[0]
    assert not {plain, naive} & {first[0], second[0]}
    logged = repr(logs)
    assert all(_key(path) not in logged for path in paths)
    assert plain not in logged
