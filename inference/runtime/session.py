"""One session's loop state: its input slots, controls, frame timeline and carried engine state.

Everything a session holds is bounded:
- inputs: one raw slot (JPEG not yet decoded) and one decoded slot (not yet stepped). A newer input
  replaces an older one that has not started; the replaced one is counted in dropped_inputs.
- work: a video-to-video session steps at most at its declared fps (its reservation is priced at
  that rate), on a timeline like text-to-video's: a step may start at `next_release`, which then
  moves one period on. Inputs arriving faster wait in the raw slot, newest wins, and are decoded
  only shortly before their slot (`decode_lead`), so neither the step nor the decode of a surplus
  frame is ever paid for.
- controls: merged into one pending update (latest prompt, params merged key by key); at most
  MAX_PENDING_CONTROLS seqs are remembered for control.applied - older ones are superseded by the
  newest, which is always reported.
- output: chunked engines keep at most two chunks of rendered frames for paced playback.
Methods are called from several threads (consumer, decode pool, device worker, post stage); one lock
guards the slots and the timeline.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..engines.base import Engine, EngineSpec, StepInput, StepOutput
from .metrics import SessionRecorder
from .types import NO_INPUT_SEQ, DecodedInput, PendingFrame, RawInput, SessionFault, WorkItem

MAX_PENDING_CONTROLS = 32
# Weight of a new decode time in the session's estimate (exponential moving average).
DECODE_EMA_ALPHA = 0.2
# Margin on top of 1.5x the decode estimate when deciding to decode ahead of a slot.
DECODE_LEAD_MARGIN_S = 0.002


@dataclass
class _ControlWait:
    """A control merged into a step whose first reflecting frame has not been handed out yet."""

    seq: int
    received_at: float
    next_frame_at_receipt: int


class Session:
    def __init__(self, session_id: str, engine: Engine, width: int, height: int, fps: float, prompt: str,
                 params: dict[str, Any], seed: int, opened_at: float) -> None:
        self.session_id = session_id
        self.engine = engine
        self.spec: EngineSpec = engine.spec
        self.width, self.height, self.fps = width, height, fps
        self.period = 1.0 / fps
        self.seed = seed
        self.text_to_video = self.spec.kind == "text-to-video"
        self.chunk = self.spec.chunk_frames
        self.batch_key = (self.spec.id, width, height)
        self.state = engine.new_state(width, height, prompt, dict(params), seed, fps)
        self.metrics = SessionRecorder(session_id, self.spec.id, opened_at, ttff_from_open=self.text_to_video)
        self._lock = threading.Lock()
        self.closed = False
        # Set when the engine failed a step: the session is never scheduled again.
        self.fault: SessionFault | None = None
        # inputs
        self._raw: RawInput | None = None
        self._decoded: DecodedInput | None = None
        self.decoding = False
        self._decode_estimate_s = 0.0
        # controls
        self.prompt = prompt
        self.params = dict(params)
        self.control_seq = 0
        self._pending_prompt: str | None = None
        self._pending_params: dict[str, Any] = {}
        self._pending_seqs: deque[_ControlWait] = deque(maxlen=MAX_PENDING_CONTROLS)
        self._awaiting: deque[_ControlWait] = deque(maxlen=MAX_PENDING_CONTROLS)
        # timeline
        self.next_release = opened_at      # slot start of the next frame (or chunk): no step before it
        self.next_frame_index = 0          # index given to the next produced frame
        self.next_emit_index = 0           # index of the next frame to be handed to the client
        self._playback: deque[PendingFrame] = deque()

    # -- inputs (consumer thread, decode pool) ------------------------------------------------
    def decode_lead(self) -> float:
        """How long before its slot an input is decoded: 1.5x the decode estimate plus a margin."""
        return min(self.period, 1.5 * self._decode_estimate_s + DECODE_LEAD_MARGIN_S)

    def _decode_due(self, now: float) -> bool:
        return now >= self.next_release - self.decode_lead()

    def offer_raw(self, raw: RawInput) -> bool:
        """Put a received frame in the raw slot; True when the caller must start a decode now.

        False with the frame kept: a decode is running (it takes this frame next), or the session's
        next slot is not near yet (the device worker starts the decode then, see `claim_decode`).
        """
        with self._lock:
            if self.closed:
                return False
            if self._raw is not None:
                self.metrics.count("dropped_inputs")
            self._raw = raw
            self.metrics.input_received(raw.received_at)
            if self.decoding or self.fault is not None or not self._decode_due(raw.received_at):
                return False
            self.decoding = True
            return True

    def claim_decode(self, now: float) -> bool:
        """True (and the decoding flag set) when a waiting raw frame's slot is near: decode it now."""
        with self._lock:
            if (self.closed or self.decoding or self._raw is None or self.fault is not None
                    or not self._decode_due(now)):
                return False
            self.decoding = True
            return True

    def take_raw(self, now: float) -> RawInput | None:
        """Next frame to decode; None (and the decoding flag cleared) when there is none due."""
        with self._lock:
            if self._raw is None or self.closed or self.fault is not None or not self._decode_due(now):
                self.decoding = False
                return None
            raw, self._raw = self._raw, None
            return raw

    def observe_decode(self, seconds: float) -> None:
        with self._lock:
            old = self._decode_estimate_s
            self._decode_estimate_s = seconds if old == 0.0 else old + DECODE_EMA_ALPHA * (seconds - old)

    def offer_decoded(self, inp: DecodedInput) -> None:
        with self._lock:
            if self._decoded is not None:
                self.metrics.count("dropped_inputs")
            self._decoded = inp

    # -- controls (consumer thread) ---------------------------------------------------------------
    def offer_control(self, seq: int, prompt: str | None, params: dict[str, Any], now: float) -> None:
        """Merge an already validated control; it is applied at the next step."""
        with self._lock:
            if prompt is not None:
                self._pending_prompt = prompt
            self._pending_params.update(params)
            self._pending_seqs.append(_ControlWait(seq, now, self.next_emit_index))

    # -- scheduling (device worker) -----------------------------------------------------------------
    def is_ready(self, now: float, lookahead: float) -> bool:
        """Whether a step for this session may start now."""
        with self._lock:
            if self.closed or self.fault is not None:
                return False
            if not self.text_to_video:
                # Paced: no more steps than the declared fps pays for.
                return self._decoded is not None and now >= self.next_release
            if self.chunk > 1:
                # Render a chunk ahead of its first slot by the expected render time, keeping at most
                # one more chunk buffered than the one playing.
                return len(self._playback) <= self.chunk and now >= self.next_release - lookahead
            return now >= self.next_release

    def deadline(self) -> float:
        with self._lock:
            if not self.text_to_video and self._decoded is not None:
                return max(self._decoded.received_at, self.next_release) + self.period
            return self.next_release + self.period

    def take_work(self, now: float) -> WorkItem:
        """Consume the input slot and pending controls into one step's work."""
        with self._lock:
            if self._pending_seqs or self._pending_prompt is not None or self._pending_params:
                if self._pending_prompt is not None:
                    self.prompt = self._pending_prompt
                self.params.update(self._pending_params)
                if self._pending_seqs:
                    self.control_seq = max(self.control_seq, max(w.seq for w in self._pending_seqs))
                self._awaiting.extend(self._pending_seqs)
                self._pending_prompt, self._pending_params = None, {}
                self._pending_seqs.clear()
            inp = None
            if self.text_to_video:
                if now > self.next_release + self.period:
                    # Fell behind by more than a slot: the missed slots are deadline misses, and the
                    # timeline restarts at now instead of bursting to catch up (no backlog).
                    self.metrics.count("deadline_misses", int((now - self.next_release) / self.period))
                    self.next_release = now
                release = self.next_release
                deadline = release + self.period
                self.next_release += self.period * self.chunk
            else:
                inp, self._decoded = self._decoded, None
                if inp is None:
                    raise RuntimeError("take_work on a video-to-video session without input (not ready)")
                # Latency counts from arrival; the deadline from when the input could be stepped
                # (an input sent ahead of its slot waits for it, by the client's choice of rate).
                slot = max(inp.received_at, self.next_release)
                release, deadline = inp.received_at, slot + self.period
                # The next slot one period on; a session that paused keeps at most one period of
                # credit, so a burst after a pause never runs above the declared rate for long.
                self.next_release = max(self.next_release, now - self.period) + self.period
            step_input = StepInput(state=self.state, frame=None if inp is None else inp.pixels,
                                   prompt=self.prompt, params=dict(self.params),
                                   control_seq=self.control_seq, frame_index=self.next_frame_index)
            return WorkItem(self.session_id, step_input, release, deadline, inp, self.control_seq)

    def complete(self, work: WorkItem, out: StepOutput) -> list[PendingFrame]:
        """Turn a step's output into frames; per-frame engines' frames go out at once, chunks are paced."""
        if len(out.frames) != self.chunk:
            raise RuntimeError(f"engine {self.spec.id!r} returned {len(out.frames)} frames, "
                               f"its spec says {self.chunk}")
        cseq = work.control_seq if out.control_seq is None else int(out.control_seq)
        if getattr(out, "skipped_inputs", 0):
            self.metrics.count("skipped_inputs", int(out.skipped_inputs))
        inp = work.input
        frames = []
        with self._lock:
            for k, pixels in enumerate(out.frames):
                release = work.release + k * self.period
                frames.append(PendingFrame(
                    session_id=self.session_id, frame_index=self.next_frame_index, pixels=pixels,
                    input_seq=NO_INPUT_SEQ if inp is None else inp.seq,
                    input_capture_ts_us=0 if inp is None else inp.capture_ts_us,
                    control_seq=cseq, release=release, deadline=release + self.period,
                    not_before=release if self.chunk > 1 else 0.0))
                self.next_frame_index += 1
            if self.chunk > 1:
                self._playback.extend(frames)
                return []
            self.next_emit_index = self.next_frame_index
            return frames

    def due_frames(self, now: float) -> list[PendingFrame]:
        """Chunked playback: buffered frames whose slot has come."""
        out = []
        with self._lock:
            while self._playback and self._playback[0].not_before <= now:
                f = self._playback.popleft()
                self.next_emit_index = f.frame_index + 1
                out.append(f)
        return out

    def next_wakeup(self, lookahead: float) -> float | None:
        """The earliest time this session can have work without new input (None: waits for input)."""
        with self._lock:
            if self.closed or self.fault is not None:
                return None
            times = []
            if self._playback:
                times.append(self._playback[0].not_before)
            if self.text_to_video:
                if self.chunk == 1:
                    times.append(self.next_release)
                elif len(self._playback) <= self.chunk:
                    times.append(self.next_release - lookahead)
            else:
                if self._decoded is not None:
                    times.append(self.next_release)
                if self._raw is not None and not self.decoding:
                    times.append(self.next_release - self.decode_lead())
            return min(times) if times else None

    # -- post stage ----------------------------------------------------------------------------------
    def controls_reflected(self, frame: PendingFrame, now: float) -> list[tuple[int, int]]:
        """Controls whose first reflecting frame is `frame` (by the seq its header reports)."""
        done = []
        with self._lock:
            while self._awaiting and self._awaiting[0].seq <= frame.control_seq:
                w = self._awaiting.popleft()
                done.append((w.seq, frame.frame_index))
                self.metrics.control_applied(max(0, frame.frame_index - w.next_frame_at_receipt),
                                             now - w.received_at)
        return done

    def fail(self, fault: SessionFault) -> bool:
        """Stop scheduling this session for good; True the first time (the fault to report)."""
        with self._lock:
            if self.fault is not None or self.closed:
                return False
            self.fault = fault
            self._raw = self._decoded = None
            self._playback.clear()
            return True

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._raw = self._decoded = None
            self._playback.clear()
