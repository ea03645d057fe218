"""The device loop's logic, synchronous: sessions, and one step as schedule -> execute -> update.

DeviceCore holds no threads. Tests drive it step by step with a FakeClock (`run_once`); the threaded
DeviceRuntime (device.py) calls the same stage methods from its decode pool, its worker thread and
its post thread, so what is tested is what runs.

Stages of a frame: decode (JPEG -> pixels, per session at most one in flight) -> step (batched
engine call, EDF) -> moderation hook (budgeted) -> encode -> deliver to the session's on_output.
"""
from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable

import numpy as np

from .. import codec
from ..engines import get_engine
from ..engines.base import BadFrame, InvalidParams
from ..error_codes import ErrorCode
from .clock import Clock
from .metrics import DeviceRecorder
from .scheduler import Candidate, EdfScheduler
from .session import Session
from .types import Callbacks, DecodedInput, OutputFrame, PendingFrame, SessionConfig, SessionFault, WorkItem

log = logging.getLogger(__name__)

ModerationHook = Callable[[str, int, np.ndarray], "np.ndarray | None"]
# (session id, input seq, decoded pixels) -> None to use the input, or pixels that replace it
# before the model sees it. Raising withholds the input (fail closed).
InputHook = Callable[[str, int, np.ndarray], "np.ndarray | None"]
_ids = itertools.count(1)


class DeviceCore:
    def __init__(self, device_id: str, clock: Clock, moderation_hook: ModerationHook | None = None,
                 moderation_budget_ms: float = 5.0, max_batch: int = 8, jpeg_quality: int = 85,
                 max_frame_bytes: int = codec.MAX_FRAME_BYTES, input_hook: InputHook | None = None) -> None:
        self.device_id = device_id
        self.input_hook = input_hook
        self.clock = clock
        self.moderation_hook = moderation_hook
        self.moderation_budget_s = moderation_budget_ms / 1000.0
        self.jpeg_quality = jpeg_quality
        self.max_frame_bytes = max_frame_bytes
        self.scheduler = EdfScheduler(max_batch=max_batch)
        self.metrics = DeviceRecorder(device_id, clock.now())
        self._sessions: dict[str, Session] = {}
        self._callbacks: dict[str, Callbacks] = {}
        self._cb_locks: dict[str, threading.RLock] = {}
        self._lock = threading.Lock()

    # -- sessions ---------------------------------------------------------------------------------
    def open(self, config: SessionConfig, callbacks: Callbacks) -> Session:
        """Validate `config` and add a session; raises UnknownModel / InvalidParams."""
        engine = get_engine(config.engine_id)
        spec = engine.spec
        width, height, fps = spec.resolve_size(config.width, config.height, config.fps)
        params = spec.resolve_params(config.params)
        prompt = spec.validate_prompt(config.prompt)
        if isinstance(config.seed, bool) or not isinstance(config.seed, int):
            raise InvalidParams("seed must be an integer")
        sid = f"{self.device_id}-s{next(_ids)}"
        s = Session(sid, engine, width, height, fps, prompt, params, config.seed, self.clock.now())
        self.scheduler.times.prime(s.batch_key, spec.cost(width, height, fps).compute_share / fps)
        with self._lock:
            self._sessions[sid] = s
            self._callbacks[sid] = callbacks
            self._cb_locks[sid] = threading.RLock()
        return s

    def close(self, session_id: str) -> None:
        """Remove a session; waits for a callback of it in progress, after which none fires."""
        with self._lock:
            s = self._sessions.get(session_id)
            lock = self._cb_locks.get(session_id)
        if s is None or lock is None:
            return
        with lock:
            s.close()
            s.metrics.closed_at = self.clock.now()
        with self._lock:
            self._sessions.pop(session_id, None)
            self._callbacks.pop(session_id, None)
            self._cb_locks.pop(session_id, None)

    def sessions(self) -> list[Session]:
        with self._lock:
            return list(self._sessions.values())

    def get(self, session_id: str) -> Session | None:
        with self._lock:
            return self._sessions.get(session_id)

    def _error(self, s: Session, fault: SessionFault) -> None:
        with self._lock:
            cb, lock = self._callbacks.get(s.session_id), self._cb_locks.get(s.session_id)
        if cb is None or lock is None or cb.on_error is None:
            return
        with lock:
            if not s.closed:
                try:
                    cb.on_error(fault)
                except Exception:  # a consumer's bug must not stop the device
                    log.exception("on_error callback of %s failed", s.session_id)

    def _fail(self, s: Session, message: str) -> None:
        """The engine cannot go on with this session: never schedule it again, tell its owner once."""
        fault = SessionFault(ErrorCode.SERVER_ERROR, message, fatal=True)
        if s.fail(fault):
            self._error(s, fault)

    # -- stage 1: decode ----------------------------------------------------------------------------
    def decodes_due(self, now: float) -> list[Session]:
        """Sessions whose waiting input frame is now near its slot; each is claimed for one decode job."""
        return [s for s in self.sessions() if not s.text_to_video and s.claim_decode(now)]

    def decode_pending(self, s: Session) -> int:
        """Decode the raw slot while it holds a frame due for decoding; returns frames decoded."""
        n = 0
        while (raw := s.take_raw(self.clock.now())) is not None:
            t0 = self.clock.now()
            try:
                pixels = codec.decode_jpeg(raw.jpeg, s.width, s.height, self.max_frame_bytes)
            except BadFrame as exc:
                s.metrics.count("bad_frames")
                self._error(s, SessionFault(exc.code, f"frame {raw.seq}: {exc.reason}"))
                continue
            finally:
                dt = self.clock.now() - t0
                self.metrics.stage("decode", dt)
                s.observe_decode(dt)
            checked = pixels if self.input_hook is None else self._check_input(s, raw.seq, pixels)
            if checked is None:
                continue
            s.offer_decoded(DecodedInput(raw.seq, raw.capture_ts_us, checked, raw.received_at))
            n += 1
        return n

    def _check_input(self, s: Session, seq: int, pixels: np.ndarray) -> np.ndarray | None:
        """The input hook (moderation of input frames, before the model): the pixels to use, or None
        when the input is withheld (the hook failed or returned something unusable)."""
        assert self.input_hook is not None
        t0 = self.clock.now()
        try:
            replaced = self.input_hook(s.session_id, seq, pixels)
        except Exception as exc:
            log.exception("input hook failed on %s input %d", s.session_id, seq)
            s.metrics.count("dropped_inputs")
            self._error(s, SessionFault(ErrorCode.SERVER_ERROR, f"input frame {seq} withheld: moderation failed ({exc})"))
            return None
        finally:
            self.metrics.stage("moderation", self.clock.now() - t0)
        if replaced is None:
            return pixels
        if not isinstance(replaced, np.ndarray) or replaced.dtype != np.uint8 or replaced.shape != pixels.shape:
            s.metrics.count("dropped_inputs")
            self._error(s, SessionFault(ErrorCode.SERVER_ERROR, f"input frame {seq} withheld: moderation returned "
                                                                f"a replacement that is not a {pixels.shape} uint8 array"))
            return None
        return replaced

    # -- stage 2: schedule / execute / update -----------------------------------------------------
    def _lookahead(self, s: Session) -> float:
        if s.chunk == 1:
            return 0.0
        return 1.5 * self.scheduler.times.estimate(s.batch_key, s.chunk) + 0.002

    def schedule(self, now: float) -> list[tuple[Session, WorkItem]]:
        """Pick the next batch (EDF, same engine and size, deadlines kept) and take its work."""
        sessions = self.sessions()
        ready = [s for s in sessions if s.is_ready(now, self._lookahead(s))]
        self.metrics.depth("ready", len(ready))
        self.metrics.depth("decode", sum(1 for s in sessions if s.decoding))
        by_id = {s.session_id: s for s in ready}
        picked = self.scheduler.pick(
            [Candidate(s.session_id, s.batch_key, s.deadline(), s.chunk) for s in ready], now)
        return [(by_id[c.session_id], by_id[c.session_id].take_work(now)) for c in picked]

    def execute(self, batch: list[tuple[Session, WorkItem]]) -> list:
        """Run the engine once over the batch; returns its outputs (or None when it raised)."""
        engine = batch[0][0].engine
        t0 = self.clock.now()
        try:
            outs = engine.step([w.step_input for _, w in batch])
            if len(outs) != len(batch):
                raise RuntimeError(f"engine returned {len(outs)} outputs for {len(batch)} inputs")
        except Exception:
            # The engine's state for these sessions is unknown now (a step mutates it): they end.
            # What went wrong stays in the log; the client is told which frame its model failed at.
            log.exception("engine %s failed a step", engine.spec.id)
            for s, w in batch:
                self._fail(s, f"model {engine.spec.id!r} failed at frame {w.step_input.frame_index}; "
                              "the session cannot go on")
            outs = None
        dt = self.clock.now() - t0
        self.metrics.step(len(batch), dt)
        if outs is not None:
            self.scheduler.times.observe(batch[0][0].batch_key, sum(s.chunk for s, _ in batch), dt)
        return outs or []

    def update(self, batch: list[tuple[Session, WorkItem]], outs: list) -> list[PendingFrame]:
        """Hand the outputs back to their sessions; returns frames due for the post stage now."""
        frames: list[PendingFrame] = []
        for (s, work), out in zip(batch, outs):
            try:
                frames.extend(s.complete(work, out))
            except RuntimeError as exc:
                log.error("session %s: %s", s.session_id, exc)
                self._fail(s, f"model {s.spec.id!r} broke its contract: {exc}")
        return frames

    def due_frames(self, now: float) -> list[PendingFrame]:
        out: list[PendingFrame] = []
        for s in self.sessions():
            if s.chunk > 1:
                out.extend(s.due_frames(now))
        return out

    def next_wakeup(self) -> float | None:
        times = [t for s in self.sessions() if (t := s.next_wakeup(self._lookahead(s))) is not None]
        return min(times) if times else None

    # -- stage 3: moderation, encode, deliver ---------------------------------------------------------
    def post(self, f: PendingFrame) -> None:
        s = self.get(f.session_id)
        if s is None or s.closed:
            return
        pixels = f.pixels
        if self.moderation_hook is not None:
            t0 = self.clock.now()
            try:
                replaced = self.moderation_hook(s.session_id, f.frame_index, pixels)
            except Exception as exc:
                # Fail closed: a frame the checks could not pass is not sent.
                log.exception("moderation hook failed on %s frame %d", s.session_id, f.frame_index)
                s.metrics.count("dropped_outputs")
                self._error(s, SessionFault(ErrorCode.SERVER_ERROR,
                                            f"frame {f.frame_index} withheld: moderation failed ({exc})"))
                return
            finally:
                dt = self.clock.now() - t0
                self.metrics.stage("moderation", dt)
                if dt > self.moderation_budget_s:
                    s.metrics.count("moderation_overruns")
                    self.metrics.moderation_overruns += 1
            if replaced is not None:
                if (not isinstance(replaced, np.ndarray) or replaced.dtype != np.uint8
                        or replaced.shape != pixels.shape):
                    s.metrics.count("dropped_outputs")
                    self._error(s, SessionFault(
                        ErrorCode.SERVER_ERROR, f"frame {f.frame_index} withheld: moderation returned "
                                                f"a replacement that is not a {pixels.shape} uint8 array"))
                    return
                pixels = replaced
        t0 = self.clock.now()
        jpeg = codec.encode_jpeg(pixels, self.jpeg_quality)
        now = self.clock.now()
        self.metrics.stage("encode", now - t0)
        out = OutputFrame(f.frame_index, f.input_seq, f.input_capture_ts_us, f.control_seq, jpeg, now)
        with self._lock:
            cb, lock = self._callbacks.get(s.session_id), self._cb_locks.get(s.session_id)
        if cb is None or lock is None:
            return
        with lock:
            if s.closed:
                return
            try:
                delivered = bool(cb.on_output(out))
            except Exception:
                log.exception("on_output callback of %s failed", s.session_id)
                delivered = False
            s.metrics.output(now, f.release, f.deadline, delivered)
            for seq, index in s.controls_reflected(f, now):
                if cb.on_control_applied is not None:
                    try:
                        cb.on_control_applied(seq, index)
                    except Exception:
                        log.exception("on_control_applied callback of %s failed", s.session_id)

    # -- one iteration of the device worker, and the synchronous driver ---------------------------------
    def step(self) -> tuple[bool, list[PendingFrame]]:
        """Due playback frames plus one batch (schedule -> execute -> update).

        Returns (whether a batch ran, frames for the post stage). The threaded worker calls exactly this.
        """
        now = self.clock.now()
        frames = self.due_frames(now)
        batch = self.schedule(now)
        if batch:
            frames.extend(self.update(batch, self.execute(batch)))
            frames.extend(self.due_frames(self.clock.now()))
        return bool(batch), frames

    def run_once(self) -> int:
        """One pass of every stage, inline: decode, step, post. Returns frames posted."""
        self.decodes_due(self.clock.now())
        for s in self.sessions():
            if s.decoding:
                self.decode_pending(s)
        _, frames = self.step()
        for f in frames:
            self.post(f)
        return len(frames)
