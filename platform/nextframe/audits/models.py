"""AuditRun: one measurement of one model's tier on this deployment (live path or clip tier)."""
from __future__ import annotations

from django.db import models


class AuditRun(models.Model):
    SOURCES = [("startup", "startup"), ("on_demand", "on_demand"), ("cli", "cli")]
    KINDS = [("live", "live"), ("clip", "clip")]
    STATUSES = [("queued", "queued"), ("running", "running"), ("succeeded", "succeeded"), ("failed", "failed")]

    model_id = models.CharField(max_length=100, db_index=True)
    kind = models.CharField(max_length=8, choices=KINDS, default="live")
    status = models.CharField(max_length=12, choices=STATUSES, default="queued")
    source = models.CharField(max_length=12, choices=SOURCES)
    tier = models.CharField(max_length=16, blank=True, default="")
    declared_tier = models.CharField(max_length=16, blank=True, default="")
    evidence = models.JSONField(default=dict, blank=True)
    code_version = models.CharField(max_length=32, blank=True, default="")
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    measured_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["model_id", "kind", "status", "-measured_at"])]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"audit {self.pk} of {self.model_id} ({self.kind}): {self.status} {self.tier}"
