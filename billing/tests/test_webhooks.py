"""POST /v1/billing/webhooks/stripe, attacked like a hostile sender: signed with the stripe library's
own helper; forged, tampered, stale and replayed deliveries change nothing. A failed payment
suspends the organisation everywhere (REST 402, live session.start) but its billing stays readable."""
from __future__ import annotations

import json
import time

import pytest
import stripe
from rest_framework.test import APIClient

from billing import quota
from billing.models import Account, WebhookEvent
from billing.tests.conftest import WEBHOOK_SECRET

pytestmark = pytest.mark.django_db
URL = "/v1/billing/webhooks/stripe"


def event(event_id: str, kind: str, customer: str) -> str:
    return json.dumps({"id": event_id, "object": "event", "type": kind, "api_version": "2024-06-20",
                       "created": int(time.time()), "livemode": False,
                       "data": {"object": {"id": "in_123", "object": "invoice", "customer": customer}}})


def deliver(payload: str, secret: str = WEBHOOK_SECRET, timestamp: int | None = None, header: str | None = None):
    signature = header if header is not None else stripe.WebhookSignature.generate_signature_header(
        payload, secret, timestamp=timestamp or int(time.time()))
    return APIClient().post(URL, data=payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature)


@pytest.fixture
def customer(org, settings):
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    account = quota.account_for(org)
    account.stripe_customer_id = "cus_acme"
    account.save()
    return "cus_acme"


def status_of(org) -> str:
    return Account.objects.get(organization=org).status


def test_a_failed_payment_suspends_everywhere_and_a_paid_invoice_restores(org, api_key, client_for, customer):
    client = client_for(api_key)
    response = deliver(event("evt_1", "invoice.payment_failed", customer))
    assert response.status_code == 200 and response.json()["outcome"] == "suspended"
    assert status_of(org) == "suspended"
    for method, url in (("get", "/v1/models"), ("get", "/v1/clips"), ("post", "/v1/tickets"), ("get", "/v1/sessions")):
        refused = getattr(client, method)(url)
        assert refused.status_code == 402 and refused.json()["error"]["code"] == "account_suspended", url
    body = client.get("/v1/billing").json()  # what it owes stays readable
    assert body["status"] == "suspended" and "payment failed" in body["status_reason"]
    assert client.get("/v1/usage").status_code == 200
    assert deliver(event("evt_2", "invoice.paid", customer)).json()["outcome"] == "active"
    assert status_of(org) == "active" and client.get("/v1/clips").status_code == 200


def test_forged_tampered_stale_and_unsigned_deliveries_are_refused(org, customer):
    payload = event("evt_f", "invoice.payment_failed", customer)
    assert deliver(payload, secret="whsec_not_ours").status_code == 400  # forged
    good = stripe.WebhookSignature.generate_signature_header(payload, WEBHOOK_SECRET)
    assert deliver(payload.replace("cus_acme", "cus_other"), header=good).status_code == 400  # tampered body
    stale = deliver(payload, timestamp=int(time.time()) - 3600)
    assert stale.status_code == 400 and stale.json()["error"]["code"] == "bad_signature"
    assert deliver(payload, header="").status_code == 400
    assert deliver(payload, header="t=1,v1=deadbeef").status_code == 400
    assert deliver("not json", header=stripe.WebhookSignature.generate_signature_header("not json", WEBHOOK_SECRET)
                   ).status_code == 400
    assert status_of(org) == "active" and not WebhookEvent.objects.exists()


def test_a_replayed_event_is_acknowledged_once_and_changes_nothing(org, customer):
    failed = event("evt_r", "invoice.payment_failed", customer)
    assert deliver(failed).json()["outcome"] == "suspended"
    assert deliver(event("evt_p", "invoice.paid", customer)).json()["outcome"] == "active"
    replay = deliver(failed)  # the same signed event again, within the tolerance
    assert replay.status_code == 200 and replay.json()["outcome"] == "duplicate"
    assert status_of(org) == "active" and WebhookEvent.objects.count() == 2


def test_unknown_customers_and_other_types_are_acknowledged_and_ignored(org, customer, settings):
    assert deliver(event("evt_u", "invoice.payment_failed", "cus_nobody")).json()["outcome"] == "unknown customer"
    assert deliver(event("evt_o", "customer.created", customer)).json()["outcome"] == "ignored"
    assert status_of(org) == "active"
    settings.STRIPE_WEBHOOK_SECRET = ""
    off = deliver(event("evt_x", "invoice.paid", customer))
    assert off.status_code == 503 and off.json()["error"]["code"] == "not_configured"
