"""The one writer of usage: every segment of the ledger is appended here, and nothing else writes one.

`append` writes one segment with its idempotency key, and in the same transaction what depends on
it: the organisation's period total (the quota's running total) and the Stripe outbox event. A key
already written is a no-op, so a retried or replayed write never counts twice. The live consumer,
the clip runner and audits reach it through `nextframe.usage` (`record_live`, `record_clip_attempt`,
`record_audit`); the stale-session sweep closes a dead session's meter with `close_live`.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from billing import arithmetic
from billing.models import Meter, OutboxEvent, PeriodTotal, Segment
from nextframe.tenancy.models import ApiKey

CUSTOMER, PLATFORM = Segment.Payer.CUSTOMER, Segment.Payer.PLATFORM


@dataclass(frozen=True)
class Interval:
    """What one segment measured: who, which model and share, when, how many GPU-seconds."""

    source: str
    source_id: str
    seq: int
    organization_id: int | None
    api_key: ApiKey | None
    model: str
    share: float
    started_at: datetime
    ended_at: datetime
    gpu_seconds: Decimal
    unit_price: Decimal
    payer: str = CUSTOMER


def is_test_key(api_key: ApiKey | None) -> bool:
    return api_key is not None and api_key.mode == "test"


def segment_key(source: str, source_id: str, seq: int) -> str:
    return f"{source}:{source_id}:{seq}"


def counts_for_customer(segment: Segment) -> bool:
    """Whether a segment is the customer's live-mode usage: quota, spend limit and Stripe see it."""
    return segment.payer == CUSTOMER and not segment.test_mode and segment.organization_id is not None


def append(interval: Interval) -> Segment | None:
    """Write one segment (and its period total and outbox event); None when its key was written before.

    Test-mode keys are metered at price 0. Joins the caller's transaction when there is one."""
    test = is_test_key(interval.api_key)
    price = Decimal(0) if test else Decimal(interval.unit_price)
    gpu_seconds = arithmetic.gpu(interval.gpu_seconds)
    key = segment_key(interval.source, interval.source_id, interval.seq)
    with transaction.atomic():
        if Segment.objects.filter(key=key).exists():
            return None
        try:
            with transaction.atomic():
                segment = Segment.objects.create(
                    key=key, organization_id=interval.organization_id, api_key=interval.api_key, source=interval.source,
                    source_id=interval.source_id, seq=interval.seq, model=interval.model, share=interval.share,
                    started_at=interval.started_at, ended_at=interval.ended_at, gpu_seconds=gpu_seconds,
                    unit_price=price, amount=arithmetic.amount(gpu_seconds, price), currency=arithmetic.CURRENCY,
                    payer=interval.payer, test_mode=test)
        except IntegrityError:  # written by a concurrent writer of the same key since we looked
            return None
        if counts_for_customer(segment):
            _add_to_period(segment)
            if segment.gpu_seconds > 0:
                OutboxEvent.objects.create(segment=segment, identifier=f"nf_{key}")
    return segment


def _add_to_period(segment: Segment) -> None:
    period = arithmetic.period_of(segment.ended_at)
    PeriodTotal.objects.get_or_create(organization_id=segment.organization_id, period=period)
    PeriodTotal.objects.filter(organization_id=segment.organization_id, period=period).update(
        gpu_seconds=F("gpu_seconds") + segment.gpu_seconds, amount=F("amount") + segment.amount)


# --- meters: sources that write many segments (live sessions) --------------------------------------

def locked_meter(source: str, source_id: str, unit_price: Decimal, opened_at: datetime) -> Meter:
    """The source's meter, row-locked until the caller's transaction ends (created on first use)."""
    meter = Meter.objects.select_for_update().filter(source=source, source_id=source_id).first()
    if meter is not None:  # every tick but the first: one query
        return meter
    Meter.objects.get_or_create(source=source, source_id=source_id,
                                defaults={"unit_price": unit_price, "last_end_at": opened_at})
    return Meter.objects.select_for_update().get(source=source, source_id=source_id)


def advance(meter: Meter, *, cumulative_gpu: Decimal, ended_at: datetime, organization_id: int | None,
            api_key: ApiKey | None, model: str, share: float, payer: str = CUSTOMER) -> Segment | None:
    """Write the meter's next segment: from its last end to `ended_at`, the GPU-seconds between what
    the ledger has and `cumulative_gpu` (nothing when there is nothing new). Call with the meter locked."""
    delta = arithmetic.gpu(cumulative_gpu) - meter.gpu_seconds
    if delta <= 0:
        return None
    segment = append(Interval(
        source=meter.source, source_id=meter.source_id, seq=meter.segments + 1, organization_id=organization_id,
        api_key=api_key, model=model, share=share, started_at=meter.last_end_at, ended_at=ended_at,
        gpu_seconds=delta, unit_price=meter.unit_price, payer=payer))
    if segment is None:  # cannot happen while the meter is locked; refuse to count twice all the same
        return None
    meter.segments += 1
    meter.gpu_seconds += segment.gpu_seconds
    meter.amount += segment.amount
    meter.last_end_at = ended_at
    meter.save(update_fields=["segments", "gpu_seconds", "amount", "last_end_at"])
    return segment


def now() -> datetime:
    return timezone.now()
