"""The render state machine of one clip job, keyed by job id: queued -> running -> succeeded | failed |
blocked | cancelled (and running -> queued when a live session preempts the clip's capacity).

`run_clip(clip_id)` is what the Celery task calls; it needs no broker and is idempotent:
- a job already finished or cancelled: nothing happens;
- a job `running` under another attempt whose heartbeat is fresh: nothing now, look again when it
  would turn stale (the other attempt is probably alive);
- a job `running` with a stale heartbeat, or owned by a dead process on this host: taken over;
- otherwise the job is claimed with a new token. Every later write of this attempt is a
  compare-and-swap on that token, so an attempt that was taken over can never finish the job twice.

Capacity comes from the GPU pool at priority `clip`: a live reservation may preempt it (see
docs/clips.md). A preempted or capacity-starved job goes back to `queued` and is retried later
without counting as a failure; errors are retried at most CLIP_MAX_ATTEMPTS times.
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from nextframe import usage
from nextframe.clips import files
from nextframe.clips.models import Clip, ClipEvent

log = logging.getLogger(__name__)
S = Clip.Status


@dataclass(frozen=True)
class Outcome:
    """What the task should do next: nothing, or look at the job again after `delay_s`."""

    action: str  # "done" | "noop" | "retry"
    status: str
    delay_s: float = 0.0
    reason: str = ""


class _Stop(Exception):
    """Rendering must stop at this batch boundary; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- ownership ------------------------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed child nobody reaped yet is a zombie: it will never heartbeat again.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def owner_is_dead(clip: Clip, now, stale_after_s: float, host: str) -> bool:
    """Whether the attempt holding a running job has stopped: no heartbeat for `stale_after_s`, or its
    process on this very host is gone (the fast path after a worker is killed)."""
    if clip.heartbeat_at is None or (now - clip.heartbeat_at).total_seconds() >= stale_after_s:
        return True
    return clip.claim_host == host and clip.claim_pid is not None and not _pid_alive(clip.claim_pid)


def _event(clip_id, from_status: str, to_status: str, attempt: int, detail: str = "") -> None:
    ClipEvent.objects.create(clip_id=clip_id, from_status=from_status, to_status=to_status,
                             attempt=attempt, detail=detail[:200], at=timezone.now())


def claim(clip_id, host: str, pid: int) -> tuple[Clip | None, Outcome | None]:
    """Take the job for a new attempt; returns (clip, None) when claimed, else (None, outcome)."""
    stale_after_s = settings.CLIP_STALE_AFTER_S
    now = timezone.now()
    clip = Clip.objects.filter(pk=clip_id).first()
    if clip is None:
        return None, Outcome("noop", "missing", reason="no such clip (deleted)")
    if clip.status in Clip.TERMINAL:
        return None, Outcome("noop", clip.status, reason="already finished")
    if clip.status == S.QUEUED and clip.not_before and clip.not_before > now:
        return None, Outcome("retry", clip.status, (clip.not_before - now).total_seconds(), "not yet due")
    if clip.status == S.RUNNING and not owner_is_dead(clip, now, stale_after_s, host):
        wait = stale_after_s - (now - clip.heartbeat_at).total_seconds()
        return None, Outcome("retry", clip.status, max(1.0, wait), "running elsewhere")
    token = uuid.uuid4().hex
    with transaction.atomic():
        # Compare-and-swap on the state we looked at: of two workers racing, exactly one wins.
        won = Clip.objects.filter(pk=clip_id, status=clip.status, claim=clip.claim).update(
            status=S.RUNNING, claim=token, claim_host=host, claim_pid=pid, heartbeat_at=now,
            attempts=F("attempts") + 1, started_at=now, frames_done=0, not_before=None,
            first_started_at=clip.first_started_at or now,
        )
        if won:
            detail = "taken over from a dead attempt" if clip.status == S.RUNNING else ""
            _event(clip_id, clip.status, S.RUNNING, clip.attempts + 1, detail)
    if not won:
        return None, Outcome("retry", clip.status, 1.0, "lost a claim race")
    clip.refresh_from_db()
    return clip, None


def _cas(clip: Clip, **changes) -> bool:
    """Write `changes` only while this attempt still owns the running job."""
    return bool(Clip.objects.filter(pk=clip.pk, status=S.RUNNING, claim=clip.claim).update(**changes))


def _transition(clip: Clip, to: str, detail: str = "", **changes) -> bool:
    with transaction.atomic():
        if not _cas(clip, status=to, **changes):
            return False
        _event(clip.pk, S.RUNNING, to, clip.attempts, detail)
    return True


# --- the attempt ----------------------------------------------------------------------------------

def run_clip(clip_id, host: str | None = None, pid: int | None = None) -> Outcome:
    """Advance one clip job as far as it can go in this process (see the module docstring)."""
    clip, outcome = claim(clip_id, host or socket.gethostname(), pid or os.getpid())
    if outcome is not None:
        return outcome
    assert clip is not None  # claim() returns the clip whenever it returns no outcome
    outcome = _attempt(clip)
    if outcome.action == "done" and clip.input_name:
        # Whatever ended the job (success, any failure), its upload is of no more use: storage holds
        # only what can still be used. (A cancelled job's files are removed by cancel_clip.)
        files.delete(clip.input_name)
        Clip.objects.filter(pk=clip.pk).update(input_name="")
    return outcome


def _attempt(clip: Clip) -> Outcome:
    """One claimed attempt: reserve capacity, render, release; every path returns an Outcome."""
    max_attempts = int(settings.CLIP_MAX_ATTEMPTS)
    # Attempts that ended neither by an error nor by capacity: their worker died mid-job. A job that
    # keeps killing its workers is stopped here instead of taking every worker down in turn.
    deaths = clip.attempts - 1 - clip.preemptions - clip.failures
    if clip.failures >= max_attempts or deaths >= max_attempts:
        _fail(clip, "too_many_attempts", f"gave up after {clip.attempts} attempts")
        return Outcome("done", S.FAILED, reason="too many attempts")
    from inference.pool import CapacityUnavailable, ConcurrencyLimit
    from nextframe.capacity import get_pool

    try:
        pool = get_pool()
        share, memory = _cost(clip)
        lease = pool.reserve(str(clip.organization_id), f"clip-{clip.pk}", share, memory_bytes=memory,
                             priority="clip")
        leased = _LeaseClock(pool, lease)
    except (CapacityUnavailable, ConcurrencyLimit) as exc:
        delay = float(getattr(exc, "retry_after_s", settings.CLIP_RETRY_DELAY_S))
        return _requeue(clip, delay, "capacity_unavailable", preempted=True)
    except Exception as exc:  # noqa: BLE001 - pool backend unreachable, engine gone: retried, bounded
        log.exception("clip %s could not reserve capacity", clip.pk)
        return _retry_after_error(clip, exc)
    outcome: Outcome | None = None
    try:
        outcome = _render(clip, pool, leased, share)
        return outcome
    finally:
        held_s = leased.release()
        if not leased.billed:
            _bill_attempt(clip, share, held_s, outcome)


# Outcomes of an attempt that the customer pays for besides a success: the job failed for a reason
# in its own request (docs/billing.md, "Who pays for what").
_CUSTOMER_FAILURES = ("bad video", "render error")


def _bill_attempt(clip: Clip, share: float, held_s: float, outcome: Outcome | None) -> None:
    """Write the segment of an attempt that held capacity and did not succeed. The customer pays for
    a failure caused by the request and for an attempt it cancelled; the platform pays for
    preemption, a lost lease, crashes and transient errors (retried or not) and takeovers. Never
    raises: the attempt's outcome stands even when its usage cannot be written (it is logged)."""
    customer = outcome is not None and (outcome.status == S.SUCCEEDED or outcome.reason in _CUSTOMER_FAILURES)
    try:
        if not customer and outcome is not None and outcome.status == "abandoned":
            customer = Clip.objects.filter(pk=clip.pk, status=S.CANCELLED).exists()
        usage.record_clip(clip.pk, share, held_s, usage.CUSTOMER if customer else usage.PLATFORM, clip.attempts)
    except Exception:  # noqa: BLE001 - the database may be away; the outcome is already written
        log.exception("clip %s attempt %s: its usage could not be written", clip.pk, clip.attempts)


class _LeaseClock:
    """The attempt's pool lease and its lifetime: the one interval a clip's run_s, fps_throughput
    and gpu_seconds are measured over (capacity held = capacity billed). Release is idempotent."""

    def __init__(self, pool, lease) -> None:
        self.pool = pool
        self.lease = lease
        self.started_at = timezone.now()
        self._t0 = time.monotonic()
        self.held_s: float | None = None
        self.billed = False  # the attempt's usage segment is written

    def release(self) -> float:
        """Give the capacity back (once); returns the seconds it was held."""
        if self.held_s is None:
            self.held_s = time.monotonic() - self._t0
            self.pool.release(self.lease)
        return self.held_s


def _cost(clip: Clip) -> tuple[float, int]:
    from inference.engines import get_spec

    cost = get_spec(clip.model).cost(clip.width, clip.height, clip.fps)
    # A clip renders as fast as its share allows; a floor keeps a tiny clip from reserving nothing.
    return max(cost.compute_share, settings.CLIP_MIN_SHARE), cost.memory_bytes


def _render(clip: Clip, pool, leased: _LeaseClock, share: float) -> Outcome:
    import av

    from inference.batch import render_frames
    from inference.engines import EngineError, get_spec
    from inference.pool import LeaseKeeper, LeaseLost
    from inference.video import BadVideo, VideoEncodeError, encode_mp4
    from moderation.clips import ClipBlocked, ClipModeration
    from nextframe.clips.render import batch_size, checkpointed

    holder = {"lease": leased.lease, "lost": None}

    def on_lost(res, error) -> None:
        holder["lost"] = error

    def before_batch(done: int) -> None:
        # The keeper thread heartbeats between batches too (a slow batch must not let the lease
        # expire); here we learn at a batch boundary that the lease is gone, and stop.
        if holder["lost"] is not None:
            raise holder["lost"]
        holder["lease"] = leased.lease = pool.heartbeat(holder["lease"])  # raises LeaseLost when preempted
        if not _cas(clip, heartbeat_at=timezone.now(), frames_done=done):
            raise _Stop("no longer owned (cancelled or taken over)")

    keeper = LeaseKeeper(pool, on_lost=on_lost, refresh_devices=False)
    keeper.add(leased.lease)
    keeper.start()
    workdir = work_dir(clip)
    local = workdir / "video.mp4"
    stored = ""
    source = None
    try:
        batch = batch_size(int(settings.CLIP_BATCH_FRAMES), get_spec(clip.model).chunk_frames)
        # Every uploaded and every rendered frame is checked before the video can be released.
        moderation = ClipModeration(clip.organization_id, clip.pk)
        inputs = None
        if clip.input_name:
            # Decoded lazily, batch by batch, while rendering: memory does not grow with the clip.
            from inference.video import iter_video_frames

            source = files.storage().open(clip.input_name, "rb")
            # Decoded at the source's aspect ratio (cover=True), so that render_frames' fit_to_size
            # centre-crops it to the clip's; scaling straight to the clip size would squash it.
            inputs = moderation.inputs(iter_video_frames(source, clip.width, clip.height, cover=True))
        frames = moderation.outputs(render_frames(clip.model, clip.width, clip.height, clip.fps, clip.frames,
                                                  clip.prompt, clip.params, clip.seed, batch, inputs))
        result = encode_mp4(checkpointed(frames, batch, before_batch), local, clip.fps, clip.width, clip.height)
        if result.frames < clip.frames:
            raise BadVideo("too_short", f"the input ran out after {result.frames} of {clip.frames} frames")
        before_batch(clip.frames)  # last check before publishing: still ours, lease still held
        with open(local, "rb") as fh:
            stored = files.save(f"{files.clip_prefix(clip.organization_id, clip.pk)}/video-{clip.attempts}.mp4", fh)
        playable_at = timezone.now()
        keeper.stop()  # before the release: the keeper must not heartbeat a lease given back
        run_s = leased.release()
        with transaction.atomic():  # the outcome and its usage are written together or not at all
            if _transition(clip, S.SUCCEEDED, video_name=stored, video_bytes=result.bytes, codec=result.codec,
                           frames_done=result.frames, first_frame_at=playable_at, started_at=leased.started_at,
                           finished_at=timezone.now(), render_s=run_s, share=share, claim=""):
                usage.record_clip(clip.pk, share, run_s, usage.CUSTOMER, clip.attempts)
                leased.billed = True
                return Outcome("done", S.SUCCEEDED)
        files.delete(stored)  # cancelled (or taken over) between the last heartbeat and now
        return Outcome("noop", "abandoned", reason="lost ownership before publishing")
    except ClipBlocked as blocked:
        return _blocked(clip, leased, keeper, share, blocked)
    except LeaseLost as lost:
        files.delete(stored)
        return _requeue(clip, settings.CLIP_PREEMPTED_RETRY_S, f"lease lost: {lost.reason}", preempted=True)
    except _Stop as stop:
        files.delete(stored)
        return Outcome("noop", "abandoned", reason=stop.reason)
    except (BadVideo, av.FFmpegError) as exc:
        # The upload passed the cheap check at creation (first frame only) but is corrupt or short
        # further on: deterministic, so a clean failure, never a retry.
        _fail(clip, "bad_video", f"the input video cannot be used: {exc}")
        return Outcome("done", S.FAILED, reason="bad video")
    except (EngineError, ValueError, VideoEncodeError) as exc:
        # Deterministic errors (bad params that slipped through, an engine refusing): no retry helps.
        log.warning("clip %s failed: %s", clip.pk, exc)
        _fail(clip, getattr(exc, "code", "render_error"), str(exc))
        return Outcome("done", S.FAILED, reason="render error")
    except Exception as exc:  # noqa: BLE001 - transient or unknown: retried, bounded
        log.exception("clip %s attempt %s crashed", clip.pk, clip.attempts)
        files.delete(stored)
        return _retry_after_error(clip, exc)
    finally:
        keeper.stop()
        if source is not None:
            source.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _blocked(clip: Clip, leased: _LeaseClock, keeper, share: float, blocked: Exception) -> Outcome:
    """A frame violated the policy: the clip ends `blocked`, no video is stored, the usage is billed."""
    keeper.stop()
    run_s = leased.release()
    with transaction.atomic():
        if _transition(clip, S.BLOCKED, "moderation", error_code="moderation", error_message=str(blocked)[:2000],
                       started_at=leased.started_at, finished_at=timezone.now(), render_s=run_s, share=share,
                       claim=""):
            usage.record_clip(clip.pk, share, run_s)
            return Outcome("done", S.BLOCKED, reason="moderation")
    return Outcome("noop", "abandoned", reason="lost ownership before blocking")


def _requeue(clip: Clip, delay_s: float, reason: str, preempted: bool) -> Outcome:
    """Back to `queued` (not a failure): capacity went to live sessions; try again after `delay_s`."""
    changes = {"claim": "", "heartbeat_at": None, "frames_done": 0,
               "not_before": timezone.now() + timedelta(seconds=delay_s)}
    if preempted:
        changes["preemptions"] = F("preemptions") + 1
    if _transition(clip, S.QUEUED, reason, **changes):
        return Outcome("retry", S.QUEUED, delay_s, reason)
    return Outcome("noop", "abandoned", reason="lost ownership while requeueing")


def _retry_after_error(clip: Clip, exc: Exception) -> Outcome:
    max_attempts = int(settings.CLIP_MAX_ATTEMPTS)
    if clip.failures + 1 >= max_attempts:
        _fail(clip, "render_error", f"{type(exc).__name__}: {exc}", failures=F("failures") + 1)
        return Outcome("done", S.FAILED, reason="retries exhausted")
    delay = settings.CLIP_RETRY_DELAY_S * (2 ** clip.failures)
    changes = {"claim": "", "heartbeat_at": None, "frames_done": 0, "failures": F("failures") + 1,
               "error_message": f"{type(exc).__name__}: {exc}"[:2000],
               "not_before": timezone.now() + timedelta(seconds=delay)}
    if _transition(clip, S.QUEUED, f"retry after error: {type(exc).__name__}", **changes):
        return Outcome("retry", S.QUEUED, delay, "error")
    return Outcome("noop", "abandoned", reason="lost ownership while retrying")


def _fail(clip: Clip, code: str, message: str, **changes) -> None:
    _transition(clip, S.FAILED, code, error_code=code, error_message=message[:2000],
                finished_at=timezone.now(), claim="", **changes)


# --- scratch space --------------------------------------------------------------------------------

def work_root() -> Path:
    """Where attempts encode before storing: CLIP_WORK_DIR, by default DATA_DIR/work/clips. Under the
    data dir, not /tmp, so that the recovery sweep can find what a killed worker left behind."""
    configured = getattr(settings, "CLIP_WORK_DIR", None)
    return Path(configured) if configured else Path(settings.DATA_DIR) / "work" / "clips"


def work_dir(clip: Clip) -> Path:
    """The scratch folder of this attempt, named `<clip id>.<claim token>` (the sweep's key)."""
    path = work_root() / f"{clip.pk}.{clip.claim}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sweep_work_dirs(host: str | None = None) -> int:
    """Remove scratch folders of attempts that are over: a worker killed mid-render never ran its
    cleanup. A folder is kept only while its clip is running under that very claim with a live owner
    (same test as a takeover). Returns how many entries were removed."""
    root = work_root()
    try:
        entries = list(root.iterdir())  # listed before the query: a folder exists only once its claim does
    except FileNotFoundError:
        return 0
    stale_after_s = settings.CLIP_STALE_AFTER_S
    now, host = timezone.now(), host or socket.gethostname()
    alive = {f"{c.pk}.{c.claim}" for c in Clip.objects.filter(status=S.RUNNING).only(
        "id", "claim", "heartbeat_at", "claim_host", "claim_pid") if not owner_is_dead(c, now, stale_after_s, host)}
    removed = 0
    for entry in entries:
        if entry.name in alive:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    return removed


# --- recovery -------------------------------------------------------------------------------------

def stale_jobs(host: str | None = None) -> list:
    """Ids of jobs whose message may be gone: running under a dead attempt, or queued and due but
    not enqueued for a while (the filesystem broker deletes a message when it is fetched, so a
    worker killed mid-job takes the message with it)."""
    stale_after_s = settings.CLIP_STALE_AFTER_S
    now = timezone.now()
    host = host or socket.gethostname()
    out = []
    for clip in Clip.objects.filter(status__in=Clip.ACTIVE).only(
            "id", "status", "heartbeat_at", "claim_host", "claim_pid", "enqueued_at", "not_before", "started_at"):
        # One recovery message per stale period: a message sent recently is probably on its way
        # (a worker waits up to worker_lost_wait before it lets go of a dead child's job).
        sent_recently = clip.enqueued_at is not None and (now - clip.enqueued_at).total_seconds() < stale_after_s
        if clip.status == S.RUNNING:
            # Nothing was sent since the dead attempt started: its message died with it.
            sent_since_start = sent_recently and clip.started_at is not None and clip.enqueued_at > clip.started_at
            if owner_is_dead(clip, now, stale_after_s, host) and not sent_since_start:
                out.append(clip.pk)
        elif (clip.not_before is None or clip.not_before <= now) and not sent_recently:
            out.append(clip.pk)
    return out
