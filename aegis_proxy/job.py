"""A request in flight (``Job``), one attempt of it (``Call``), and what each comes to.

What must always hold:
- a budgeted attempt reserves an upper bound of its cost, computed from the payload it
  sends: an input bound over every billed input (messages, tools, schemas, prediction,
  every other parameter; images at their worst case) that cannot be under the real
  token count, plus ``n`` choices times the token limit (the caller's largest, or the
  configured default, which is then also *sent*, so the provider is held to it; plus the
  prediction, whose rejected tokens bill as output) times the output price; the input
  bound is ``reserve.input_bound.input_bound`` (exact for OpenAI models, a byte bound
  elsewhere);
- each attempt hands the SDK a fresh copy of the checked payload (``outbound``) and the
  egress guard the payload itself (``expected``): nothing the SDK does to its copy
  reaches the next attempt or the check;
- an attempt's cost comes from the provider's usage; without usage, the tokens are
  counted locally and the row says so (``counted``); an attempt whose outcome is unknown
  (cancelled or timed out after it was sent, ``Finished.unknown``) costs its bound; a
  failed attempt the provider answered (or never received) costs nothing;
- these are pure functions of the request: no network, no ledger.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from aegis_proxy.call.egress import Expected
from aegis_proxy.decide.payload import copy_json
from aegis_proxy.decide.privacy import scan_request
from aegis_proxy.decide.record import AegisRecord
from aegis_proxy.errors import ProviderCallError, ProviderConnectionError, ProviderTimeoutError
from aegis_proxy.reserve.input_bound import input_bound
from aegis_proxy.reserve.money import usd
from aegis_proxy.reserve.pricing import (
    cost_micros,
    count_text_tokens,
    count_tokens,
    input_token_bound,
)
from aegis_proxy.settle.records import AttemptOutcome, AttemptStart, Finished

if TYPE_CHECKING:
    from any_llm.types.completion import ChatCompletion

    from aegis_proxy.call.client import ProviderClient
    from aegis_proxy.call.resilience import CircuitBreaker
    from aegis_proxy.config.providers import ProviderConfig
    from aegis_proxy.decide.plan import Plan
    from aegis_proxy.runtime import Runtime


@dataclass(slots=True)
class Job:
    """A planned request on its way: parameters, deadline, record, attempt counter."""

    plan: Plan
    params: dict[str, Any]
    record: AegisRecord
    query_hash: str
    stop_at: float | None
    default_max_tokens: int
    rt: Runtime
    attempts: int = 0
    started_at: float = field(default_factory=time.time)

    @classmethod
    def start(cls, plan: Plan, rt: Runtime, deadline_s: float | None) -> Job:
        """A job for ``plan`` (its checked parameters); its deadline is ``deadline_s``, else
        the config's."""
        deadline = deadline_s if deadline_s is not None else rt.config.routing.deadline_s
        return cls(
            plan=plan,
            params=plan.params,
            record=AegisRecord.from_plan(plan),
            query_hash=plan.query_hash,
            stop_at=time.monotonic() + deadline if deadline else None,
            default_max_tokens=rt.config.budgets.default_max_tokens,
            rt=rt,
        )

    @property
    def stream(self) -> bool:
        return bool(self.params.get("stream"))

    def remaining(self) -> float | None:
        return None if self.stop_at is None else max(0.0, self.stop_at - time.monotonic())

    def sent_params(self, config: ProviderConfig) -> dict[str, Any]:
        """The checked parameters, with a max_tokens cap for budgeted providers (not a copy)."""
        sent = {k: v for k, v in self.params.items() if k != "stream"}
        capped = config.budgeted or self.plan.route.max_cost_micros is not None
        if capped and not max_tokens(self.params):
            sent["max_tokens"] = self.default_max_tokens
        return sent

    def outbound(self, config: ProviderConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """A fresh copy of this attempt's payload (messages, parameters), for the SDK."""
        return copy_json(self.plan.messages), copy_json(self.sent_params(config))

    def expected(self, provider: str, model: str) -> Expected | None:
        """What the egress guard of a non-local ``provider`` may let out; None when local."""
        config = self.rt.config.providers[provider]
        if config.local:
            return None
        privacy = self.rt.config.privacy
        rt = self.rt
        return Expected(
            provider=provider,
            wire="ollama" if config.sdk == "ollama" else "openai",
            model=model,
            messages=self.plan.messages,
            params=self.sent_params(config),
            scan=lambda value: scan_request(rt, value),
            images_allowed=privacy.images == "allow_cloud",
            binary_allowed=privacy.binary_parts == "allow_cloud",
        )

    def reservation(self, config: ProviderConfig, model: str) -> int:
        """What the ledger reserves for this attempt: its cost bound, or 0 when unbudgeted."""
        return self.cost_bound(config, model) if config.budgeted else 0

    def cost_bound(self, config: ProviderConfig, model: str) -> int:
        """Upper bound of this attempt's cost in micro-dollars."""
        price = config.price_of(model)
        if price.is_free:
            return 0
        params = self.params
        n = choices(params)
        out_bound = n * (max_tokens(params) or self.default_max_tokens)
        if prediction := params.get("prediction"):  # rejected prediction tokens bill as output
            out_bound += n * input_token_bound((), prediction)
        billed = {k: v for k, v in params.items() if k not in _NOT_BILLED}
        in_bound = input_bound(config.sdk, model, self.plan.messages, [billed] if billed else [])
        return cost_micros(price, in_bound, out_bound)

    def over_ceiling(self, config: ProviderConfig, model: str) -> str | None:
        """Why this attempt's cost bound passes the rule's ``max_cost_usd``; None if it fits."""
        ceiling = self.plan.route.max_cost_micros
        if ceiling is None:
            return None
        bound = self.cost_bound(config, model)
        if bound <= ceiling:
            return None
        return f"cost bound ${usd(bound)} exceeds the rule's max_cost_usd ${usd(ceiling)}"

    def attempt_start(self, provider: str, model: str) -> AttemptStart:
        task = self.plan.task
        return AttemptStart(
            request_id=self.plan.request_id,
            attempt=self.attempts,
            provider=provider,
            model=model,
            rule=self.plan.route.rule,
            task_type=task.task_type,
            quality=task.quality,
            complexity=task.complexity,
            batch_size=task.batch_size,
            data_classification=task.data_classification,
            contains_pii=self.plan.contains_pii,
            stream=self.stream,
            query_hash=self.query_hash,
            user_id=task.user_id,
            agent=task.agent,
            tags=tuple(task.tags),
            privacy=self.plan.privacy,
            provider_local=self.rt.config.providers[provider].local,
        )


@dataclass(slots=True)
class Call:
    """One attempt in flight: its provider, ledger row, breaker and clock."""

    client: ProviderClient
    model: str
    row_id: int
    breaker: CircuitBreaker
    breaker_state: str
    timeout: float | None
    started: float = field(default_factory=time.perf_counter)
    started_at: float = field(default_factory=time.time)
    ttft_ms: float | None = None
    problem: str | None = None
    """What went wrong, in words, when the attempt failed (no content, no key)."""
    bound: int = 0
    """The attempt's cost bound in micro-dollars: what an unknown outcome is billed."""
    sent: bool = False
    """Set once the request may have left for the provider (its call began)."""


@dataclass(slots=True)
class CacheHit(Call):
    """An attempt served from the response cache: no provider call, no cost."""

    answer: ChatCompletion | None = None


def outcome_of(job: Job, call: Call, finished: Finished) -> AttemptOutcome:
    """The settled outcome: real tokens from usage, else counted from ``finished.text``.

    A cached answer reuses the provider's usage, costs nothing and says so.
    """
    text = finished.text
    tokens = usage_tokens(finished.usage)
    hit = isinstance(call, CacheHit)
    unknown = tokens is None and finished.unknown and not hit
    counted = tokens is None and text is not None
    if tokens is None:
        tokens = (0, 0, 0, 0)
        if text is not None:
            counted_in = count_tokens(job.plan.messages, job.params.get("tools"))
            tokens = (counted_in, count_text_tokens(text), 0, 0)
    hit = isinstance(call, CacheHit)
    price = call.client.config.price_of(call.model)
    cost = cost_micros(price, tokens[0], tokens[1], tokens[2])
    return AttemptOutcome(
        status=finished.status,
        latency_ms=(time.perf_counter() - call.started) * 1000,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cached_input_tokens=tokens[2],
        reasoning_tokens=tokens[3],
        cost_micros=0 if hit else call.bound if unknown else cost,
        counted=counted,
        error_type=finished.error_type,
        ttft_ms=call.ttft_ms,
        cache_hit=hit,
    )


def record_success(record: AegisRecord, call: Call, outcome: AttemptOutcome) -> None:
    record.provider = call.client.name
    record.model = call.model
    record.cost_usd = usd(outcome.cost_micros)
    record.input_tokens = outcome.input_tokens
    record.output_tokens = outcome.output_tokens
    record.tokens_counted = outcome.counted


def choices(params: dict[str, Any]) -> int:
    """How many completions a request asks for (``n``), each up to ``max_tokens``."""
    value = params.get("n")
    return max(1, int(value)) if isinstance(value, int | float) and value else 1


_NOT_BILLED = frozenset({"stream", "stream_options"})
_TOKEN_LIMITS = ("max_tokens", "max_completion_tokens", "num_predict")


def max_tokens(params: dict[str, Any]) -> int | None:
    """The largest output token limit given (SDKs differ in which one they honour)."""
    limits = [v for k in _TOKEN_LIMITS if isinstance(v := params.get(k), int) and v > 0]
    return max(limits) if limits else None


def usage_tokens(usage: Any) -> tuple[int, int, int, int] | None:
    """(input, output, cached input, reasoning) from an OpenAI-style usage, or None."""
    if usage is None:
        return None
    prompt = getattr(usage, "prompt_tokens", None)
    completion = getattr(usage, "completion_tokens", None)
    if not prompt and not completion:  # any-llm's Ollama answers zeros when counts are absent
        return None
    cached = getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", None)
    reasoning = getattr(getattr(usage, "completion_tokens_details", None), "reasoning_tokens", None)
    return int(prompt or 0), int(completion or 0), int(cached or 0), int(reasoning or 0)


def response_text(message: Any) -> str:
    """All text a response message carries (content and tool-call arguments), for counting."""
    if message is None:
        return ""
    parts = [getattr(message, "content", None) or ""]
    for call in getattr(message, "tool_calls", None) or []:
        function = getattr(call, "function", None)
        parts.append(getattr(function, "name", "") or "")
        parts.append(getattr(function, "arguments", "") or "")
    return "".join(parts)


def failure_text(exc: ProviderCallError, api_base: str | None) -> str:
    """What a failed attempt met, in words: ``connection refused at http://host:port/v1``.

    A connection or timeout names the server (its address only: no user, password or
    query string); an HTTP failure names its status.
    """
    code = f" (HTTP {exc.status_code})" if exc.status_code is not None else ""
    if api_base and isinstance(exc, ProviderConnectionError | ProviderTimeoutError):
        parts = urlsplit(api_base)
        host = parts.netloc.rpartition("@")[2]
        return f"{exc.problem}{code} at {urlunsplit((parts.scheme, host, parts.path, '', ''))}"
    return f"{exc.problem}{code}"
