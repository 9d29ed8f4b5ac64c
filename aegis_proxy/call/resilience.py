"""Retries with jittered backoff, and a circuit breaker per provider.

What must always hold:
- only failures that a retry can cure are retried at the same provider (429, 5xx, dropped
  connections); auth, validation, not-found and timeouts move on to the next provider;
- a backoff never sleeps past the request's deadline, and honours the server's Retry-After
  when it gives one (capped by ``max_backoff_s``);
- a breaker opens after ``failures`` consecutive failed attempts, skips its provider for
  ``cooldown_s``, then lets exactly one probe through (half-open): success closes it,
  failure opens it again. State lives in memory, per proxy.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from aegis_proxy.errors import (
    ProviderCallError,
    ProviderConnectionError,
    ProviderServerError,
    RateLimitedError,
)
from aegis_proxy.observe.logs import get_logger

log = get_logger("aegis_proxy")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


def should_retry(exc: ProviderCallError) -> bool:
    """Whether the same provider may cure this failure on a retry."""
    return isinstance(exc, RateLimitedError | ProviderServerError | ProviderConnectionError)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int = 1
    backoff_s: float = 0.25
    max_backoff_s: float = 8.0

    def delay(self, retry: int, exc: ProviderCallError) -> float:
        """Seconds to wait before retry number ``retry`` (1-based): Retry-After or jitter."""
        hint = exc.retry_after if isinstance(exc, RateLimitedError) else None
        if hint is not None:
            return min(hint, self.max_backoff_s)
        ceiling = min(self.max_backoff_s, self.backoff_s * 2 ** (retry - 1))
        return random.uniform(ceiling / 2, ceiling)  # "equal jitter"


class CircuitBreaker:
    """Consecutive-failure breaker for one provider."""

    def __init__(self, provider: str, failures: int, cooldown_s: float) -> None:
        self.provider = provider
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return CLOSED
        if time.monotonic() - self._opened_at < self.cooldown_s:
            return OPEN
        return HALF_OPEN

    def allow(self) -> bool:
        """Whether an attempt may go through now (one probe at a time when half-open)."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self._probing:
            self._probing = True
            log.info("breaker_probe", provider=self.provider)
            return True
        return False

    def record_success(self) -> None:
        if self._opened_at is not None:
            log.info("breaker_closed", provider=self.provider)
        self._consecutive, self._opened_at, self._probing = 0, None, False

    def record_failure(self) -> None:
        self._consecutive += 1
        if self._probing or self._consecutive >= self.failures:
            self._opened_at = time.monotonic()
            log.warning("breaker_opened", provider=self.provider, failures=self._consecutive)
        self._probing = False

    def release_probe(self) -> None:
        """A probe that ended without a verdict (cancelled) frees the half-open slot."""
        self._probing = False
