"""Response cache for deterministic requests, in its own SQLite file beside the ledger.

What must always hold:
- only deterministic requests are cached: not streamed, ``temperature == 0`` or a ``seed``,
  one choice; the key covers provider, model, the messages as sent and every parameter;
- an answer to a request holding personal data is scoped to its ``user_id`` and never
  served to another user (a PII request without a user_id is not cached at all);
- entries expire after their TTL; an expired entry is never served;
- the cache keeps response text, so it lives in its own file (never in the ledger, which
  holds no content), is off unless configured, and can be wiped with ``clear()``;
- a cache that cannot be read or written is a miss, never a failed request.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aegis_proxy.observe.logs import get_logger

if TYPE_CHECKING:
    from any_llm.types.completion import ChatCompletion

    from aegis_proxy.call.client import ProviderClient
    from aegis_proxy.config import AegisConfig
    from aegis_proxy.config.sections import CacheConfig
    from aegis_proxy.job import Call, Job

log = get_logger("aegis_proxy.cache")

DEFAULT_FILE = "response_cache.db"
_SQLITE_URL = "sqlite:///"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS response_cache (
    key TEXT PRIMARY KEY,
    response TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS response_cache_expiry ON response_cache (expires_at);
"""


def cacheable(params: dict[str, Any]) -> bool:
    """Whether a request's parameters make its answer deterministic enough to reuse."""
    if params.get("stream") or params.get("n", 1) not in (None, 1):
        return False
    return params.get("temperature") == 0 or params.get("seed") is not None


def cache_key(
    provider: str,
    model: str,
    messages: list[dict[str, Any]],
    params: dict[str, Any],
    user_scope: str | None,
) -> str:
    """A digest of everything that decides the answer (and of the user, for PII)."""
    document = [provider, model, messages, params, user_scope]
    text = json.dumps(document, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def scoped_key(
    provider: str,
    model: str,
    messages: list[dict[str, Any]],
    params: dict[str, Any],
    contains_pii: bool,
    user_id: str | None,
) -> str | None:
    """The key of a cacheable request; None when it must not be cached.

    A request holding personal data is keyed to its ``user_id``, so its answer is never
    served to another user; without a ``user_id`` it is not cached at all.
    """
    if not cacheable(params) or (contains_pii and not user_id):
        return None
    return cache_key(provider, model, messages, params, user_id if contains_pii else None)


def effective_ttl(config: CacheConfig, rule_ttl_s: float | None) -> float:
    """Seconds an answer on this route is kept: the rule's TTL, else the config's; 0 = never."""
    if not config.enabled:
        return 0.0
    return config.ttl_s if rule_ttl_s is None else rule_ttl_s


def cache_path(config: AegisConfig) -> Path:
    """``cache.path``, else ``response_cache.db`` in the folder of the SQLite ledger file."""
    if config.cache.path:
        return Path(config.cache.path)
    url = config.ledger.url
    ledger = url.removeprefix(_SQLITE_URL) if url and url.startswith(_SQLITE_URL) else None
    return Path(ledger or config.ledger.path).parent / DEFAULT_FILE


class ResponseCache:
    """A key -> ChatCompletion JSON store with expiry; safe across threads and processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=10.0
        )
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.executescript(_SCHEMA)

    def get(self, key: str, now: float | None = None) -> dict[str, Any] | None:
        """The cached response for ``key``, unless absent or expired."""
        moment = time.time() if now is None else now
        try:
            with self._lock:
                row = self._conn.execute(
                    "SELECT response FROM response_cache WHERE key = ? AND expires_at > ?",
                    (key, moment),
                ).fetchone()
        except sqlite3.Error as exc:
            log.warning("response_cache_failed", operation="get", error_type=type(exc).__name__)
            return None
        return json.loads(row[0]) if row else None

    def put(self, key: str, response: dict[str, Any], ttl_s: float) -> None:
        """Store ``response`` under ``key`` for ``ttl_s`` seconds (and drop expired ones)."""
        now = time.time()
        text = json.dumps(response, default=str)
        try:
            with self._lock:
                self._conn.execute("DELETE FROM response_cache WHERE expires_at <= ?", (now,))
                self._conn.execute(
                    "INSERT OR REPLACE INTO response_cache VALUES (?, ?, ?, ?)",
                    (key, text, now, now + ttl_s),
                )
        except sqlite3.Error as exc:
            log.warning("response_cache_failed", operation="put", error_type=type(exc).__name__)

    def clear(self) -> int:
        """Remove every entry; returns how many there were."""
        with self._lock:
            return self._conn.execute("DELETE FROM response_cache").rowcount

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def cache_ttl(job: Job) -> float:
    """Seconds this request's answer is kept; 0: not cached (off, rule TTL 0, not deterministic)."""
    if not cacheable(job.params):
        return 0.0
    return effective_ttl(job.rt.config.cache, job.plan.route.cache_ttl_s)


def cached_answer(
    cache: ResponseCache, job: Job, client: ProviderClient, model: str
) -> ChatCompletion | None:
    """The cached answer of this attempt, rebuilt; None on a miss or when it is not cacheable."""
    key = _key(job, client, model)
    stored = cache.get(key) if key is not None else None
    if stored is None:
        return None
    from aegis_proxy.call.client import completion_from_json  # the SDK's types: only on a hit

    try:
        return completion_from_json(stored)
    except ValueError as exc:  # pydantic's ValidationError: an entry we cannot use
        log.warning("response_cache_unusable", error_type=type(exc).__name__)
        return None


def store_answer(
    cache: ResponseCache, ttl_s: float, job: Job, call: Call, response: ChatCompletion
) -> None:
    """Keep a provider's answer as it came (placeholders of a redacted request kept)."""
    key = _key(job, call.client, call.model)
    if key is not None:
        cache.put(key, response.model_dump(mode="json", exclude={"aegis"}), ttl_s)


def _key(job: Job, client: ProviderClient, model: str) -> str | None:
    plan, params = job.plan, job.sent_params(client.config)
    user_id = plan.task.user_id
    return scoped_key(client.name, model, plan.messages, params, plan.contains_pii, user_id)
