"""Open the ledger a config names: a SQLite file, or a PostgreSQL database.

What must always hold: the PostgreSQL driver is imported only when a PostgreSQL URL is
given, so ``aegis-proxy report`` on a SQLite file never pays for it; a malformed URL is a
``ValueError`` naming it, before anything is created.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from aegis_proxy.settle.sqlite.ledger import Ledger

if TYPE_CHECKING:
    from aegis_proxy.settle.backend import LedgerBackend

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_SQLITE_SCHEME = "sqlite:///"


def open_ledger(
    url_or_path: str | os.PathLike[str], *, read_only: bool = False, **options: Any
) -> LedgerBackend:
    """The ledger at ``sqlite:///path``, ``postgresql://...`` or a plain file path.

    ``options`` go to the backend (``reservation_ttl_s``, ``busy_timeout_s``; PostgreSQL
    also takes ``max_queued_rows``, ``retry_interval_s``, ...). The PostgreSQL driver is
    imported only when a PostgreSQL URL is given. ``read_only`` (reports, exports, audits)
    opens an existing SQLite file with ``mode=ro``: a missing file or one that is not an
    up-to-date ledger is a ``LedgerError``, and nothing is created or migrated.
    PostgreSQL has no such mode here: its tables are created if missing, as always.
    """
    target = os.fspath(url_or_path)
    if target.startswith(_POSTGRES_SCHEMES):
        from aegis_proxy.settle.postgres.ledger import PostgresLedger  # psycopg only when asked

        return PostgresLedger(target, **options)
    if target.startswith(_SQLITE_SCHEME):
        target = target.removeprefix(_SQLITE_SCHEME)  # sqlite:////abs keeps its leading /
    elif "://" in target or target.startswith("sqlite:"):
        raise ValueError(f"ledger URL must be sqlite:///PATH or postgresql://...: {target!r}")
    if not target:
        raise ValueError("a SQLite ledger needs a file path: sqlite:///PATH")
    return Ledger(target, read_only=read_only, **options)
