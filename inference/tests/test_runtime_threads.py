"""The threaded DeviceRuntime: real engines through decode pool, worker and post threads.

No timing is asserted: tests wait (bounded) for events and check what arrived, that closing stops
callbacks, and that stop() leaves no thread behind.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from inference.codec import decode_jpeg, encode_jpeg
from inference.runtime import DeviceRuntime, FakeClock, OutputFrame, RuntimeCollector, SessionConfig, SessionFault

WAIT_S = 30.0  # generous: the CI machine is shared; nothing here measures speed


class Collect:
    def __init__(self, want: int) -> None:
        self.frames: list[OutputFrame] = []
        self.applied: list[tuple[int, int]] = []
        self.errors: list[tuple[str, str]] = []
        self.want = want
        self.enough = threading.Event()
        self.lock = threading.Lock()

    def on_output(self, f: OutputFrame) -> bool:
        with self.lock:
            self.frames.append(f)
            if len(self.frames) >= self.want:
                self.enough.set()
        return True

    def on_applied(self, seq: int, frame: int) -> None:
        with self.lock:
            self.applied.append((seq, frame))

    def on_error(self, fault: SessionFault) -> None:
        with self.lock:
            self.errors.append((fault.code, fault.message))


def _runtime_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("nf-")]


@pytest.mark.parametrize("engine_id", ["identity", "stylize"])
def test_video_to_video_engines_run_through_the_threaded_loop(engine_id):
    yy, xx = np.mgrid[0:64, 0:64]
    frame = np.stack([xx * 4, yy * 4, (xx + yy) * 2], -1).astype(np.uint8)  # smooth: JPEG keeps it
    sink = Collect(want=3)
    with DeviceRuntime() as rt:
        h = rt.open_session(SessionConfig(engine_id, width=64, height=64), sink.on_output, sink.on_applied,
                            sink.on_error)
        seq = 0
        while not sink.enough.is_set() and seq < 1000:
            seq += 1
            h.submit_frame(seq, seq * 1000, encode_jpeg(frame, quality=95))
            sink.enough.wait(0.05)
        assert sink.enough.wait(WAIT_S)
        out = sink.frames[0]
        assert out.input_capture_ts_us == out.input_seq * 1000
        pixels = decode_jpeg(out.jpeg, 64, 64)
        if engine_id == "identity":
            assert np.abs(pixels.astype(int) - frame).mean() < 4  # two JPEG generations
        m = h.metrics()
        assert m.frames_out >= 3 and m.ttff_ms is not None and m.latency_ms["p50"] > 0
    assert _runtime_threads() == []


@pytest.mark.parametrize("engine_id", ["dreamfield", "dreamfield-chunked"])
def test_text_to_video_engines_stream_and_confirm_controls(engine_id):
    sink = Collect(want=12)
    with DeviceRuntime() as rt:
        h = rt.open_session(SessionConfig(engine_id, width=64, height=64, fps=60, prompt="a"), sink.on_output,
                            sink.on_applied, sink.on_error)
        h.apply_control(1, prompt="b", params={"zoom": 2.0})
        assert sink.enough.wait(WAIT_S)
        h.close()
        n = len(sink.frames)
        assert [f.frame_index for f in sink.frames] == list(range(n))
        assert sink.applied and sink.applied[0][0] == 1
        first = sink.applied[0][1]
        assert all(f.control_seq == (1 if f.frame_index >= first else 0) for f in sink.frames)
        assert sink.errors == []
    assert len(sink.frames) == n  # nothing after close
    assert _runtime_threads() == []


def test_stop_joins_every_thread_and_closes_sessions():
    before = set(threading.enumerate())
    rt = DeviceRuntime(device_id="cpu:t")
    rt.start()
    sinks = [Collect(want=1) for _ in range(3)]
    handles = [rt.open_session(SessionConfig("dreamfield", width=32, height=32), s.on_output) for s in sinks]
    for s in sinks:
        assert s.enough.wait(WAIT_S)
    handles[0].close()
    assert rt.session_count() == 2
    rt.stop()
    rt.stop()  # idempotent
    assert rt.session_count() == 0
    assert set(threading.enumerate()) <= before
    counts = [len(s.frames) for s in sinks]
    assert all(h.metrics().frames_out >= 1 for h in handles)
    assert [len(s.frames) for s in sinks] == counts


def test_fake_clock_drives_the_threaded_worker():
    """The worker sleeps on the injected clock: with time frozen, a text-to-video session makes one frame."""
    clock = FakeClock()
    sink = Collect(want=1)
    with DeviceRuntime(clock=clock) as rt:
        h = rt.open_session(SessionConfig("dreamfield", width=32, height=32, fps=10), sink.on_output)
        assert sink.enough.wait(WAIT_S)
        sink.enough.clear()
        sink.want = 2
        # Time is frozen: however long we wait, frame 1's slot never comes.
        assert sink.enough.wait(0.2) is False and len(sink.frames) == 1
        clock.advance(0.1)
        assert sink.enough.wait(WAIT_S)
        assert h.metrics().frames_out == 2


def test_prometheus_collector_exports_device_and_session_series():
    registry = CollectorRegistry()
    sink = Collect(want=2)
    with DeviceRuntime(device_id="cpu:p") as rt:
        registry.register(RuntimeCollector(rt))
        h = rt.open_session(SessionConfig("dreamfield", width=32, height=32), sink.on_output)
        assert sink.enough.wait(WAIT_S)
        labels = {"device": "cpu:p", "session": h.session_id, "engine": "dreamfield"}
        assert registry.get_sample_value("nextframe_session_frames_out_total", labels) >= 2
        assert registry.get_sample_value("nextframe_session_latency_ms", {**labels, "quantile": "0.99"}) is not None
        assert registry.get_sample_value("nextframe_device_steps_total", {"device": "cpu:p"}) >= 2
        assert registry.get_sample_value("nextframe_device_sessions", {"device": "cpu:p"}) == 1
        h.close()
        assert registry.get_sample_value("nextframe_session_frames_out_total", labels) is None
