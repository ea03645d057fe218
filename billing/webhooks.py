"""POST /v1/billing/webhooks/stripe: Stripe's signed events (no API key; `Stripe-Signature`).

The signature is verified on the raw body with the stripe library (`Webhook.construct_event`),
which also refuses a timestamp older than STRIPE_WEBHOOK_TOLERANCE_S (a replay of an old delivery).
Each event id is handled once (`WebhookEvent`, inserted in the same transaction as its effect): a
replayed or re-delivered event is acknowledged and changes nothing. `invoice.payment_failed`
suspends the customer's organisation; `invoice.paid` restores it. Other types are acknowledged.
"""
from __future__ import annotations

import logging

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing.models import Account, WebhookEvent
from nextframe.api.errors import json_error

log = logging.getLogger(__name__)


def apply(event_id: str, event_type: str, obj: dict) -> str:
    """Handle one verified event exactly once; returns what it did ("duplicate" when seen before)."""
    try:
        with transaction.atomic():
            row = WebhookEvent.objects.create(event_id=event_id, type=event_type)
            outcome = _effect(event_type, obj)
            WebhookEvent.objects.filter(pk=row.pk).update(outcome=outcome)
            return outcome
    except IntegrityError:
        return "duplicate"


def _effect(event_type: str, obj: dict) -> str:
    if event_type not in ("invoice.payment_failed", "invoice.paid"):
        return "ignored"
    customer = obj.get("customer")
    account = Account.objects.filter(stripe_customer_id=customer).first() if isinstance(customer, str) else None
    if account is None:
        return "unknown customer"
    if event_type == "invoice.payment_failed":
        status, reason = Account.Status.SUSPENDED, f"invoice {obj.get('id', '?')} payment failed"
    else:
        status, reason = Account.Status.ACTIVE, ""
    Account.objects.filter(pk=account.pk).update(status=status, status_reason=reason, status_changed_at=timezone.now())
    log.warning("organisation %s is now %s (%s)", account.organization_id, status, event_type)
    return str(status)


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    import stripe

    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        return json_error("not_configured", "Stripe webhooks are off (STRIPE_WEBHOOK_SECRET is not set)", 503)
    signature = request.headers.get("Stripe-Signature")
    if not signature:
        return json_error("bad_signature", "missing Stripe-Signature header", 400)
    try:
        event = stripe.Webhook.construct_event(request.body, signature, secret,
                                               tolerance=settings.STRIPE_WEBHOOK_TOLERANCE_S)
    except stripe.SignatureVerificationError as exc:
        return json_error("bad_signature", f"signature verification failed: {exc.user_message or exc}", 400)
    except ValueError:
        return json_error("invalid_request", "the body is not a Stripe event (JSON)", 400)
    body = event.to_dict()
    event_id, event_type = body.get("id"), body.get("type")
    if not isinstance(event_id, str) or not isinstance(event_type, str):
        return json_error("invalid_request", "the event has no id or type", 400)
    data = body.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    outcome = apply(event_id, event_type, obj if isinstance(obj, dict) else {})
    return JsonResponse({"received": True, "id": event_id, "outcome": outcome})
