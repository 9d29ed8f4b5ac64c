"""Workload files for ``aegis-proxy simulate --workload``: requests that were never recorded.

A JSONL file describes traffic to project before it exists: one request a line, with the
``LLMTask`` fields, its token counts and optionally ``timestamp`` and ``contains_pii``.
What must always hold:

- every bad line raises ``ConfigError`` naming the file, the line and the field;
- the requests come back sorted by UTC timestamp; lines without one are spread evenly
  over the days of the given month, in file order;
- a line's key has the shape the ledger's rows give (``replay_plan.Key``), with no rule
  yet (null) and no recorded entity types ('{}'): its privacy action is ``pii_action``.
"""

from __future__ import annotations

import calendar
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from aegis_proxy.decide.rules import LLMTask
from aegis_proxy.errors import ConfigError

if TYPE_CHECKING:
    from aegis_proxy.reports.replay.plan import Entry, Key

_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cached_input_tokens")


def load_workload(path: str | Path, month: str, *, identity: bool = False) -> list[Entry]:
    """Requests of a JSONL workload, sorted by timestamp; ConfigError names the bad line.

    Lines without a timestamp are spread evenly over the days of ``month``.
    """
    name = str(path)
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(name, "", f"cannot read workload: {exc.strerror}") from None
    parsed = [_workload_line(name, n, text, identity) for n, text in enumerate(lines, 1)
              if text.strip()]  # fmt: skip
    untimed = [i for i, (stamp, *_) in enumerate(parsed) if stamp is None]
    days = calendar.monthrange(int(month[:4]), int(month[5:]))[1]
    for position, index in enumerate(untimed):
        day = 1 + position * days // len(untimed)
        parsed[index] = (f"{month}-{day:02d}T00:00:00.000+00:00", *parsed[index][1:])
    entries = [(str(ts), k, i, o, c) for ts, k, i, o, c in parsed]
    entries.sort(key=lambda entry: entry[0])
    return entries


def _workload_line(
    name: str, number: int, text: str, identity: bool
) -> tuple[str | None, Key, int, int, int]:
    where = f"line {number}"
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(name, where, f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(name, where, "each line must be a JSON object")
    tokens = [_count(name, where, data, field_) for field_ in _TOKEN_FIELDS]
    pii = data.pop("contains_pii", False)
    if not isinstance(pii, bool):
        raise ConfigError(name, f"{where}.contains_pii", "must be true or false")
    stamp = _stamp(name, where, data.pop("timestamp", None))
    try:
        task = LLMTask.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        at = ".".join([where, *(str(part) for part in first["loc"])])
        raise ConfigError(name, at, first["msg"]) from None
    pii = pii or task.data_classification == "pii"
    inputs = [None, task.task_type, task.quality, task.complexity, task.batch_size,
              task.data_classification, task.agent, json.dumps(task.tags), int(pii),
              "{}"]  # fmt: skip
    key = json.dumps([*inputs, task.user_id, None] if identity else inputs)
    return stamp, key, tokens[0], tokens[1], tokens[2]


def _count(name: str, where: str, data: dict[str, Any], field_: str) -> int:
    value = data.pop(field_, 0 if field_ == "cached_input_tokens" else None)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(name, f"{where}.{field_}", "must be an integer >= 0")
    return value


def _stamp(name: str, where: str, value: object) -> str | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(name, f"{where}.timestamp", "must be an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")
