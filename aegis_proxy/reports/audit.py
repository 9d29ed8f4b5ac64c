"""The privacy audit: what the privacy engine decided, month by month, read from the ledger.

Every attempt row records its request's privacy decision (entity types and counts, never
values; the action; the non-local providers removed; whether it was redacted; whether its
provider was ``local: true``), and the requests refused for privacy before any call are in
``privacy_refusals``. What must always hold:

- the proof: no attempt row with ``contains_pii = 1`` reached a non-local provider
  unredacted, in any month (``PII_LEFT_LOCAL_UNREDACTED`` returns no row); rows written
  before the ledger recorded ``provider_local`` are judged by the config's local providers,
  or reported as unverifiable without a config;
- nothing here reads, holds or prints prompt or response text: the ledger has none.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from aegis_proxy.settle.sqlite.queries import PII_LEFT_LOCAL_UNREDACTED

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping

    from aegis_proxy.settle.backend import LedgerBackend

Row = dict[str, object]
_ATTEMPT_COLUMNS = (
    "timestamp", "request_id", "provider", "provider_local", "rule", "pii_entities",
    "privacy_action", "providers_removed", "redacted", "status",
)  # fmt: skip
_REFUSAL_COLUMNS = (
    "timestamp", "request_id", "rule", "pii_entities", "privacy_action", "providers_removed",
    "reason",
)  # fmt: skip


@dataclass(frozen=True)
class PrivacyAudit:
    """A month's privacy decisions and the all-time proof."""

    month: str
    attempts: list[Row]  # attempt rows that held personal data
    refusals: list[Row]  # requests refused before any call
    breaches: list[Row]  # all months: personal data sent unredacted to a non-local provider
    unverifiable: list[Row] = field(default_factory=list)  # pre-audit rows, no config to judge

    @property
    def proven(self) -> bool:
        """Whether no personal data reached a non-local provider unredacted."""
        return not self.breaches and not self.unverifiable

    def actions(self) -> Counter[str]:
        """Requests per action: each request once (its attempts share one decision)."""
        served = {row["request_id"]: str(row["privacy_action"]) for row in self.attempts}
        refused = Counter(str(row["privacy_action"]) for row in self.refusals)
        return Counter(served.values()) + Counter({f"{a} (refused)": n for a, n in refused.items()})

    def entity_types(self) -> Counter[str]:
        """Values found per entity type, each request counted once."""
        totals: Counter[str] = Counter()
        seen = set()
        for row in [*self.attempts, *self.refusals]:
            if row["request_id"] not in seen:
                seen.add(row["request_id"])
                totals.update(json.loads(str(row["pii_entities"])))
        return totals


def audit_month(
    ledger: LedgerBackend, month: str, local_providers: Collection[str] | None = None
) -> PrivacyAudit:
    """Read ``month``'s privacy decisions and check the proof over every month."""
    attempts, refusals = ledger.privacy_rows(month), ledger.refusal_rows(month)
    breaches = ledger.privacy_breaches()
    legacy = [row for row in attempts if row["provider_local"] is None and not row["redacted"]]
    if local_providers is None:
        return PrivacyAudit(month, attempts, refusals, breaches, legacy)
    breaches += [row for row in legacy if row["provider"] not in local_providers]
    return PrivacyAudit(month, attempts, refusals, breaches)


def render_audit(audit: PrivacyAudit, fmt: Literal["table", "json", "csv"]) -> str:
    """The audit as a table for people, JSON or CSV (one line per decision)."""
    if fmt == "json":
        return json.dumps(_as_json(audit), indent=2, default=str)
    if fmt == "csv":
        return _as_csv(audit)
    return _as_table(audit)


def _as_json(audit: PrivacyAudit) -> dict[str, object]:
    return {
        "month": audit.month,
        "proven": audit.proven,
        "proof_query": PII_LEFT_LOCAL_UNREDACTED,
        "breaches": audit.breaches,
        "unverifiable": audit.unverifiable,
        "actions": dict(audit.actions()),
        "entity_types": dict(audit.entity_types()),
        "attempts": [_pick(row, _ATTEMPT_COLUMNS) for row in audit.attempts],
        "refusals": [_pick(row, _REFUSAL_COLUMNS) for row in audit.refusals],
    }


def _as_csv(audit: PrivacyAudit) -> str:
    out = io.StringIO()
    columns = ("kind", *dict.fromkeys([*_ATTEMPT_COLUMNS, *_REFUSAL_COLUMNS]))
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    for kind, rows in (("attempt", audit.attempts), ("refusal", audit.refusals)):
        for row in rows:
            writer.writerow({"kind": kind, **_pick(row, columns[1:])})
    return out.getvalue().rstrip("\n")


def _as_table(audit: PrivacyAudit) -> str:
    attempts = _plural(len(audit.attempts), "attempt row")
    refusals = _plural(len(audit.refusals), "request")
    lines = [f"privacy audit {audit.month}: {attempts} held personal data, {refusals} refused"]
    lines += _counts("action", "requests", audit.actions())
    lines += _counts("entity type", "values found", audit.entity_types())
    lines += _rows("attempts", audit.attempts, _ATTEMPT_COLUMNS)
    lines += _rows("refusals", audit.refusals, _REFUSAL_COLUMNS)
    lines.append(_verdict(audit))
    return "\n".join(lines)


def _verdict(audit: PrivacyAudit) -> str:
    if audit.breaches:
        ids = ", ".join(str(row["id"]) for row in audit.breaches[:20])
        return (f"PROOF FAILED: {len(audit.breaches)} rows sent personal data unredacted"
                f" to a non-local provider (ids {ids})")  # fmt: skip
    if audit.unverifiable:
        return (f"proof incomplete: {len(audit.unverifiable)} rows predate the audit columns;"
                " pass --config to judge them by its local providers")  # fmt: skip
    return ("proof: no row with contains_pii = 1 reached a non-local provider unredacted"
            " (all months)")  # fmt: skip


def _counts(title: str, unit: str, counts: Mapping[str, int]) -> list[str]:
    if not counts:
        return []
    return [f"{title:<24} {unit}", *(f"  {k:<22} {n}" for k, n in sorted(counts.items()))]


def _rows(title: str, rows: Iterable[Row], columns: tuple[str, ...]) -> list[str]:
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    if not cells:
        return []
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    header = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()
    body = [
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in cells
    ]
    return [f"{title}:", header, *body]


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun if count == 1 else noun + 's'}"


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def _pick(row: Row, columns: Iterable[str]) -> Row:
    return {column: row.get(column) for column in columns}
