"""The one usage and quota seam: every write of usage and every quota read goes through here.

Live sessions (`nextframe.live.service`), the clip runner, audits and the REST representations call
only these functions for usage, cost and quota. The insides are the billing app's ledger
(`billing.ledger`, the one writer of usage segments; docs/billing.md):

- `record_live` receives a session's cumulative totals about once a second: the record is
  checkpointed every time, and a ledger segment (the GPU-seconds since the last one, at the price
  fixed at admission) is written at least every BILLING_SEGMENT_S and at the end;
- `close_live` is the stale sweep's: it closes a dead session's meter at its last checkpoint;
- `record_clip` writes one segment per clip attempt that held capacity (who pays: `payer`);
- `record_audit` writes the platform's own audits (recorded, never billed to a customer);
- the quota readers answer from the organisation's running total of the month, not a scan.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from billing import arithmetic, ledger, prices, quota
from billing.quota import WARN_PERCENT, QuotaState

__all__ = ["CURRENCY", "WARN_PERCENT", "QuotaState", "Usage"]

CURRENCY = arithmetic.CURRENCY
CUSTOMER, PLATFORM = ledger.CUSTOMER, ledger.PLATFORM


@dataclass(frozen=True)
class Usage:
    """What a session consumed and what it costs (the `usage` of `session.ended`).

    `gpu_seconds` is exact (micro-GPU-seconds); `pending_*` is what was measured but is not yet in
    a ledger segment (0 once the session has ended)."""

    gpu_seconds: Decimal
    frames: int
    cost: Decimal
    currency: str = CURRENCY
    pending_gpu_seconds: Decimal = Decimal(0)
    pending_cost: Decimal = Decimal(0)

    def as_dict(self) -> dict[str, Any]:
        exact = arithmetic.gpu(self.gpu_seconds)
        return {"gpu_seconds": float(exact), "frames": self.frames, "cost": str(self.cost),
                "currency": self.currency, "gpu_seconds_decimal": str(exact)}


# --- prices ---------------------------------------------------------------------------------------

def price_of(model: str, api_key=None) -> Decimal:
    """The price per GPU-second of a model now (from the price table; 0 for a test-mode key and for
    an unknown model)."""
    if ledger.is_test_key(api_key):
        return Decimal(0)
    return prices.price_of(model)


def cost_of(gpu_seconds: float | Decimal, price_per_gpu_second: Decimal | str) -> Decimal:
    """gpu_seconds x price, to the micro-unit (half up)."""
    return arithmetic.amount(gpu_seconds, price_per_gpu_second)


def live_usage(metrics: Mapping[str, Any], price_per_gpu_second: Decimal | str) -> Usage:
    """The usage of a live session from its runtime metrics alone (when the ledger cannot be written)."""
    gpu = arithmetic.gpu(metrics.get("gpu_seconds", 0.0))
    return Usage(gpu, int(metrics.get("frames_out", 0)), cost_of(gpu, price_per_gpu_second))


# --- writers ----------------------------------------------------------------------------------------

def record_live(session_id: str, metrics: Mapping[str, Any], price_per_gpu_second: Decimal | str, *,
                end_reason: str | None = None) -> Usage:
    """Checkpoint a live session's running totals (about once a second) and write a ledger segment
    when one is due (BILLING_SEGMENT_S since the last) or, with `end_reason`, the final segment,
    closing the record in the same transaction. Idempotent: the same totals twice write nothing new.

    Only an active record is written: a record the stale sweep already ended keeps what it had (and
    what the ledger has for it is returned)."""
    from nextframe.live.models import LiveSession

    cumulative = arithmetic.gpu(metrics.get("gpu_seconds", 0.0))
    frames = int(metrics.get("frames_out", 0))
    now = timezone.now()
    with transaction.atomic():
        record = (LiveSession.objects.select_for_update(of=("self",)).select_related("api_key")
                  .filter(pk=session_id).first())
        if record is None:
            return live_usage(metrics, price_per_gpu_second)
        meter = ledger.locked_meter("live", session_id, Decimal(price_per_gpu_second), record.created_at)
        if record.status != LiveSession.Status.ACTIVE:
            return Usage(meter.gpu_seconds, record.frames, meter.amount)
        due = (now - meter.last_end_at).total_seconds() >= float(settings.BILLING_SEGMENT_S)
        if end_reason is not None or due:
            ledger.advance(meter, cumulative_gpu=cumulative, ended_at=now, organization_id=record.organization_id,
                           api_key=record.api_key, model=record.model, share=record.share)
        pending = max(cumulative - meter.gpu_seconds, Decimal(0))
        pending_cost = cost_of(pending, Decimal(0) if ledger.is_test_key(record.api_key) else meter.unit_price)
        fields: dict[str, Any] = {"last_seen_at": now, "frames": frames, "gpu_seconds": cumulative,
                                  "cost": meter.amount + pending_cost, "metrics": dict(metrics)}
        if end_reason is not None:
            fields.update(status=LiveSession.Status.ENDED, ended_at=now, end_reason=end_reason)
        LiveSession.objects.filter(pk=session_id).update(**fields)
    return Usage(meter.gpu_seconds + pending, frames, meter.amount + pending_cost,
                 pending_gpu_seconds=pending, pending_cost=pending_cost)


def close_live(record, end_reason: str = "server_error") -> None:
    """End a live record whose process died (call with the record row-locked and still active): the
    ledger gets the GPU-seconds of its last checkpoint, and the record ends when it was last seen."""
    from nextframe.live.models import LiveSession

    meter = ledger.locked_meter("live", record.pk, price_of(record.model, record.api_key), record.created_at)
    ledger.advance(meter, cumulative_gpu=record.gpu_seconds, ended_at=record.last_seen_at,
                   organization_id=record.organization_id, api_key=record.api_key, model=record.model,
                   share=record.share)
    LiveSession.objects.filter(pk=record.pk).update(
        status=LiveSession.Status.ENDED, ended_at=record.last_seen_at, end_reason=end_reason,
        gpu_seconds=meter.gpu_seconds, cost=meter.amount)


def record_clip(clip_id: Any, share: float, run_s: float, payer: str = CUSTOMER, attempt: int | None = None) -> Decimal:
    """Write one clip attempt's segment (reserved share x lease time); returns its GPU-seconds.

    One segment per attempt (key: clip id + attempt number), so writing the same attempt twice
    counts once (`attempt`: the attempt's number, the clip's current one by default). The clip's own `gpu_seconds` and `cost` are the sums of its customer-paid segments.
    Called inside the transaction that marks the clip succeeded (the usage and the outcome are
    written together or not at all), and after every other attempt that held capacity."""
    from nextframe.clips.models import Clip

    clip = Clip.objects.select_related("api_key").get(pk=clip_id)
    ended = timezone.now()
    gpu_seconds = arithmetic.share_seconds(share, run_s)
    with transaction.atomic():
        segment = ledger.append(ledger.Interval(
            source="clip", source_id=str(clip.pk), seq=attempt if attempt is not None else clip.attempts, organization_id=clip.organization_id,
            api_key=clip.api_key, model=clip.model, share=share, started_at=ended - timedelta(seconds=run_s),
            ended_at=ended, gpu_seconds=gpu_seconds, unit_price=price_of(clip.model, clip.api_key), payer=payer))
        if segment is not None and payer == CUSTOMER:
            Clip.objects.filter(pk=clip.pk).update(gpu_seconds=F("gpu_seconds") + segment.gpu_seconds,
                                                   cost=F("cost") + segment.amount)
    return gpu_seconds


def record_audit(reservation_id: str, model: str, share: float, held_s: float) -> None:
    """An audit the platform ran on itself: recorded at the model's price, paid by the platform."""
    ended = timezone.now()
    ledger.append(ledger.Interval(
        source="audit", source_id=reservation_id, seq=1, organization_id=None, api_key=None, model=model,
        share=share, started_at=ended - timedelta(seconds=held_s), ended_at=ended,
        gpu_seconds=arithmetic.share_seconds(share, held_s), unit_price=price_of(model), payer=PLATFORM))


# --- the quota reader -------------------------------------------------------------------------------

def month_start(now=None):
    now = now or timezone.now()
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def quota_state(org, pending_gpu_seconds: Decimal = Decimal(0), pending_cost: Decimal = Decimal(0)) -> QuotaState:
    """The organisation's month so far against its limits (GPU-seconds and spend)."""
    return quota.state(org, pending_gpu_seconds, pending_cost)


def live_pending(org) -> tuple[Decimal, Decimal]:
    """(GPU-seconds, cost) the organisation's running live-mode sessions have checkpointed but not yet
    written as ledger segments (at most BILLING_SEGMENT_S each): what the live quota check adds to
    the running total, so that concurrent sessions share one quota within a tick. Reads the active
    records and their meters only (at most max_live_sessions rows), never the ledger."""
    from django.db.models import Q, Sum

    from billing.models import Meter
    from nextframe.live.models import LiveSession

    active = LiveSession.objects.filter(Q(api_key__isnull=True) | ~Q(api_key__mode="test"), organization=org,
                                        status=LiveSession.Status.ACTIVE)
    checkpointed = active.aggregate(gpu=Sum("gpu_seconds"), cost=Sum("cost"))
    written = Meter.objects.filter(source="live", source_id__in=active.values("pk")).aggregate(
        gpu=Sum("gpu_seconds"), cost=Sum("amount"))
    gpu = (checkpointed["gpu"] or Decimal(0)) - (written["gpu"] or Decimal(0))
    cost = (checkpointed["cost"] or Decimal(0)) - (written["cost"] or Decimal(0))
    return max(gpu, Decimal(0)), max(cost, Decimal(0))


def gpu_seconds_this_month(org) -> Decimal:
    """Customer-paid, live-mode GPU-seconds of the organisation's current calendar month (UTC)."""
    return quota.state(org).used_gpu_seconds


def quota_remaining(org) -> Decimal | None:
    """GPU-seconds left this month, or None when the organisation has no limit."""
    if org.gpu_seconds_limit is None:
        return None
    return org.gpu_seconds_limit - gpu_seconds_this_month(org)


def quota_exhausted(org) -> bool:
    """Whether the organisation has used up its monthly GPU-seconds or spend (never, without limits)."""
    return quota.state(org).exhausted


def quota_fits(org, gpu_seconds: Decimal, cost: Decimal) -> bool:
    """Whether this much more usage stays within the organisation's monthly limits."""
    return quota.state(org).fits(gpu_seconds, cost)


def account_suspended(org) -> bool:
    """Whether the organisation's account is suspended (unpaid invoice): refused everywhere."""
    return quota.is_suspended(org)
