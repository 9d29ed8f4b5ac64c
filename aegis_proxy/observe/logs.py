"""Logging set-up, and the processor that keeps content and secrets out of every log line.

What must always hold: no log event carries prompt text, response text or an API key.
The library only emits events with names, numbers and outcomes; ``drop_sensitive_fields``
is a second line of defence, whoever logged the event:

- a field whose name could carry a secret (``api_key``, ``x-api-key``, ``client_secret``,
  ``password``, ``Authorization``, ``cookie``, ...) is dropped, whatever its value;
- a field whose name could carry content or a credential (``prompt``, ``messages``,
  ``content``, ``response_text``, ``tool_arguments``, ``access_token``, ``headers``,
  ``body``, ...) is dropped unless its value is a number, a bool or None. Names ending in a
  metadata word (``_hash``, ``_id``, ``_count``, ``_tokens``, ``_type``, ...) are kept;
- the same holds inside nested mappings and lists; an object of any other type is
  replaced by its type name (its repr could hold content);
- every remaining string is masked where it looks like a key: ``sk-...``, ``Bearer ...``,
  AWS, Google, GitHub, Slack, Hugging Face and Groq keys, JWTs, ``key=`` / ``token=``
  query parameters and the password of a URL.

The library is quiet by default, as the standard library expects of a library: its events
go to ``logging`` loggers named ``aegis_proxy`` and ``aegis_proxy.<part>`` (``get_logger``),
with no handler of ours, so without configuration nothing reaches stdout and WARNING and
above reach stderr through Python's last-resort handler as ``event key=value ...``. The
filter above runs where each event is built, so it holds in every configuration (the
application's handlers and formatters see only the filtered fields). ``configure_logging``
(called by the CLI, or by a service that wants our format) adds a stderr handler.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Mapping, MutableMapping
from datetime import date, time
from decimal import Decimal
from pathlib import PurePath
from typing import Any
from uuid import UUID

REDACTED = "[REDACTED]"
_SECRET_FRAGMENTS = (
    "apikey", "secret", "password", "passwd", "passphrase", "authorization", "credential",
    "cookie", "privatekey", "accesskey", "sessionkey", "bearer",
)  # fmt: skip
_CONTENT_WORDS = frozenset(
    {
        "content", "contents", "message", "messages", "prompt", "prompts", "text", "texts",
        "body", "header", "headers", "arguments", "response", "responses", "completion",
        "completions", "reply", "replies", "input", "output", "query", "instructions",
        "transcript", "document", "documents", "delta", "chunk", "image", "images", "audio",
        "token", "key", "auth",
    }
)  # fmt: skip
_METADATA_WORDS = frozenset(
    {
        "hash", "id", "ids", "count", "counts", "type", "types", "kind", "len", "length",
        "size", "chars", "ms", "s", "micros", "usd", "tokens", "name", "names", "status",
        "code", "format", "share", "bound",
    }
)  # fmt: skip
_PASS_THROUGH = frozenset({"event", "exc_info", "level", "timestamp", "logger"})
_SCALARS = (str, int, float, bool, type(None), Decimal, date, time, UUID, PurePath)
_MAX_DEPTH = 6
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")
_KEY_SHAPE = re.compile(
    r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{8,}"  # OpenAI, Anthropic (sk-ant-...) and alike
    r"|\b(?:Bearer|Basic)\s+[^\s,;\"']{6,}"  # credentials of an Authorization header
    r"|\bAKIA[0-9A-Z]{16}\b"  # AWS access key id
    r"|\bAIza[0-9A-Za-z_\-]{30,}"  # Google
    r"|\b(?:ghp|gho|ghu|ghs|ghr|github_pat)_[A-Za-z0-9_]{20,}"  # GitHub
    r"|\bxox[abprs]-[A-Za-z0-9\-]{10,}"  # Slack
    r"|\b(?:hf|gsk)_[A-Za-z0-9]{20,}"  # Hugging Face, Groq
    r"|\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"  # JWT
)
_KEY_PARAM = re.compile(
    r"(?i)\b((?:api[_-]?key|key|token|access[_-]?token|secret|password|sig|signature)=)[^&\s]+"
)
_URL_PASSWORD = re.compile(r"(?<=://)([^/\s:@]+):[^/\s@]+@")


def drop_sensitive_fields(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Remove content- and secret-bearing fields; mask key-shaped strings in the rest."""
    for key in list(event_dict):
        value = event_dict[key]
        if key in _PASS_THROUGH:
            if isinstance(value, str):
                event_dict[key] = mask_keys(value)
        elif is_sensitive(key, value):
            del event_dict[key]
        else:
            event_dict[key] = _clean(value, 1)
    return event_dict


def is_sensitive(name: object, value: object) -> bool:
    """Whether a field named ``name`` holding ``value`` could carry content or a secret."""
    if not isinstance(name, str):
        return False
    key = _CAMEL.sub("_", name).lower()
    compact = key.replace("_", "").replace("-", "")
    if any(fragment in compact for fragment in _SECRET_FRAGMENTS):
        return True
    if value is None or isinstance(value, int | float):  # bool is an int: numbers and flags
        return False
    words = [w for w in _WORD_SPLIT.split(key) if w]
    if not words or words[-1] in _METADATA_WORDS:
        return False
    return any(word in _CONTENT_WORDS for word in words)


def mask_keys(text: str) -> str:
    """``text`` with every key-shaped substring replaced by ``[REDACTED]``."""
    text = _KEY_SHAPE.sub(REDACTED, text)
    text = _KEY_PARAM.sub(lambda m: m.group(1) + REDACTED, text)
    return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{REDACTED}@", text)


def _clean(value: Any, depth: int) -> Any:
    """A copy of ``value`` with sensitive fields dropped and keys masked, at any depth."""
    if isinstance(value, str):
        return mask_keys(value)
    if isinstance(value, _SCALARS):
        return value
    if depth > _MAX_DEPTH:
        return f"<{type(value).__name__}>"
    if isinstance(value, Mapping):
        return {k: _clean(v, depth + 1) for k, v in value.items() if not is_sensitive(k, v)}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(item, depth + 1) for item in value]
    return f"<{type(value).__name__}>"  # its repr could hold content


EVENT_ATTR = "aegis_event"
"""The attribute of a ``LogRecord`` that holds the event's filtered fields as a dict."""


class EventLogger:
    """A stdlib logger called the structlog way: ``log.info("event_name", key=value)``.

    Nothing is built unless the level is enabled; the event's fields are filtered by
    ``drop_sensitive_fields`` before any handler sees them, and a traceback is rendered
    to text and masked (field ``exception``) instead of being handed over as ``exc_info``.
    """

    __slots__ = ("_logger",)

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    @property
    def name(self) -> str:
        return self._logger.name

    def debug(self, event: str, **context: Any) -> None:
        self._log(logging.DEBUG, "debug", event, context)

    def info(self, event: str, **context: Any) -> None:
        self._log(logging.INFO, "info", event, context)

    def warning(self, event: str, **context: Any) -> None:
        self._log(logging.WARNING, "warning", event, context)

    def error(self, event: str, **context: Any) -> None:
        self._log(logging.ERROR, "error", event, context)

    def exception(self, event: str, **context: Any) -> None:
        """An error with the traceback being handled, as masked text."""
        if self._logger.isEnabledFor(logging.ERROR):
            context["exception"] = traceback.format_exc()
        self._log(logging.ERROR, "error", event, context)

    def _log(self, level: int, method: str, event: str, context: dict[str, Any]) -> None:
        if not self._logger.isEnabledFor(level):
            return
        fields = drop_sensitive_fields(None, method, {"event": event, **context})
        message = " ".join([str(fields["event"]), *_pairs(fields)])
        self._logger.log(level, "%s", message, extra={EVENT_ATTR: dict(fields)}, stacklevel=3)


def get_logger(name: str = "aegis_proxy") -> EventLogger:
    """The event logger called ``name`` (``aegis_proxy`` or ``aegis_proxy.<part>``)."""
    return EventLogger(name)


def _pairs(fields: Mapping[str, Any]) -> list[str]:
    """``key=value`` for each field but the event name (strings with spaces quoted)."""
    pairs = []
    for key, value in fields.items():
        if key == "event" or key == "exception":
            continue
        text = str(value)
        pairs.append(f"{key}={text if text and ' ' not in text else repr(text)}")
    if "exception" in fields:
        pairs.append("\n" + str(fields["exception"]).rstrip())
    return pairs


class _EventFormatter(logging.Formatter):
    """Renders our records (and any other) through structlog processors into one line."""

    def __init__(self, processors: list[Any]) -> None:
        super().__init__()
        self._processors = processors

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, EVENT_ATTR, None)
        event: Any = dict(fields) if fields else {"event": mask_keys(record.getMessage())}
        event["logger"] = record.name
        method = record.levelname.lower()
        for processor in self._processors:
            event = processor(None, method, event)
        return str(event)


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (as Python's last-resort handler)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # a broken stderr must not break the call that logged
            self.handleError(record)


def configure_logging(*, json_output: bool = True, level: str = "info") -> None:
    """Write our events (and structlog's) to stderr: JSON lines, or readable console lines.

    Our loggers get one stderr handler and stop propagating (set up twice, the handler is
    replaced, not doubled); structlog is configured with the same filter and renderer.
    """
    import structlog  # only who configures logging needs it

    levels = logging.getLevelNamesMapping()
    if level.upper() not in levels:
        raise ValueError(f"unknown log level {level!r}: use debug, info, warning or error")
    processors: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json_output:  # render tracebacks to text first, so that they are masked too
        processors.append(structlog.processors.format_exc_info)
    processors.append(drop_sensitive_fields)
    processors.append(
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    _configure_stdlib(levels[level.upper()], processors)
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *processors],
        wrapper_class=structlog.make_filtering_bound_logger(levels[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def _configure_stdlib(level: int, processors: list[Any]) -> None:
    """One stderr handler on the ``aegis_proxy`` logger, rendering with ``processors``."""
    logger = logging.getLogger("aegis_proxy")
    for handler in [h for h in logger.handlers if isinstance(h.formatter, _EventFormatter)]:
        logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(_EventFormatter(processors))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
