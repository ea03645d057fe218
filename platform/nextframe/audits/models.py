"""AuditRun: one measurement of one model's tier on this deployment (live path or clip tier).

Every run is kept; GET /v1/models publishes only runs measured with the deployment's audit plan
(`plan_key`), so an ad-hoc CLI run at another size or rate never replaces the published evidence.
"""
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
    # The canonical plan the run was measured with (`inference.audit.evidence.plan_key`); only runs
    # whose plan is the deployment's audit plan are published in GET /v1/models.
    plan_key = models.CharField(max_length=400, blank=True, default="")
    error = models.TextField(blank=True, default="")
    # Who asked for an on-demand audit (None: start-up or CLI): the per-organisation hourly limit counts these.
    organization = models.ForeignKey("tenancy.Organization", null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    measured_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["model_id", "kind", "status", "-measured_at"])]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"audit {self.pk} of {self.model_id} ({self.kind}): {self.status} {self.tier}"
