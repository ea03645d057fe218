"""Celery glue of the clip tier: the render task, its re-enqueueing, and recovery of lost messages.

Thin on purpose: the state machine is `runner.run_clip`, testable without a broker. Every task names
its queue explicitly (queues are defined in nextframe.celery). Delivery guarantees:
- acks_late + reject_on_worker_lost + prefetch 1 (set on the app): on Redis, a message whose worker
  dies stays unacknowledged and is delivered again; a pool child killed mid-job is rejected and
  requeued by its parent on either broker.
- kombu's filesystem transport deletes a message file when it is fetched, so a whole worker killed
  mid-job loses the message. `recover_stale_clips` (run when a worker becomes ready and then every
  CLIP_SWEEP_INTERVAL_S by a thread in the worker) re-enqueues such jobs from the database, which is
  the source of truth. Duplicate messages are harmless: the task is idempotent.
"""
from __future__ import annotations

import logging
import threading

from celery import shared_task
from celery.signals import worker_process_init, worker_ready, worker_shutdown
from django.conf import settings
from django.db import OperationalError
from django.utils import timezone

from nextframe.celery import QUEUE_CLIPS

log = logging.getLogger(__name__)


# The queue is named on every send (apply_async(queue=...)): Celery 5.5+ deprecates the `queue`
# task attribute in favour of task_routes, which belong to nextframe.celery.
@shared_task(
    name="clips.render", acks_late=True, reject_on_worker_lost=True,
    autoretry_for=(OperationalError,), max_retries=5, retry_backoff=True, retry_jitter=False,
)
def render_clip(clip_id: str) -> str:
    """Render one clip job (idempotent, keyed by job id); re-enqueues itself when told to wait."""
    from nextframe.clips.runner import run_clip

    outcome = run_clip(clip_id)
    if outcome.action == "retry":
        enqueue_render(clip_id, countdown=outcome.delay_s)
    log.info("clip %s: %s %s %s", clip_id, outcome.action, outcome.status, outcome.reason)
    return outcome.status


def enqueue_render(clip_id, countdown: float = 0.0) -> None:
    """Send the render message (records when, so the sweeper can tell a lost message from a queue)."""
    from nextframe.celery import ensure_broker_dirs
    from nextframe.clips.models import Clip

    ensure_broker_dirs()  # the filesystem transport needs its folders (a no-op for Redis)
    Clip.objects.filter(pk=clip_id).update(enqueued_at=timezone.now())
    render_clip.apply_async((str(clip_id),), queue=QUEUE_CLIPS, countdown=max(0.0, float(countdown)) or None)


@shared_task(name="clips.recover", acks_late=True)
def recover_stale_clips() -> int:
    """Re-enqueue jobs whose message may have been lost (returns how many), and remove the work
    folders of attempts that are over."""
    from nextframe.clips.runner import stale_jobs, sweep_work_dirs

    ids = stale_jobs()
    for clip_id in ids:
        enqueue_render(clip_id)
    if ids:
        log.warning("re-enqueued %d clip job(s) whose worker or message was lost", len(ids))
    # Scratch folders of attempts that died mid-render (this host's work dir).
    swept = sweep_work_dirs()
    if swept:
        log.warning("removed %d clip work folder(s) left by dead attempts", swept)
    return len(ids)


# --- in-worker sweeper --------------------------------------------------------------------------
# The embedded deployment has no beat, so the worker itself looks for lost jobs: once when it is
# ready (a worker restarted after a crash picks its job up at once) and then periodically.

_stop = threading.Event()


def _sweep_forever(interval_s: float) -> None:
    from django.db import close_old_connections

    while not _stop.wait(interval_s):
        try:
            close_old_connections()
            recover_stale_clips()
        except Exception:  # noqa: BLE001 - a failed sweep must not kill the thread
            log.exception("clip recovery sweep failed")


@worker_process_init.connect
def _limit_torch_threads(**kwargs) -> None:
    """Same intra-op thread policy as the live frame loop: on a small CPU, torch's default of one
    thread per core makes the clip render fight the encoder and the web process for every core
    (measured 61 vs 468 fps for a stylize clip on 2 cores; docs/clips.md)."""
    import torch

    from inference.runtime.device import default_torch_threads

    torch.set_num_threads(default_torch_threads())


@worker_ready.connect
def _on_worker_ready(sender=None, **kwargs) -> None:
    consumer = getattr(sender, "consumer", None) or sender
    queues = {q.name for q in getattr(getattr(consumer, "task_consumer", None), "queues", [])} if consumer else set()
    if queues and QUEUE_CLIPS not in queues:
        return  # a worker that does not render clips does not recover them either
    try:
        recover_stale_clips()
    except Exception:  # noqa: BLE001
        log.exception("clip recovery at worker start failed")
    interval = float(getattr(settings, "CLIP_SWEEP_INTERVAL_S", 30.0))
    if interval > 0:
        _stop.clear()
        threading.Thread(target=_sweep_forever, args=(interval,), name="clip-sweeper", daemon=True).start()


@worker_shutdown.connect
def _on_worker_shutdown(**kwargs) -> None:
    _stop.set()
