"""The ledger's schema, as migrations applied on every open of the SQLite file.

A ledger file outlives any one version of aegis_proxy, so its schema only moves forward
through plain functions ``mNNN_name(conn)``, registered in order with ``@migration`` and
recorded in ``_migrations``. What must always hold:

- ``apply_migrations`` runs inside the caller's ``BEGIN IMMEDIATE``: two processes opening a
  new file at once apply each migration exactly once (the second waits, then finds it done);
- a migration that has shipped is never edited; a change is a new migration. A migration
  reads only its own frozen constants (``M002_COUNTERS``, ``_M002_REBUILD_USAGE``), never
  the latest statements at the end, which may name columns a later migration adds;
- a new migration is safe to run twice (``IF NOT EXISTS``, or a look at the columns);
- ``budget_usage`` always equals what ``rebuild_usage`` computes from ``requests``: each
  provider and period ('YYYY-MM' and 'YYYY-MM-DD') holds the spend of settled rows, the
  reservations of pending rows, and the counters the monthly summary reads in O(1).
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable

Migration = Callable[[sqlite3.Connection], None]

MIGRATIONS: list[tuple[str, Migration]] = []
"""Every migration in the order it is applied."""

M002_COUNTERS = (
    "ok_count",
    "error_count",
    "cancelled_count",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
)
USAGE_COUNTERS = (*M002_COUNTERS, "cache_hits", "overshoots")
"""Counter columns of ``budget_usage`` (m002, m003, m006), in the order ``Ledger`` writes them."""


def migration(function: Migration) -> Migration:
    """Register ``function`` as the next migration; its name is its record."""
    MIGRATIONS.append((function.__name__, function))
    return function


def apply_migrations(conn: sqlite3.Connection, applied_at: str) -> list[str]:
    """Apply the migrations this database lacks; the caller holds a write transaction."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done = {name for (name,) in conn.execute("SELECT name FROM _migrations")}
    applied = []
    for name, function in MIGRATIONS:
        if name not in done:
            function(conn)
            conn.execute("INSERT INTO _migrations VALUES (?, ?)", (name, applied_at))
            applied.append(name)
    return applied


@migration
def m001_initial(conn: sqlite3.Connection) -> None:
    """One row per provider attempt, and O(1) budget state per provider and period."""
    conn.execute(
        """CREATE TABLE IF NOT EXISTS requests (
            id INTEGER PRIMARY KEY,
            request_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            timestamp TEXT NOT NULL,
            period TEXT NOT NULL,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            user_id TEXT,
            agent TEXT,
            query_hash TEXT NOT NULL,
            rule TEXT NOT NULL,
            task_type TEXT NOT NULL,
            quality TEXT NOT NULL,
            complexity TEXT NOT NULL,
            batch_size INTEGER NOT NULL,
            data_classification TEXT NOT NULL,
            tags TEXT NOT NULL DEFAULT '[]',
            contains_pii INTEGER NOT NULL,
            stream INTEGER NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            error_type TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cached_input_tokens INTEGER NOT NULL DEFAULT 0,
            reasoning_tokens INTEGER NOT NULL DEFAULT 0,
            counted INTEGER NOT NULL DEFAULT 0,
            reserved_micros INTEGER NOT NULL DEFAULT 0,
            cost_micros INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL GENERATED ALWAYS AS (cost_micros / 1000000.0) VIRTUAL,
            latency_ms REAL,
            ttft_ms REAL,
            pid INTEGER NOT NULL,
            host TEXT NOT NULL,
            expires_at REAL,
            settled_at TEXT
        )"""
    )
    conn.execute(
        """CREATE TABLE IF NOT EXISTS budget_usage (
            provider TEXT NOT NULL,
            period TEXT NOT NULL,
            spent_micros INTEGER NOT NULL DEFAULT 0,
            reserved_micros INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (provider, period)
        ) WITHOUT ROWID"""
    )
    for name, columns in (
        ("requests_period_provider", "period, provider"),
        ("requests_status_expires", "status, expires_at"),
        ("requests_request_id", "request_id"),
    ):
        conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON requests ({columns})")


@migration
def m002_usage_counters(conn: sqlite3.Connection) -> None:
    """Counters per provider and period, so the monthly summary never scans the rows."""
    for column in M002_COUNTERS:
        conn.execute(f"ALTER TABLE budget_usage ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")
    conn.execute("DELETE FROM budget_usage")
    conn.execute(_M002_REBUILD_USAGE)


@migration
def m003_cache_hit(conn: sqlite3.Connection) -> None:
    """Mark the rows the response cache served, and count them per provider and period.

    Every earlier row is no hit, so the new counters start right at 0: no rebuild.
    """
    _add_column(conn, "requests", "cache_hit INTEGER NOT NULL DEFAULT 0")
    _add_column(conn, "budget_usage", "cache_hits INTEGER NOT NULL DEFAULT 0")


@migration
def m004_privacy_audit(conn: sqlite3.Connection) -> None:
    """Record each attempt's privacy decision, and the requests refused for privacy.

    Rows from before this migration did not record it: those holding PII are marked
    ``unrecorded`` (their ``provider_local`` stays NULL; ``aegis-proxy audit`` judges them
    by the config's local providers).
    """
    for definition in M004_COLUMNS:
        _add_column(conn, "requests", definition)
    conn.execute(M004_UNRECORDED)
    conn.execute(M004_REFUSALS)
    for statement in M004_INDEXES:
        conn.execute(statement)


M004_COLUMNS = (
    "pii_entities TEXT NOT NULL DEFAULT '{}'",  # {"EMAIL": 2}: types and counts, never values
    "privacy_action TEXT NOT NULL DEFAULT 'none'",  # none | route_local | redact | unrecorded
    "providers_removed TEXT NOT NULL DEFAULT '[]'",  # non-local providers taken off the route
    "redacted INTEGER NOT NULL DEFAULT 0",
    "provider_local INTEGER",  # the provider was local: true (NULL before m004)
)
M004_UNRECORDED = (
    "UPDATE requests SET privacy_action = 'unrecorded'"
    " WHERE contains_pii = 1 AND privacy_action = 'none' AND provider_local IS NULL"
)
M004_INDEXES = (
    "CREATE INDEX IF NOT EXISTS privacy_refusals_period ON privacy_refusals (period)",
    "CREATE INDEX IF NOT EXISTS requests_period_pii ON requests (period, contains_pii)",
)
M004_REFUSALS = """CREATE TABLE IF NOT EXISTS privacy_refusals (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    period TEXT NOT NULL,
    query_hash TEXT NOT NULL,
    rule TEXT NOT NULL,
    task_type TEXT NOT NULL,
    data_classification TEXT NOT NULL,
    user_id TEXT,
    agent TEXT,
    pii_entities TEXT NOT NULL,
    privacy_action TEXT NOT NULL,
    providers_removed TEXT NOT NULL,
    reason TEXT NOT NULL
)"""


@migration
def m005_ledger_secrets(conn: sqlite3.Connection) -> None:
    """A secret kept with the ledger: the key of the keyed ``query_hash`` (HMAC-SHA256).

    Generated once per ledger (``secrets.token_bytes``); a second run keeps the first key.
    Rows written before this migration keep their plain digest.
    """
    conn.execute(M005_SECRETS)
    conn.execute(M005_NEW_KEY, (new_hash_key(),))


M005_SECRETS = (
    "CREATE TABLE IF NOT EXISTS ledger_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL)"
)
M005_NEW_KEY = (
    "INSERT INTO ledger_secrets (name, value) VALUES ('query_hash_key', ?)"
    " ON CONFLICT (name) DO NOTHING"
)


def new_hash_key() -> str:
    """A fresh 256-bit key, as hex text (the same column type on both backends)."""
    return secrets.token_bytes(32).hex()


@migration
def m006_unknown_outcomes(conn: sqlite3.Connection) -> None:
    """Count, per provider and period, the attempts a provider billed above their bound.

    Reservations that expire are from now on spent at their bound (status
    ``expired_billed``, ``cost_micros`` = ``reserved_micros``); that needs no column. Rows
    from before this migration were not counted: the counter starts at 0, no rebuild.
    """
    _add_column(conn, "budget_usage", M006_OVERSHOOTS)


M006_OVERSHOOTS = "overshoots INTEGER NOT NULL DEFAULT 0"


def _add_column(conn: sqlite3.Connection, table: str, definition: str) -> None:
    """``ALTER TABLE table ADD COLUMN definition`` unless the column is there already."""
    name = definition.split()[0]
    if name not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {definition}")


_M002_REBUILD_USAGE = """
INSERT INTO budget_usage (provider, period, spent_micros, reserved_micros, ok_count,
    error_count, cancelled_count, input_tokens, output_tokens, cached_input_tokens,
    reasoning_tokens)
SELECT provider, bucket, sum(cost_micros),
    sum(CASE WHEN status = 'pending' THEN reserved_micros ELSE 0 END),
    sum(status = 'ok'), sum(status = 'error'), sum(status = 'cancelled'),
    sum(input_tokens), sum(output_tokens), sum(cached_input_tokens), sum(reasoning_tokens)
FROM (
    SELECT period AS bucket, * FROM requests
    UNION ALL
    SELECT substr(timestamp, 1, 10) AS bucket, * FROM requests
)
GROUP BY provider, bucket
"""
