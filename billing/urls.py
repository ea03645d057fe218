"""Billing's routes under /v1/billing/ (included by `nextframe.urls`): Stripe's webhooks."""
from __future__ import annotations

from django.urls import URLPattern, path

from billing import webhooks

urlpatterns: list[URLPattern] = [
    path("webhooks/stripe", webhooks.stripe_webhook, name="stripe-webhook"),
]
