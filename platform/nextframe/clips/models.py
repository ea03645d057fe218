"""Clip jobs of the fast-batch tier: the job row (a state machine), its transitions, per-org limits.

A `Clip` is rendered by a Celery task that claims it with a fresh `claim` token; every later write
by that attempt is conditional on the token (`UPDATE ... WHERE claim = mine`), so an attempt that
was taken over (its worker died or stalled) can never finish the job a second time.
"""
from __future__ import annotations

import uuid

from django.db import models

from nextframe.tenancy.models import Organization

TIER = "fast-batch"


class ClipLimits(models.Model):
    """Per-organisation limits of the clip tier; an organisation without a row gets the defaults."""

    organization = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="clip_limits")
    max_frames = models.PositiveIntegerField(default=600, help_text="frames per clip")
    max_duration_s = models.FloatField(default=30.0, help_text="seconds of video per clip")
    max_width = models.PositiveIntegerField(default=1280)
    max_height = models.PositiveIntegerField(default=1280)
    max_active_jobs = models.PositiveIntegerField(default=10, help_text="queued + running clips at once")


class Clip(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        BLOCKED = "blocked"
        CANCELLED = "cancelled"

    ACTIVE = (Status.QUEUED, Status.RUNNING)
    TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.BLOCKED, Status.CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="clips")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    # What was asked for (validated and resolved at creation).
    model = models.CharField(max_length=64)
    prompt = models.TextField(blank=True, default="")
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    fps = models.PositiveIntegerField()
    frames = models.PositiveIntegerField()
    seed = models.BigIntegerField(default=0)
    params = models.JSONField(default=dict)
    input_name = models.CharField(max_length=300, blank=True, default="", help_text="storage name of the upload")
    # Progress and result.
    frames_done = models.PositiveIntegerField(default=0)
    video_name = models.CharField(max_length=300, blank=True, default="", help_text="storage name of the MP4")
    video_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    codec = models.CharField(max_length=32, blank=True, default="")
    error_code = models.CharField(max_length=64, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    # The state machine's bookkeeping.
    claim = models.CharField(max_length=64, blank=True, default="", help_text="token of the attempt that owns the job")
    claim_host = models.CharField(max_length=255, blank=True, default="")
    claim_pid = models.PositiveIntegerField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="times a worker claimed the job")
    preemptions = models.PositiveIntegerField(default=0, help_text="attempts ended for capacity: preempted by a live session, or none free")
    failures = models.PositiveIntegerField(default=0, help_text="attempts ended by an error (bounded)")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True, help_text="earliest retry (capacity, preemption)")
    # Honest timings (all wall clock, UTC).
    created_at = models.DateTimeField(db_index=True)
    first_started_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True, help_text="start of the attempt that finished")
    first_frame_at = models.DateTimeField(null=True, blank=True, help_text="the playable file exists")
    finished_at = models.DateTimeField(null=True, blank=True)
    render_s = models.FloatField(null=True, blank=True,
                                 help_text="run seconds of the final attempt: its pool lease, reserve to release")
    # Usage: the share of the attempt that produced the video; gpu_seconds and cost are the sums of
    # the clip's customer-paid ledger segments (one per attempt that held capacity).
    share = models.FloatField(default=0.0, help_text="device share reserved from the pool")
    gpu_seconds = models.DecimalField(max_digits=14, decimal_places=6, default=0)
    # The customer-paid segments of the ledger behind this clip, summed (billing.ledger; docs/billing.md).
    cost = models.DecimalField(max_digits=20, decimal_places=6, default=0)
    api_key = models.ForeignKey("tenancy.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                help_text="the key that created it (test-mode keys are priced 0)")
    # Soft delete: a deleted clip's files are gone and the API no longer shows it, but the row stays,
    # because its gpu_seconds are usage of the month (nextframe.usage.gpu_seconds_this_month).
    deleted_at = models.DateTimeField(null=True, blank=True, help_text="deleted by the customer (files removed)")

    class Meta:
        indexes = [models.Index(fields=["organization", "-created_at"])]

    def __str__(self) -> str:
        return f"clip {self.id} ({self.status})"

    @classmethod
    def visible(cls, org: Organization | int) -> models.QuerySet:
        """The organisation's clips as the API sees them: deleted ones are not there."""
        return cls.objects.filter(organization=org, deleted_at__isnull=True)


class ClipEvent(models.Model):
    """One state transition of a clip: the audit trail the worker tests count (exactly one success)."""

    clip = models.ForeignKey(Clip, on_delete=models.CASCADE, related_name="events")
    from_status = models.CharField(max_length=10)
    to_status = models.CharField(max_length=10)
    attempt = models.PositiveIntegerField(default=0)
    detail = models.CharField(max_length=200, blank=True, default="")
    at = models.DateTimeField()

    class Meta:
        ordering = ("at", "pk")
