"""AegisLLMProxy: classify, decide, reserve, call, settle — for every request.

Data flows one way: request -> classify (pii) -> decide (policy) -> reserve (ledger budget)
-> call (providers) -> settle (ledger). Planning is ``aegis_proxy.decide.plan``; the attempts
are ``aegis_proxy.attempts``; this module owns the configuration, the clients, the ledger
and the cache, and their lifetimes. What must always hold:
- privacy: a request holding or declaring PII only ever reaches ``local: true`` providers,
  fallbacks and retries included; a detector failure counts as PII (fail closed), and the
  call path checks it once more right before sending;
- budget: a budgeted provider is called only after the ledger reserved an upper bound of
  the attempt's cost; a refused reservation moves on to the next provider;
- ledger: every attempt that reaches a provider is one ledger row, settled exactly once
  with its outcome (ok, error, cancelled), whatever happens;
- cache: a deterministic request may be answered from the response cache (when enabled)
  only after the candidate passed every check a call would (privacy first); a hit is one
  ledger row at cost 0 marked ``cache_hit``, and a PII answer is never served to another
  user (see ``aegis_proxy.call.cache``);
- no request outlives its deadline; nothing here logs prompt text, response text or keys.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self, TypeVar

from aegis_proxy import errors
from aegis_proxy.attempts import AttemptLoop
from aegis_proxy.call.cache import (
    ResponseCache,
    cache_path,
)
from aegis_proxy.call.client import ProviderClient
from aegis_proxy.call.resilience import CircuitBreaker
from aegis_proxy.call.streaming import AegisStream
from aegis_proxy.config import AegisConfig, load_config
from aegis_proxy.decide.params import validate_params
from aegis_proxy.decide.plan import Plan, plan_request
from aegis_proxy.decide.request import validate_deadline
from aegis_proxy.decide.rules import LLMTask
from aegis_proxy.job import Job
from aegis_proxy.observe.events import Observer
from aegis_proxy.observe.logs import get_logger
from aegis_proxy.runtime import PiiScanner, build_runtime, reload_runtime, watch_file
from aegis_proxy.settle.backend import LedgerBackend
from aegis_proxy.settle.open import open_ledger

if TYPE_CHECKING:
    from types import TracebackType

    from any_llm.types.completion import ChatCompletion

log = get_logger("aegis_proxy")

T = TypeVar("T")
R = TypeVar("R")


class AegisLLMProxy:
    """The policy layer: one instance per config, shared by every node of an application."""

    def __init__(
        self,
        config: AegisConfig,
        *,
        ledger: LedgerBackend | None = None,
        detector: PiiScanner | None = None,
        observers: Sequence[Observer] = (),
    ) -> None:
        self.observers = list(observers)
        self._detector = detector
        self._rt = build_runtime(config, detector=detector)
        self._retired: list[ProviderClient] = []
        self._ledger = ledger
        self._cache: ResponseCache | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._warm_lock = asyncio.Lock()
        self._attempts: AttemptLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop its clients belong to

    @property
    def config(self) -> AegisConfig:
        """The config new requests use (requests in flight keep the one they started with)."""
        return self._rt.config

    @property
    def clients(self) -> dict[str, ProviderClient]:
        return self._rt.clients

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        return self._rt.breakers

    @property
    def ledger(self) -> LedgerBackend:
        """The cost ledger, opened on first use (routing alone never touches it)."""
        if self._ledger is None:
            ttl = self.config.budgets.reservation_ttl_s
            where = self.config.ledger.url or self.config.ledger.path
            busy = self.config.ledger.busy_timeout_s
            self._ledger = open_ledger(where, reservation_ttl_s=ttl, busy_timeout_s=busy)
        return self._ledger

    @property
    def response_cache(self) -> ResponseCache:
        """The response cache file, opened on first use (only used when ``cache.enabled``)."""
        if self._cache is None:
            self._cache = ResponseCache(cache_path(self.config))
        return self._cache

    @classmethod
    def from_config(cls, path: str | os.PathLike[str]) -> AegisLLMProxy:
        """Build a proxy from a YAML file; ``ConfigError`` names the file and key.

        With ``discovery.check_local_models: warn|fail`` it also asks each local server
        whether it has the models the routes name (the only network call at start).
        """
        from aegis_proxy.call.discovery import check_local_models  # httpx, only when asked

        config = load_config(path)
        discovery = config.discovery
        check_local_models(config, discovery.check_local_models, timeout_s=discovery.timeout_s)
        return cls(config)

    async def __aenter__(self) -> Self:
        await self.warm_up()
        return self

    async def warm_up(self, providers: Sequence[str] | None = None) -> None:
        """Create the SDK clients (importing any-llm) in a thread, off the event loop.

        ``async with`` does this for every available provider, so the first request does
        not spend its deadline on a 1.5 s import; the attempt loop does it for its route.
        """
        names = providers if providers is not None else list(self.clients)
        if all(self.clients[n].ready or self.clients[n].unavailable_reason for n in names):
            return  # the common case: no lock, no thread
        async with self._warm_lock:  # concurrent first calls create each client once
            cold = [
                self.clients[n]
                for n in names
                if not self.clients[n].ready and not self.clients[n].unavailable_reason
            ]
            if cold:
                await asyncio.to_thread(_prepare_all, cold)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop watching the config; close every provider client, the ledger and the cache."""
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        for client in [*self.clients.values(), *self._retired]:
            await client.aclose()
        self.close_files()

    def close_files(self) -> None:
        """Close the ledger and the cache file (what ``aclose`` does that needs no loop)."""
        if self._ledger is not None:
            self._ledger.close()
        if self._cache is not None:
            self._cache.close()

    # -- reload -------------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the config file; a bad file keeps the running config (and logs why)."""
        old = self._rt
        new = reload_runtime(old, self._detector)
        if new is None:
            return False
        kept = set(map(id, new.clients.values()))
        self._retired += [c for c in old.clients.values() if id(c) not in kept]
        self._rt = new
        return True

    def watch_config(self, interval_s: float = 1.0) -> None:
        """Reload whenever the config file changes (polled; needs a running event loop)."""
        if self._watcher is None:
            watching = watch_file(lambda: self.config.source, interval_s, self.reload)
            self._watcher = asyncio.get_running_loop().create_task(watching)

    def reload_on_sighup(self) -> None:
        """In a service: reload the config on SIGHUP (Unix, running event loop)."""
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)

    # -- classify and decide ------------------------------------------------------------

    def plan(self, messages: object, task: LLMTask | Mapping[str, Any] | None = None) -> Plan:
        """Validate, scan for PII and route, without any network call."""
        return plan_request(self._rt, messages, task)

    def _record_refusal(self, exc: errors.PrivacyViolationError) -> None:
        """Add a privacy refusal to the ledger's audit trail; a failure is logged loudly."""
        if exc.refusal is None:
            return
        try:
            self.ledger.record_refusal(exc.refusal)
        except errors.LedgerError as failure:  # the caller still gets the privacy error
            log.error("privacy_refusal_unrecorded", request_id=exc.refusal.request_id,
                      problem=failure.problem)  # fmt: skip

    # -- call ---------------------------------------------------------------------------

    async def acompletion(
        self,
        messages: object,
        task: LLMTask | Mapping[str, Any] | None = None,
        *,
        deadline_s: float | None = None,
        **params: Any,
    ) -> ChatCompletion | AegisStream:
        """Route one chat request; returns a ChatCompletion (or a stream) with ``.aegis``.

        ``task`` may be a mapping of ``LLMTask`` fields; every bad input is a
        ``RequestValidationError`` naming it, before any network call or ledger row.
        """
        deadline_s = validate_deadline(deadline_s)
        self._check_loop()
        rt = self._rt
        validate_params(params, rt.allowed_params)
        try:
            plan = plan_request(rt, messages, task, params)
        except errors.PrivacyViolationError as exc:
            self._record_refusal(exc)
            raise
        # a process's one-time SDK import happens off the loop and before the deadline clock
        await self.warm_up([entry.provider for entry in plan.route.candidates])
        job = Job.start(plan, rt, deadline_s)
        return await self._attempt_loop().serve(job)

    def _attempt_loop(self) -> AttemptLoop:
        """The attempt loop, made with the ledger on the first request that needs it."""
        if self._attempts is None:
            self._attempts = AttemptLoop(self.ledger, lambda: self.response_cache, self.observers)
        return self._attempts

    def _check_loop(self) -> None:
        """A proxy serves the event loop it first ran in: its HTTP clients belong to it."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise errors.RequestValidationError(
                "event loop",
                "this AegisLLMProxy belongs to the event loop it first ran in; build one "
                "proxy per loop (ChatAegis(config_path=...) and completion() serve any loop)",
            )


def _prepare_all(clients: Sequence[ProviderClient]) -> None:
    """Create SDK clients; a failure here is reported again, per attempt, by ``_start``."""
    for client in clients:
        try:
            client.prepare()
        except errors.ProviderCallError as exc:
            log.warning("provider_client_failed", provider=client.name, problem=exc.problem)
