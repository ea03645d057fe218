"""Reading audits: what the latest published audit of a model found, and whether it is stale.

`latest_evidence(model_id)` is what GET /v1/models shows: the newest successful live audit
measured with the deployment's plan (`nextframe.audits.plan`), whatever its source, with the latest
published clip-tier audit beside it, marked `stale` when older than NEXTFRAME_AUDIT_STALE_AFTER_S
or measured on other engine code (`code_version`). `needs_audit` says the same for start-up audits.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from nextframe.audits.models import AuditRun
from nextframe.audits.plan import deployment_plan_key

#: Evidence fields GET /v1/models shows (the full record stays in AuditRun.evidence).
SUMMARY_FIELDS = ("ttff_ms", "fps_idle", "fps_sustained", "control_lag_frames", "control_lag_ms",
                  "control_lag_source", "control_lag_frames_pixels", "control_lag_frames_header",
                  "jitter_ms", "deadline_miss_rate", "state_persistence", "width", "height", "fps",
                  "sessions", "transport", "reasons")
CLIP_SUMMARY_FIELDS = ("ttff_ms", "complete_ms", "fps_sustained", "width", "height", "fps", "reasons")


def code_version(model_id: str) -> str:
    """The version of `model_id`'s engine code now ("" when unknown): evidence of other code is stale."""
    from inference.audit.version import code_version as cv

    return cv(model_id) or ""


def staleness(run: AuditRun) -> tuple[bool, str | None]:
    """(stale, why): older than NEXTFRAME_AUDIT_STALE_AFTER_S, or measured on other engine code."""
    max_age = float(settings.NEXTFRAME_AUDIT_STALE_AFTER_S)
    if run.measured_at is None or timezone.now() - run.measured_at > timedelta(seconds=max_age):
        return True, f"older than {max_age:g} s"
    current = code_version(run.model_id)
    if run.code_version and current and run.code_version != current:
        return True, "measured on other engine code"
    return False, None


def latest_published(model_id: str, kind: str) -> AuditRun | None:
    """The newest successful run measured with the deployment's plan (others are kept, unpublished)."""
    key = deployment_plan_key(kind)
    if not key:
        return None
    return (AuditRun.objects.filter(model_id=model_id, kind=kind, status="succeeded", plan_key=key)
            .order_by("-measured_at", "-id").first())


def latest_evidence(model_id: str) -> dict[str, Any] | None:
    """Summary of the latest successful live audit of `model_id` on this deployment (None: never audited)."""
    run = latest_published(model_id, "live")
    if run is None:
        return None
    stale, why = staleness(run)
    ev = run.evidence or {}
    out: dict[str, Any] = {"tier": run.tier, "declared_tier": run.declared_tier or None,
                           "disagrees": bool(run.declared_tier and run.declared_tier != run.tier)}
    out.update({k: ev.get(k) for k in SUMMARY_FIELDS})
    out.update({"measured_at": run.measured_at.isoformat() if run.measured_at else None, "source": run.source,
                "stale": stale, "stale_reason": why, "audit_id": run.pk, "code_version": run.code_version})
    clip = latest_published(model_id, "clip")
    if clip is not None:
        cstale, cwhy = staleness(clip)
        cev = clip.evidence or {}
        out["clip"] = {"tier": clip.tier, **{k: cev.get(k) for k in CLIP_SUMMARY_FIELDS},
                       "measured_at": clip.measured_at.isoformat() if clip.measured_at else None,
                       "stale": cstale, "stale_reason": cwhy, "audit_id": clip.pk}
    return out


def needs_audit(model_id: str) -> bool:
    """Whether `model_id` has no published live evidence, or only stale evidence."""
    run = latest_published(model_id, "live")
    return run is None or staleness(run)[0]
