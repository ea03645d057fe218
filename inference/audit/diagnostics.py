"""The taxonomy's diagnostics over a Transport, producing classified Evidence.

One audit = `plan.sessions` sessions at the same size and frame rate:
- session 1 (the main one): TTFF; `warmup_frames`; an idle phase (`idle_frames`, no control: idle
  FPS and the visual-change baseline); a control phase (`controls` probe controls, the next one sent
  `control_every` frames after the previous one once the previous one has shown or timed out, so
  every visible change belongs to exactly one control; sustained FPS, jitter, deadline misses and
  both control lags are measured here); a final control back to the default; then the two frames
  the persistence check needs (video-to-video: the output of a last input that switches scene).
- session 2: a stateless restart at the defaults: TTFF, and the frame the persistence check compares.
- sessions 3..n: TTFF only.
Video-to-video sessions are fed synthetic frames at the session's rate; text-to-video ones are read.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from . import pixels as px
from .classifier import apply_verdict, state_verdict
from .evidence import ControlObservation, Evidence, p50
from .transport import AuditError, AuditFrame, AuditPlanError, AuditSession, ModelInfo, Transport

#: An output interval longer than this many frame periods counts as a deadline miss.
MISS_INTERVALS = 1.5


@dataclass
class AuditPlan:
    sessions: int = 3
    width: int = 64
    height: int = 64
    fps: float = 30.0
    warmup_frames: int = 5
    idle_frames: int = 30
    controls: int = 8
    control_every: int = 5
    max_lag_frames: int = 30
    frame_timeout_s: float = 10.0
    probe_param: str | None = None

    def __post_init__(self) -> None:
        if self.sessions < 2:
            raise ValueError("an audit needs at least 2 sessions (the persistence check restarts one)")
        if self.idle_frames < 3 or self.controls < 1 or self.control_every < 1:
            raise ValueError("idle_frames >= 3, controls >= 1 and control_every >= 1 are required")
        if self.width < 1 or self.height < 1:
            raise ValueError(f"the size must be positive, got {self.width}x{self.height}")
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps:g}")

    def as_plan(self) -> dict[str, Any]:
        """What this plan asks for, as stored with the evidence (`Evidence.plan`); the timeout is left
        out: it only decides when a measurement gives up, never what it measures."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "frame_timeout_s"}
        out["fps"] = float(self.fps)
        return {"kind": "live", **out}


@dataclass
class _Seen:
    frame: AuditFrame
    pixels: np.ndarray
    diff: float | None
    phase: str


@dataclass
class _Run:
    """Everything the main session observed."""

    info: ModelInfo
    plan: AuditPlan
    probe: px.Probe | None
    seen: list[_Seen] = field(default_factory=list)
    controls: list[ControlObservation] = field(default_factory=list)
    threshold: float | None = None
    phase: str = "warmup"
    last_index: int = -1
    input_seq_index: dict[int, int] = field(default_factory=dict)
    spurious_changes: int = 0

    def take(self, f: AuditFrame) -> _Seen:
        """Record one output frame and update every control still waiting for it."""
        pix = px.decode(f.jpeg)
        prev = self.seen[-1] if self.seen else None
        diff = None if prev is None else px.distance(prev.pixels, pix)
        s = _Seen(f, pix, diff, self.phase)
        self.seen.append(s)
        self.last_index = max(self.last_index, f.frame_index)
        if f.has_input:
            self.input_seq_index.setdefault(f.input_seq, f.frame_index)
        changed = self.threshold is not None and diff is not None and diff > self.threshold
        claimed = False
        for c in self.controls:
            if c.ref_index is None and c.ref_input_seq is not None and f.has_input and f.input_seq >= c.ref_input_seq:
                c.ref_index = f.frame_index
            if c.header_index is None and f.control_seq >= c.seq:
                c.header_index, c.header_at = f.frame_index, f.received_at
            # A visible change shows every control sent before it that had not shown yet: when two
            # controls land in the same frame (a chunk boundary), the older one was superseded there,
            # exactly as the protocol's control.applied reports it. Probe values cycle through at
            # least three looks, so merged controls still change the picture.
            if changed and c.pixel_index is None and f.frame_index >= c.search_from:
                c.pixel_index, c.pixel_at = f.frame_index, f.received_at
                claimed = True
        if changed and not claimed and self.phase in ("control", "settle"):
            self.spurious_changes += 1
        return s

    def resolved(self, c: ControlObservation) -> bool:
        if c.pixel_index is not None and c.ref_index is not None:
            return True
        return self.last_index - c.search_from > self.plan.max_lag_frames

    def frames(self, phase: str) -> list[_Seen]:
        return [s for s in self.seen if s.phase == phase]


def _fps(frames: list[_Seen]) -> float | None:
    if len(frames) < 2:
        return None
    span = frames[-1].frame.received_at - frames[0].frame.received_at
    return round((len(frames) - 1) / span, 3) if span > 0 else None


def _fps_windows(windows: list[list[_Seen]]) -> float | None:
    """Frames per second over several windows together (intervals inside each window only)."""
    n = sum(max(0, len(w) - 1) for w in windows)
    span = sum(w[-1].frame.received_at - w[0].frame.received_at for w in windows if len(w) >= 2)
    return round(n / span, 3) if span > 0 else None


def _intervals(frames: list[_Seen]) -> list[float]:
    t = [s.frame.received_at for s in frames]
    return [b - a for a, b in zip(t, t[1:])]


async def _next(sess: AuditSession, plan: AuditPlan, what: str) -> AuditFrame:
    f = await sess.next_frame(plan.frame_timeout_s)
    if f is None:
        raise AuditError("no_frames", f"no output frame within {plan.frame_timeout_s} s ({what})")
    return f


class _Driver:
    """Runs the main session's phases; text-to-video is paced by the server, video-to-video by us."""

    def __init__(self, transport: Transport, sess: AuditSession, run: _Run, started_at: float) -> None:
        self.t = transport
        self.sess = sess
        self.run = run
        self.plan = run.plan
        self.started_at = started_at
        self.v2v = run.info.kind == "video-to-video"
        self.input_seq = 0
        self.input_sent_at: dict[int, float] = {}
        self.next_slot = started_at
        self.control_seq = 0
        self.ttff_ms: float | None = None

    async def _send_input(self, variant: int = 0) -> int:
        seq = self.input_seq
        frame = px.pattern(self.plan.width, self.plan.height, seq, variant)
        self.input_sent_at[seq] = await self.sess.send_frame(seq, px.encode(frame))
        self.input_seq += 1
        return seq

    async def step(self, control: Any = None) -> None:
        """One tick: text-to-video waits for the next frame; video-to-video sends the next input
        at its slot and takes whatever output arrived meanwhile. A `control` value goes out first:
        right after the newest frame (text-to-video) or right before the next input (video-to-video),
        so its measured lag holds no waiting of the audit's own."""
        if not self.v2v:
            if control is not None:
                await self.send_control(control)
            self._took(self.run.take(await _next(self.sess, self.plan, self.run.phase)))
            return
        while True:
            remaining = self.next_slot - self.t.now()
            if remaining <= 0:
                break
            f = await self.sess.next_frame(remaining)
            if f is not None:
                self._took(self.run.take(f))
        if self.input_seq - self._outputs_for_inputs() > 3 * self.plan.fps:
            raise AuditError("no_frames", "the model stopped answering input frames")
        if control is not None:
            await self.send_control(control)
        await self._send_input()
        self.next_slot = max(self.next_slot + 1.0 / self.plan.fps, self.t.now() - 1.0 / self.plan.fps)

    def _outputs_for_inputs(self) -> int:
        return max(self.run.input_seq_index, default=-1) + 1

    def _took(self, s: _Seen) -> None:
        if self.ttff_ms is None:
            start = self.input_sent_at.get(s.frame.input_seq, self.started_at) if self.v2v else self.started_at
            self.ttff_ms = round((s.frame.received_at - start) * 1000.0, 3)

    async def until_frames(self, phase: str, n: int) -> None:
        self.run.phase = phase
        while len(self.run.frames(phase)) < n:
            await self.step()

    async def send_control(self, value: Any) -> None:
        assert self.run.probe is not None
        self.control_seq += 1
        sent_at = await self.sess.send_control(self.control_seq, {self.run.probe.param: value})
        obs = ControlObservation(seq=self.control_seq, value=value, sent_at=sent_at, ref_index=None,
                                 search_from=self.run.last_index + 1)
        if self.v2v:
            obs.ref_input_seq = self.input_seq  # the next input sent must come back reflecting it
        else:
            obs.ref_index = self.run.last_index + 1
        self.run.controls.append(obs)

    async def control_phase(self) -> None:
        """Send the probe every `control_every` frames (inputs, for video-to-video), then let the last
        ones show ("settle", not counted as sustained FPS)."""
        run, plan, probe = self.run, self.plan, self.run.probe
        run.phase = "control"
        if probe is None:
            # Nothing to steer: the same number of frames is measured as "sustained" for the record.
            await self.until_frames("control", plan.controls * plan.control_every)
            return
        values = [probe.value(i) for i in range(plan.controls)]
        if values[-1] != probe.default:
            values.append(probe.default)  # end at the default: the restart comparison needs it
        since_last = plan.control_every
        while values:
            control = None
            if since_last >= plan.control_every:
                control = values.pop(0)
                since_last = 0
            before = len(run.seen)
            await self.step(control)
            since_last += 1 if self.v2v else len(run.seen) - before
        run.phase = "settle"
        while not all(run.resolved(c) for c in run.controls):
            await self.step()
        # A control the server refused (control.rejected) never shows: that is not evidence of a
        # tier, it is a failed measurement - say so instead of concluding "no mid-run control".
        rejected = list(getattr(self.sess, "rejected", None) or [])
        if rejected:
            first = rejected[0]
            raise AuditError("control_rejected", f"the server rejected the probe control "
                                                 f"{probe.param}: {first.get('code')}: {first.get('message')}")

    async def persistence_frames(self) -> tuple[_Seen, _Seen]:
        """The last frame before and the first frame after the end of the run (video-to-video: after a scene switch)."""
        run = self.run
        run.phase = "persist"
        if not self.v2v:
            start = len(run.seen)
            while True:
                await self.step()
                tail = run.seen[start:]
                if len(tail) >= 2 and tail[-1].frame.frame_index == tail[-2].frame.frame_index + 1:
                    return tail[-2], tail[-1]
        last = self.input_seq - 1
        while last not in run.input_seq_index:
            self._took(run.take(await _next(self.sess, self.plan, "last input's output")))
        switch = await self._send_input(variant=1)
        while switch not in run.input_seq_index:
            self._took(run.take(await _next(self.sess, self.plan, "scene switch output")))
        by_seq = {s.frame.input_seq: s for s in run.seen if s.frame.has_input}
        return by_seq[last], by_seq[switch]


async def _first_frame(transport: Transport, info: ModelInfo, plan: AuditPlan, variant: int) -> tuple[float, np.ndarray]:
    """Open a fresh session at the defaults; return (TTFF ms, its first frame)."""
    started = transport.now()
    sess = await transport.open(info.id, plan.width, plan.height, plan.fps)
    try:
        if info.kind == "video-to-video":
            started = await sess.send_frame(0, px.encode(px.pattern(plan.width, plan.height, 0, variant)))
        f = await _next(sess, plan, "first frame")
        return round((f.received_at - started) * 1000.0, 3), px.decode(f.jpeg)
    finally:
        await sess.close()


async def audit_live(transport: Transport, model: str, plan: AuditPlan | None = None) -> Evidence:
    """Measure a live model through `transport` and classify it."""
    plan = plan or AuditPlan()
    info = await transport.describe(model)
    try:
        probe = px.choose_probe(info.params, plan.probe_param)
    except ValueError as exc:
        raise AuditPlanError(str(exc)) from None
    run = _Run(info, plan, probe)
    started = transport.now()
    sess = await transport.open(model, plan.width, plan.height, plan.fps)
    driver = _Driver(transport, sess, run, started)
    try:
        await driver.until_frames("warmup", plan.warmup_frames)
        await driver.until_frames("idle", plan.idle_frames)
        idle_diffs = [s.diff for s in run.frames("idle")[1:] if s.diff is not None]
        run.threshold = px.change_threshold(idle_diffs)
        await driver.control_phase()
        # A second idle window after the controls: idle FPS brackets the interaction, so a load
        # burst on the machine does not pass for an engine that slows down when steered.
        await driver.until_frames("idle2", max(2, plan.idle_frames // 2))
        before, after = await driver.persistence_frames()
    finally:
        server = await sess.close()
    ttffs = [driver.ttff_ms] if driver.ttff_ms is not None else []
    ttff, restart = await _first_frame(transport, info, plan, variant=1)
    ttffs.append(ttff)
    for _ in range(plan.sessions - 2):
        ttffs.append((await _first_frame(transport, info, plan, variant=0))[0])

    ev = Evidence(model=model, kind=info.kind, transport=transport.name, width=plan.width, height=plan.height,
                  fps=plan.fps, sessions=plan.sessions, declared_tier=info.declared_tier)
    ev.plan = plan.as_plan()
    ev.ttff_samples_ms = ttffs
    ev.ttff_ms = p50(ttffs)
    ev.fps_idle = _fps_windows([run.frames("idle"), run.frames("idle2")])
    control_frames = run.frames("control")
    ev.fps_sustained = _fps(control_frames)
    intervals = _intervals(control_frames)
    if intervals:
        ev.jitter_ms = round(float(np.std(intervals)) * 1000.0, 3)
        ev.deadline_miss_rate = round(sum(1 for i in intervals if i > MISS_INTERVALS / plan.fps) / len(intervals), 4)
    ev.frames_received = len(run.seen)
    ev.change_threshold = round(run.threshold or 0.0, 3)
    ev.probe = probe.as_dict() if probe else None
    ev.record_controls(run.controls)
    ev.spurious_changes = run.spurious_changes
    memory = px.distance(after.pixels, restart)
    continuity = px.distance(after.pixels, before.pixels)
    gap = px.distance(restart, before.pixels)
    ev.state_persistence, ev.state_persistence_score, ev.state_continuity_ratio = state_verdict(memory, continuity, gap)
    ev.state_memory = round(memory, 3)
    ev.server_reported = server
    return apply_verdict(ev)

