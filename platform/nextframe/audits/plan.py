"""The audit plan of this deployment: what an audit measures here, and which runs count.

The plan comes from the typed settings NEXTFRAME_AUDIT_SIZE and NEXTFRAME_AUDIT_SESSIONS
(nextframe.settings.base). Only runs measured with it are published (`is_published`); a run with
any other plan (a CLI run at 16x16) is recorded but never shown by GET /v1/models.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.conf import settings

from nextframe.audits.models import AuditRun

if TYPE_CHECKING:
    from inference.audit import AuditPlan

log = logging.getLogger(__name__)

#: The clip tier's audit: frames per clip and frame rate (size and sessions: the live plan's).
CLIP_AUDIT_FRAMES = 30
CLIP_AUDIT_FPS = 30


def live_plan() -> AuditPlan:
    """The live-path audit plan from the settings (ValueError when they are unusable)."""
    from inference.audit import AuditPlan

    size = str(settings.NEXTFRAME_AUDIT_SIZE).lower()
    w, _, h = size.partition("x")
    return AuditPlan(sessions=int(settings.NEXTFRAME_AUDIT_SESSIONS), width=int(w), height=int(h or w))


def clip_plan() -> tuple[int, int, int, int, int]:
    """(width, height, fps, frames, sessions) of this deployment's clip-tier audit."""
    plan = live_plan()
    return plan.width, plan.height, CLIP_AUDIT_FPS, CLIP_AUDIT_FRAMES, plan.sessions


def deployment_plan(kind: str = "live") -> dict[str, Any]:
    """The plan this deployment audits with (settings NEXTFRAME_AUDIT_SIZE, NEXTFRAME_AUDIT_SESSIONS):
    only runs measured with it are published. Same shape as `Evidence.plan`."""
    if kind == "clip":
        width, height, fps, frames, sessions = clip_plan()
        return {"kind": "clip", "width": width, "height": height, "fps": float(fps), "frames": frames,
                "sessions": sessions}
    return live_plan().as_plan()


def deployment_plan_key(kind: str = "live") -> str:
    """Canonical key of `deployment_plan(kind)`; "" when the audit settings are unusable (nothing is
    published then, and GET /v1/models shows declared tiers instead of failing)."""
    from inference.audit.evidence import plan_key

    try:
        return plan_key(deployment_plan(kind)) or ""
    except ValueError as exc:
        log.error("the audit settings are unusable (%s): no audit evidence is published", exc)
        return ""


def is_published(run: AuditRun) -> bool:
    """Whether `run` counts as this deployment's evidence: measured with the deployment's plan."""
    return bool(run.plan_key) and run.plan_key == deployment_plan_key(run.kind)
