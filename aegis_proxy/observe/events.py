"""What the proxy tells observers (metrics, tracing): finished attempts and requests.

Observers are plain objects passed to ``AegisLLMProxy(observers=[...])``. They receive
names, numbers and outcomes only — the same things the ledger keeps — never message
content or keys. An observer that raises is logged and ignored: observability must never
break a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from aegis_proxy.observe.logs import get_logger

if TYPE_CHECKING:
    from collections.abc import Sequence

    from aegis_proxy.decide.record import AegisRecord, Attempt
    from aegis_proxy.settle.records import AttemptOutcome

log = get_logger("aegis_proxy")


@dataclass(frozen=True, slots=True)
class AttemptEvent:
    """One provider attempt (or skip) has ended."""

    record: AegisRecord
    attempt: Attempt
    outcome: AttemptOutcome | None  # None for a skipped candidate (no ledger row)
    started_at: float  # wall-clock seconds (time.time()) when the attempt started
    ended_at: float
    stream: bool
    bound_micros: int = 0
    """The attempt's cost bound (what was reserved for a budgeted provider)."""


@dataclass(frozen=True, slots=True)
class RequestEvent:
    """A routed request has ended: served (``error`` is None) or failed."""

    record: AegisRecord
    started_at: float
    ended_at: float
    stream: bool
    error: str | None  # our exception class name when the request failed


class Observer(Protocol):
    def attempt_finished(self, event: AttemptEvent) -> None: ...

    def request_finished(self, event: RequestEvent) -> None: ...


def emit(observers: Sequence[Observer], method: str, event: AttemptEvent | RequestEvent) -> None:
    """Call ``method`` of every observer; one that raises is logged and skipped."""
    for observer in observers:
        try:
            getattr(observer, method)(event)
        except Exception as exc:  # observability must never break a request
            log.error(
                "observer_failed", observer=type(observer).__name__, error_type=type(exc).__name__
            )
