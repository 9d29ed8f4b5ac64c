"""The attempt loop: walk a planned request's route until one provider serves it.

For each candidate: check it (privacy once more, availability, images, what its SDK can
honour, the deadline, its circuit breaker), answer from the response cache or reserve its
budget in the ledger, call it, and settle its ledger row. What must always hold:
- privacy: a request whose plan is ``local_only`` never reaches a provider without
  ``local: true``, fallbacks and retries included;
- budget: a budgeted provider is called only after the ledger reserved an upper bound of
  the attempt's cost; a refused (or uncheckable) reservation moves on to the next provider,
  and so does a request whose cost cannot be bounded (``decide.payload.unbounded_reason``);
- egress: each attempt sends a fresh copy of the checked payload, with the payload itself
  handed to the egress guard (``call.egress``) of a non-local provider around the SDK
  call; a body the guard stops (``EgressBlockedError``) ends the request: its row settles
  at cost 0 as ``egress_blocked``;
- health: a request's own fault (HTTP 400/413/422, the SDK refusing it locally, a body the
  guard stopped) never counts against a provider's circuit breaker;
- ledger: every attempt that reaches a provider is one row, settled exactly once with its
  outcome (ok, error, cancelled), whatever happens, also when the request is cancelled while
  its reservation is being written; a ledger that waits on the network
  (``blocks_event_loop``) is called from a worker thread, and a local one is tried once
  without waiting (``wait=False``), then from a worker thread if it met a lock: the event
  loop never waits on a ledger lock;
- money: an attempt that may have reached its provider and whose usage we never saw
  (cancelled after ``Call.sent``, timed out, connection dropped after connecting) is
  settled at its cost bound; one that provably never left (refused before send,
  connection refused) at $0. A settle the ledger cannot write never costs the caller the
  answer it paid for: the ledger queues it, and a failure beyond that is logged, the row
  then expiring billed at its bound;
- cache: a hit is served only after the candidate passed every check a call would, and is
  one row at cost 0 marked ``cache_hit``;
- no attempt outlives the request's deadline; nothing here logs prompt text, response text
  or keys.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from aegis_proxy import errors
from aegis_proxy.call.cache import ResponseCache, cache_ttl, cached_answer, store_answer
from aegis_proxy.call.egress import EXPECTED, Expected
from aegis_proxy.call.resilience import should_retry
from aegis_proxy.call.streaming import AegisStream, open_first_chunk
from aegis_proxy.classify.redaction import ChunkRestorer, restore_message
from aegis_proxy.decide.params import provider_refuses
from aegis_proxy.decide.payload import unbounded_reason
from aegis_proxy.decide.record import Attempt, Outcome
from aegis_proxy.job import (
    CacheHit,
    Call,
    Job,
    failure_text,
    outcome_of,
    record_success,
    response_text,
)
from aegis_proxy.observe.events import AttemptEvent, Observer, RequestEvent, emit
from aegis_proxy.observe.logs import get_logger
from aegis_proxy.settle.backend import LedgerBackend
from aegis_proxy.settle.records import (
    CANCELLED,
    CANCELLED_AFTER_SEND,
    AttemptOutcome,
    Finished,
)
from aegis_proxy.settle.writes import RowWriter

if TYPE_CHECKING:
    from any_llm.types.completion import ChatCompletion

    from aegis_proxy.call.client import ProviderClient
    from aegis_proxy.call.resilience import CircuitBreaker
    from aegis_proxy.config.routing import RouteEntry

log = get_logger("aegis_proxy")

T = TypeVar("T")
R = TypeVar("R")
EGRESS_BLOCKED = "egress_blocked"
REQUEST_FAULTS = frozenset({"invalid_request", EGRESS_BLOCKED})
"""Error types of an attempt that are the request's fault: no circuit breaker counts them."""


class AttemptLoop:
    """Serves planned requests, one attempt after another, for one proxy.

    It writes to ``ledger``, reads and fills the response cache that ``cache`` opens on
    first use (only when a request may be cached), and tells ``observers`` (the proxy's
    own list: observers added later are told too).
    """

    def __init__(
        self,
        ledger: LedgerBackend,
        cache: Callable[[], ResponseCache],
        observers: list[Observer],
    ) -> None:
        self.ledger = ledger
        self._rows = RowWriter(ledger)
        self._cache = cache
        self.observers = observers

    @property
    def response_cache(self) -> ResponseCache:
        return self._cache()

    async def serve(self, job: Job) -> ChatCompletion | AegisStream:
        """Serve the job from the first candidate that answers; ``NoProviderAvailableError``."""
        if job.stream:
            return await self._serve(job, self._open_stream, self._stream_served)
        return await self._serve(job, self._complete, self._completed)

    async def _serve(
        self,
        job: Job,
        attempt: Callable[[Job, Call], Awaitable[T]],
        served: Callable[[Job, Call, T], Awaitable[R]],
    ) -> R:
        """Walk the route: each candidate, retried on curable failures, until one serves."""
        for entry in job.plan.route.candidates:
            for retry in range(job.rt.retry.retries + 1):
                call = await self._start(job, entry)
                if call is None:
                    break
                try:
                    result = await attempt(job, call)
                except errors.EgressBlockedError as blocked:
                    await self._asettle(job, call, Finished("error", error_type=EGRESS_BLOCKED))
                    self._request_finished(job, "EgressBlockedError")
                    raise blocked from None
                except (errors.ProviderCallError, TimeoutError) as exc:
                    error = await self._failed(job, call, exc)
                    if not await self._backoff(job, retry, error):
                        break
                    continue
                except BaseException:
                    self._settle(job, call, CANCELLED_AFTER_SEND if call.sent else CANCELLED)
                    call.breaker.release_probe()
                    self._request_finished(job, "cancelled")
                    raise
                return await served(job, call, result)
        log.warning("request_failed", request_id=job.plan.request_id, rule=job.plan.route.rule)
        self._request_finished(job, "NoProviderAvailableError")
        raise errors.NoProviderAvailableError(job.plan.route.rule, job.record.attempts)

    async def _backoff(self, job: Job, retry: int, error: errors.ProviderCallError) -> bool:
        """Sleep before a retry at the same provider; False when no retry is due."""
        if retry >= job.rt.retry.retries or not should_retry(error):
            return False
        delay = job.rt.retry.delay(retry + 1, error)
        remaining = job.remaining()
        if remaining is not None and delay >= remaining:
            return False
        await asyncio.sleep(delay)
        return True

    async def _complete(self, job: Job, call: Call) -> ChatCompletion:
        if isinstance(call, CacheHit) and call.answer is not None:
            return call.answer
        messages, params = job.outbound(call.client.config)
        expected = job.expected(call.client.name, call.model)
        token = EXPECTED.set(expected)
        try:
            async with asyncio.timeout(call.timeout):
                call.sent = True  # from here on the provider may receive (and bill) it
                return await call.client.complete(call.model, messages, params)
        finally:
            EXPECTED.reset(token)
            _check_blocked(expected)

    async def _completed(self, job: Job, call: Call, response: ChatCompletion) -> ChatCompletion:
        message = response.choices[0].message if response.choices else None
        await self._asettle(job, call, Finished("ok", response.usage, response_text(message)))
        if not isinstance(call, CacheHit) and (ttl_s := cache_ttl(job)) > 0:
            store_answer(self.response_cache, ttl_s, job, call, response)  # placeholders kept
        if job.plan.redaction is not None:
            for choice in response.choices:
                restore_message(choice.message, job.plan.redaction)
        self._request_finished(job, None)
        response.aegis = job.record  # type: ignore[attr-defined]  # an extra field of ChatCompletion
        return response

    async def _open_stream(self, job: Job, call: Call) -> tuple[Any, Any]:
        messages, params = job.outbound(call.client.config)
        expected = job.expected(call.client.name, call.model)
        token = EXPECTED.set(expected)
        call.sent = True
        try:
            return await open_first_chunk(call, messages, params, call.timeout)
        finally:
            EXPECTED.reset(token)
            _check_blocked(expected)

    async def _stream_served(self, job: Job, call: Call, opened: tuple[Any, Any]) -> AegisStream:
        async def settle(finished: Finished) -> None:
            await self._asettle(job, call, finished)
            self._request_finished(job, None if finished.status == "ok" else "ProviderCallError")

        call.ttft_ms = (time.perf_counter() - call.started) * 1000
        stream, first = opened
        redaction = job.plan.redaction
        restorer = ChunkRestorer(redaction) if redaction is not None else None
        stream_ = AegisStream(call, stream, first, job.record, settle, job.stop_at, restorer)
        return await stream_.start()

    # -- reserve ------------------------------------------------------------------------

    async def _start(self, job: Job, entry: RouteEntry) -> Call | None:
        """Check the candidate and reserve its budget; None (with an attempt noted) to skip."""
        client = job.rt.clients[entry.provider]
        model = entry.model or client.config.model
        breaker = job.rt.breakers[client.name]
        reason = self._skip_reason(job, client, breaker) or job.over_ceiling(client.config, model)
        if reason is not None:
            self._note(job, Attempt(provider=client.name, model=model, outcome="skipped",
                                    reason=reason, breaker=breaker.state))  # fmt: skip
            return None
        state = breaker.state
        job.attempts += 1
        cached = cache_ttl(job) > 0
        answer = cached_answer(self.response_cache, job, client, model) if cached else None
        free = answer is not None  # a cached answer costs $0: no budget to check
        bound = 0 if free else job.cost_bound(client.config, model)
        try:
            row_id = await self._rows.reserve(
                job.attempt_start(client.name, model),
                bound if client.config.budgeted else 0,
                None if free else job.rt.budgets[client.name],
            )
        except (errors.BudgetExceededError, errors.LedgerUnavailableError) as exc:
            # a budget that is spent, or cannot be checked: the next provider serves
            breaker.release_probe()
            outcome: Outcome = (
                "budget_exceeded"
                if isinstance(exc, errors.BudgetExceededError)
                else "ledger_unavailable"
            )
            self._note(job, Attempt(provider=client.name, model=model, outcome=outcome,
                                    reason=str(exc), breaker=state))  # fmt: skip
            return None
        timeout = _min(client.config.timeout_s, job.remaining())
        if answer is not None:
            return CacheHit(client, model, row_id, breaker, state, timeout, answer=answer)
        return Call(client, model, row_id, breaker, state, timeout, bound=bound)

    def _skip_reason(self, job: Job, client: ProviderClient, breaker: CircuitBreaker) -> str | None:
        if job.plan.local_only and not client.config.local:  # the invariant, once more
            return "personal data may only reach local providers"
        if client.unavailable_reason:
            return client.unavailable_reason
        if job.plan.images and not client.config.vision:
            return "request has images and the provider is not declared vision: true"
        if dropped := client.cannot_serve(job.plan.messages, job.params):
            return dropped
        if refused := provider_refuses(job.params, client.config.allow_params):
            return refused
        bounded = client.config.budgeted or job.plan.route.max_cost_micros is not None
        if bounded and (unbounded := unbounded_reason(job.plan.messages, job.params)):
            return f"cost bound cannot be computed: {unbounded}"
        if job.remaining() == 0:
            return "request deadline passed"
        try:
            client.prepare()
        except errors.ProviderCallError as exc:
            return f"client could not be created: {exc.problem}"
        if not breaker.allow():
            return "circuit breaker open"
        return None

    # -- settle -------------------------------------------------------------------------

    async def _failed(self, job: Job, call: Call, exc: BaseException) -> errors.ProviderCallError:
        if not isinstance(exc, errors.ProviderCallError):
            exc = errors.ProviderTimeoutError(call.client.name, "attempt timed out")
        call.problem = failure_text(exc, call.client.config.api_base)
        unknown = call.sent and _may_be_billed(exc)
        await self._asettle(job, call, Finished("error", error_type=exc.kind, unknown=unknown))
        return exc

    async def _asettle(self, job: Job, call: Call, finished: Finished) -> None:
        """Settle the attempt's row without waiting on the event loop, then note it."""
        outcome = outcome_of(job, call, finished)
        await self._rows.settle(call.row_id, outcome)
        self._settled(job, call, outcome)

    def _settle(self, job: Job, call: Call, finished: Finished) -> None:
        """``_asettle`` without an ``await``, for where one cannot be trusted to finish."""
        outcome = outcome_of(job, call, finished)
        self._rows.settle_now(call.row_id, outcome)
        self._settled(job, call, outcome)

    def _settled(self, job: Job, call: Call, outcome: AttemptOutcome) -> None:
        """Breaker, routing record, observers and log, once the row is settled."""
        hit = outcome.cache_hit
        status = outcome.status
        if status == "ok":
            if hit:  # a cached answer says nothing of the provider's health
                call.breaker.release_probe()
            else:
                call.breaker.record_success()
            record_success(job.record, call, outcome)
        elif status == "error" and outcome.error_type in REQUEST_FAULTS:
            call.breaker.release_probe()  # the request's fault says nothing of the provider
        elif status == "error":
            call.breaker.record_failure()
        attempt = Attempt(
            provider=call.client.name,
            model=call.model,
            outcome="cache_hit" if hit and status == "ok" else status,
            error_type=outcome.error_type,
            reason=call.problem if status == "error" else None,
            latency_ms=round(outcome.latency_ms, 3),
            breaker=call.breaker_state,
        )
        self._note(job, attempt, call, outcome)

    def _note(
        self,
        job: Job,
        attempt: Attempt,
        call: Call | None = None,
        outcome: AttemptOutcome | None = None,
    ) -> None:
        job.record.attempts.append(attempt)
        if self.observers:
            now = time.time()
            started = call.started_at if call is not None else now
            bound = call.bound if call is not None else 0
            event = AttemptEvent(job.record, attempt, outcome, started, now, job.stream, bound)
            emit(self.observers, "attempt_finished", event)
        log.info(
            "provider_attempt",
            request_id=job.record.request_id,
            rule=job.record.rule,
            provider=attempt.provider,
            model=attempt.model,
            outcome=attempt.outcome,
            error_type=attempt.error_type,
            reason=attempt.reason,
            latency_ms=attempt.latency_ms,
            breaker=attempt.breaker,
        )

    def _request_finished(self, job: Job, error: str | None) -> None:
        if self.observers:
            event = RequestEvent(job.record, job.started_at, time.time(), job.stream, error)
            emit(self.observers, "request_finished", event)


def _check_blocked(expected: Expected | None) -> None:
    """Raise the guard's refusal if the SDK swallowed or replaced it (it must not be lost)."""
    if expected is not None and expected.blocked is not None:
        blocked, expected.blocked = expected.blocked, None
        raise blocked


def _may_be_billed(exc: errors.ProviderCallError) -> bool:
    """Whether a failed attempt may have been served (and billed) without our seeing it."""
    timed_out = isinstance(exc, errors.ProviderTimeoutError)
    dropped = isinstance(exc, errors.ProviderConnectionError)
    return (timed_out or dropped) and not exc.before_send


def _min(*limits: float | None) -> float | None:
    given = [limit for limit in limits if limit is not None]
    return min(given) if given else None
