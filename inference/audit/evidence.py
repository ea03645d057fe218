"""What an audit measured: the `Evidence` record and the per-control observations behind it.

Evidence is a plain dataclass so that it crosses every boundary as JSON (`as_dict` / `from_dict`):
the CLI prints it, the platform stores it in an AuditRun row, GET /v1/models shows a summary of it.
Times are milliseconds, rates are per second, lags are in frames and milliseconds.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

TIERS = ("interactive", "streaming", "fast-batch")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def p50(values: Sequence[float]) -> float | None:
    return round(float(statistics.median(values)), 3) if values else None


def pmax(values: Sequence[float]) -> float | None:
    return round(float(max(values)), 3) if values else None


def plan_key(plan: dict[str, Any] | None) -> str | None:
    """Canonical JSON of an audit plan (fps as a float), so equal plans compare equal across storage."""
    if not plan:
        return None
    norm = {k: (float(v) if k == "fps" and v is not None else v) for k, v in plan.items()}
    return json.dumps(norm, sort_keys=True, separators=(",", ":"))


@dataclass
class ControlObservation:
    """One probe control: when it was sent, which frame had to show it, and where it showed.

    `ref_index` is the first frame that must reflect the control if it is applied at once: for
    video-to-video, the output of the first input sent after the control; for text-to-video, the
    frame after the newest one the client had received (frames in flight make this an upper bound
    of the true lag, never a lower one). Lags below 0 (landed even earlier) count as 0.
    """

    seq: int
    value: Any
    sent_at: float
    ref_index: int | None               # None until known (video-to-video: set when that output arrives)
    search_from: int = 0                 # first frame index not yet received when the control was sent
    ref_input_seq: int | None = None
    pixel_index: int | None = None      # first frame >= search start showing a visible change
    pixel_at: float | None = None
    header_index: int | None = None     # first frame whose header reports control_seq >= seq
    header_at: float | None = None

    @property
    def pixel_lag_frames(self) -> int | None:
        if self.pixel_index is None or self.ref_index is None:
            return None
        return max(0, self.pixel_index - self.ref_index)

    @property
    def header_lag_frames(self) -> int | None:
        if self.header_index is None or self.ref_index is None:
            return None
        return max(0, self.header_index - self.ref_index)

    @property
    def pixel_lag_ms(self) -> float | None:
        return None if self.pixel_at is None else (self.pixel_at - self.sent_at) * 1000.0

    @property
    def header_lag_ms(self) -> float | None:
        return None if self.header_at is None else (self.header_at - self.sent_at) * 1000.0


@dataclass
class Evidence:
    """The measured numbers of one audit, the verdict, and the reasons for it."""

    model: str
    kind: str                                  # video-to-video | text-to-video
    transport: str                             # runtime | websocket | clip
    width: int
    height: int
    fps: float
    sessions: int
    declared_tier: str | None = None
    ttff_ms: float | None = None               # p50 over sessions
    ttff_samples_ms: list[float] = field(default_factory=list)
    complete_ms: float | None = None           # fast-batch: time until the whole output existed
    fps_idle: float | None = None
    fps_sustained: float | None = None         # while the probe control changes every few frames
    probe: dict[str, Any] | None = None        # the control used, None when the model has none
    controls_sent: int = 0
    controls_landed_pixels: int = 0
    controls_landed_header: int = 0
    control_lag_frames_pixels: float | None = None   # p50
    control_lag_frames_pixels_max: float | None = None
    control_lag_ms_pixels: float | None = None
    control_lag_frames_header: float | None = None
    control_lag_frames_header_max: float | None = None
    control_lag_ms_header: float | None = None
    control_lag_frames: float | None = None    # the one the verdict uses (pixels when measurable)
    control_lag_ms: float | None = None
    control_lag_source: str | None = None      # pixels | header | None (not applicable)
    change_threshold: float | None = None
    spurious_changes: int = 0                  # visible changes no control explains (detector noise)
    jitter_ms: float | None = None
    deadline_miss_rate: float | None = None
    frames_received: int = 0
    state_persistence: str = "n/a"             # persists | stateless | inconsistent | n/a
    state_persistence_score: float | None = None
    state_memory: float | None = None          # distance between a continued frame and a restart's
    state_continuity_ratio: float | None = None
    mid_run_control: bool | None = None
    server_reported: dict[str, Any] | None = None
    controls: list[dict[str, Any]] = field(default_factory=list)
    plan: dict[str, Any] | None = None          # what was asked: size, fps, sessions, controls ... (see plan_key)
    clip_timings: dict[str, Any] | None = None  # clip tier over REST: client-observed moments, ms
    measured_at: str = field(default_factory=now_iso)
    code_version: str | None = None
    tier: str | None = None
    reasons: list[str] = field(default_factory=list)

    def plan_key(self) -> str | None:
        """A canonical string of the plan this evidence was measured with (None: unknown)."""
        return plan_key(self.plan)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evidence:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def record_controls(self, observations: Sequence[ControlObservation]) -> None:
        """Fill the control-lag fields from the observations (p50 and max)."""
        self.controls_sent = len(observations)
        px = [o.pixel_lag_frames for o in observations if o.pixel_lag_frames is not None]
        hd = [o.header_lag_frames for o in observations if o.header_lag_frames is not None]
        self.controls_landed_pixels, self.controls_landed_header = len(px), len(hd)
        self.control_lag_frames_pixels, self.control_lag_frames_pixels_max = p50(px), pmax(px)
        self.control_lag_frames_header, self.control_lag_frames_header_max = p50(hd), pmax(hd)
        self.control_lag_ms_pixels = p50([o.pixel_lag_ms for o in observations if o.pixel_lag_ms is not None])
        self.control_lag_ms_header = p50([o.header_lag_ms for o in observations if o.header_lag_ms is not None])
        self.controls = [{"seq": o.seq, "value": o.value, "ref_index": o.ref_index,
                          "pixel_index": o.pixel_index, "header_index": o.header_index,
                          "pixel_lag_frames": o.pixel_lag_frames, "header_lag_frames": o.header_lag_frames,
                          "pixel_lag_ms": None if o.pixel_lag_ms is None else round(o.pixel_lag_ms, 3),
                          "header_lag_ms": None if o.header_lag_ms is None else round(o.header_lag_ms, 3)}
                         for o in observations]
        # Pixels are the independent measurement; the server's header is only a fallback.
        if px:
            self.control_lag_frames, self.control_lag_ms, self.control_lag_source = (
                self.control_lag_frames_pixels, self.control_lag_ms_pixels, "pixels")
        elif hd:
            self.control_lag_frames, self.control_lag_ms, self.control_lag_source = (
                self.control_lag_frames_header, self.control_lag_ms_header, "header")
        if observations:
            self.mid_run_control = bool(px or hd)
