"""Running audits and keeping them: measure a model on this deployment, store what it found.

- `run_audit(model_id, source)` measures a model's live path through the deployment's own runtimes
  and pool (`DeploymentTransport`); `run_clip_audit` measures its clip tier under a clip-priority
  pool lease. Both store an AuditRun and always end it `succeeded` or `failed`, never `running`.
- `record(evidence, source)` stores a finished audit's evidence from any transport (the CLI records
  its own runs too); whether it is published depends on its plan (`nextframe.audits.plan`).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from nextframe.audits.evidence import code_version
from nextframe.audits.models import AuditRun
from nextframe.audits.plan import clip_plan, live_plan

log = logging.getLogger(__name__)


def record(evidence: dict[str, Any], source: str, kind: str = "live", run: AuditRun | None = None) -> AuditRun:
    """Store a finished audit's evidence (from any transport: the CLI records its own too).

    Whatever the source, the run is published (`is_published`) only when `evidence["plan"]` is the
    deployment's audit plan; evidence without a plan is kept but never published.
    """
    from inference.audit.evidence import plan_key

    run = run or AuditRun(model_id=evidence["model"], kind=kind, source=source)
    run.status = "succeeded"
    run.tier = evidence.get("tier") or ""
    run.declared_tier = evidence.get("declared_tier") or ""
    run.evidence = evidence
    run.code_version = evidence.get("code_version") or code_version(run.model_id)
    run.plan_key = plan_key(evidence.get("plan")) or ""
    measured = parse_datetime(evidence.get("measured_at") or "") if evidence.get("measured_at") else None
    run.measured_at = measured or timezone.now()
    run.error = ""
    run.save()
    return run


def mark_failed(run: AuditRun, message: str) -> AuditRun:
    """End `run` as failed with `message` (kept short enough for the column)."""
    run.status, run.error = "failed", message[:2000]
    run.save(update_fields=["status", "error"])
    return run


def run_audit(model_id: str, source: str, run: AuditRun | None = None, transport: Any | None = None) -> AuditRun:
    """Measure `model_id`'s live path on this deployment and store the result (failed runs too)."""
    from inference.audit import AuditError, audit_live
    from inference.engines import EngineError, get_spec
    from nextframe.audits.transport import DeploymentTransport

    get_spec(model_id)  # UnknownModel before anything is written
    run = run or AuditRun.objects.create(model_id=model_id, kind="live", source=source)
    run.status = "running"
    run.save(update_fields=["status"])
    transport = transport or DeploymentTransport()
    return _measure(run, model_id, "live", lambda: asyncio.run(audit_live(transport, model_id, live_plan())),
                    expected=(AuditError, EngineError))


def run_clip_audit(model_id: str, source: str, organization_id: int | None = None) -> AuditRun:
    """Measure `model_id`'s clip tier (first frame deliverable vs last frame computed) and store it.

    It renders in this process under a clip-priority pool lease (`clip_reservation`), like a clip job.
    `organization_id`: who asked (on demand), so the clip run is that organisation's like its live run.
    """
    from inference.audit import AuditError
    from inference.audit.clip import audit_clip
    from inference.engines import get_spec
    from nextframe.audits.transport import clip_reservation

    get_spec(model_id)
    run = AuditRun.objects.create(model_id=model_id, kind="clip", source=source, status="running",
                                  organization_id=organization_id)

    def measure() -> Any:
        width, height, fps, frames, sessions = clip_plan()
        with clip_reservation(model_id, width, height, fps) as guard:
            return audit_clip(model_id, width=width, height=height, fps=fps, frames=frames, sessions=sessions,
                              guard=guard)

    return _measure(run, model_id, "clip", measure, expected=(AuditError,))


def _measure(run: AuditRun, model_id: str, kind: str, measure: Callable[[], Any],
             expected: tuple[type[Exception], ...]) -> AuditRun:
    """Run one audit and store its evidence; any failure ends the run `failed`, never `running`."""
    try:
        ev = measure()
    except expected as exc:
        log.warning("%s audit of %s failed: %s", kind, model_id, exc)
        return mark_failed(run, str(exc))
    except Exception as exc:  # a background job must end in a state, never stay "running"
        log.exception("%s audit of %s failed", kind, model_id)
        return mark_failed(run, f"{type(exc).__name__}: {exc}")
    ev.code_version = code_version(model_id)
    return record(ev.as_dict(), run.source, kind=kind, run=run)
