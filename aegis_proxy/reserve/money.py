"""Money: integer micro-dollars everywhere, converted to and from USD in one place.

What must always hold: amounts are integer micro-dollars (or exact ``Decimal`` USD), never
float sums; a limit in USD is rounded down (never over-allowed); a cost is computed in
micro-dollars and rounded up where it is priced (``pricing.cost_micros``: never
under-charged).
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal

MICROS_PER_USD = 1_000_000


def usd(micros: int) -> Decimal:
    """Micro-dollars as an exact Decimal amount of USD."""
    return Decimal(micros).scaleb(-6)


def limit_micros(amount: Decimal | float | int | str | None) -> int | None:
    """A limit in USD as micro-dollars, rounded down (it never allows more than it says).

    None (no limit) stays None.
    """
    if amount is None:
        return None
    return int((Decimal(str(amount)) * MICROS_PER_USD).to_integral_value(ROUND_FLOOR))


def usd_float(micros: int) -> float:
    """Micro-dollars as a float of USD, for metrics and traces only (never summed back)."""
    return micros / MICROS_PER_USD
