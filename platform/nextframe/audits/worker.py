"""The background audit queue: one low-priority thread in the server process runs queued audits.

`worker.submit(run_id, with_clip)` hands a queued AuditRun to the thread (bounded: a full queue
raises AuditUnavailable). A start-up audit first waits for a moment without live sessions
(`wait_for_quiet_devices`, at most NEXTFRAME_AUDIT_IDLE_WAIT_S); an on-demand audit runs at once.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time

from django.conf import settings
from django.db import close_old_connections

from nextframe.audits import runs
from nextframe.audits.models import AuditRun

log = logging.getLogger(__name__)

#: Audits waiting for the background worker; more requests are refused (no unbounded queue).
MAX_QUEUED_AUDITS = 16


class AuditUnavailable(Exception):
    """An on-demand audit cannot be queued now (the queue is full)."""


class Worker:
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
        """Queue AuditRun `run_id` (and a clip-tier run after it when `with_clip`)."""
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
                    wait_for_quiet_devices(float(settings.NEXTFRAME_AUDIT_IDLE_WAIT_S))
                runs.run_audit(run.model_id, run.source, run=run)
                if with_clip:
                    runs.run_clip_audit(run.model_id, run.source, organization_id=run.organization_id)
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


#: The process's one audit worker (tests replace it, or its `submit`).
worker = Worker()
