"""The clip-tier audit measures two moments, so a renderer that streams playable output early is caught."""
from __future__ import annotations

import json
import os

import pytest

from inference.audit import AuditError
from inference.audit import pixels as px
from inference.audit.clip import ClipEvents, audit_clip, check_clip_size
from inference.audit.clip_rest import audit_clip_url
from inference.testing import ManualClock
from inference.video import encode_mp4


class ScriptedTier:
    """A clip tier on a fake clock: 10 ms per frame; `early` publishes a playable 1-frame file after frame 0."""

    name = "scripted"

    def __init__(self, clock: ManualClock, early: bool) -> None:
        self.clock, self.early = clock, early

    def render(self, model, width, height, fps, frames, seed, workdir, events: ClipEvents) -> None:
        out = []
        for i in range(frames):
            self.clock.advance(0.010)
            out.append(px.pattern(width, height, i))
            events.frame_computed()
            if self.early and i == 0:
                first = os.path.join(workdir, "first.mp4")
                encode_mp4(out[:1], first, fps=fps, width=width, height=height)
                events.publish(first)  # a streaming renderer: the first frame downloads now
        self.clock.advance(0.005)  # encoding the rest
        whole = os.path.join(workdir, "whole.mp4")
        encode_mp4(out, whole, fps=fps, width=width, height=height)
        events.publish(whole)


def test_a_tier_that_delivers_its_first_frame_early_is_not_fast_batch():
    clock = ManualClock(100.0)
    ev = audit_clip("identity", width=32, height=32, fps=30, frames=10, sessions=2,
                    tier=ScriptedTier(clock, early=True), clock=clock)
    assert ev.ttff_ms == pytest.approx(10.0) and ev.complete_ms == pytest.approx(100.0)
    assert ev.tier != "fast-batch", ev.reasons


def test_a_tier_that_publishes_only_the_whole_clip_is_fast_batch():
    clock = ManualClock(100.0)
    ev = audit_clip("identity", width=32, height=32, fps=30, frames=10, sessions=2,
                    tier=ScriptedTier(clock, early=False), clock=clock)
    assert ev.ttff_ms == pytest.approx(105.0) and ev.complete_ms == pytest.approx(100.0)
    assert ev.tier == "fast-batch", ev.reasons


def test_the_in_process_clip_tier_measures_both_moments():
    ev = audit_clip("dreamfield", width=64, height=64, fps=30, frames=12, sessions=1)
    assert ev.tier == "fast-batch", ev.reasons
    # Measured, not assigned: the file is published after the last frame was computed and encoded.
    assert 0 < ev.complete_ms < ev.ttff_ms
    assert ev.clip_timings["publish_after_last_frame_ms"] > 0
    assert ev.mid_run_control is False and ev.server_reported["frames_per_clip"] == 12
    assert ev.plan == {"kind": "clip", "width": 64, "height": 64, "fps": 30.0, "frames": 12, "sessions": 1}


def test_a_lost_lease_stops_the_clip_render():
    def guard() -> None:
        raise AuditError("preempted", "the pool lease was taken back")

    with pytest.raises(AuditError) as err:
        audit_clip("identity", width=32, height=32, frames=4, sessions=1, guard=guard)
    assert err.value.code == "preempted"


@pytest.mark.parametrize("size, fps, message", [((63, 64), 30, "even"), ((64, 64), 29.97, "whole number"),
                                                ((4096, 4096), 30, "outside"), ((0, 0), 30, "outside"),
                                                ((64, 64), 0, "whole number")])
def test_clip_sizes_and_rates_are_checked_before_rendering(size, fps, message):
    with pytest.raises(ValueError, match=message):
        check_clip_size("dreamfield", size[0], size[1], fps)


class ScriptedClipApi:
    """A clip REST API on a fake clock, driven by time like a real server: each request takes 8 ms,
    the clip is queued for 60 ms, rendering finishes `render_ms` after that and the whole video is
    published 0.5 ms later; `early` serves a playable 1-frame video 10 ms into rendering (a streaming
    renderer). A clip that succeeds between a status poll and the next video poll is the race a real
    `nextframe up` showed (ttff 133 ms, "done" seen only at the next poll: 231 ms)."""

    QUEUED_MS, PUBLISH_MS, EARLY_MS, REQUEST_MS = 60.0, 0.5, 10.0, 8.0

    def __init__(self, clock: ManualClock, early: bool, render_ms: float, frames: int = 6) -> None:
        self.clock, self.early, self.render_ms, self.frames = clock, early, render_ms, frames
        self.posted_at: float | None = None
        self.partial = self._mp4(1)
        self.whole = self._mp4(frames)

    def _mp4(self, n: int) -> bytes:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "v.mp4")
            encode_mp4([px.pattern(32, 32, i) for i in range(n)], path, fps=30, width=32, height=32)
            with open(path, "rb") as fh:
                return fh.read()

    def _since_post_ms(self) -> float:
        assert self.posted_at is not None, "polled before the clip was posted"
        return (self.clock() - self.posted_at) * 1000.0

    def __call__(self, method, url, key, body=None, content_type=None):
        try:
            return self._answer(method, url)
        finally:
            self.clock.advance(self.REQUEST_MS / 1000.0)

    def _answer(self, method, url):
        if url.endswith("/models"):
            return 200, json.dumps({"data": [{"id": "identity", "kind": "text-to-video"}]}).encode()
        if method == "POST":
            self.posted_at = self.clock()
            return 202, b'{"id": 7}'
        if method == "DELETE":
            return 204, b""
        t = self._since_post_ms()
        rendered = t >= self.QUEUED_MS + self.render_ms
        if url.endswith("/video"):
            if t >= self.QUEUED_MS + self.render_ms + self.PUBLISH_MS:
                return 200, self.whole
            if self.early and t >= self.QUEUED_MS + self.EARLY_MS:
                return 200, self.partial
            return 409, b"{}"
        published = t >= self.QUEUED_MS + self.render_ms + self.PUBLISH_MS
        state = "queued" if t < self.QUEUED_MS else ("succeeded" if published else "running")
        frames_done = self.frames if rendered else 0
        return 200, json.dumps({"status": state, "progress": {"frames": self.frames, "frames_done": frames_done},
                                "timings": {}}).encode()


def rest_audit(early: bool, render_ms: float):
    clock = ManualClock(100.0)
    api = ScriptedClipApi(clock, early, render_ms)
    return audit_clip_url("ws://h/v1/live", "k", "identity", width=32, height=32, fps=30, frames=6, sessions=1,
                          poll_s=0.05, request=api, clock=clock, sleep=clock.advance)


# Short renders (a real server here: ~80 ms) at every phase of the 66 ms polling cycle, so the clip
# succeeds between two polls: the video must still not be seen much before "done".
@pytest.mark.parametrize("render_ms", [60.0 + 2.0 * k for k in range(33)] + [400.0, 1000.0])
def test_a_rest_tier_whose_video_exists_only_when_done_is_fast_batch_at_any_poll_phase(render_ms):
    ev = rest_audit(early=False, render_ms=render_ms)
    assert ev.tier == "fast-batch", ev.reasons
    assert ev.ttff_ms >= 0.8 * ev.complete_ms
    assert ev.clip_timings["queued_ms"] > 0  # seen queued; the wait is left out of both moments


# Discriminating needs a render of several poll intervals (docs/audit.md: the REST audit's resolution).
@pytest.mark.parametrize("render_ms", [400.0 + 6.0 * k for k in range(10)] + [1000.0])
def test_a_rest_tier_that_serves_video_early_is_not_fast_batch(render_ms):
    ev = rest_audit(early=True, render_ms=render_ms)
    assert ev.tier != "fast-batch", ev.reasons
    assert ev.ttff_ms < 0.8 * ev.complete_ms


def test_the_rest_clip_audit_refuses_fractional_fps():
    with pytest.raises(ValueError, match="whole number"):
        audit_clip_url("ws://h/v1/live", "k", "identity", fps=29.97, request=lambda *a, **k: (500, b""))
