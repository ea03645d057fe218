"""Audits on this deployment: run them, keep them, and say what the latest one found.

- `run_audit(model_id, source)` measures a model's live path (and `run_clip_audit` its clip tier)
  and stores an AuditRun; `request_audit` queues one for the background worker (POST
  /v1/models/{id}/audit); `start_startup_audits` audits every model whose evidence is missing or
  stale, once, in the background after start-up.
- `latest_evidence(model_id)` is what GET /v1/models shows: the newest successful live audit
  measured with the deployment's audit plan (`deployment_plan`: size, fps, sessions ... from the
  settings), whatever its source, with the latest published clip-tier audit beside it, marked
  `stale` when older than NEXTFRAME_AUDIT_STALE_AFTER_S or measured on other code (`code_version`).
  Runs with any other plan (a CLI run at 16x16) are recorded but never published.
- `request_audit(model_id, organization=...)` limits on-demand audits per organisation per hour
  (NEXTFRAME_AUDIT_PER_ORG_PER_HOUR).

Settings (read with getattr, environment variables of the same name override):
NEXTFRAME_AUDIT_ON_STARTUP (True), NEXTFRAME_AUDIT_STALE_AFTER_S (86400),
NEXTFRAME_AUDIT_STARTUP_DELAY_S (10), NEXTFRAME_AUDIT_IDLE_WAIT_S (300), NEXTFRAME_AUDIT_SESSIONS (3),
NEXTFRAME_AUDIT_SIZE ("128x128"), NEXTFRAME_AUDIT_PER_ORG_PER_HOUR (6).
"""
from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from nextframe.audits.models import AuditRun

log = logging.getLogger(__name__)

#: Evidence fields GET /v1/models shows (the full record stays in AuditRun.evidence).
SUMMARY_FIELDS = ("ttff_ms", "fps_idle", "fps_sustained", "control_lag_frames", "control_lag_ms",
                  "control_lag_source", "control_lag_frames_pixels", "control_lag_frames_header",
                  "jitter_ms", "deadline_miss_rate", "state_persistence", "width", "height", "fps",
                  "sessions", "transport", "reasons")
CLIP_SUMMARY_FIELDS = ("ttff_ms", "complete_ms", "fps_sustained", "width", "height", "fps", "reasons")
#: Audits waiting for the background worker; more requests are refused (no unbounded queue).
MAX_QUEUED_AUDITS = 16
#: A queued or running audit younger than this is returned instead of queueing another.
PENDING_AUDIT_WINDOW_S = 600


#: The window of the per-organisation limit on on-demand audits.
ORG_LIMIT_WINDOW_S = 3600
QUEUE_FULL_ERROR = "audit queue full"


class AuditUnavailable(Exception):
    """An on-demand audit cannot be queued now (the queue is full)."""


class AuditRateLimited(AuditUnavailable):
    """The organisation asked for NEXTFRAME_AUDIT_PER_ORG_PER_HOUR on-demand audits within the last hour."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def setting(name: str, default: Any) -> Any:
    """A setting (read from the environment, typed, in nextframe.settings.base)."""
    return getattr(settings, name, default)


def org_audit_limit() -> int:
    """NEXTFRAME_AUDIT_PER_ORG_PER_HOUR: on-demand audits per organisation per hour (0: none)."""
    return int(setting("NEXTFRAME_AUDIT_PER_ORG_PER_HOUR", 6))


def _plan():
    from inference.audit import AuditPlan

    size = str(setting("NEXTFRAME_AUDIT_SIZE", "128x128")).lower()
    w, _, h = size.partition("x")
    return AuditPlan(sessions=int(setting("NEXTFRAME_AUDIT_SESSIONS", 3)), width=int(w), height=int(h or w))


#: The clip tier's audit: frames per clip and frame rate (size and sessions: the live plan's).
CLIP_AUDIT_FRAMES = 30
CLIP_AUDIT_FPS = 30


def _clip_plan() -> tuple[int, int, int, int, int]:
    """(width, height, fps, frames, sessions) of this deployment's clip-tier audit."""
    plan = _plan()
    return plan.width, plan.height, CLIP_AUDIT_FPS, CLIP_AUDIT_FRAMES, plan.sessions


def deployment_plan(kind: str = "live") -> dict[str, Any]:
    """The plan this deployment audits with (settings NEXTFRAME_AUDIT_SIZE, NEXTFRAME_AUDIT_SESSIONS):
    only runs measured with it are published. Same shape as `Evidence.plan`."""
    if kind == "clip":
        width, height, fps, frames, sessions = _clip_plan()
        return {"kind": "clip", "width": width, "height": height, "fps": float(fps), "frames": frames,
                "sessions": sessions}
    return _plan().as_plan()


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


def code_version(model_id: str) -> str:
    from inference.audit.version import code_version as cv

    return cv(model_id) or ""


# --- reading --------------------------------------------------------------------------------------

def _staleness(run: AuditRun) -> tuple[bool, str | None]:
    max_age = float(setting("NEXTFRAME_AUDIT_STALE_AFTER_S", 86400))
    if run.measured_at is None or timezone.now() - run.measured_at > timedelta(seconds=max_age):
        return True, f"older than {max_age:g} s"
    current = code_version(run.model_id)
    if run.code_version and current and run.code_version != current:
        return True, "measured on other engine code"
    return False, None


def _latest(model_id: str, kind: str) -> AuditRun | None:
    """The newest successful run measured with the deployment's plan (others are kept, unpublished)."""
    key = deployment_plan_key(kind)
    if not key:
        return None
    return (AuditRun.objects.filter(model_id=model_id, kind=kind, status="succeeded", plan_key=key)
            .order_by("-measured_at", "-id").first())


def latest_evidence(model_id: str) -> dict | None:
    """Summary of the latest successful live audit of `model_id` on this deployment (None: never audited)."""
    run = _latest(model_id, "live")
    if run is None:
        return None
    stale, why = _staleness(run)
    ev = run.evidence or {}
    out: dict[str, Any] = {"tier": run.tier, "declared_tier": run.declared_tier or None,
                           "disagrees": bool(run.declared_tier and run.declared_tier != run.tier)}
    out.update({k: ev.get(k) for k in SUMMARY_FIELDS})
    out.update({"measured_at": run.measured_at.isoformat() if run.measured_at else None, "source": run.source,
                "stale": stale, "stale_reason": why, "audit_id": run.pk, "code_version": run.code_version})
    clip = _latest(model_id, "clip")
    if clip is not None:
        cstale, cwhy = _staleness(clip)
        cev = clip.evidence or {}
        out["clip"] = {"tier": clip.tier, **{k: cev.get(k) for k in CLIP_SUMMARY_FIELDS},
                       "measured_at": clip.measured_at.isoformat() if clip.measured_at else None,
                       "stale": cstale, "stale_reason": cwhy, "audit_id": clip.pk}
    return out


def needs_audit(model_id: str) -> bool:
    run = _latest(model_id, "live")
    return run is None or _staleness(run)[0]


# --- recording ------------------------------------------------------------------------------------

def record(evidence: dict, source: str, kind: str = "live", run: AuditRun | None = None) -> AuditRun:
    """Store a finished audit's evidence (from any transport: the CLI records its own too).

    Whatever the source, the run is published (`is_published`) only when `evidence["plan"]` is the
    deployment's audit plan; evidence without a plan is kept but never published.
    """
    run = run or AuditRun(model_id=evidence["model"], kind=kind, source=source)
    run.status = "succeeded"
    run.tier = evidence.get("tier") or ""
    run.declared_tier = evidence.get("declared_tier") or ""
    run.evidence = evidence
    run.code_version = evidence.get("code_version") or code_version(run.model_id)
    from inference.audit.evidence import plan_key

    run.plan_key = plan_key(evidence.get("plan")) or ""
    measured = parse_datetime(evidence.get("measured_at") or "") if evidence.get("measured_at") else None
    run.measured_at = measured or timezone.now()
    run.error = ""
    run.save()
    return run


def _fail(run: AuditRun, message: str) -> AuditRun:
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
    return _measure(run, model_id, source, "live", lambda: asyncio.run(audit_live(transport, model_id, _plan())),
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

    def measure():
        width, height, fps, frames, sessions = _clip_plan()
        with clip_reservation(model_id, width, height, fps) as guard:
            return audit_clip(model_id, width=width, height=height, fps=fps, frames=frames, sessions=sessions,
                              guard=guard)

    return _measure(run, model_id, source, "clip", measure, expected=(AuditError,))


def _measure(run: AuditRun, model_id: str, source: str, kind: str, measure, expected: tuple) -> AuditRun:
    """Run one audit and store its evidence; any failure ends the run `failed`, never `running`."""
    try:
        ev = measure()
    except expected as exc:
        log.warning("%s audit of %s failed: %s", kind, model_id, exc)
        return _fail(run, str(exc))
    except Exception as exc:  # a background job must end in a state, never stay "running"
        log.exception("%s audit of %s failed", kind, model_id)
        return _fail(run, f"{type(exc).__name__}: {exc}")
    ev.code_version = code_version(model_id)
    return record(ev.as_dict(), source, kind=kind, run=run)


# --- background work ------------------------------------------------------------------------------

class _Worker:
    """One low-priority thread that runs queued audits one at a time.

    The thread ends after `idle_s` without work, and whether it ends is decided under the same lock
    `submit` holds: a submit that lands between the idle timeout and the thread's end either sees
    the thread gone (and starts another) or leaves its item where the thread, re-checking the queue
    under that lock, finds it. Deciding outside the lock left such a run `queued` forever.
    """

    def __init__(self, idle_s: float = 60.0) -> None:
        self._q: queue.Queue[tuple[int, bool]] = queue.Queue(maxsize=MAX_QUEUED_AUDITS)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._idle_s = idle_s

    def submit(self, run_id: int, with_clip: bool) -> None:
        with self._lock:
            try:
                self._q.put_nowait((run_id, with_clip))
            except queue.Full:
                raise AuditUnavailable(f"{MAX_QUEUED_AUDITS} audits are already queued") from None
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="nf-audit", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        _lower_priority()
        while True:
            try:
                run_id, with_clip = self._q.get(timeout=self._idle_s)
            except queue.Empty:
                with self._lock:
                    if self._q.empty():
                        if self._thread is threading.current_thread():
                            self._thread = None  # from here on, submit starts a new thread
                        return
                continue  # something was submitted after the timeout: run it
            try:
                run = AuditRun.objects.get(pk=run_id)
                if run.source == "startup":
                    wait_for_quiet_devices(float(setting("NEXTFRAME_AUDIT_IDLE_WAIT_S", 300.0)))
                run_audit(run.model_id, run.source, run=run)
                if with_clip:
                    run_clip_audit(run.model_id, run.source, organization_id=run.organization_id)
            except Exception:
                log.exception("background audit %s failed", run_id)
            finally:
                close_old_connections()


def wait_for_quiet_devices(max_wait_s: float, poll_s: float = 1.0) -> bool:
    """Wait (at most `max_wait_s`) until no live session holds a pool lease; True when quiet.

    Background audits are small and preemptible, but they still take CPU: a start-up audit waits
    for a moment without live sessions, and runs anyway after the wait (evidence must not stay stale
    forever on a node that is never idle). On-demand audits do not wait: someone asked.
    """
    from nextframe.live.host import get_host

    deadline = time.monotonic() + max_wait_s
    while True:
        try:
            busy = any(row.get("reserved_live", 0.0) > 0 for row in get_host().pool.usage().values())
        except Exception:  # the pool is unreachable: the audit's own reservation will say so
            return False
        if not busy:
            return True
        if time.monotonic() >= deadline:
            return False
        threading.Event().wait(poll_s)


def _lower_priority() -> None:
    # Linux: a thread has its own nice value. The audit's own work (decoding, comparing frames) then
    # yields the CPU to live sessions' threads; the engine steps run on the device runtime.
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass


_worker = _Worker()


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
        _worker.submit(run.pk, with_clip)  # after the commit: the worker thread reads the row
    except AuditUnavailable:
        _fail(run, QUEUE_FULL_ERROR)
        raise
    return run


def queue_startup_audits() -> list[str]:
    """Queue audits of every model whose evidence is missing or stale; returns their ids."""
    from inference.engines import list_specs

    queued = []
    for spec in list_specs():
        if needs_audit(spec.id):
            request_audit(spec.id, source="startup")
            queued.append(spec.id)
    return queued


def start_startup_audits(delay_s: float | None = None) -> threading.Thread:
    """After `delay_s` (the server is up by then), queue_startup_audits() in a background thread."""
    delay = float(setting("NEXTFRAME_AUDIT_STARTUP_DELAY_S", 10.0)) if delay_s is None else delay_s

    def later() -> None:
        threading.Event().wait(delay)
        try:
            queue_startup_audits()
        except Exception:
            log.exception("start-up audits could not be queued")
        finally:
            close_old_connections()

    t = threading.Thread(target=later, name="nf-audit-startup", daemon=True)
    t.start()
    return t
