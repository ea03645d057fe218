"""Stripe as a sync target (never the source of truth): customers and Billing Meter events.

`drain()` sends the outbox (`OutboxEvent`, written in the same transaction as each customer-paid,
live-mode segment) to `POST /v1/billing/meter_events`: `identifier` = the segment's key, `payload`
= the organisation's Stripe customer and the segment's GPU-seconds as a decimal string, `timestamp`
= the segment's end. An event is marked sent only after Stripe accepted it; a crash in between
resends it, and Stripe's identifier uniqueness turns the resend into "already exists", which is
taken as sent. So each segment reaches Stripe exactly once whatever crashes in between.

Errors: 429 (rate limit) stops the round and backs the event off (Retry-After when given); any
other error backs that event off exponentially (BILLING_SYNC_MAX_BACKOFF_S at most) and the round
goes on. The customer of an organisation is created lazily, with an idempotency key, so a crash
between Stripe creating it and us storing its id does not create a second one.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from billing import quota
from billing.models import Account, OutboxEvent

log = logging.getLogger(__name__)


def enabled() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


def client() -> Any:
    """The official client, pointed at STRIPE_API_BASE when set; its own retries off (ours back off)."""
    import stripe

    options: dict[str, Any] = {"max_network_retries": 0}
    if settings.STRIPE_API_BASE:
        options["base_addresses"] = {"api": settings.STRIPE_API_BASE}
    return stripe.StripeClient(settings.STRIPE_SECRET_KEY, **options)


@dataclass
class DrainResult:
    sent: int = 0
    already_there: int = 0
    failed: int = 0
    rate_limited: bool = False
    off: bool = False


def backoff_s(attempts: int) -> float:
    return min(float(settings.BILLING_SYNC_MAX_BACKOFF_S), 2.0 ** max(0, attempts - 1))


def ensure_customer(org_id: int, stripe_client: Any) -> str:
    """The organisation's Stripe customer id, created on first use (idempotently)."""
    account = quota.account_for(org_id)
    if account.stripe_customer_id:
        return account.stripe_customer_id
    customer = stripe_client.v1.customers.create(
        params={"name": account.organization.name, "metadata": {"nextframe_organization_id": str(org_id)}},
        options={"idempotency_key": f"nextframe-customer-{org_id}"})
    Account.objects.filter(pk=account.pk, stripe_customer_id="").update(stripe_customer_id=customer.id)
    account.refresh_from_db()
    return account.stripe_customer_id


def _is_duplicate(exc: Exception) -> bool:
    """Stripe refusing an identifier it already has: the event was delivered by an earlier try."""
    import stripe

    if not isinstance(exc, stripe.InvalidRequestError):
        return False
    return getattr(exc, "code", None) == "resource_already_exists" or "already exists" in str(exc).lower()


def drain(batch: int | None = None, stripe_client: Any | None = None,
          on_sent: Callable[[OutboxEvent], None] | None = None) -> DrainResult:
    """Send due outbox events (oldest first). `on_sent` is called after Stripe accepted an event and
    before it is marked sent (tests inject crashes there)."""
    import stripe

    if not enabled():
        return DrainResult(off=True)
    stripe_client = stripe_client or client()
    result = DrainResult()
    now = timezone.now()
    due = (OutboxEvent.objects.filter(status=OutboxEvent.Status.PENDING, next_attempt_at__lte=now)
           .select_related("segment").order_by("pk")[: batch or settings.BILLING_SYNC_BATCH])
    for event in due:
        segment = event.segment
        try:
            customer = ensure_customer(segment.organization_id, stripe_client)
            stripe_client.v1.billing.meter_events.create(params={
                "event_name": settings.NEXTFRAME_STRIPE_METER_EVENT,
                "identifier": event.identifier,
                "payload": {"stripe_customer_id": customer, "value": str(segment.gpu_seconds.normalize())},
                "timestamp": int(segment.ended_at.timestamp()),
            })
        except stripe.RateLimitError as exc:
            retry = _retry_after(exc) or backoff_s(event.attempts + 1)
            _back_off(event, retry, f"rate limited: {exc}")
            result.rate_limited = True
            break
        except stripe.StripeError as exc:
            if _is_duplicate(exc):
                _mark_sent(event)
                result.already_there += 1
                continue
            _back_off(event, backoff_s(event.attempts + 1), f"{type(exc).__name__}: {exc}")
            result.failed += 1
            continue
        if on_sent is not None:
            on_sent(event)
        _mark_sent(event)
        result.sent += 1
    return result


def _retry_after(exc: Exception) -> float | None:
    headers = getattr(exc, "headers", None) or {}
    try:
        return float(headers.get("Retry-After") or headers.get("retry-after"))
    except (TypeError, ValueError):
        return None


def _back_off(event: OutboxEvent, delay_s: float, error: str) -> None:
    OutboxEvent.objects.filter(pk=event.pk, status=OutboxEvent.Status.PENDING).update(
        attempts=F("attempts") + 1, last_error=error[:2000],
        next_attempt_at=timezone.now() + timedelta(seconds=delay_s))


def _mark_sent(event: OutboxEvent) -> None:
    OutboxEvent.objects.filter(pk=event.pk).update(status=OutboxEvent.Status.SENT, sent_at=timezone.now(),
                                                    attempts=F("attempts") + 1, last_error="")
