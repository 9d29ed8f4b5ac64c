"""The PostgreSQL ledger's runtime statements: the SQLite ones where the dialects agree.

The migrations (``migrations``) are frozen; what the ledger runs every day lives here. What
must always hold: a statement that reads alike in both dialects is derived from the SQLite
one (``_pg``) instead of being copied, so one edit updates both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aegis_proxy.settle.sqlite import queries as lite
from aegis_proxy.settle.sqlite.migrations import USAGE_COUNTERS

if TYPE_CHECKING:
    from aegis_proxy.settle.postgres.pool import Connection


def _pg(statement: str) -> str:
    """A SQLite statement with PostgreSQL placeholders (none of ours holds a literal '?')."""
    return statement.replace("?", "%s")


_REBUILD_USAGE = """
INSERT INTO budget_usage (provider, period, spent_micros, reserved_micros, ok_count,
    error_count, cancelled_count, input_tokens, output_tokens, cached_input_tokens,
    reasoning_tokens, cache_hits, overshoots)
SELECT provider, bucket, sum(cost_micros),
    sum(CASE WHEN status = 'pending' THEN reserved_micros ELSE 0 END),
    count(*) FILTER (WHERE status = 'ok'), count(*) FILTER (WHERE status = 'error'),
    count(*) FILTER (WHERE status = 'cancelled'),
    sum(input_tokens), sum(output_tokens), sum(cached_input_tokens), sum(reasoning_tokens),
    sum(cache_hit),
    count(*) FILTER (WHERE status IN ('ok', 'error', 'cancelled') AND 0 < reserved_micros
        AND reserved_micros < cost_micros)
FROM (
    SELECT period AS bucket, * FROM requests
    UNION ALL
    SELECT substr(timestamp, 1, 10) AS bucket, * FROM requests
) AS buckets
GROUP BY provider, bucket
"""

_SUMMED = ("spent_micros", "reserved_micros", *USAGE_COUNTERS)
ADD_USAGE = (  # as in SQLite, with the target table named in SET as PostgreSQL wants
    _pg(lite.ADD_USAGE[: lite.ADD_USAGE.index("ON CONFLICT")])
    + "ON CONFLICT (provider, period) DO UPDATE SET "
    + ", ".join(f"{column} = budget_usage.{column} + excluded.{column}" for column in _SUMMED)
    + " RETURNING period, spent_micros, reserved_micros"
)
INSERT_ROW = _pg(lite.INSERT_ROW) + " RETURNING id"
SELECT_FOR_SETTLE = _pg(lite.SELECT_FOR_SETTLE) + " FOR UPDATE"
SETTLE_ROW = _pg(lite.SETTLE_ROW)
USAGE_OF = _pg(lite.USAGE_OF)
ENSURE_USAGE = (
    "INSERT INTO budget_usage (provider, period) VALUES (%s, %s), (%s, %s)"
    " ON CONFLICT (provider, period) DO NOTHING"
)
LOCK_USAGE = (  # the reservation's serialisation point: see ledger_pg's module docstring
    "SELECT period, spent_micros, reserved_micros FROM budget_usage"
    " WHERE provider = %s AND period IN (%s, %s) ORDER BY period FOR UPDATE"
)
STALE = _pg(lite.STALE) + " ORDER BY id FOR UPDATE SKIP LOCKED"
PENDING_PIDS = _pg(lite.PENDING_PIDS)
PENDING_OF_PID = _pg(lite.PENDING_OF_PID) + " ORDER BY provider, timestamp FOR UPDATE SKIP LOCKED"
EXPIRE_ROW = _pg(lite.EXPIRE_ROW)
RENEW = _pg(lite.RENEW)
FIND_ROW = (  # a queued row flushed twice (its first commit's answer was lost) is one row
    "SELECT id FROM requests WHERE request_id = %s AND attempt = %s AND timestamp = %s"
    " AND provider = %s AND pid = %s AND host = %s"
)
SUMMARY_USAGE = _pg(lite.SUMMARY_USAGE)
SUMMARY_OPEN = _pg(lite.SUMMARY_OPEN).replace(" INDEXED BY requests_status_expires", "")
EXPORT = _pg(lite.EXPORT)
INSERT_REFUSAL = _pg(lite.INSERT_REFUSAL)
PRIVACY_ROWS = _pg(lite.PRIVACY_ROWS)
REFUSAL_ROWS = _pg(lite.REFUSAL_ROWS)
PII_LEFT_LOCAL_UNREDACTED = lite.PII_LEFT_LOCAL_UNREDACTED
BY_REQUEST = _pg(lite.BY_REQUEST)


def rebuild_usage(conn: Connection) -> None:
    """Recompute ``budget_usage`` from the rows; the caller holds a transaction."""
    conn.execute("LOCK TABLE budget_usage IN EXCLUSIVE MODE")
    conn.execute("DELETE FROM budget_usage")
    conn.execute(_REBUILD_USAGE)
