"""OpenTelemetry tracing: a span per routed request, a CLIENT span per provider attempt.

Attempt spans follow the GenAI semantic conventions (``gen_ai.operation.name``,
``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.usage.*``, ``error.type``);
the request span carries the routing decision (``aegis.rule``, ``aegis.provider``,
``aegis.cost_usd``, ``aegis.contains_pii``). What must always hold:

- no message content (prompt, response, tool arguments) and no key is ever attached: the
  events carry none, and only names, numbers and outcomes are copied from them;
- spans carry the real times of what they describe, whenever the events arrive: explicit
  start and end from the events' wall clock, an attempt span lasting its call's latency;
- memory is bounded: attempts wait for their request in a buffer of at most
  ``max_pending`` requests, each for at most ``max_age_s``; what falls out is exported
  as parentless spans (with ``aegis.request_id``), not lost and not kept;
- ``opentelemetry-api`` is the optional ``otel`` extra: importing this module without it
  fails with a message naming the extra, and ``import aegis_proxy`` never imports it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Self
from urllib.parse import urlsplit

from aegis_proxy.reserve.money import usd_float

try:
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # the optional extra is not installed
    raise ImportError(
        "aegis_proxy.observe.tracing needs opentelemetry-api: pip install 'aegis-proxy[otel]'"
    ) from exc

if TYPE_CHECKING:
    from opentelemetry.util.types import AttributeValue

    from aegis_proxy.observe.events import AttemptEvent, RequestEvent
    from aegis_proxy.proxy import AegisLLMProxy

Attributes = dict[str, "AttributeValue"]

TRACER_NAME = "aegis_proxy"
REQUEST_SPAN = "aegis.request"
SKIP_EVENT = "aegis.provider_skipped"
MAX_ATTEMPTS_PER_REQUEST = 64  # routes are short; this only guards against a runaway


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


class OTelObserver:
    """An ``Observer`` exporting each routed request and its attempts as spans.

    Why attempts are buffered until their request ends: the proxy reports an attempt only
    once it is over, and the request once its last attempt is. An attempt span needs its
    parent's context when it is created, and the request's start time and outcome are
    known only at its end. Keeping the (small, content-free) attempt events until then
    lets the request span be created once, with its true start and end, as a child of
    the caller's current span (``request_finished`` runs in the caller's context), and
    its attempts as its children. A request that never finishes (a cancelled
    non-streaming call) is flushed when it ages out or the buffer is full.

    ``bind(proxy)`` adds the provider kind (the config's ``sdk``, e.g. ``openai``) as
    ``gen_ai.provider.name`` and ``server.address``; unbound, the provider's config name
    is used.
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        *,
        max_pending: int = 1024,
        max_age_s: float = 900.0,
    ) -> None:
        self._tracer = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)
        self._pending: OrderedDict[str, list[AttemptEvent]] = OrderedDict()
        self._lock = threading.Lock()
        self._max_pending = max_pending
        self._max_age_s = max_age_s
        self._proxy: AegisLLMProxy | None = None

    def bind(self, proxy: AegisLLMProxy) -> Self:
        """Name providers by their kind and server from ``proxy``'s config; observe it."""
        self._proxy = proxy
        if self not in proxy.observers:
            proxy.observers.append(self)
        return self

    def attempt_finished(self, event: AttemptEvent) -> None:
        request_id = event.record.request_id
        with self._lock:
            events = self._pending.pop(request_id, [])
            if len(events) < MAX_ATTEMPTS_PER_REQUEST:
                events.append(event)
            self._pending[request_id] = events  # most recently active last
            stale = self._evict(event.ended_at)
        for orphans in stale:
            for orphan in orphans:
                if orphan.outcome is not None:
                    self._attempt_span(orphan, Context())  # an empty context: a root span

    def request_finished(self, event: RequestEvent) -> None:
        with self._lock:
            attempts = self._pending.pop(event.record.request_id, [])
        span = self._tracer.start_span(
            REQUEST_SPAN,
            kind=SpanKind.INTERNAL,
            start_time=_ns(event.started_at),
            attributes=request_attributes(event),
        )
        parent = trace.set_span_in_context(span)
        for attempt in attempts:
            if attempt.outcome is None:  # skipped, or refused by the budget: no call made
                span.add_event(SKIP_EVENT, skip_attributes(attempt), _ns(attempt.ended_at))
            else:
                self._attempt_span(attempt, parent)
        if request_failed(event):
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=_ns(event.ended_at))

    def pending(self) -> int:
        """Requests whose attempts wait for their end (at most ``max_pending``)."""
        with self._lock:
            return len(self._pending)

    def _evict(self, now: float) -> list[list[AttemptEvent]]:
        """Pop requests past the buffer's size or age (the oldest activity first)."""
        evicted = []
        while self._pending:
            events = next(iter(self._pending.values()))
            too_many = len(self._pending) > self._max_pending
            if not too_many and events[-1].ended_at >= now - self._max_age_s:
                break
            evicted.append(self._pending.popitem(last=False)[1])
        return evicted

    def _attempt_span(self, event: AttemptEvent, parent: Context) -> None:
        attributes = attempt_attributes(event)
        attributes.update(self._provider_attributes(event.attempt.provider))
        span = self._tracer.start_span(
            f"chat {event.attempt.model}",
            context=parent,
            kind=SpanKind.CLIENT,
            start_time=_ns(event.started_at),
            attributes=attributes,
        )
        outcome = event.outcome
        assert outcome is not None
        if outcome.status == "error":
            span.set_status(Status(StatusCode.ERROR))
        # the call's own duration: the event is emitted after the ledger write
        span.end(end_time=_ns(event.started_at + outcome.latency_ms / 1000))

    def _provider_attributes(self, provider: str) -> Attributes:
        config = self._proxy.config.providers.get(provider) if self._proxy else None
        if config is None:
            return {"gen_ai.provider.name": provider}
        attributes: Attributes = {"gen_ai.provider.name": config.sdk}
        if config.api_base:
            url = urlsplit(config.api_base)  # host and port only: never user info or query
            if url.hostname:
                attributes["server.address"] = url.hostname
            if url.port:
                attributes["server.port"] = url.port
        return attributes


def request_failed(event: RequestEvent) -> bool:
    """Whether the request failed (a stream the caller closed early did not)."""
    if event.error is None:
        return False
    attempts = event.record.attempts
    return not (attempts and attempts[-1].outcome == "cancelled")


def request_attributes(event: RequestEvent) -> Attributes:
    """The routing decision and its result: names, numbers and flags only."""
    record = event.record
    attributes: Attributes = {
        "aegis.request_id": record.request_id,
        "aegis.rule": record.rule,
        "aegis.contains_pii": record.contains_pii,
        "aegis.cost_usd": float(record.cost_usd),
        "aegis.stream": event.stream,
        "aegis.attempts": sum(1 for a in record.attempts if a.outcome not in _NO_CALL),
    }
    if record.provider is not None:
        attributes["aegis.provider"] = record.provider
        attributes["aegis.model"] = record.model or ""
    if record.pii_entities:
        attributes["aegis.pii_entities"] = sorted(record.pii_entities)  # types, not values
    if record.removed_providers:
        attributes["aegis.removed_providers"] = list(record.removed_providers)
    if request_failed(event):
        attributes["error.type"] = event.error or "_OTHER"
    return attributes


_NO_CALL = frozenset({"skipped", "budget_exceeded"})


def attempt_attributes(event: AttemptEvent) -> Attributes:
    """GenAI attributes of one provider call (the observer adds ``gen_ai.provider.name``).

    ``gen_ai.response.model`` is the routed model: the events do not carry the model
    string of the response itself.
    """
    attempt, outcome = event.attempt, event.outcome
    assert outcome is not None
    attributes: Attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": attempt.model,
        "gen_ai.request.stream": event.stream,
        "aegis.provider": attempt.provider,
        "aegis.request_id": event.record.request_id,
        "aegis.rule": event.record.rule,
        "aegis.attempt.outcome": outcome.status,
        "aegis.breaker_state": attempt.breaker,
        "aegis.cost_usd": usd_float(outcome.cost_micros),
    }
    if outcome.status == "error":
        attributes["error.type"] = outcome.error_type or "_OTHER"
        return attributes
    attributes["gen_ai.usage.input_tokens"] = outcome.input_tokens
    attributes["gen_ai.usage.output_tokens"] = outcome.output_tokens
    attributes["aegis.tokens_counted"] = outcome.counted
    if outcome.status == "ok":
        attributes["gen_ai.response.model"] = attempt.model
    if outcome.cached_input_tokens:
        attributes["gen_ai.usage.cache_read.input_tokens"] = outcome.cached_input_tokens
    if outcome.reasoning_tokens:
        attributes["gen_ai.usage.reasoning.output_tokens"] = outcome.reasoning_tokens
    if outcome.ttft_ms is not None:
        attributes["gen_ai.response.time_to_first_chunk"] = outcome.ttft_ms / 1000
    return attributes


def skip_attributes(event: AttemptEvent) -> Attributes:
    """A candidate passed over without a call, and why (the reason names no content)."""
    attempt = event.attempt
    return {
        "aegis.provider": attempt.provider,
        "gen_ai.request.model": attempt.model,
        "aegis.attempt.outcome": attempt.outcome,
        "aegis.skip_reason": attempt.reason or "",
        "aegis.breaker_state": attempt.breaker,
    }
