"""The one usage and quota seam: every write of usage and every quota read goes through here.

Live sessions (`nextframe.live.service`), the clip runner and the REST representations call only
these functions for usage, cost and quota. Today it is a thin shim over the records themselves
(`LiveSession.gpu_seconds/cost`, `Clip.gpu_seconds`) with prices read from the engine specs; the
billing issue replaces the insides with a ledger of idempotent segments (ARCHITECTURE.md, "Billing")
without touching the callers:

- writers receive cumulative totals (`record_live`) or a finished run (`record_clip`), so a ledger
  can turn them into idempotent segments (the delta since the last write of the same subject);
- the quota reader answers "how many GPU-seconds are left this month" for an organisation.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db.models import Sum
from django.utils import timezone

CURRENCY = "usd"
_MICRO = Decimal("0.000001")


@dataclass(frozen=True)
class Usage:
    """What a session consumed and what it costs (the `usage` of `session.ended`)."""

    gpu_seconds: float
    frames: int
    cost: Decimal
    currency: str = CURRENCY

    def as_dict(self) -> dict[str, Any]:
        return {"gpu_seconds": round(self.gpu_seconds, 4), "frames": self.frames, "cost": str(self.cost),
                "currency": self.currency}


# --- prices ---------------------------------------------------------------------------------------

def price_of(model: str) -> Decimal:
    """The price per GPU-second of a model (today from its engine spec; 0 for an unknown model)."""
    from inference.engines import EngineError, get_spec

    try:
        return Decimal(get_spec(model).price_per_gpu_second)
    except EngineError:
        return Decimal(0)


def cost_of(gpu_seconds: float | Decimal, price_per_gpu_second: Decimal | str) -> Decimal:
    """gpu_seconds x price, to the micro-unit (half up)."""
    return (Decimal(str(gpu_seconds)) * Decimal(price_per_gpu_second)).quantize(_MICRO, rounding=ROUND_HALF_UP)


def live_usage(metrics: Mapping[str, Any], price_per_gpu_second: Decimal | str) -> Usage:
    """The usage of a live session from its runtime metrics (`gpu_seconds`, `frames_out`)."""
    gpu = float(metrics.get("gpu_seconds", 0.0))
    return Usage(gpu, int(metrics.get("frames_out", 0)), cost_of(gpu, price_per_gpu_second))


# --- writers ----------------------------------------------------------------------------------------

def record_live(session_id: str, metrics: Mapping[str, Any], price_per_gpu_second: Decimal | str, *,
                end_reason: str | None = None) -> Usage:
    """Write a live session's usage so far: the running totals about once a second (idempotent: the
    newest totals win), or, with `end_reason`, its final totals, closing its record in the same write.

    Only an active record is written: a record the stale sweep already ended keeps what it had.
    """
    from nextframe.live.models import LiveSession

    usage = live_usage(metrics, price_per_gpu_second)
    now = timezone.now()
    fields: dict[str, Any] = {
        "last_seen_at": now, "frames": usage.frames, "gpu_seconds": Decimal(str(round(usage.gpu_seconds, 4))),
        "cost": usage.cost, "metrics": dict(metrics),
    }
    if end_reason is not None:
        fields.update(status=LiveSession.Status.ENDED, ended_at=now, end_reason=end_reason)
    LiveSession.objects.filter(pk=session_id, status=LiveSession.Status.ACTIVE).update(**fields)
    return usage


def record_clip(clip_id: Any, share: float, run_s: float) -> Decimal:
    """Write a finished clip's usage (reserved share x lease time); returns its GPU-seconds.

    Called inside the transaction that marks the clip succeeded, so the usage and the outcome are
    written together or not at all."""
    from nextframe.clips.models import Clip

    gpu_seconds = Decimal(str(round(share * run_s, 6)))
    Clip.objects.filter(pk=clip_id).update(gpu_seconds=gpu_seconds)
    return gpu_seconds


def clip_cost(model: str, gpu_seconds: Decimal | float) -> Decimal:
    """What a clip's GPU-seconds cost (today at the model's current price; a ledger keeps the price
    of the moment the usage was written)."""
    return cost_of(Decimal(gpu_seconds), price_of(model))


# --- the quota reader -------------------------------------------------------------------------------

def month_start(now=None):
    now = now or timezone.now()
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def gpu_seconds_this_month(org) -> Decimal:
    """Live GPU-seconds plus clip GPU-seconds of an organisation's current calendar month (UTC)."""
    from nextframe.clips.models import Clip
    from nextframe.live.models import LiveSession

    start = month_start()
    live = LiveSession.objects.filter(organization=org, created_at__gte=start).aggregate(s=Sum("gpu_seconds"))["s"]
    clips = Clip.objects.filter(organization=org, created_at__gte=start).aggregate(s=Sum("gpu_seconds"))["s"]
    return (live or Decimal(0)) + (clips or Decimal(0))


def quota_remaining(org) -> Decimal | None:
    """GPU-seconds left this month, or None when the organisation has no limit."""
    if org.gpu_seconds_limit is None:
        return None
    return org.gpu_seconds_limit - gpu_seconds_this_month(org)


def quota_exhausted(org) -> bool:
    """Whether the organisation has used up its monthly GPU-seconds (never, without a limit)."""
    remaining = quota_remaining(org)
    return remaining is not None and remaining <= 0
