"""Logging set-up, and the processor that keeps content and secrets out of every log line.

What must always hold: no log event carries prompt text, response text or an API key.
The library only emits events with names, numbers and outcomes; ``drop_sensitive_fields``
is a second line of defence that removes any field whose name could carry content or a
secret, and masks anything shaped like a bearer key, whoever logged it.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

SENSITIVE_KEYS = frozenset(
    {
        "api_key",
        "authorization",
        "content",
        "messages",
        "prompt",
        "response",
        "text",
        "headers",
        "arguments",
        "password",
        "secret",
        "token",
    }
)
_KEY_SHAPE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{8,}|Bearer\s+\S+)")


def drop_sensitive_fields(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Remove content- and secret-bearing fields; mask key-shaped strings in the rest."""
    for key in [k for k in event_dict if k.lower() in SENSITIVE_KEYS]:
        del event_dict[key]
    for key, value in event_dict.items():
        if isinstance(value, str) and _KEY_SHAPE.search(value):
            event_dict[key] = _KEY_SHAPE.sub("[REDACTED]", value)
    return event_dict


def configure_logging(*, json_output: bool = True, level: str = "info") -> None:
    """Set up structlog: JSON lines for services, readable console output for the CLI."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            drop_sensitive_fields,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
