"""The config's optional sections (privacy, ledger, budgets, resilience, discovery, cache).

Each section is a frozen pydantic model with a default for every key, so a config file
names only what it changes. What must always hold:

- every config model derives from ``StrictModel``: an unknown key is an error (a typo is
  never silently ignored) and a loaded config is immutable;
- a regular expression in the config (``recognizers[].pattern``, ``allow: re:...``) is
  checked at load: a bad one names its key, never fails later on a request;
- so is the ledger's place: an empty ``ledger.path`` or a malformed ``ledger.url`` is a
  ``ConfigError`` at load (and in ``check-config``), not a failure of the first request.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


class StrictModel(BaseModel):
    """The base of every config model: unknown keys rejected, frozen once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from exc
    return pattern


class RecognizerConfig(StrictModel):
    """An extra regex recognizer; with ``context``, a match counts only near one of its words."""

    name: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")  # the entity type it reports
    pattern: str = Field(min_length=1)
    context: list[str] = []
    context_window: int = Field(default=40, ge=1, le=1000)

    _valid = field_validator("pattern")(_compiles)


def _allow_entries(entries: list[str]) -> list[str]:
    """``re:<regex>`` must compile; plain values and ``*`` globs are taken as written."""
    for index, entry in enumerate(entries):
        if entry.startswith("re:"):
            try:
                _compiles(entry[3:])
            except ValueError as exc:
                raise ValueError(f"entry {index} ({entry!r}): {exc}") from None
    return entries


PiiAction = Literal["route_local", "redact", "block"]


class PrivacyConfig(StrictModel):
    pii_action: PiiAction = "route_local"
    # Per entity type, an action other than pii_action ({CREDIT_CARD: block, EMAIL: redact});
    # a request with several types takes the strictest: block > route_local > redact.
    entity_actions: dict[str, PiiAction] = {}
    # Images cannot be scanned: by default they count as personal data (local only).
    images: Literal["local_only", "allow_cloud"] = "local_only"
    # Files, audio and unknown content parts cannot be scanned either: the same rule.
    binary_parts: Literal["local_only", "allow_cloud"] = "local_only"
    entities: list[str] | None = None  # None: every supported entity type counts
    # Values that never count: exact values, "*" globs ("*@ourcompany.example"), "re:<regex>".
    allow: list[str] = []
    recognizers: list[RecognizerConfig] = []
    ner: Literal["none", "presidio"] = "none"  # "presidio": aegis_proxy.classify.ner, fail closed
    # With ner: presidio, the spaCy model: a package name (en_core_web_lg) or a pipeline
    # folder (nlp.to_disk); None: the first installed en_core_web_{lg,md,sm,trf}.
    ner_model: str | None = Field(default=None, min_length=1)

    _allow = field_validator("allow")(_allow_entries)

    @field_validator("ner_model")
    @classmethod
    def _only_with_ner(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("ner") != "presidio":
            raise ValueError("is set but privacy.ner is not 'presidio': no NER would run")
        return value


class LedgerConfig(StrictModel):
    """Where the ledger lives; both keys are checked at load, never at the first request."""

    path: str = "data/cost_tracking.db"
    url: str | None = None  # sqlite:///PATH or postgresql://...; wins over path
    busy_timeout_s: float = Field(default=10.0, ge=0)  # a lock waited for (in a thread)

    @field_validator("path")
    @classmethod
    def _a_file(cls, value: str) -> str:
        if not value.strip() or "\x00" in value:
            raise ValueError("must name a file (an empty path would be no ledger)")
        return value

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is not None:
            check_ledger_url(value)
        return value


def check_ledger_url(url: str) -> None:
    """Raise ``ValueError`` unless ``url`` is ``sqlite:///PATH`` or a well-formed PostgreSQL URL."""
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError("must not hold spaces or control characters")
    if url.startswith("sqlite:"):
        if not url.startswith("sqlite:///") or not url.removeprefix("sqlite:///").strip("/"):
            raise ValueError("must be sqlite:///PATH (three slashes, then the file)")
        return
    if not url.startswith(("postgresql://", "postgres://")):
        raise ValueError("must start with sqlite:/// or postgresql://")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # reading it checks it: a ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"is not a well-formed PostgreSQL URL ({exc})") from None
    if parts.fragment or parts.path.count("/") > 1:
        raise ValueError("is not a well-formed PostgreSQL URL (postgresql://user@host:port/db)")


class BudgetsConfig(StrictModel):
    default_max_tokens: int = Field(default=1024, ge=1)
    warn_share: float = Field(default=0.8, gt=0, le=1)
    reservation_ttl_s: float = Field(default=900.0, gt=0)


class ResilienceConfig(StrictModel):
    retries: int = Field(default=1, ge=0, le=10)  # extra attempts at one provider on 429/5xx
    backoff_s: float = Field(default=0.25, ge=0)
    max_backoff_s: float = Field(default=8.0, ge=0)
    breaker_failures: int = Field(default=5, ge=1)  # consecutive failures that open it
    breaker_cooldown_s: float = Field(default=30.0, ge=0)


class DiscoveryConfig(StrictModel):
    """The start-up check that each local server has the models the routes name."""

    check_local_models: Literal["off", "warn", "fail"] = "off"
    timeout_s: float = Field(default=2.0, gt=0)

    @field_validator("check_local_models", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false


class CacheConfig(StrictModel):
    """The response cache: off unless enabled, since it keeps response text (the ledger does not).

    ``ttl_s`` applies to every route; a rule's ``cache_ttl_s`` overrides it (0: not cached).
    ``path`` defaults to ``response_cache.db`` in the ledger file's folder.
    """

    enabled: bool = False
    ttl_s: float = Field(default=3600.0, ge=0)
    path: str | None = None
