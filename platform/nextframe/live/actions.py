"""Live-session records: opened at admission, swept when their process died.

Usage and quota are not here: they go through the one seam, `nextframe.usage` (which also writes
a record's running and final usage, and closes it)."""
from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from nextframe.live.models import LiveSession
from nextframe.tenancy.models import Organization


def open_record(*, session_id: str, org: Organization, api_key, model: str, tier: str, width: int, height: int,
                fps: int, device: str, share: float, node: str) -> LiveSession:
    return LiveSession.objects.create(
        id=session_id, organization=org, api_key=api_key, model=model, tier=tier, width=width, height=height,
        fps=fps, device=device, share=share, node=node,
    )


def sweep_stale(stale_after_s: float) -> int:
    """End records whose process died without closing them (no checkpoint for stale_after_s).

    Run by every server process on a timer (`nextframe.live.sweeper`). The record keeps the usage of
    its last checkpoint, which the ledger gets as the session's closing segment (`usage.close_live`),
    and ends when it was last seen alive: the process died between that checkpoint and the next, not
    when the sweep happened to notice. Each record is ended under its row lock and only while still
    active and stale, so every node may sweep at once and a record ends (and is billed) once."""
    from django.db import transaction

    from nextframe import usage

    cutoff = timezone.now() - timedelta(seconds=stale_after_s)
    stale = LiveSession.objects.filter(status=LiveSession.Status.ACTIVE, last_seen_at__lt=cutoff)
    ended = 0
    for pk in list(stale.values_list("pk", flat=True)):
        with transaction.atomic():
            record = stale.select_for_update(of=("self",)).select_related("api_key").filter(pk=pk).first()
            if record is not None:
                usage.close_live(record)
                ended += 1
    return ended
