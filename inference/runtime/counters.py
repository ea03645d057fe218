"""Process-wide Prometheus series of the frame loop, fed by every SessionRecorder as frames leave.

Unlike the per-session snapshots (inference.runtime.prometheus, the `metrics` message), these are
monotonic across sessions, so a scrape can take rates and quantiles over any window: a latency
histogram, delivered frames, deadline misses and drops, by engine. They are created unregistered
(`registry=None`); the server registers `COLLECTORS` on the registry it serves (nextframe.metrics).
Each update costs a lock and an add (about a microsecond): nothing next to a frame's step.
"""
from __future__ import annotations

from prometheus_client import Counter, Histogram

# Seconds: 5 ms .. 2.5 s, dense around one frame at 30 fps (33 ms) and 10 fps (100 ms).
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.033, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)

FRAME_LATENCY = Histogram(
    "nextframe_frame_latency_seconds",
    "Output-frame latency: produced minus input received (video-to-video) or frame release (text-to-video)",
    ["engine"], buckets=LATENCY_BUCKETS, registry=None)
FRAMES_OUT = Counter("nextframe_frames_out", "Output frames delivered to sessions", ["engine"], registry=None)
DEADLINE_MISSES = Counter("nextframe_deadline_misses", "Output frames produced after their deadline", ["engine"],
                          registry=None)
DROPPED = Counter("nextframe_dropped_frames",
                  "Frames dropped: input (a newer input replaced it) or output (the reader was not keeping up)",
                  ["engine", "direction"], registry=None)

COLLECTORS = (FRAME_LATENCY, FRAMES_OUT, DEADLINE_MISSES, DROPPED)


class EngineSeries:
    """The series of one engine, resolved once per session (no label lookup per frame)."""

    def __init__(self, engine_id: str) -> None:
        self.latency = FRAME_LATENCY.labels(engine_id)
        self.frames = FRAMES_OUT.labels(engine_id)
        self.misses = DEADLINE_MISSES.labels(engine_id)
        self.dropped_inputs = DROPPED.labels(engine_id, "input")
        self.dropped_outputs = DROPPED.labels(engine_id, "output")
        # SessionRecorder.count(field): the recorder fields that have a process-wide series.
        self.by_field = {"dropped_inputs": self.dropped_inputs, "dropped_outputs": self.dropped_outputs,
                         "deadline_misses": self.misses}
