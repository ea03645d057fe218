"""The frame loop's decisions, driven synchronously with a FakeClock (no threads, no sleeping).

Given/when/then: each test opens sessions on a DeviceRuntime that is never started and calls
`rt.core.run_once()`; fake engines advance the fake clock by their declared step cost, so deadlines,
latencies and batching are exact.
"""
from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from inference.codec import encode_jpeg
from inference.engines import register_engine, unregister_engine
from inference.engines.base import (
    BadFrame,
    Engine,
    EngineKind,
    EngineSpec,
    InvalidParams,
    ParamSpec,
    StepInput,
    StepOutput,
    UnknownModel,
)
from inference.runtime import NO_INPUT_SEQ, DeviceRuntime, FakeClock, OutputFrame, SessionConfig, SessionFault
from inference.testing import solid_jpeg

_ids = itertools.count()


class FakeEngine(Engine):
    """Paints every pixel with param `level`; advances the fake clock by `per_frame_s` per frame rendered.

    `lag` > 0 makes it lie like a slow model: it applies the params (and reports the control seq) it
    was given `lag` steps earlier.
    """

    def __init__(self, clock: FakeClock, kind: EngineKind = "video-to-video", chunk: int = 1, per_frame_s: float = 0.0,
                 lag: int = 0) -> None:
        self.clock, self.per_frame_s, self.lag = clock, per_frame_s, lag
        self.spec = EngineSpec(
            id=f"fake-{next(_ids)}", kind=kind, declared_tier="interactive" if chunk == 1 else "streaming",
            default_width=32, default_height=32, max_width=64, max_height=64, default_fps=10.0, max_fps=60.0,
            chunk_frames=chunk, params=[ParamSpec("level", "int", 0, 0, 255, description="grey level")],
            persistent_state="a frame counter", price_per_gpu_second="0.0001",
            # prior estimate: share/fps per frame = per_frame_s
            compute_share_per_mpix_per_s=per_frame_s * 10.0 / (32 * 32 * 10.0 / 1e6) if per_frame_s else 0.0)
        self.calls: list[list[tuple[Any, int, int]]] = []  # per step: (state id, frame_index, control_seq)

    def new_state(self, width: int, height: int, prompt: str, params: dict[str, Any], seed: int,
                  fps: float = 30.0) -> dict[str, Any]:
        return {"w": width, "h": height, "steps": 0, "history": [], "seed": seed}

    def step(self, items: Sequence[StepInput]) -> list[StepOutput]:
        self.calls.append([(it.state["seed"], it.frame_index, it.control_seq) for it in items])
        self.clock.advance(self.per_frame_s * self.spec.chunk_frames * len(items))
        outs = []
        for it in items:
            st = it.state
            st["steps"] += 1
            st["history"].append((dict(it.params), it.control_seq))
            params, cseq = st["history"][max(0, len(st["history"]) - 1 - self.lag)]
            frame = np.full((st["h"], st["w"], 3), params["level"], np.uint8)
            outs.append(StepOutput([frame] * self.spec.chunk_frames, control_seq=cseq if self.lag else None))
        return outs

    def render_clip(self, state: Any, n_frames: int, prompt: str, params: dict[str, Any],
                    input_frames: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError("not used by these tests")


class Sink:
    """A consumer: records outputs, control.applied and errors; `full` makes it refuse outputs."""

    def __init__(self) -> None:
        self.frames: list[OutputFrame] = []
        self.applied: list[tuple[int, int]] = []
        self.errors: list[tuple[str, str]] = []
        self.faults: list[SessionFault] = []
        self.full = False

    def on_output(self, f: OutputFrame) -> bool:
        if self.full:
            return False
        self.frames.append(f)
        return True

    def on_applied(self, seq: int, frame: int) -> None:
        self.applied.append((seq, frame))

    def on_error(self, fault: SessionFault) -> None:
        self.errors.append((fault.code, fault.message))
        self.faults.append(fault)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rt(clock: FakeClock):
    runtime = DeviceRuntime(clock=clock)
    yield runtime
    runtime.stop()


@pytest.fixture
def engines():
    made: list[Engine] = []

    def make(clock: FakeClock, **kw: Any) -> FakeEngine:
        e = FakeEngine(clock, **kw)
        register_engine(e)
        made.append(e)
        return e

    yield make
    for e in made:
        unregister_engine(e.spec.id)


def open_(rt: DeviceRuntime, engine_id: str, sink: Sink, **cfg: Any):
    return rt.open_session(SessionConfig(engine_id, **cfg), sink.on_output, sink.on_applied, sink.on_error)


# -- opening -----------------------------------------------------------------------------------------
def test_open_rejects_unknown_model_and_bad_config(rt):
    sink = Sink()
    with pytest.raises(UnknownModel) as e:
        open_(rt, "no-such-model", sink)
    assert e.value.code == "unknown_model"
    with pytest.raises(InvalidParams, match="width"):
        open_(rt, "identity", sink, width=4096)
    with pytest.raises(InvalidParams, match="unknown param"):
        open_(rt, "dreamfield", sink, params={"nope": 1})
    with pytest.raises(InvalidParams, match="fps"):
        open_(rt, "dreamfield", sink, fps=1000)
    assert rt.session_count() == 0


# -- inputs: latest wins, drops counted, bad frames ----------------------------------------------------
def test_latest_input_wins_and_replaced_inputs_are_counted(rt, clock, engines):
    e = engines(clock)
    sink = Sink()
    h = open_(rt, e.spec.id, sink)
    for seq in (1, 2, 3):
        h.submit_frame(seq, 1000 + seq, solid_jpeg(seq * 10, 32))
    rt.core.run_once()
    assert [f.input_seq for f in sink.frames] == [3]
    assert sink.frames[0].input_capture_ts_us == 1003
    assert h.metrics().dropped_inputs == 2
    # A frame decoded but not yet stepped is also replaced by a newer one.
    clock.advance(0.1)  # the next slot of a 10 fps session
    h.submit_frame(4, 0, solid_jpeg(0, 32))
    rt.core.decode_pending(rt.core.get(h.session_id))
    h.submit_frame(5, 0, solid_jpeg(0, 32))
    rt.core.run_once()
    assert [f.input_seq for f in sink.frames] == [3, 5]
    assert h.metrics().dropped_inputs == 3
    assert rt.core.run_once() == 0  # nothing left queued anywhere


def test_bad_frames_are_reported_and_the_session_goes_on(rt, clock, engines):
    e = engines(clock)
    sink = Sink()
    h = open_(rt, e.spec.id, sink)
    h.submit_frame(1, 0, b"\xff\xd8 not really a jpeg")
    rt.core.run_once()
    assert sink.errors and sink.errors[0][0] == "bad_frame" and "frame 1" in sink.errors[0][1]
    with pytest.raises(BadFrame, match="oversize"):
        h.submit_frame(2, 0, b"\xff\xd8" + b"\0" * (rt.core.max_frame_bytes + 1))
    h.submit_frame(3, 0, solid_jpeg(0, width=512))  # 16x the session's side: outside the size policy
    rt.core.run_once()
    assert "wrong dimensions" in sink.errors[-1][1]
    h.submit_frame(4, 0, solid_jpeg(0, 32))
    rt.core.run_once()
    assert [f.input_seq for f in sink.frames] == [4]
    assert h.metrics().bad_frames == 3


def test_text_to_video_session_refuses_input_frames(rt, clock, engines):
    e = engines(clock, kind="text-to-video")
    h = open_(rt, e.spec.id, Sink())
    with pytest.raises(BadFrame, match="text-to-video"):
        h.submit_frame(1, 0, solid_jpeg(0, 32))


# -- video-to-video pacing: work = reservation -----------------------------------------------------------
def test_video_to_video_steps_at_most_at_the_declared_fps_and_surplus_inputs_are_dropped(rt, clock, engines,
                                                                                         monkeypatch):
    """A client sending 100 frames/s to a session declared (and billed) at 10 fps gets 10 steps a
    second; the other inputs are replaced in the slot (latest wins) and counted, and are never decoded."""
    import inference.runtime.core as core_module

    decodes = []
    real_decode = core_module.codec.decode_jpeg
    monkeypatch.setattr(core_module.codec, "decode_jpeg", lambda *a, **k: decodes.append(1) or real_decode(*a, **k))
    e = engines(clock)
    sink = Sink()
    h = open_(rt, e.spec.id, sink, fps=10)
    for seq in range(1, 201):  # two seconds at 100 frames/s
        h.submit_frame(seq, seq, solid_jpeg(0, 32))
        rt.core.run_once()
        clock.advance(0.01)
    steps = sum(len(c) for c in e.calls)
    assert 20 <= steps <= 21, steps  # 2 s x 10 fps (+ the first slot)
    # An input is decoded only near its slot: at most two decodes a step (one more when a newer
    # frame arrives inside the decode lead), against 200 without pacing.
    assert len(sink.frames) == steps and len(decodes) <= 2 * steps + 1
    m = h.metrics()
    assert 200 - steps - 1 <= m.dropped_inputs <= 200 - steps  # the last may still wait in its slot
    # The newest input at each slot is the one stepped (latest wins), not a stale one.
    assert all(later - earlier >= 9 for earlier, later in zip([f.input_seq for f in sink.frames],
                                                               [f.input_seq for f in sink.frames][1:]))


def test_a_client_at_the_declared_rate_with_jitter_loses_nothing(rt, clock, engines):
    e = engines(clock)
    sink = Sink()
    h = open_(rt, e.spec.id, sink, fps=10)
    jitter = [0.0, 0.03, -0.02, 0.01, -0.03, 0.02, 0.0, -0.01, 0.03, -0.03]
    start = clock.now()
    for seq in range(1, 41):
        clock.set(max(clock.now(), start + seq * 0.1 + jitter[seq % len(jitter)]))
        h.submit_frame(seq, seq, solid_jpeg(0, 32))
        for _ in range(3):
            rt.core.run_once()
            clock.advance(0.01)  # the slot of an early frame opens a little later
    assert [f.input_seq for f in sink.frames] == list(range(1, 41))
    assert h.metrics().dropped_inputs == 0


def test_a_one_fps_session_fed_at_thirty_fps_leaves_the_device_to_a_thirty_fps_session(rt, clock, engines):
    """The issue's scenario in miniature: four sessions declared at 1 fps, fed at 30 fps, beside a
    30 fps session; each frame costs 20 ms of device time. Unpaced, the four took 4 x 30 x 20 ms =
    2.4 s of device time per second; paced, they take 4 x 20 ms and the 30 fps session keeps up."""
    e = engines(clock, per_frame_s=0.02)
    hogs = [(open_(rt, e.spec.id, Sink(), fps=1, width=64, height=64), Sink()) for _ in range(4)]
    victim_sink = Sink()
    victim = open_(rt, e.spec.id, victim_sink, fps=30)
    start = clock.now()
    seq = 0
    while clock.now() - start < 3.0:
        seq += 1
        for h, _ in hogs:
            h.submit_frame(seq, seq, solid_jpeg(0, width=64))
        victim.submit_frame(seq, seq, solid_jpeg(0, 32))
        tick = start + seq / 30
        while clock.now() < tick and rt.core.run_once():  # the device works while it has work
            pass
        clock.set(max(clock.now(), tick))
    hog_steps = sum(len(call) for call in e.calls) - len(victim_sink.frames)
    assert hog_steps <= 4 * 4  # 3 s at 1 fps, plus each one's first slot
    assert len(victim_sink.frames) >= 0.9 * 3.0 * 30


# -- a failing engine ends its sessions ------------------------------------------------------------------
class FailingEngine(FakeEngine):
    """Raises on its `fail_at`-th step (counted over every session it serves)."""

    def __init__(self, clock: FakeClock, fail_at: int, **kw: Any) -> None:
        super().__init__(clock, **kw)
        self.fail_at, self.steps = fail_at, 0

    def step(self, items: Sequence[StepInput]) -> list[StepOutput]:
        self.steps += 1
        if self.steps >= self.fail_at:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return super().step(items)


def test_an_engine_that_raises_reports_a_fatal_server_error_once_and_is_never_stepped_again(rt, clock):
    bad = FailingEngine(clock, fail_at=3, kind="text-to-video")
    good = FakeEngine(clock, kind="text-to-video")
    register_engine(bad)
    register_engine(good)
    try:
        sink, other = Sink(), Sink()
        h = open_(rt, bad.spec.id, sink, fps=10)
        g = open_(rt, good.spec.id, other, fps=10)
        for _ in range(10):
            rt.core.run_once()  # one batch per call: one engine, then the other
            rt.core.run_once()
            clock.advance(0.1)
        assert len(sink.frames) == 2 and bad.steps == 3  # failed at its third step, never called again
        assert len(sink.faults) == 1
        fault = sink.faults[0]
        assert fault.fatal and fault.code == "server_error" and "frame 2" in fault.message
        assert "CUDA" not in fault.message  # internals stay in the log
        assert h.fault is fault
        assert len(other.frames) >= 9 and other.faults == []  # the device goes on for the others
        assert rt.core.next_wakeup() is not None and g.fault is None
    finally:
        unregister_engine(bad.spec.id)
        unregister_engine(good.spec.id)


def test_an_engine_breaking_its_contract_is_fatal_too(rt, clock, engines):
    e = engines(clock, kind="text-to-video")
    sink = Sink()
    h = open_(rt, e.spec.id, sink, fps=10)
    e.step = lambda items: [StepOutput([]) for _ in items]  # no frame at all
    rt.core.run_once()
    assert sink.faults and sink.faults[0].fatal and h.fault is not None
    clock.advance(1.0)
    assert rt.core.run_once() == 0 and len(sink.faults) == 1


def test_bad_frames_and_withheld_outputs_are_not_fatal(rt, clock, engines):
    e = engines(clock)
    sink = Sink()
    h = open_(rt, e.spec.id, sink)
    h.submit_frame(1, 0, b"\xff\xd8 not a jpeg")
    rt.core.run_once()
    assert sink.faults[0].code == "bad_frame" and not sink.faults[0].fatal and h.fault is None


# -- controls ------------------------------------------------------------------------------------------
def test_control_lands_on_the_next_step_and_is_reported_with_its_frame(rt, clock, engines):
    e = engines(clock)
    sink = Sink()
    h = open_(rt, e.spec.id, sink)
    h.submit_frame(1, 0, solid_jpeg(0, 32))
    rt.core.run_once()
    h.apply_control(7, params={"level": 200})
    clock.advance(0.1)
    h.submit_frame(2, 0, solid_jpeg(0, 32))
    rt.core.run_once()
    assert [f.control_seq for f in sink.frames] == [0, 7]
    assert e.calls[-1][0][2] == 7
    assert sink.applied == [(7, 1)]
    m = h.metrics()
    assert m.control_lag_frames == 0 and m.controls_applied == 1


def test_invalid_control_is_rejected_and_nothing_changes(rt, clock, engines):
    e = engines(clock)
    sink = Sink()
    h = open_(rt, e.spec.id, sink)
    for bad in ({"level": 999}, {"level": "high"}, {"nope": 1}):
        with pytest.raises(InvalidParams):
            h.apply_control(1, params=bad)
    h.submit_frame(1, 0, solid_jpeg(0, 32))
    rt.core.run_once()
    assert sink.frames[0].control_seq == 0 and sink.applied == []


def test_controls_merge_until_the_next_step_and_each_seq_is_confirmed(rt, clock, engines):
    e = engines(clock, kind="text-to-video")
    sink = Sink()
    h = open_(rt, e.spec.id, sink, fps=10)
    h.apply_control(1, params={"level": 10})
    h.apply_control(2, prompt="b")
    rt.core.run_once()
    assert sink.applied == [(1, 0), (2, 0)]
    assert sink.frames[0].control_seq == 2
    state = rt.core.get(h.session_id).state
    assert state["history"][0][0] == {"level": 10}


def test_a_lying_engine_is_caught_by_its_own_headers(rt, clock, engines):
    """An engine that applies controls two steps late must say so; control.applied follows the header."""
    e = engines(clock, kind="text-to-video", lag=2)
    sink = Sink()
    h = open_(rt, e.spec.id, sink, fps=10)
    rt.core.run_once()  # frame 0
    h.apply_control(5, params={"level": 99})
    for _ in range(4):
        clock.advance(0.1)
        rt.core.run_once()
    assert [f.control_seq for f in sink.frames] == [0, 0, 0, 5, 5]
    assert sink.applied == [(5, 3)]
    assert h.metrics().control_lag_frames == 2


# -- text-to-video pacing and deadlines ----------------------------------------------------------------
def test_text_to_video_frames_follow_fps_without_bursting(rt, clock, engines):
    e = engines(clock, kind="text-to-video", per_frame_s=0.01)
    sink = Sink()
    h = open_(rt, e.spec.id, sink, fps=10)
    rt.core.run_once()
    assert len(sink.frames) == 1
    assert rt.core.run_once() == 0  # next slot not reached: no frame ahead of time
    clock.advance(0.09)
    assert rt.core.run_once() == 1
    # The reader stalls the device for a whole second: missed slots are counted, not replayed.
    clock.advance(1.0)
    assert rt.core.run_once() == 1
    assert rt.core.run_once() == 0
    m = h.metrics()
    assert m.frames_out == 3 and m.deadline_misses >= 9
    assert [f.frame_index for f in sink.frames] == [0, 1, 2]
    assert all(f.input_seq == NO_INPUT_SEQ and f.input_capture_ts_us == 0 for f in sink.frames)


def test_slow_engine_misses_deadlines_and_latency_is_measured(rt, clock, engines):
    e = engines(clock, per_frame_s=0.15)  # 150 ms per frame, budget 100 ms at 10 fps
    sink = Sink()
    h = open_(rt, e.spec.id, sink, fps=10)
    for seq in range(3):
        h.submit_frame(seq, 0, solid_jpeg(0, 32))
        rt.core.run_once()
    m = h.metrics()
    assert m.deadline_misses == 3
    assert m.latency_ms["p50"] == pytest.approx(150.0)
    assert m.ttff_ms == pytest.approx(150.0)


def test_slow_reader_loses_frames_instead_of_growing_a_backlog(rt, clock, engines):
    e = engines(clock, kind="text-to-video")
    sink = Sink()
    h = open_(rt, e.spec.id, sink, fps=10)
    sink.full = True
    for _ in range(5):
        rt.core.run_once()
        clock.advance(0.1)
    sink.full = False
    rt.core.run_once()
    m = h.metrics()
    assert m.dropped_outputs == 5 and m.frames_out == 1
    assert [f.frame_index for f in sink.frames] == [5]


# -- EDF and batching ----------------------------------------------------------------------------------
def test_earliest_deadline_runs_first(rt, clock, engines):
    a, b = engines(clock), engines(clock)
    sa, sb = Sink(), Sink()
    ha = open_(rt, a.spec.id, sa, fps=10, seed=1)   # 100 ms budget
    hb = open_(rt, b.spec.id, sb, fps=50, seed=2)   # 20 ms budget
    ha.submit_frame(1, 0, solid_jpeg(0, 32))
    clock.advance(0.01)
    hb.submit_frame(1, 0, solid_jpeg(0, 32))   # arrived later, but due earlier
    rt.core.run_once()
    assert (len(sa.frames), len(sb.frames)) == (0, 1)
    rt.core.run_once()
    assert (len(sa.frames), len(sb.frames)) == (1, 1)


def test_sessions_of_one_engine_are_batched_when_deadlines_allow(rt, clock, engines):
    e = engines(clock, per_frame_s=0.01)
    sinks = [Sink() for _ in range(4)]
    hs = [open_(rt, e.spec.id, s, fps=30, seed=i) for i, s in enumerate(sinks)]   # 33 ms budget
    for h in hs:
        h.submit_frame(1, 0, solid_jpeg(0, 32))
    rt.core.run_once()
    # 3 x 10 ms fits in 33 ms, a 4th would finish at 40 ms: it waits for the next step.
    assert [len(c) for c in e.calls] == [3]
    assert sum(len(s.frames) for s in sinks) == 3
    assert all(h.metrics().deadline_misses == 0 for h in hs)
    rt.core.run_once()
    assert [len(c) for c in e.calls] == [3, 1]
    assert rt.device_metrics()["batch_sizes"] == {3: 1, 1: 1}


def test_different_resolutions_are_not_batched(rt, clock, engines):
    e = engines(clock)
    s1, s2 = Sink(), Sink()
    h1 = open_(rt, e.spec.id, s1, width=32, height=32)
    h2 = open_(rt, e.spec.id, s2, width=64, height=64, seed=1)
    h1.submit_frame(1, 0, solid_jpeg(0, 32))
    h2.submit_frame(1, 0, solid_jpeg(0, width=64))
    rt.core.run_once()
    assert [len(c) for c in e.calls] == [1]


# -- chunked engines -----------------------------------------------------------------------------------
def test_chunked_engine_plays_chunks_at_fps_and_controls_land_at_the_next_chunk(rt, clock, engines):
    e = engines(clock, kind="text-to-video", chunk=4)
    sink = Sink()
    h = open_(rt, e.spec.id, sink, fps=10)
    rt.core.run_once()
    assert [f.frame_index for f in sink.frames] == [0]       # the chunk is rendered, frame 0 is due
    clock.advance(0.1)
    rt.core.run_once()
    h.apply_control(3, params={"level": 50})                   # arrives while frame 1 is showing
    for _ in range(7):
        clock.advance(0.1)
        rt.core.run_once()
    assert [f.frame_index for f in sink.frames] == list(range(9))
    assert [f.control_seq for f in sink.frames] == [0, 0, 0, 0, 3, 3, 3, 3, 3]
    assert sink.applied == [(3, 4)]
    assert h.metrics().control_lag_frames == 2               # frames 2 and 3 still played the old chunk
    assert len(e.calls) == 3                                  # chunks 0..3, 4..7, 8..11


# -- metrics, share, moderation, lifecycle ---------------------------------------------------------------
def test_gpu_seconds_are_share_times_wall_time(rt, clock, engines):
    e = engines(clock, kind="text-to-video")
    h = open_(rt, e.spec.id, Sink())
    h.set_gpu_share(0.25)
    clock.advance(4.0)
    h.set_gpu_share(0.5)
    clock.advance(2.0)
    assert h.metrics().gpu_seconds == pytest.approx(2.0)
    final = h.close()
    clock.advance(10.0)
    assert final.gpu_seconds == pytest.approx(2.0) and h.metrics().gpu_seconds == pytest.approx(2.0)
    wire = json.loads(final.as_message().to_json())
    assert set(wire) == {"type", "frames_out", "fps", "ttff_ms", "latency_ms", "jitter_ms", "deadline_misses",
                         "dropped_inputs", "dropped_outputs", "gpu_seconds"}
    assert wire["gpu_seconds"] == pytest.approx(2.0) and set(wire["latency_ms"]) == {"p50", "p95", "p99"}


def test_fps_and_jitter_come_from_output_times(rt, clock, engines):
    e = engines(clock, kind="text-to-video")
    h = open_(rt, e.spec.id, Sink(), fps=10)
    for i in range(11):
        rt.core.run_once()
        clock.advance(0.1 if i % 2 else 0.12)  # uneven: 100 ms / 120 ms
    m = h.metrics()
    assert m.frames_out >= 9
    assert 8.0 < m.fps < 10.0
    assert m.jitter_ms > 1.0


def test_moderation_hook_replaces_frames_and_overruns_are_counted(clock, engines):
    seen = []

    def hook(session_id: str, index: int, frame: np.ndarray):
        seen.append(index)
        clock.advance(0.008)  # over the 5 ms budget
        return np.zeros_like(frame) + 255 if index == 1 else None

    rt = DeviceRuntime(clock=clock, moderation_hook=hook, moderation_budget_ms=5.0)
    e = engines(clock, kind="text-to-video")
    sink = Sink()
    h = open_(rt, e.spec.id, sink, fps=10)
    for _ in range(2):
        rt.core.run_once()
        clock.advance(0.1)
    from inference.codec import decode_jpeg
    assert seen == [0, 1]
    assert decode_jpeg(sink.frames[0].jpeg, 32, 32).mean() < 5
    assert decode_jpeg(sink.frames[1].jpeg, 32, 32).mean() > 250
    assert h.metrics().moderation_overruns == 2
    rt.stop()


@pytest.mark.parametrize("verdict", ["raise", "bad replacement"])
def test_failing_moderation_hook_withholds_the_frame(clock, engines, verdict):
    def hook(session_id: str, index: int, frame: np.ndarray):
        if verdict == "raise":
            raise RuntimeError("classifier down")
        return np.zeros((2, 2), np.float32)

    rt = DeviceRuntime(clock=clock, moderation_hook=hook)
    e = engines(clock, kind="text-to-video")
    sink = Sink()
    h = open_(rt, e.spec.id, sink)
    rt.core.run_once()
    assert sink.frames == [] and sink.errors[0][0] == "server_error"
    assert h.metrics().dropped_outputs == 1
    rt.stop()


def test_no_callback_after_close(rt, clock, engines):
    e = engines(clock, kind="text-to-video")
    sink = Sink()
    h = open_(rt, e.spec.id, sink, fps=10)
    rt.core.run_once()
    h.close()
    h.close()  # idempotent
    clock.advance(1.0)
    assert rt.core.run_once() == 0
    assert len(sink.frames) == 1 and rt.session_count() == 0


# -- the built-in engines through the loop ----------------------------------------------------------------
def _gradient_jpeg(shift: int) -> bytes:
    yy, xx = np.mgrid[0:64, 0:64]
    return encode_jpeg(np.stack([(xx * 4 + shift) % 256, yy * 4, (xx + yy) * 2], -1).astype(np.uint8), quality=95)


@pytest.mark.parametrize("engine_id,change", [
    ("dreamfield", {"params": {"zoom": 3.0}}),
    ("stylize", {"params": {"hue": 120.0}}),
    ("identity", {"prompt": "ignored by identity"}),
])
def test_per_frame_engines_show_a_control_in_the_very_next_frame(rt, clock, engine_id, change):
    """Twin sessions (same seed, same inputs); only one gets the control: frames equal before, differ at once."""
    steered, plain = Sink(), Sink()
    kw = dict(width=64, height=64, fps=10, prompt="p")
    hs = open_(rt, engine_id, steered, **kw)
    hp = open_(rt, engine_id, plain, **kw)
    v2v = hs.spec.kind == "video-to-video"
    for i in range(4):
        if i == 2:
            hs.apply_control(9, **change)
        if v2v:
            for h in (hs, hp):
                h.submit_frame(i, i, _gradient_jpeg(i * 16))
        rt.core.run_once()
        clock.advance(0.1)
    assert [f.frame_index for f in steered.frames] == [0, 1, 2, 3]
    assert [f.control_seq for f in steered.frames] == [0, 0, 9, 9]
    assert steered.applied == [(9, 2)] and hs.metrics().control_lag_frames == 0
    same = [f.jpeg == g.jpeg for f, g in zip(steered.frames, plain.frames)]
    assert same[:2] == [True, True]
    assert same[2:] == ([True, True] if engine_id == "identity" else [False, False])


def test_chunked_engine_shows_a_control_at_the_next_chunk(rt, clock):
    sink = Sink()
    h = open_(rt, "dreamfield-chunked", sink, width=64, height=64, fps=10, prompt="p")
    for i in range(12):
        if i == 1:
            h.apply_control(4, params={"palette": "mono"})
        rt.core.run_once()
        clock.advance(0.1)
    assert [f.frame_index for f in sink.frames] == list(range(12))
    assert [f.control_seq for f in sink.frames] == [0] * 8 + [4] * 4
    assert sink.applied == [(4, 8)]
    assert h.metrics().control_lag_frames == 7  # arrived before frame 1 went out, but 1..7 were rendered
    assert h.metrics().deadline_misses == 0
