"""The background audit worker: a submit that lands while the idle thread is ending is still run."""
from __future__ import annotations

import queue
import threading

import pytest

from nextframe.audits import actions
from nextframe.audits.models import AuditRun

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

    monkeypatch.setattr(actions, "run_audit", fake_run_audit)
    worker = actions._Worker()
    worker._q = RacingQueue(actions.MAX_QUEUED_AUDITS, lambda: worker.submit(second.pk, False))
    worker.submit(first.pk, False)
    # Event-based: the second run either happens (fixed) or never does (the race); 10 s only bounds a failure.
    assert second_ran.wait(10), f"the racing submit was never run (ran: {ran})"
    assert ran == [first.pk, second.pk]
    thread = worker._thread
    if thread is not None:
        thread.join(10)
    # The thread ended idle, and a later submit starts a new one.
    worker._q = queue.Queue(actions.MAX_QUEUED_AUDITS)
    third_ran = threading.Event()
    monkeypatch.setattr(actions, "run_audit", lambda model_id, source, run=None, transport=None: third_ran.set())
    worker._idle_s = 0.0
    worker.submit(first.pk, False)
    assert third_ran.wait(10)
