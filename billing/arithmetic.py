"""The ledger's arithmetic, without Django: GPU-seconds, amounts and periods as exact decimals.

GPU-seconds = reserved device share x reserved wall time, kept to the micro-GPU-second (6 places);
an amount = GPU-seconds x unit price, rounded half up to the micro-unit of the currency. A segment's
amount is rounded once, when it is written; a total is the sum of its segments' amounts, so what a
client is told always equals the sum of the ledger rows behind it.
"""
from __future__ import annotations

from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal

MICRO = Decimal("0.000001")
CURRENCY = "usd"


def gpu(value: float | Decimal | str) -> Decimal:
    """GPU-seconds as a Decimal to the micro-GPU-second (floats through their shortest repr)."""
    return Decimal(str(value)).quantize(MICRO, rounding=ROUND_HALF_UP)


def amount(gpu_seconds: float | Decimal | str, unit_price: Decimal | str) -> Decimal:
    """gpu_seconds x unit_price, to the micro-unit (half up)."""
    return (Decimal(str(gpu_seconds)) * Decimal(unit_price)).quantize(MICRO, rounding=ROUND_HALF_UP)


def share_seconds(share: float, seconds: float) -> Decimal:
    """The GPU-seconds of `share` of a device held for `seconds` of wall time."""
    return gpu(Decimal(str(share)) * Decimal(str(seconds)))


def period_of(moment: datetime) -> date:
    """The billing period (calendar month, UTC) a moment belongs to: its first day."""
    return moment.date().replace(day=1)


def next_period(period: date) -> date:
    return period.replace(year=period.year + 1, month=1) if period.month == 12 else period.replace(month=period.month + 1)


def percent(used: Decimal, limit: Decimal) -> int:
    """Whole percent of a limit used (a zero limit is 100% used)."""
    if limit <= 0:
        return 100
    return int((used * 100 / limit).to_integral_value(rounding="ROUND_FLOOR"))


def to_meter_value(gpu_seconds: Decimal) -> int:
    """A segment's value as Stripe meter events take it: a whole number, in micro-GPU-seconds."""
    return int((gpu_seconds / MICRO).to_integral_value(rounding=ROUND_HALF_UP))
