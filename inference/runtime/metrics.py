"""Per-session and per-device measurements of the frame loop, in bounded memory.

Recorders are written by the loop's threads and read as immutable snapshots (SessionMetrics,
DeviceMetrics). Every window is a fixed-size deque: a session that runs for days costs the same.
Definitions (docs/frame-loop.md has the long form):
- latency: output handed to the client minus input received (video-to-video) or minus the frame's
  slot start (text-to-video);
- TTFF: first output minus first input received (video-to-video) or minus session open (text-to-video);
- jitter: standard deviation of the intervals between the recent outputs;
- control lag: first frame reflecting a control minus the next frame that was to be handed out when
  it arrived (frames), and the time from its arrival to that frame (ms).
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from inference import protocol
from inference.runtime.counters import EngineSeries

LATENCY_WINDOW = 1024
OUTPUT_WINDOW = 256
FPS_WINDOW_S = 2.0


def _pcts(values: deque[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    p = np.percentile(np.fromiter(values, dtype=np.float64), [50, 95, 99])
    return {"p50": round(float(p[0]), 3), "p95": round(float(p[1]), 3), "p99": round(float(p[2]), 3)}


@dataclass(frozen=True)
class SessionMetrics:
    session_id: str
    engine_id: str
    frames_out: int
    fps: float
    ttff_ms: float | None
    latency_ms: dict[str, float]
    jitter_ms: float
    deadline_misses: int
    dropped_inputs: int
    dropped_outputs: int
    bad_frames: int
    gpu_seconds: float
    control_lag_frames: int | None
    control_lag_ms: float | None
    control_lag_frames_max: int | None
    controls_applied: int
    moderation_overruns: int
    open_s: float
    skipped_inputs: int = 0

    def as_message(self) -> protocol.Metrics:
        """This snapshot as the `metrics` message (docs/protocol.md; v1.2 adds dropped_outputs)."""
        return protocol.Metrics(
            frames_out=self.frames_out, fps=self.fps, ttff_ms=self.ttff_ms,
            latency_p50_ms=self.latency_ms["p50"], latency_p95_ms=self.latency_ms["p95"],
            latency_p99_ms=self.latency_ms["p99"], jitter_ms=self.jitter_ms,
            deadline_misses=self.deadline_misses, dropped_inputs=self.dropped_inputs,
            gpu_seconds=self.gpu_seconds, dropped_outputs=self.dropped_outputs,
            skipped_inputs=self.skipped_inputs,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SessionRecorder:
    """Mutable counters of one session; thread-safe."""

    def __init__(self, session_id: str, engine_id: str, opened_at: float, ttff_from_open: bool) -> None:
        self.session_id = session_id
        self.engine_id = engine_id
        self.opened_at = opened_at
        self.closed_at: float | None = None
        self._ttff_from_open = ttff_from_open
        self._lock = threading.Lock()
        self.first_input_at: float | None = None
        self.ttff_s: float | None = None
        self.frames_out = 0
        self.deadline_misses = 0
        self.dropped_inputs = 0
        self.dropped_outputs = 0
        self.bad_frames = 0
        self.moderation_overruns = 0
        self.skipped_inputs = 0
        self.share = 0.0
        self._share_since = opened_at
        self._gpu_seconds_before = 0.0  # accrued under earlier shares
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._out_times: deque[float] = deque(maxlen=OUTPUT_WINDOW)
        self._lags: deque[tuple[int, float]] = deque(maxlen=64)
        self.controls_applied = 0
        self._lag_frames_max: int | None = None
        self._series = EngineSeries(engine_id)  # the process-wide Prometheus series (counters.py)

    def input_received(self, now: float) -> None:
        with self._lock:
            if self.first_input_at is None:
                self.first_input_at = now

    def count(self, what: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + n)
        counter = self._series.by_field.get(what)
        if counter is not None:
            counter.inc(n)

    def set_share(self, share: float, now: float) -> None:
        with self._lock:
            self._gpu_seconds_before += self.share * (now - self._share_since)
            self.share = share
            self._share_since = now

    def output(self, produced_at: float, release: float, deadline: float, delivered: bool) -> None:
        """A frame left the loop at `produced_at` (delivered, or dropped because the reader was full)."""
        series = self._series
        if produced_at > deadline:
            series.misses.inc()
        if delivered:
            series.frames.inc()
            series.latency.observe(max(0.0, produced_at - release))
        else:
            series.dropped_outputs.inc()
        with self._lock:
            if produced_at > deadline:
                self.deadline_misses += 1
            if not delivered:
                self.dropped_outputs += 1
                return
            if self.ttff_s is None:
                start = self.opened_at if self._ttff_from_open else (self.first_input_at or release)
                self.ttff_s = produced_at - start
            self.frames_out += 1
            self._latencies.append((produced_at - release) * 1000.0)
            self._out_times.append(produced_at)

    def control_applied(self, lag_frames: int, lag_s: float) -> None:
        with self._lock:
            self.controls_applied += 1
            self._lags.append((lag_frames, lag_s * 1000.0))
            if self._lag_frames_max is None or lag_frames > self._lag_frames_max:
                self._lag_frames_max = lag_frames

    def gpu_seconds(self, now: float) -> float:
        end = self.closed_at if self.closed_at is not None else now
        return self._gpu_seconds_before + self.share * max(0.0, end - self._share_since)

    def snapshot(self, now: float) -> SessionMetrics:
        with self._lock:
            times = list(self._out_times)
            fps = 0.0
            jitter = 0.0
            end = self.closed_at if self.closed_at is not None else now
            if len(times) >= 2 and end - times[-1] <= FPS_WINDOW_S:
                recent = [t for t in times if t >= times[-1] - FPS_WINDOW_S]
                if len(recent) >= 2 and recent[-1] > recent[0]:
                    fps = (len(recent) - 1) / (recent[-1] - recent[0])
                if len(recent) >= 3:
                    jitter = float(np.std(np.diff(recent))) * 1000.0
            last = self._lags[-1] if self._lags else None
            return SessionMetrics(
                session_id=self.session_id, engine_id=self.engine_id, frames_out=self.frames_out,
                fps=round(fps, 3), ttff_ms=None if self.ttff_s is None else round(self.ttff_s * 1000.0, 3),
                latency_ms=_pcts(self._latencies), jitter_ms=round(jitter, 3),
                deadline_misses=self.deadline_misses, dropped_inputs=self.dropped_inputs,
                dropped_outputs=self.dropped_outputs, bad_frames=self.bad_frames,
                gpu_seconds=round(self.gpu_seconds(now), 6),
                control_lag_frames=None if last is None else last[0],
                control_lag_ms=None if last is None else round(last[1], 3),
                control_lag_frames_max=self._lag_frames_max, controls_applied=self.controls_applied,
                moderation_overruns=self.moderation_overruns, open_s=round(end - self.opened_at, 6),
                skipped_inputs=self.skipped_inputs)


@dataclass(frozen=True)
class DeviceMetrics:
    device_id: str
    sessions: int
    busy_fraction: float
    stage_busy_s: dict[str, float]
    steps: int
    batch_sizes: dict[int, int]
    queue_depths: dict[str, int]
    moderation_overruns: int
    uptime_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DeviceRecorder:
    """Counters of one device; `busy_fraction` is the step stage's share of wall time since start."""

    device_id: str
    started_at: float
    steps: int = 0
    moderation_overruns: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)
    stage_busy_s: dict[str, float] = field(default_factory=lambda: {"decode": 0.0, "step": 0.0,
                                                                     "moderation": 0.0, "encode": 0.0})
    queue_depths: dict[str, int] = field(default_factory=lambda: {"ready": 0, "post": 0, "decode": 0})
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def stage(self, name: str, seconds: float) -> None:
        with self._lock:
            self.stage_busy_s[name] = self.stage_busy_s.get(name, 0.0) + seconds

    def step(self, batch_size: int, seconds: float) -> None:
        with self._lock:
            self.steps += 1
            self.batch_sizes[batch_size] = self.batch_sizes.get(batch_size, 0) + 1
            self.stage_busy_s["step"] += seconds

    def depth(self, queue: str, n: int) -> None:
        with self._lock:
            self.queue_depths[queue] = n

    def snapshot(self, now: float, sessions: int) -> DeviceMetrics:
        with self._lock:
            up = max(1e-9, now - self.started_at)
            return DeviceMetrics(
                device_id=self.device_id, sessions=sessions,
                busy_fraction=round(min(1.0, self.stage_busy_s["step"] / up), 6),
                stage_busy_s={k: round(v, 6) for k, v in self.stage_busy_s.items()},
                steps=self.steps, batch_sizes=dict(sorted(self.batch_sizes.items())),
                queue_depths=dict(self.queue_depths), moderation_overruns=self.moderation_overruns,
                uptime_s=round(up, 6))
