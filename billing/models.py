"""The billing ledger and what hangs off it (ARCHITECTURE.md, "Billing"; docs/billing.md).

- `Price`: a model's price per GPU-second from a moment on. Rows are only ever added (a change is a
  new row): a segment keeps the price it was written at, and the history stays.
- `Segment`: the append-only ledger. One row per measured interval of one source (a live session, a
  clip attempt, an audit) with its price and amount captured when it is written; `key` (source +
  segment number) is unique, so a retry or a replay never counts twice.
- `Meter`: the running state of one source (segments written, their sums): what the next segment of
  a live session starts from, read under a row lock so two writers never write the same interval.
- `PeriodTotal`: an organisation's customer-paid, live-mode usage of one calendar month, kept in the
  same transaction as the segments: the quota reads one row, never a scan of the ledger.
- `Account`: an organisation's billing state (plan, active/suspended, spend limit, Stripe customer).
- `OutboxEvent`: a meter event still to send to Stripe, written with its segment (transactional
  outbox); `WebhookEvent`: Stripe events already handled (dedupe by event id).
"""
from __future__ import annotations

from django.db import models
from django.utils import timezone

from nextframe.tenancy.models import ApiKey, Organization

GPU = {"max_digits": 20, "decimal_places": 6}
MONEY = {"max_digits": 20, "decimal_places": 6}
UNIT_PRICE = {"max_digits": 18, "decimal_places": 9}


class Price(models.Model):
    model = models.CharField(max_length=64)
    unit_price = models.DecimalField(help_text="per GPU-second", **UNIT_PRICE)
    currency = models.CharField(max_length=3, default="usd")
    effective_from = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(auto_now_add=True)
    note = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        indexes = [models.Index(fields=["model", "-effective_from"])]
        ordering = ["model", "-effective_from"]

    def __str__(self) -> str:
        return f"{self.model}: {self.unit_price} {self.currency}/GPU-s from {self.effective_from:%Y-%m-%d %H:%M}"


class Account(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"

    organization = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="billing_account")
    plan = models.CharField(max_length=32, default="metered")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    status_reason = models.CharField(max_length=200, blank=True, default="")
    status_changed_at = models.DateTimeField(null=True, blank=True)
    spend_limit = models.DecimalField(null=True, blank=True, help_text="per calendar month; empty = none", **MONEY)
    stripe_customer_id = models.CharField(max_length=64, blank=True, default="", db_index=True)

    def __str__(self) -> str:
        return f"billing of {self.organization.name} ({self.status})"


class Segment(models.Model):
    class Source(models.TextChoices):
        LIVE = "live"
        CLIP = "clip"
        AUDIT = "audit"

    class Payer(models.TextChoices):
        CUSTOMER = "customer"
        PLATFORM = "platform"

    key = models.CharField(max_length=200, unique=True, help_text="idempotency key: source:id:segment")
    organization = models.ForeignKey(Organization, null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="usage_segments")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    source = models.CharField(max_length=8, choices=Source.choices)
    source_id = models.CharField(max_length=64)
    seq = models.PositiveIntegerField()
    model = models.CharField(max_length=64)
    share = models.FloatField(help_text="reserved device share")
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField()
    gpu_seconds = models.DecimalField(**GPU)
    unit_price = models.DecimalField(**UNIT_PRICE)
    amount = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3, default="usd")
    payer = models.CharField(max_length=8, choices=Payer.choices, default=Payer.CUSTOMER)
    test_mode = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["organization", "ended_at"]), models.Index(fields=["source", "source_id"])]

    def __str__(self) -> str:
        return f"{self.key}: {self.gpu_seconds} GPU-s, {self.amount} {self.currency} ({self.payer})"


class Meter(models.Model):
    source = models.CharField(max_length=8, choices=Segment.Source.choices)
    source_id = models.CharField(max_length=64)
    unit_price = models.DecimalField(**UNIT_PRICE)
    segments = models.PositiveIntegerField(default=0)
    gpu_seconds = models.DecimalField(default=0, **GPU)
    amount = models.DecimalField(default=0, **MONEY)
    last_end_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "source_id"], name="one_meter_per_source")]


class PeriodTotal(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="usage_totals")
    period = models.DateField(help_text="first day of the calendar month (UTC)")
    gpu_seconds = models.DecimalField(default=0, **GPU)
    amount = models.DecimalField(default=0, **MONEY)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "period"], name="one_total_per_period")]


class OutboxEvent(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"

    segment = models.OneToOneField(Segment, on_delete=models.PROTECT, related_name="outbox")
    identifier = models.CharField(max_length=200, unique=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status", "next_attempt_at"])]


class WebhookEvent(models.Model):
    event_id = models.CharField(max_length=100, unique=True)
    type = models.CharField(max_length=100)
    received_at = models.DateTimeField(auto_now_add=True)
    outcome = models.CharField(max_length=200, blank=True, default="")
