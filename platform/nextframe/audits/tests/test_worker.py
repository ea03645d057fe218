"""The background audit worker: a submit that lands while the idle thread is ending is still run."""
from __future__ import annotations

import queue
import threading

import pytest

from nextframe.audits import runs
from nextframe.audits.models import AuditRun
from nextframe.audits.worker import MAX_QUEUED_AUDITS, Worker

# The worker thread reads the rows through its own connection: they must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


class RacingQueue(queue.Queue):
    """A queue whose first empty `get` lets a submit land exactly in the window the race needs:
    after the idle timeout fired, before the thread has ended. No sleeping, no real timeout."""

    def __init__(self, maxsize: int, on_first_empty) -> None:
        super().__init__(maxsize)
        self._on_first_empty = on_first_empty

    def get(self, block: bool = True, timeout: float | None = None):
        try:
            return super().get(block=False)
        except queue.Empty:
            hook, self._on_first_empty = self._on_first_empty, None
            if hook is not None:
                hook()
            raise


def test_a_submit_racing_the_idle_exit_is_run_not_left_queued(monkeypatch):
    first = AuditRun.objects.create(model_id="identity", kind="live", source="on_demand", status="queued")
    second = AuditRun.objects.create(model_id="identity", kind="live", source="on_demand", status="queued")
    ran: list[int] = []
    second_ran = threading.Event()

    def fake_run_audit(model_id, source, run=None, transport=None):
        ran.append(run.pk)
        if run.pk == second.pk:
            second_ran.set()
        return run

    monkeypatch.setattr(runs, "run_audit", fake_run_audit)
    audit_worker = Worker()
    audit_worker._q = RacingQueue(MAX_QUEUED_AUDITS, lambda: audit_worker.submit(second.pk, False))
    audit_worker.submit(first.pk, False)
    # Event-based: the second run either happens (fixed) or never does (the race); 10 s only bounds a failure.
    assert second_ran.wait(10), f"the racing submit was never run (ran: {ran})"
    assert ran == [first.pk, second.pk]
    thread = audit_worker._thread
    if thread is not None:
        thread.join(10)
    # The thread ended idle, and a later submit starts a new one.
    audit_worker._q = queue.Queue(MAX_QUEUED_AUDITS)
    third_ran = threading.Event()
    monkeypatch.setattr(runs, "run_audit", lambda model_id, source, run=None, transport=None: third_ran.set())
    audit_worker._idle_s = 0.0
    audit_worker.submit(first.pk, False)
    assert third_ran.wait(10)
