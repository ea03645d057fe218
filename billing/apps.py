"""The billing Django app: the metering ledger and Stripe sync (models come with the billing issue)."""
from __future__ import annotations

from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    label = "billing"
    verbose_name = "NextFrame billing"
