"""Prometheus metrics: an observer of the proxy, and the ledger's budgets for a scrape.

Operators watch routing, spend and failures live in the tools they already run. What
must always hold:

- label values are bounded: provider, model and rule names come from the config; outcome,
  reason, token type and period from fixed sets (an unknown error kind becomes ``other``).
  No user id, request id, prompt, response or key is ever a label or a value;
- the budget gauges come from the ledger: ``bind`` loads them at start (a restart does not
  reset them) and every settled attempt at a budgeted provider reads them again, so they
  agree with the ledger shared by every process;
- observing does no network call and never raises into a request on purpose (the proxy
  also guards every observer);
- ``prometheus_client`` is the optional ``metrics`` extra: importing this module without it
  fails with a message naming the extra, and ``import aegis_proxy`` never imports it.

The metrics are listed in the tables below (the budget gauges in ``metrics_ledger``);
``docs/observability.md`` explains them. Label values come from ``metrics_labels``; the
ledger's view for ``aegis-proxy metrics`` is ``metrics_ledger``. Their names are
importable from here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Self, TypeVar, cast

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client import start_http_server as _start_http_server
    from prometheus_client.metrics import MetricWrapperBase
except ImportError as exc:  # the optional extra is not installed
    raise ImportError(
        "aegis_proxy.observe.metrics needs prometheus-client: pip install 'aegis-proxy[metrics]'"
    ) from exc

from aegis_proxy.observe.metric_labels import (
    fallbacks,
    reason_of,
    request_outcome,
    route_orders,
    served_by,
)
from aegis_proxy.observe.metrics_ledger import BUDGET_GAUGES
from aegis_proxy.reserve.money import usd_float

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from aegis_proxy.config import AegisConfig
    from aegis_proxy.observe.events import AttemptEvent, RequestEvent
    from aegis_proxy.proxy import AegisLLMProxy
    from aegis_proxy.settle.records import AttemptOutcome

__all__ = [
    "BREAKER_STATES",
    "LATENCY_BUCKETS",
    "TTFT_BUCKETS",
    "PrometheusObserver",
    "start_metrics_server",
]

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
_ATTEMPT_OUTCOMES = frozenset(
    {"ok", "error", "cancelled", "skipped", "budget_exceeded", "ledger_unavailable", "cache_hit"}
)
_TOKEN_TYPES = ("input", "output", "cached", "reasoning")
M = TypeVar("M", bound=MetricWrapperBase)
_PM = ("provider", "model")
_COUNTERS = (  # attribute, name (``_total`` is added), help, labels
    ("requests", "llm_requests", "Routed requests by serving provider, rule and outcome",
     (*_PM, "rule", "outcome")),
    ("attempts", "llm_attempts", "Provider attempts and skipped candidates",
     (*_PM, "outcome", "reason")),
    ("tokens", "llm_tokens", "Tokens by type (input includes cached)", (*_PM, "type")),
    ("cost", "llm_cost_usd", "Spend in USD", _PM),
    ("fallbacks", "llm_fallbacks", "Providers a served request passed over, by reason",
     ("provider", "reason")),
    ("fallback_requests", "llm_fallback_requests",
     "Served requests not served by their route's first choice", ("rule",)),
    ("overshoots", "llm_cost_overshoots",
     "Attempts a provider billed above their reserved bound (usage that lies)", _PM),
)  # fmt: skip
_HISTOGRAMS = (
    ("request_duration", "llm_request_duration_seconds", "Whole request, fallbacks included",
     ("rule", "outcome"), LATENCY_BUCKETS),
    ("latency", "llm_latency_seconds", "Attempts that reached a provider",
     (*_PM, "outcome"), LATENCY_BUCKETS),
    ("ttft", "llm_time_to_first_token_seconds", "Time to the first streamed chunk", _PM,
     TTFT_BUCKETS),
)  # fmt: skip
_GAUGES = (
    *BUDGET_GAUGES,
    ("breaker", "llm_circuit_breaker_state", "0 closed, 1 half-open, 2 open", ("provider",)),
)


class PrometheusObserver:
    """An ``Observer`` keeping Prometheus metrics of every attempt and routed request.

    ``bind(proxy)`` adds what only the proxy knows: budget use from its ledger, live
    breaker states and each rule's route order (for privacy fallbacks). One observer per
    registry; unbound, it still counts everything the events carry.
    """

    requests: Counter
    request_duration: Histogram
    attempts: Counter
    latency: Histogram
    ttft: Histogram
    tokens: Counter
    cost: Counter
    fallbacks: Counter
    fallback_requests: Counter
    overshoots: Counter
    budget_spent: Gauge
    budget_limit: Gauge
    budget_used: Gauge
    breaker: Gauge

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = REGISTRY if registry is None else registry
        _define(self, self.registry)
        self._proxy: AegisLLMProxy | None = None
        self._config: AegisConfig | None = None
        self._routes: dict[str, tuple[str, ...]] = {}
        self._watched: set[str] = set()
        self._children: dict[tuple[object, ...], MetricWrapperBase] = {}

    def bind(self, proxy: AegisLLMProxy) -> Self:
        """Load budget use from the ledger, read breakers live, and observe ``proxy``."""
        self._proxy = proxy
        for name in proxy.config.providers:
            self._watch_breaker(name)
            self.refresh_budget(name)
        if self not in proxy.observers:
            proxy.observers.append(self)
        return self

    def attempt_finished(self, event: AttemptEvent) -> None:
        attempt = event.attempt
        outcome = attempt.outcome if attempt.outcome in _ATTEMPT_OUTCOMES else "other"
        self._child(
            self.attempts, attempt.provider, attempt.model, outcome, reason_of(attempt)
        ).inc()
        if self._proxy is None:  # unbound: the state the attempt saw is all we know
            self._child(self.breaker, attempt.provider).set(BREAKER_STATES.get(attempt.breaker, 0))
        elif attempt.provider not in self._watched:  # a provider added by a config reload
            self._watch_breaker(attempt.provider)
        if event.outcome is not None:
            self._settled(attempt.provider, attempt.model, event.outcome)
            if 0 < event.bound_micros < event.outcome.cost_micros:
                self._child(self.overshoots, attempt.provider, attempt.model).inc()

    def request_finished(self, event: RequestEvent) -> None:
        record = event.record
        outcome = request_outcome(event)
        provider, model = served_by(record, outcome)
        self._child(self.requests, provider, model, record.rule, outcome).inc()
        duration = max(0.0, event.ended_at - event.started_at)
        self._child(self.request_duration, record.rule, outcome).observe(duration)
        if outcome != "ok":
            return
        passed = fallbacks(record, self._route_of(record.rule))
        for passed_provider, reason in passed:
            self._child(self.fallbacks, passed_provider, reason).inc()
        if passed:
            self._child(self.fallback_requests, record.rule).inc()

    def refresh_budget(self, provider: str) -> None:
        """Set the provider's budget gauges from the ledger (no-op unbound or unbudgeted)."""
        if self._proxy is None or provider not in self._proxy.config.providers:
            return
        config = self._proxy.config.providers[provider]
        if not config.budgeted:
            return
        day = datetime.now(UTC).date().isoformat()
        for period, key, limit in (
            ("month", day[:7], config.monthly_budget_usd),
            ("day", day, config.daily_budget_usd),
        ):
            if limit is not None:
                spent = usd_float(self._proxy.ledger.budget_state(provider, key)[0])
                self._set_budget(provider, period, spent, float(limit))

    def _set_budget(self, provider: str, period: str, spent: float, limit: float) -> None:
        self._child(self.budget_spent, provider, period).set(spent)
        self._child(self.budget_limit, provider, period).set(limit)
        self._child(self.budget_used, provider, period).set(spent / limit if limit else 1.0)

    def _settled(self, provider: str, model: str, outcome: AttemptOutcome) -> None:
        status = outcome.status if outcome.status in _ATTEMPT_OUTCOMES else "other"
        self._child(self.latency, provider, model, status).observe(outcome.latency_ms / 1000)
        if outcome.ttft_ms is not None:
            self._child(self.ttft, provider, model).observe(outcome.ttft_ms / 1000)
        counts = (
            outcome.input_tokens,
            outcome.output_tokens,
            outcome.cached_input_tokens,
            outcome.reasoning_tokens,
        )
        for kind, count in zip(_TOKEN_TYPES, counts, strict=True):
            self._child(self.tokens, provider, model, kind).inc(count)
        self._child(self.cost, provider, model).inc(usd_float(outcome.cost_micros))
        self.refresh_budget(provider)

    def _child(self, metric: M, *labels: str) -> M:
        """``metric.labels(*labels)``, cached: label values are bounded, lookups are not free."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return cast("M", child)

    def _watch_breaker(self, provider: str) -> None:
        assert self._proxy is not None
        self._child(self.breaker, provider).set_function(_breaker_state(self._proxy, provider))
        self._watched.add(provider)

    def _route_of(self, rule: str) -> tuple[str, ...] | None:
        if self._proxy is None:
            return None
        if self._proxy.config is not self._config:  # first use, or the config was reloaded
            self._config = self._proxy.config
            self._routes = route_orders(self._config)
        return self._routes.get(rule)


def _define(observer: PrometheusObserver, registry: CollectorRegistry) -> None:
    """Create the observer's metrics in ``registry``, from the tables above."""
    for attr, name, doc, labels in _COUNTERS:
        setattr(observer, attr, Counter(name, doc, labels, registry=registry))
    for attr, name, doc, labels, buckets in _HISTOGRAMS:
        setattr(observer, attr, Histogram(name, doc, labels, buckets=buckets, registry=registry))
    for attr, name, doc, labels in _GAUGES:
        setattr(observer, attr, Gauge(name, doc, labels, registry=registry))


def _breaker_state(proxy: AegisLLMProxy, provider: str) -> Callable[[], float]:
    """Read at scrape time, so a breaker cooling down to half-open shows without traffic."""

    def state() -> float:
        breaker = proxy.breakers.get(provider)
        return float(BREAKER_STATES.get(breaker.state, 0)) if breaker is not None else 0.0

    return state


def start_metrics_server(
    port: int, registry: CollectorRegistry | None = None, *, addr: str = "127.0.0.1"
) -> WSGIServer:
    """Serve ``registry`` at ``http://addr:port/metrics`` from a daemon thread.

    Returns the server: ``server.server_port`` is the bound port (pass 0 for any), and
    ``server.shutdown()`` stops it. Listens on loopback unless ``addr`` says otherwise.
    """
    server, _thread = _start_http_server(port, addr=addr, registry=registry or REGISTRY)
    return server
