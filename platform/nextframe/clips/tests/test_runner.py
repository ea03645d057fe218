"""The render state machine without a broker: idempotency, takeover of dead attempts, preemption by
live sessions (a clip never keeps a live session out), cancellation mid-run, bounded retries."""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Callable

import numpy as np
import pytest
from django.utils import timezone

from inference.engines import get_engine, register_engine, unregister_engine
from inference.engines.specs import DREAMFIELD
from inference.pool import CapacityUnavailable
from nextframe.clips import actions, runner
from nextframe.clips.models import Clip, ClipEvent
from inference.batch import render_frames
from nextframe.clips.render import batch_size, checkpointed

pytestmark = pytest.mark.django_db


class HookedEngine:
    """dreamfield under another id, calling `hook(frames_rendered_so_far)` after every batch."""

    def __init__(self, hook: Callable[[int], None]) -> None:
        from dataclasses import replace

        self.inner = get_engine("dreamfield")
        self.spec = replace(DREAMFIELD, id="hooked-test")
        self.hook = hook
        self.rendered = 0

    def new_state(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.new_state(*args, **kwargs)

    def step(self, items):  # pragma: no cover - clips never step
        return self.inner.step(items)

    def render_clip(self, state, n_frames, prompt, params, input_frames=None) -> np.ndarray:
        out = self.inner.render_clip(state, n_frames, prompt, params, input_frames)
        self.rendered += n_frames
        self.hook(self.rendered)
        return out


@pytest.fixture
def hooked():
    engines = []

    def install(hook: Callable[[int], None]) -> HookedEngine:
        engine = HookedEngine(hook)
        register_engine(engine)
        engines.append(engine)
        return engine

    yield install
    unregister_engine("hooked-test")


def new_clip(org, model="dreamfield", frames=12) -> Clip:
    return actions.create_clip(org, actions.ClipRequest(model=model, prompt="tide", width=64, height=64, fps=12,
                                                       frames=frames))


def transitions(clip: Clip) -> list[tuple[str, str]]:
    return [(e.from_status, e.to_status) for e in ClipEvent.objects.filter(clip=clip)]


def test_batches_carry_state_and_checkpoints_come_before_each_batch(db):
    calls: list[int] = []

    def render(batch: int) -> np.ndarray:
        frames = render_frames("dreamfield", 32, 32, 12, 10, "p", seed=7, batch_size=batch)
        return np.stack(list(checkpointed(frames, batch, calls.append)))

    whole, batched = render(10), render(3)
    assert whole.shape == (10, 32, 32, 3)
    np.testing.assert_array_equal(whole, batched)  # the clip is the same whatever the batch
    assert not np.array_equal(whole[0], whole[-1])  # it moves: state really advanced
    assert calls == [0, 10, 0, 3, 6, 9]
    assert batch_size(16, 8) == 16 and batch_size(5, 8) == 8 and batch_size(20, 8) == 16


def test_a_finished_or_cancelled_job_is_left_alone(org, pool):
    clip = new_clip(org)
    assert runner.run_clip(clip.pk).status == "succeeded"
    again = runner.run_clip(clip.pk)
    assert again.action == "noop" and again.status == "succeeded"
    assert transitions(clip) == [("", "queued"), ("queued", "running"), ("running", "succeeded")]
    other = new_clip(org)
    actions.cancel_clip(other)
    assert runner.run_clip(other.pk).action == "noop"
    assert Clip.objects.get(pk=other.pk).attempts == 0


def test_a_running_job_with_a_live_owner_is_not_run_twice(org, pool):
    clip = new_clip(org)
    Clip.objects.filter(pk=clip.pk).update(status="running", claim="other", claim_host="elsewhere", claim_pid=1,
                                           heartbeat_at=timezone.now(), attempts=1)
    outcome = runner.run_clip(clip.pk)
    assert outcome.action == "retry" and outcome.delay_s > 1  # look again once it could be stale
    assert Clip.objects.get(pk=clip.pk).claim == "other"


def test_a_running_job_with_a_stale_heartbeat_is_taken_over(org, pool, settings):
    settings.CLIP_STALE_AFTER_S = 10
    clip = new_clip(org)
    Clip.objects.filter(pk=clip.pk).update(status="running", claim="dead", claim_host="elsewhere", claim_pid=1,
                                           heartbeat_at=timezone.now() - timedelta(seconds=11), attempts=1)
    assert runner.run_clip(clip.pk).status == "succeeded"
    clip.refresh_from_db()
    assert clip.attempts == 2 and clip.claim == ""
    assert [t for t in transitions(clip) if t[1] == "succeeded"] == [("running", "succeeded")]


def test_a_running_job_whose_process_died_on_this_host_is_taken_over_at_once(org, pool):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    clip = new_clip(org)
    Clip.objects.filter(pk=clip.pk).update(status="running", claim="dead", claim_host="this-host",
                                           claim_pid=dead.pid, heartbeat_at=timezone.now(), attempts=1)
    assert runner.stale_jobs(host="this-host") == [clip.pk]
    assert runner.stale_jobs(host="another-host") == []  # there, only the heartbeat can tell
    assert runner.run_clip(clip.pk, host="this-host").status == "succeeded"


def test_preempted_clip_stops_releases_and_is_requeued_not_failed(org, pool, hooked):
    live = {}

    def live_session_arrives(rendered: int) -> None:
        if rendered == 4 and not live:
            # A live session needing the whole device: the clip's lease is preempted.
            live["res"] = pool.reserve("live-org", "live-session", 1.0, priority="live")

    engine = hooked(live_session_arrives)
    clip = new_clip(org, model="hooked-test", frames=12)
    outcome = runner.run_clip(clip.pk)
    assert live["res"].priority == "live"  # the live session was admitted, not refused
    assert outcome.action == "retry" and outcome.status == "queued" and "preempted" in outcome.reason
    clip.refresh_from_db()
    assert (clip.status, clip.preemptions, clip.failures, clip.video_name) == ("queued", 1, 0, "")
    assert engine.rendered < 12  # stopped at a batch boundary, did not render the whole clip
    assert [r.priority for r in pool.active_leases()] == ["live"]  # the clip's lease is gone

    # While the live session holds the device, the clip waits (queued, no failure counted).
    Clip.objects.filter(pk=clip.pk).update(not_before=None)
    waiting = runner.run_clip(clip.pk)
    assert waiting.action == "retry" and waiting.reason == "capacity_unavailable"
    assert Clip.objects.get(pk=clip.pk).failures == 0

    pool.release(live["res"])
    Clip.objects.filter(pk=clip.pk).update(not_before=None)
    assert runner.run_clip(clip.pk).status == "succeeded"
    clip.refresh_from_db()
    assert clip.frames_done == 12 and clip.failures == 0 and clip.preemptions == 2
    assert pool.active_leases() == []


def test_a_clip_never_causes_a_live_refusal(org, pool):
    clip_res = pool.reserve(str(org.pk), "clip-x", 0.9, priority="clip")
    assert pool.reserve("o", "live", 1.0, priority="live").priority == "live"
    with pytest.raises(CapacityUnavailable):
        pool.reserve(str(org.pk), "clip-y", 0.1, priority="clip")  # a clip never preempts a live session
    assert clip_res.lease_id not in {r.lease_id for r in pool.active_leases()}


def test_cancel_while_running_stops_at_the_next_batch_and_stores_nothing(org, pool, hooked, media):
    holder = {}

    def cancel(rendered: int) -> None:
        if rendered == 4:
            assert actions.cancel_clip(Clip.objects.get(pk=holder["id"]))

    engine = hooked(cancel)
    clip = new_clip(org, model="hooked-test", frames=12)
    holder["id"] = clip.pk
    outcome = runner.run_clip(clip.pk)
    assert outcome.action == "noop" and engine.rendered == 4
    clip.refresh_from_db()
    assert clip.status == "cancelled" and clip.video_name == ""
    assert list(media.rglob("*.mp4")) == [] and pool.active_leases() == []


def test_errors_are_retried_a_bounded_number_of_times(org, pool, hooked, settings):
    settings.CLIP_MAX_ATTEMPTS = 2

    def boom(rendered: int) -> None:
        raise RuntimeError("device fell over")

    hooked(boom)
    clip = new_clip(org, model="hooked-test")
    first = runner.run_clip(clip.pk)
    assert first.action == "retry" and first.status == "queued" and first.delay_s > 0
    Clip.objects.filter(pk=clip.pk).update(not_before=None)
    second = runner.run_clip(clip.pk)
    assert second.status == "failed"
    clip.refresh_from_db()
    assert (clip.status, clip.failures, clip.error_code) == ("failed", 2, "render_error")
    assert pool.active_leases() == []


def test_a_job_that_keeps_killing_its_workers_is_stopped(org, pool, settings):
    settings.CLIP_MAX_ATTEMPTS = 2
    clip = new_clip(org)
    Clip.objects.filter(pk=clip.pk).update(status="running", claim="dead", claim_host="x", claim_pid=1,
                                           heartbeat_at=timezone.now() - timedelta(hours=1), attempts=2)
    assert runner.run_clip(clip.pk).status == "failed"
    assert Clip.objects.get(pk=clip.pk).error_code == "too_many_attempts"


def test_stale_queued_jobs_are_found_for_re_enqueueing(org, settings):
    settings.CLIP_STALE_AFTER_S = 10
    fresh, lost, later = new_clip(org), new_clip(org), new_clip(org)
    now = timezone.now()
    Clip.objects.filter(pk=fresh.pk).update(enqueued_at=now)
    Clip.objects.filter(pk=lost.pk).update(enqueued_at=now - timedelta(seconds=11))
    Clip.objects.filter(pk=later.pk).update(enqueued_at=now - timedelta(seconds=11),
                                            not_before=now + timedelta(seconds=60))
    assert runner.stale_jobs() == [lost.pk]


def test_a_dead_attempt_is_re_enqueued_once_per_stale_period(org, settings):
    settings.CLIP_STALE_AFTER_S = 10
    clip = new_clip(org)
    now = timezone.now()
    Clip.objects.filter(pk=clip.pk).update(status="running", claim="dead", claim_host="x", claim_pid=1,
                                           started_at=now - timedelta(seconds=60), enqueued_at=now - timedelta(seconds=61),
                                           heartbeat_at=now - timedelta(seconds=20), attempts=1)
    assert runner.stale_jobs() == [clip.pk]  # its message died with it: send one
    Clip.objects.filter(pk=clip.pk).update(enqueued_at=now)
    assert runner.stale_jobs() == []  # one is on its way
    Clip.objects.filter(pk=clip.pk).update(enqueued_at=now - timedelta(seconds=11))
    assert runner.stale_jobs() == [clip.pk]  # that one got lost too


def test_the_task_re_enqueues_itself_when_told_to_wait(org, pool, enqueued):
    from nextframe.clips.tasks import render_clip

    clip = new_clip(org)
    pool.reserve("o", "live", 1.0, priority="live")
    assert render_clip.run(str(clip.pk)) == "queued"
    assert len(enqueued) == 1 and enqueued[0][0] == str(clip.pk) and enqueued[0][1] >= 1


def test_an_unreachable_pool_backend_is_a_bounded_retry_not_a_stuck_job(org, pool, monkeypatch):
    def down(*args, **kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(pool, "reserve", down)
    clip = new_clip(org)
    outcome = runner.run_clip(clip.pk)
    assert outcome.action == "retry" and outcome.status == "queued"
    clip.refresh_from_db()
    assert (clip.status, clip.failures, clip.claim) == ("queued", 1, "")
