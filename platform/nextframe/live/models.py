"""Persisted record of every live session: who, which model, when, why it ended, what it used."""
from __future__ import annotations

import uuid

from django.db import models

from nextframe.tenancy.models import ApiKey, Organization


def new_session_id() -> str:
    return f"ls_{uuid.uuid4().hex}"


class LiveSession(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        ENDED = "ended"

    id = models.CharField(primary_key=True, max_length=40, default=new_session_id, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="live_sessions")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="live_sessions")
    model = models.CharField(max_length=64)
    tier = models.CharField(max_length=16)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    fps = models.PositiveIntegerField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.ACTIVE)
    device = models.CharField(max_length=128, blank=True)
    share = models.FloatField(default=0.0)
    node = models.CharField(max_length=128, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=16, blank=True)
    # Written about once a second while the session runs, so a crash loses at most that much.
    last_seen_at = models.DateTimeField(auto_now_add=True)
    frames = models.PositiveIntegerField(default=0)
    gpu_seconds = models.DecimalField(max_digits=20, decimal_places=6, default=0)
    cost = models.DecimalField(max_digits=14, decimal_places=6, default=0)
    metrics = models.JSONField(default=dict)

    class Meta:
        indexes = [
            models.Index(fields=["organization", "-created_at"]),
            models.Index(fields=["status", "last_seen_at"]),
        ]


class Redirect(models.Model):
    """A `session.redirect` ticket bound to the reservation it hands over (nextframe.live.redirect).

    The ticket is an ordinary single-use tenancy ticket (redeemed the same way, purged with it);
    this row says which node may redeem it and which pool lease that node then adopts."""

    ticket = models.OneToOneField("tenancy.Ticket", on_delete=models.CASCADE, related_name="redirect")
    node = models.CharField(max_length=128)
    reservation = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
