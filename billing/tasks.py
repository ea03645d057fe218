"""Billing's Celery tasks: the Stripe outbox drain, run by beat on the maintenance queue."""
from __future__ import annotations

import logging

from celery import shared_task

log = logging.getLogger(__name__)


@shared_task(name="billing.sync_meter_events", ignore_result=True)
def sync_meter_events() -> dict:
    """Drain the meter-event outbox once (a no-op while Stripe sync is off)."""
    from billing import stripe_sync

    result = stripe_sync.drain()
    if result.failed or result.rate_limited:
        log.warning("stripe sync: %s", result)
    return result.__dict__
