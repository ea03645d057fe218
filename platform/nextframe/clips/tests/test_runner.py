"""The render state machine without a broker: idempotency, takeover of dead attempts, preemption by
live sessions (a clip never keeps a live session out), cancellation mid-run, bounded retries."""
from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from django.utils import timezone

from inference.batch import render_frames
from inference.engines import get_engine, register_engine, unregister_engine
from inference.engines.specs import DREAMFIELD
from inference.pool import CapacityUnavailable
from nextframe.clips import actions, runner
from nextframe.clips.models import Clip, ClipEvent
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
        register_engine(engine)  # type: ignore[arg-type]  # duck-typed wrapper, not an Engine subclass
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


# --- uploads deleted on every terminal state; no folders left -------------------------------------

def new_v2v_clip(org, make_mp4, frames=4) -> Clip:
    import io

    return actions.create_clip(org, actions.ClipRequest(model="identity", width=64, height=64, fps=12, frames=frames),
                               upload=io.BytesIO(make_mp4(frames)))


def stored_files(media) -> list:
    return sorted(p.relative_to(media).as_posix() for p in media.rglob("*") if p.is_file())


def test_the_upload_is_deleted_when_a_job_is_stopped_for_too_many_attempts(org, pool, settings, make_mp4, media):
    settings.CLIP_MAX_ATTEMPTS = 2
    clip = new_v2v_clip(org, make_mp4)
    assert len(stored_files(media)) == 1
    Clip.objects.filter(pk=clip.pk).update(status="running", claim="dead", claim_host="x", claim_pid=1,
                                           heartbeat_at=timezone.now() - timedelta(hours=1), attempts=2)
    assert runner.run_clip(clip.pk).status == "failed"
    clip.refresh_from_db()
    assert (clip.error_code, clip.input_name) == ("too_many_attempts", "")
    assert stored_files(media) == [] and not (media / "clips" / str(org.pk) / str(clip.pk)).exists()


def test_the_upload_is_deleted_when_reserve_errors_exhaust_the_retries(org, pool, settings, make_mp4, media,
                                                                        monkeypatch):
    settings.CLIP_MAX_ATTEMPTS = 1

    def down(*args, **kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(pool, "reserve", down)
    clip = new_v2v_clip(org, make_mp4)
    assert runner.run_clip(clip.pk).status == "failed"
    clip.refresh_from_db()
    assert (clip.error_code, clip.input_name) == ("render_error", "")
    assert stored_files(media) == [] and not (media / "clips" / str(org.pk) / str(clip.pk)).exists()


def test_cancel_removes_the_files_and_the_clip_folder(org, make_mp4, media):
    clip = new_v2v_clip(org, make_mp4)
    folder = media / "clips" / str(org.pk) / str(clip.pk)
    assert folder.is_dir()
    assert actions.cancel_clip(clip)
    assert stored_files(media) == [] and not folder.exists()


def test_a_succeeded_clip_keeps_its_folder_with_only_the_video(org, pool, make_mp4, media):
    clip = new_v2v_clip(org, make_mp4)
    assert runner.run_clip(clip.pk).status == "succeeded"
    assert stored_files(media) == [f"clips/{org.pk}/{clip.pk}/video-1.mp4"]


# --- one interval for run_s, gpu_seconds and fps_throughput --------------------------------------

class SteppingClock:
    """Wall clock and monotonic clock of the runner in one: every reading advances 1 ms, and `jump`
    moves it on (a slow pool backend) without any sleeping."""

    def __init__(self) -> None:
        import threading

        self.t = 0.0
        self.base = timezone.now()
        self.lock = threading.Lock()

    def monotonic(self) -> float:
        with self.lock:
            self.t += 0.001
            return self.t

    def now(self):
        return self.base + timedelta(seconds=self.monotonic())

    def jump(self, seconds: float) -> None:
        with self.lock:
            self.t += seconds


def test_run_s_gpu_seconds_and_fps_throughput_measure_the_same_interval(org, pool, monkeypatch, hooked):
    from types import SimpleNamespace

    clock = SteppingClock()
    monkeypatch.setattr(runner, "time", SimpleNamespace(monotonic=clock.monotonic))
    monkeypatch.setattr(runner, "timezone", SimpleNamespace(now=clock.now))
    real_reserve = pool.reserve

    def slow_reserve(*args, **kwargs):
        clock.jump(5.0)  # the pool backend takes 5 s to answer: no capacity is held meanwhile
        return real_reserve(*args, **kwargs)

    monkeypatch.setattr(pool, "reserve", slow_reserve)
    hooked(lambda rendered: clock.jump(1.0))  # each 4-frame batch takes 1 s with the lease held
    clip = new_clip(org, model="hooked-test", frames=12)
    assert runner.run_clip(clip.pk).status == "succeeded"
    clip.refresh_from_db()
    body = actions.describe(clip)
    run_s, usage = body["timings"]["run_s"], body["usage"]
    assert 3.0 <= run_s < 3.5  # the lease's lifetime: three batches, not the 5 s wait for the pool
    assert run_s == pytest.approx((clip.finished_at - clip.started_at).total_seconds(), abs=0.01)
    assert float(usage["gpu_seconds"]) == pytest.approx(usage["share"] * run_s, abs=1e-3)
    assert body["timings"]["fps_throughput"] == pytest.approx(12 / run_s, rel=1e-3)


# --- work folders ---------------------------------------------------------------------------------

def test_an_attempt_works_under_the_data_dir_and_cleans_up(org, pool, hooked, settings, tmp_path):
    seen = []
    work = tmp_path / "work"
    hooked(lambda rendered: seen.append(sorted(p.name for p in work.iterdir())))
    clip = new_clip(org, model="hooked-test", frames=8)
    assert runner.run_clip(clip.pk).status == "succeeded"
    # One folder while rendering (both batches saw it), named <clip id>.<claim>; none afterwards.
    assert len(seen) == 2 and seen[0] == seen[1] and len(seen[0]) == 1 and seen[0][0].startswith(f"{clip.pk}.")
    assert list(work.iterdir()) == []
    del settings.CLIP_WORK_DIR
    assert runner.work_root() == settings.DATA_DIR / "work" / "clips"


def test_the_recovery_sweep_removes_work_folders_of_dead_attempts_only(org, settings, tmp_path):
    from nextframe.clips.tasks import recover_stale_clips

    settings.CLIP_STALE_AFTER_S = 10
    now = timezone.now()
    alive, dead, done = new_clip(org), new_clip(org), new_clip(org)
    Clip.objects.filter(pk=alive.pk).update(status="running", claim="a1", claim_host="elsewhere", claim_pid=1,
                                            heartbeat_at=now, attempts=1)
    Clip.objects.filter(pk=dead.pk).update(status="running", claim="d2", claim_host="elsewhere", claim_pid=1,
                                           heartbeat_at=now - timedelta(seconds=60), attempts=2)
    Clip.objects.filter(pk=done.pk).update(status="succeeded")
    work = tmp_path / "work"
    keep = work / f"{alive.pk}.a1"
    leftovers = [work / f"{alive.pk}.old-attempt", work / f"{dead.pk}.d2", work / f"{done.pk}.x",
                 work / "not-a-clip"]
    for folder in (keep, *leftovers):
        folder.mkdir(parents=True)
        (folder / "video.mp4.part").write_bytes(b"half an mp4")
    recover_stale_clips()
    assert sorted(p.name for p in work.iterdir()) == [keep.name]
    assert runner.sweep_work_dirs() == 0


def test_a_clip_succeeds_only_with_its_usage_written_through_the_seam(org, pool, monkeypatch):
    from nextframe import usage

    calls = []
    real = usage.record_clip
    monkeypatch.setattr(usage, "record_clip", lambda *args: calls.append(args) or real(*args))
    done = new_clip(org)
    assert runner.run_clip(done.pk).status == "succeeded"
    done.refresh_from_db()
    assert len(calls) == 1 and calls[0][0] == done.pk and done.gpu_seconds > 0

    def unwritable(*args):
        raise RuntimeError("ledger unreachable")

    monkeypatch.setattr(usage, "record_clip", unwritable)
    unbilled = new_clip(org)
    runner.run_clip(unbilled.pk)
    # The outcome and its usage are one transaction: no clip is delivered without its usage.
    assert Clip.objects.get(pk=unbilled.pk).status != "succeeded"
