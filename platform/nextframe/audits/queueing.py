"""Asking for an audit: `request_audit` puts one on the background queue (`nextframe.audits.worker`).

POST /v1/models/{id}/audit calls it with the caller's organisation, which is held to
NEXTFRAME_AUDIT_PER_ORG_PER_HOUR new on-demand audits per hour (AuditRateLimited). Asking while an
audit of the model is pending returns that one and costs nothing; a full queue raises
AuditUnavailable and ends the new run `failed` with QUEUE_FULL_ERROR (it does not count).
Start-up audits (`nextframe.audits.server`) come through here too, without an organisation.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from nextframe.audits import worker
from nextframe.audits.models import AuditRun
from nextframe.audits.runs import mark_failed
from nextframe.audits.worker import AuditUnavailable

#: A queued or running audit younger than this is returned instead of queueing another.
PENDING_AUDIT_WINDOW_S = 600
#: The window of the per-organisation limit on on-demand audits.
ORG_LIMIT_WINDOW_S = 3600
QUEUE_FULL_ERROR = "audit queue full"


class AuditRateLimited(AuditUnavailable):
    """The organisation asked for NEXTFRAME_AUDIT_PER_ORG_PER_HOUR on-demand audits within the last hour."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def org_audit_limit() -> int:
    """NEXTFRAME_AUDIT_PER_ORG_PER_HOUR: on-demand audits per organisation per hour (0: none)."""
    return int(settings.NEXTFRAME_AUDIT_PER_ORG_PER_HOUR)


def _check_org_limit(organization: Any) -> None:
    """Raise AuditRateLimited when `organization` queued its hourly share of on-demand audits."""
    limit = org_audit_limit()
    now = timezone.now()
    window = timedelta(seconds=ORG_LIMIT_WINDOW_S)
    # Every on-demand run the organisation queued counts, whatever became of it, except a refusal
    # by a full queue (nothing ran: the caller was told to retry).
    recent = (AuditRun.objects.filter(organization=organization, kind="live", source="on_demand",
                                      created_at__gte=now - window)
              .exclude(status="failed", error=QUEUE_FULL_ERROR))
    if recent.count() < limit:
        return
    oldest = recent.order_by("created_at").first()
    retry = (oldest.created_at + window - now).total_seconds() if oldest is not None else float(ORG_LIMIT_WINDOW_S)
    raise AuditRateLimited(f"at most {limit} on-demand audits per organisation per hour", max(1.0, retry))


def request_audit(model_id: str, source: str = "on_demand", with_clip: bool = True,
                  organization: Any | None = None) -> AuditRun:
    """Queue an audit of `model_id` (raises UnknownModel, AuditUnavailable, AuditRateLimited).

    `organization` (the caller of POST /v1/models/{id}/audit) is held to
    NEXTFRAME_AUDIT_PER_ORG_PER_HOUR new audits per hour; asking while an audit of the model is
    pending returns that one and costs nothing.
    """
    from inference.engines import get_spec

    get_spec(model_id)
    with transaction.atomic():
        if organization is not None:
            # Serialises one organisation's requests (PostgreSQL row lock; SQLite writes are serial),
            # so two at once cannot both take the last slot.
            type(organization).objects.select_for_update().filter(pk=organization.pk).first()
        # One pending audit per model is enough: asking again returns it. A row left "running" by a
        # process that died stops counting after PENDING_AUDIT_WINDOW_S.
        recent = timezone.now() - timedelta(seconds=PENDING_AUDIT_WINDOW_S)
        pending = AuditRun.objects.filter(model_id=model_id, kind="live", status__in=("queued", "running"),
                                          created_at__gte=recent)
        if organization is not None:
            # Only a run the caller may read (its own, or the platform's): another organisation's
            # audit is never handed out (GET /v1/audits/{id} is tenant-scoped).
            pending = pending.filter(Q(organization=organization) | Q(organization__isnull=True))
        pending = pending.order_by("-created_at").first()
        if pending is not None:
            return pending
        if organization is not None:
            _check_org_limit(organization)
        run = AuditRun.objects.create(model_id=model_id, kind="live", source=source, status="queued",
                                      organization=organization)
    try:
        worker.worker.submit(run.pk, with_clip)  # after the commit: the worker thread reads the row
    except AuditUnavailable:
        mark_failed(run, QUEUE_FULL_ERROR)
        raise
    return run
