"""What every ledger backend shares: the records it stores, its interface, its pure helpers.

The proxy talks to a ledger through ``LedgerBackend`` only, so the embedded SQLite file
(``aegis_proxy.settle.sqlite.ledger.Ledger``) and the shared PostgreSQL database
(``aegis_proxy.settle.postgres.ledger.PostgresLedger``) are interchangeable. What must always hold:

- a backend keeps the guarantees of ``settle.sqlite.ledger``: one row per attempt, settled
  once; spent + reserved <= limit after every reservation, at any concurrency;
- ``LedgerUnavailableError`` means "the database cannot be reached now": the proxy skips a
  budgeted provider (its budget cannot be checked) and falls over to the next one;
- this module imports only the standard library, so
  ``aegis-proxy report`` stays fast; nothing here ever holds prompt or response text;
- ``query_hash`` is stored keyed: a record carries the plain digest of the messages (in
  memory only, never in a repr), and ``row_params``/``refusal_params`` write
  ``keyed_hash(key, digest)``, HMAC-SHA256 under the ledger's own secret (m005), so the
  stored value cannot be brute-forced back to a templated prompt's phone number.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence


Status = Literal["ok", "error", "cancelled"]
"""How an attempt that reached (or may have reached) its provider ended."""
OUTCOMES: frozenset[str] = frozenset(get_args(Status))
EXPIRED_BILLED = "expired_billed"
"""A pending row whose process died or whose TTL passed: its outcome is unknown (the
provider may have served and billed it), so it is spent at its reserved bound."""


@dataclass(frozen=True, slots=True)
class Finished:
    """How an attempt ended, before it is priced: the provider's usage and the text it sent.

    ``text`` is what tokens are counted from when ``usage`` is missing (None: nothing to
    count, a failed attempt).
    """

    status: Status
    usage: Any = None
    text: str | None = None
    error_type: str | None = None
    unknown: bool = False
    """The provider may have served (and billed) more than we saw: without ``usage`` the
    attempt costs its bound (a call cancelled or timed out after it was sent)."""


CANCELLED = Finished("cancelled", None, "", "cancelled")
"""Cancelled before the request was sent: nothing to pay, the reservation is released."""
CANCELLED_AFTER_SEND = Finished("cancelled", None, None, "cancelled", unknown=True)
"""Cancelled after the request may have been sent: billed at the bound."""


@dataclass(frozen=True, slots=True)
class AttemptStart:
    """What is known of an attempt before the provider is called (never any text)."""

    request_id: str
    attempt: int
    provider: str
    model: str
    rule: str
    task_type: str
    quality: str
    complexity: str
    batch_size: int
    data_classification: str
    contains_pii: bool
    stream: bool
    query_hash: str = field(repr=False)  # the plain digest: keyed only when written
    user_id: str | None = None
    agent: str | None = None
    tags: tuple[str, ...] = ()
    privacy: PrivacyDecision | None = None
    """The privacy decision of the request (None: no personal data, nothing decided)."""
    provider_local: bool = False
    """Whether the attempt's provider is ``local: true``: the audit's proof reads it."""


@dataclass(frozen=True, slots=True)
class PrivacyDecision:
    """What the privacy engine decided for a request: entity types and counts, never values.

    ``action`` is what was done: ``route_local`` (non-local providers ``removed``),
    ``redact`` (values replaced before sending) or ``block`` (refused).
    """

    entities: tuple[tuple[str, int], ...]
    action: str
    removed: tuple[str, ...] = ()

    @property
    def redacted(self) -> bool:
        return self.action == "redact"

    def entities_json(self) -> str:
        return json.dumps(dict(self.entities), sort_keys=True)


@dataclass(frozen=True, slots=True)
class PrivacyRefusal:
    """A request refused for privacy before any provider was called (no attempt row)."""

    request_id: str
    query_hash: str = field(repr=False)  # the plain digest: keyed only when written
    rule: str
    task_type: str
    data_classification: str
    decision: PrivacyDecision
    reason: str  # 'blocked' (pii_action block) | 'no_local_provider'
    user_id: str | None = None
    agent: str | None = None


@dataclass(frozen=True, slots=True)
class BudgetLimit:
    """A provider's limits in micro-dollars; None means no limit of that kind."""

    monthly_micros: int | None
    daily_micros: int | None = None
    warn_share: float = 0.8


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """How an attempt ended: real (or locally ``counted``) tokens, cost and timing."""

    status: Status
    latency_ms: float
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    cost_micros: int = 0
    counted: bool = False
    error_type: str | None = None
    ttft_ms: float | None = None
    cache_hit: bool = False
    """Served from the response cache: no provider call, cost 0."""


def current_month(now: datetime | None = None) -> str:
    """The calendar month (UTC) of ``now`` as 'YYYY-MM'."""
    return iso(utc(now))[:7]


def utc(now: datetime | None) -> datetime:
    """``now`` (default: the current time) in UTC; a naive datetime is refused."""
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)


def iso(moment: datetime) -> str:
    """The ledger's timestamp text: ISO 8601 to the millisecond, so it sorts as time."""
    return moment.isoformat(timespec="milliseconds")


def check_outcome(outcome: AttemptOutcome) -> None:
    """Raise ValueError for a status other than ok/error/cancelled or a negative count."""
    if outcome.status not in OUTCOMES:
        raise ValueError(f"outcome status must be one of {sorted(OUTCOMES)}: {outcome.status!r}")
    counts = (outcome.input_tokens, outcome.output_tokens, outcome.cached_input_tokens)
    if min(*counts, outcome.reasoning_tokens, outcome.cost_micros) < 0:
        raise ValueError("token counts and cost must not be negative")


def keyed_hash(key: bytes, digest: str) -> str:
    """What the ledger stores of a request's digest: HMAC-SHA256 under the ledger's key.

    The plain digest of a templated prompt can be brute-forced (try every phone number);
    without the key, the stored value cannot.
    """
    if not key:  # never a weak (unkeyed) hash by accident: a bug, not a state
        raise ValueError("the ledger's query_hash key is not loaded")
    return hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()


def row_params(
    start: AttemptStart, stamp: str, reserved: int, expires_at: float, hash_key: bytes
) -> tuple[object, ...]:
    """The INSERT_ROW parameters before (pid, host), in column order."""
    s = start
    return (
        s.request_id, s.attempt, stamp, stamp[:7], s.provider, s.model, s.user_id, s.agent,
        keyed_hash(hash_key, s.query_hash), s.rule, s.task_type, s.quality, s.complexity,
        s.batch_size,
        s.data_classification, json.dumps(list(s.tags)), int(s.contains_pii), int(s.stream),
        reserved, expires_at, *privacy_params(s.privacy), int(s.provider_local),
    )  # fmt: skip


def privacy_params(decision: PrivacyDecision | None) -> tuple[object, ...]:
    """(pii_entities, privacy_action, providers_removed, redacted) of a row."""
    if decision is None:
        return ("{}", "none", "[]", 0)
    removed = json.dumps(list(decision.removed))
    return (decision.entities_json(), decision.action, removed, int(decision.redacted))


def refusal_params(refusal: PrivacyRefusal, stamp: str, hash_key: bytes) -> tuple[object, ...]:
    """The INSERT_REFUSAL parameters, in column order."""
    r = refusal
    return (
        r.request_id, stamp, stamp[:7], keyed_hash(hash_key, r.query_hash), r.rule, r.task_type,
        r.data_classification, r.user_id, r.agent, *privacy_params(r.decision)[:3], r.reason,
    )  # fmt: skip


def outcome_params(o: AttemptOutcome) -> tuple[object, ...]:
    """The SETTLE_ROW parameters before (settled_at, id), in column order."""
    return (
        o.status, o.error_type, o.input_tokens, o.output_tokens, o.cached_input_tokens,
        o.reasoning_tokens, int(o.counted), o.cost_micros, o.latency_ms, o.ttft_ms,
        int(o.cache_hit),
    )  # fmt: skip


def counter_deltas(o: AttemptOutcome, reserved: int = 0) -> tuple[int, ...]:
    """What a settle adds to the usage counters after (spent, reserved)."""
    flags = (int(o.status == "ok"), int(o.status == "error"), int(o.status == "cancelled"))
    tokens = (o.input_tokens, o.output_tokens, o.cached_input_tokens, o.reasoning_tokens)
    return (*flags, *tokens, int(o.cache_hit), int(overshoot(o, reserved)))


def overshoot(outcome: AttemptOutcome, reserved: int) -> bool:
    """Whether a provider billed more than the bound reserved for it (its usage lies)."""
    return 0 < reserved < outcome.cost_micros


def settle_delta(
    outcome: AttemptOutcome, status: str, reserved: int, prior_cost: int = 0
) -> tuple[int, ...]:
    """Usage deltas of settling a row now in ``status`` that counts ``prior_cost`` as spent.

    A pending row gives its reservation back; a row expired as billed had its bound counted
    as spent (``prior_cost``), which the real cost now replaces; an old 'expired' row gave
    its money back already.
    """
    release = reserved if status == "pending" else 0
    return (outcome.cost_micros - prior_cost, -release, *counter_deltas(outcome, reserved))


def dicts(names: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[dict[str, object]]:
    """Rows as dicts keyed by column name."""
    for row in rows:
        yield dict(zip(names, row, strict=True))


def host_identity() -> str:
    """Hostname plus PID namespace: containers sharing a hostname cannot see each other's pids."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # e.g. 'pid:[4026531836]'
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()}/{namespace.removeprefix('pid:').strip('[]')}"


def alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (an unknown answer counts as alive)."""
    if pid == os.getpid() or sys.platform == "win32":  # os.kill(pid, 0) is not a probe there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: it exists
        return True
    return True
