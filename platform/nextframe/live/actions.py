"""Live-session business logic: quota checks, records, usage. The consumer calls these."""
from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import F, Sum
from django.utils import timezone

from nextframe.live.models import LiveSession
from nextframe.tenancy.models import Organization

CURRENCY = "usd"


def month_start(now=None):
    now = now or timezone.now()
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def gpu_seconds_this_month(org: Organization) -> Decimal:
    """Live GPU-seconds plus clip GPU-seconds of the current calendar month (UTC)."""
    from nextframe.clips.models import Clip

    start = month_start()
    live = LiveSession.objects.filter(organization=org, created_at__gte=start).aggregate(s=Sum("gpu_seconds"))["s"]
    clips = Clip.objects.filter(organization=org, created_at__gte=start).aggregate(s=Sum("gpu_seconds"))["s"]
    return (live or Decimal(0)) + (clips or Decimal(0))


def quota_remaining(org: Organization) -> Decimal | None:
    """GPU-seconds left this month, or None when the organisation has no limit."""
    if org.gpu_seconds_limit is None:
        return None
    return org.gpu_seconds_limit - gpu_seconds_this_month(org)


def cost_of(gpu_seconds: float, price_per_gpu_second: str) -> Decimal:
    return (Decimal(str(gpu_seconds)) * Decimal(price_per_gpu_second)).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)


def usage_dict(gpu_seconds: float, frames: int, price: str) -> dict:
    return {
        "gpu_seconds": round(gpu_seconds, 4),
        "frames": frames,
        "cost": str(cost_of(gpu_seconds, price)),
        "currency": CURRENCY,
    }


def open_record(*, session_id: str, org: Organization, api_key, model: str, tier: str, width: int, height: int,
                fps: int, device: str, share: float, node: str) -> LiveSession:
    return LiveSession.objects.create(
        id=session_id, organization=org, api_key=api_key, model=model, tier=tier, width=width, height=height,
        fps=fps, device=device, share=share, node=node,
    )


def checkpoint(session_id: str, metrics: dict, price: str) -> None:
    """Write the running usage (idempotent: it overwrites with the newest totals)."""
    gpu = float(metrics.get("gpu_seconds", 0.0))
    LiveSession.objects.filter(pk=session_id, status=LiveSession.Status.ACTIVE).update(
        last_seen_at=timezone.now(), frames=int(metrics.get("frames_out", 0)),
        gpu_seconds=Decimal(str(round(gpu, 4))), cost=cost_of(gpu, price), metrics=metrics,
    )


def close_record(session_id: str, reason: str, metrics: dict, price: str) -> None:
    gpu = float(metrics.get("gpu_seconds", 0.0))
    LiveSession.objects.filter(pk=session_id, status=LiveSession.Status.ACTIVE).update(
        status=LiveSession.Status.ENDED, ended_at=timezone.now(), end_reason=reason,
        frames=int(metrics.get("frames_out", 0)), gpu_seconds=Decimal(str(round(gpu, 4))),
        cost=cost_of(gpu, price), metrics=metrics, last_seen_at=timezone.now(),
    )


def sweep_stale(stale_after_s: float) -> int:
    """End records whose process died without closing them (no checkpoint for stale_after_s).

    Run by every server process on a timer (`nextframe.live.sweeper`). The record keeps the usage of
    its last checkpoint, and ends when it was last seen alive: the process died between that
    checkpoint and the next, not when the sweep happened to notice."""
    cutoff = timezone.now() - timedelta(seconds=stale_after_s)
    return LiveSession.objects.filter(status=LiveSession.Status.ACTIVE, last_seen_at__lt=cutoff).update(
        status=LiveSession.Status.ENDED, ended_at=F("last_seen_at"), end_reason="server_error"
    )
