"""Capturing the library's log events in tests, as structlog's ``capture_logs`` did.

The library logs through stdlib ``logging`` (``aegis_proxy.logs.EventLogger``); this
handler collects each record's filtered fields as ``{"event": ..., "log_level": ...,
**fields}``, so tests assert on events by name and key, not on rendered text.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from aegis_proxy.observe.logs import EVENT_ATTR


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = dict(getattr(record, EVENT_ATTR, None) or {"event": record.getMessage()})
        event = fields.pop("event")
        self.events.append({"event": event, "log_level": record.levelname.lower(), **fields})


@contextlib.contextmanager
def capture_events() -> Iterator[list[dict[str, Any]]]:
    """Every event of the ``aegis_proxy`` loggers, from debug up, while the block runs."""
    logger = logging.getLogger("aegis_proxy")
    handler, level = _Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.events
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
