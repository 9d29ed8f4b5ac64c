"""The SQLite ledger's runtime statements, over the latest schema.

The migrations (``migrations``) are frozen: each reads only its own constants. What the
ledger runs every day lives here, and changes with the latest schema. What must always
hold: every statement takes its values as ``?`` parameters (never formatted in), and
``ADD_USAGE`` moves ``budget_usage`` in the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from aegis_proxy.errors import LedgerError

_REBUILD_USAGE = """
INSERT INTO budget_usage (provider, period, spent_micros, reserved_micros, ok_count,
    error_count, cancelled_count, input_tokens, output_tokens, cached_input_tokens,
    reasoning_tokens, cache_hits, overshoots)
SELECT provider, bucket, sum(cost_micros),
    sum(CASE WHEN status = 'pending' THEN reserved_micros ELSE 0 END),
    sum(status = 'ok'), sum(status = 'error'), sum(status = 'cancelled'),
    sum(input_tokens), sum(output_tokens), sum(cached_input_tokens), sum(reasoning_tokens),
    sum(cache_hit),
    sum(status IN ('ok', 'error', 'cancelled') AND 0 < reserved_micros
        AND reserved_micros < cost_micros)
FROM (
    SELECT period AS bucket, * FROM requests
    UNION ALL
    SELECT substr(timestamp, 1, 10) AS bucket, * FROM requests
)
GROUP BY provider, bucket
"""

USAGE_WIDTH = 11
"""Deltas ``ADD_USAGE`` takes per period: spent, reserved, then ``USAGE_COUNTERS``."""
ADD_USAGE = """
INSERT INTO budget_usage (provider, period, spent_micros, reserved_micros, ok_count,
    error_count, cancelled_count, input_tokens, output_tokens, cached_input_tokens,
    reasoning_tokens, cache_hits, overshoots)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (provider, period) DO UPDATE SET
    spent_micros = spent_micros + excluded.spent_micros,
    reserved_micros = reserved_micros + excluded.reserved_micros,
    ok_count = ok_count + excluded.ok_count,
    error_count = error_count + excluded.error_count,
    cancelled_count = cancelled_count + excluded.cancelled_count,
    input_tokens = input_tokens + excluded.input_tokens,
    output_tokens = output_tokens + excluded.output_tokens,
    cached_input_tokens = cached_input_tokens + excluded.cached_input_tokens,
    reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
    cache_hits = cache_hits + excluded.cache_hits,
    overshoots = overshoots + excluded.overshoots
RETURNING period, spent_micros, reserved_micros
"""
INSERT_ROW = (
    "INSERT INTO requests (request_id, attempt, timestamp, period, provider, model, user_id,"
    " agent, query_hash, rule, task_type, quality, complexity, batch_size,"
    " data_classification, tags, contains_pii, stream, reserved_micros, expires_at,"
    " pii_entities, privacy_action, providers_removed, redacted, provider_local, pid, host)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_REFUSAL = (
    "INSERT INTO privacy_refusals (request_id, timestamp, period, query_hash, rule, task_type,"
    " data_classification, user_id, agent, pii_entities, privacy_action, providers_removed,"
    " reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
PRIVACY_ROWS = (
    "SELECT id, request_id, attempt, timestamp, provider, model, provider_local, rule,"
    " task_type, data_classification, user_id, agent, status, pii_entities, privacy_action,"
    " providers_removed, redacted FROM requests WHERE period = ? AND contains_pii = 1"
    " ORDER BY id"
)
REFUSAL_ROWS = (
    "SELECT id, request_id, timestamp, rule, task_type, data_classification, user_id, agent,"
    " pii_entities, privacy_action, providers_removed, reason FROM privacy_refusals"
    " WHERE period = ? ORDER BY id"
)
PII_LEFT_LOCAL_UNREDACTED = (  # the audit's proof: this query must return no row
    "SELECT id, request_id, timestamp, provider FROM requests"
    " WHERE contains_pii = 1 AND redacted = 0 AND provider_local = 0"
)
SELECT_FOR_SETTLE = (
    "SELECT provider, timestamp, status, reserved_micros, settled_at, cost_micros"
    " FROM requests WHERE id = ?"
)
SETTLE_ROW = (
    "UPDATE requests SET status = ?, error_type = ?, input_tokens = ?, output_tokens = ?,"
    " cached_input_tokens = ?, reasoning_tokens = ?, counted = ?, cost_micros = ?,"
    " latency_ms = ?, ttft_ms = ?, cache_hit = ?, settled_at = ? WHERE id = ?"
)
USAGE_OF = (
    "SELECT spent_micros, reserved_micros FROM budget_usage WHERE provider = ? AND period = ?"
)
STALE = (
    "SELECT id, provider, timestamp, reserved_micros FROM requests"
    " WHERE status = 'pending' AND expires_at < ? AND provider = ?"
)
PENDING_PIDS = "SELECT DISTINCT pid FROM requests WHERE status = 'pending' AND host = ?"
PENDING_OF_PID = (
    "SELECT id, provider, timestamp, reserved_micros FROM requests"
    " WHERE status = 'pending' AND host = ? AND pid = ?"
)
EXPIRE_ROW = (  # the outcome is unknown: the provider may have billed it, so it is spent
    "UPDATE requests SET status = 'expired_billed', error_type = ?,"
    " cost_micros = reserved_micros WHERE id = ?"
)
RENEW = "UPDATE requests SET expires_at = ? WHERE id = ? AND status = 'pending'"
SUMMARY_USAGE = (
    "SELECT provider, spent_micros, reserved_micros, ok_count, error_count, cancelled_count,"
    " input_tokens, output_tokens, cached_input_tokens, reasoning_tokens, cache_hits,"
    " overshoots FROM budget_usage WHERE period = ?"
)
SUMMARY_OPEN = (  # few rows are pending or expired: never scan the month through its index
    "SELECT provider, status, count(*) FROM requests INDEXED BY requests_status_expires"
    " WHERE status IN ('pending', 'expired', 'expired_billed') AND period = ?"
    " GROUP BY provider, status"
)
EXPORT = "SELECT * FROM requests WHERE period = ? ORDER BY id"
BY_REQUEST = "SELECT * FROM requests WHERE request_id = ? ORDER BY attempt, id"


def rebuild_usage(conn: sqlite3.Connection) -> None:
    """Recompute ``budget_usage`` from the rows; the caller holds a write transaction."""
    conn.execute("DELETE FROM budget_usage")
    conn.execute(_REBUILD_USAGE)


HASH_KEY_QUERY = "SELECT value FROM ledger_secrets WHERE name = 'query_hash_key'"
"""The ledger's query-hash key (migration m005), the same statement on both backends."""


def hash_key_of(rows: Sequence[Sequence[Any]]) -> bytes:
    """The key from ``HASH_KEY_QUERY``'s rows; a ledger without one is broken, not keyless."""
    if not rows:
        raise LedgerError("open", "the ledger has no query_hash key (migration m005)")
    return bytes.fromhex(str(rows[0][0]))
