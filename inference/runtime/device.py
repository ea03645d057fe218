"""The threaded runner of one device: a thin wrapper that moves DeviceCore's stages onto threads.

- decode pool (`decode_workers` threads): JPEG -> pixels, at most one job per session at a time;
- worker thread (owns the device): schedule -> execute -> update, EDF, batched;
- post thread: moderation hook -> encode -> on_output, fed through a bounded queue.
The stages overlap (frame N+1 decodes while N steps and N-1 encodes), so throughput is set by the
slowest stage. When the post queue is full the worker waits: backpressure, never a growing backlog.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import codec
from ..engines.base import BadFrame, EngineSpec, InvalidParams
from .clock import Clock, MonotonicClock
from .core import DeviceCore, InputHook, ModerationHook
from .metrics import SessionMetrics
from .session import Session
from .types import Callbacks, OutputFrame, PendingFrame, RawInput, SessionConfig, SessionFault

log = logging.getLogger(__name__)

U32 = 0xFFFFFFFF
U64 = 0xFFFFFFFFFFFFFFFF


def default_torch_threads() -> int:
    """Intra-op threads for engine steps: all cores but one, which the decode/encode stages use.

    Measured on the 2-core CPU (docs/frame-loop.md): with two OpenMP threads the step fights the
    JPEG stages and any other process for both cores and its spin-waits burn ~8x the CPU per frame;
    with one, the stages really run side by side. torch's setting is process-wide.
    """
    return max(1, (os.cpu_count() or 2) - 1)


class SessionHandle:
    """What the consumer holds for one open session. Thread-safe."""

    def __init__(self, runtime: DeviceRuntime, session: Session) -> None:
        self._rt = runtime
        self._s = session
        self.session_id: str = session.session_id
        self.spec: EngineSpec = session.spec
        self.width: int = session.width
        self.height: int = session.height
        self.fps: float = session.fps
        self.frame_budget_ms: float = round(1000.0 / session.fps, 3)
        self._final: SessionMetrics | None = None
        self._close_lock = threading.Lock()

    def submit_frame(self, seq: int, capture_ts_us: int, jpeg: bytes) -> None:
        """Offer an input frame (latest wins). Oversize and misuse raise BadFrame; decode errors go to on_error."""
        s = self._s
        if s.text_to_video:
            raise BadFrame(f"model {self.spec.id!r} is text-to-video and takes no input frames")
        if not (0 <= seq <= U32) or not (0 <= capture_ts_us <= U64):
            raise BadFrame("seq must be a u32 and capture_ts_us a u64")
        if len(jpeg) > self._rt.core.max_frame_bytes:
            s.metrics.count("bad_frames")
            raise BadFrame(f"oversize frame: {len(jpeg)} bytes exceeds the limit of "
                           f"{self._rt.core.max_frame_bytes} bytes")
        raw = RawInput(seq, capture_ts_us, bytes(jpeg), self._rt.clock.now())
        if s.offer_raw(raw):
            self._rt._start_decode(s)
        else:
            self._rt._wake.set()  # the worker starts its decode when the session's slot nears

    def apply_control(self, seq: int, prompt: str | None = None, params: dict[str, Any] | None = None) -> None:
        """Validate and queue a control for the next step; raises InvalidParams (nothing is applied then)."""
        if isinstance(seq, bool) or not isinstance(seq, int) or not (0 < seq <= U32):
            raise InvalidParams("control seq must be an integer in 1..2^32-1")
        checked = self.spec.validate_params(params)
        if prompt is not None:
            prompt = self.spec.validate_prompt(prompt)
        self._s.offer_control(seq, prompt, checked, self._rt.clock.now())
        self._rt._wake.set()

    @property
    def fault(self) -> SessionFault | None:
        """The fatal fault that stopped this session (its engine failed), or None."""
        return self._s.fault

    def metrics(self) -> SessionMetrics:
        if self._final is not None:
            return self._final
        return self._s.metrics.snapshot(self._rt.clock.now())

    def set_gpu_share(self, share: float) -> None:
        """The reserved device share: gpu_seconds accrue as share x wall time from now on."""
        if not (0.0 <= share <= 1.0):
            raise ValueError("share must be within 0..1")
        self._s.metrics.set_share(share, self._rt.clock.now())

    def close(self) -> SessionMetrics:
        """Stop the session (idempotent); no callback fires after this returns."""
        with self._close_lock:
            if self._final is None:
                self._rt.core.close(self.session_id)
                self._final = self._s.metrics.snapshot(self._rt.clock.now())
                self._rt._forget(self.session_id)
            return self._final


class DeviceRuntime:
    def __init__(self, device_id: str = "cpu:0", clock: Clock | None = None,
                 moderation_hook: ModerationHook | None = None, moderation_budget_ms: float = 5.0,
                 max_batch: int = 8, decode_workers: int = 2, post_queue_size: int = 16,
                 jpeg_quality: int = 85, max_frame_bytes: int = codec.MAX_FRAME_BYTES,
                 torch_threads: int | None = None, input_hook: InputHook | None = None) -> None:
        self.device_id = device_id
        # None: leave one core to the decode/encode stages (see default_torch_threads); 0: leave torch alone.
        self.torch_threads = default_torch_threads() if torch_threads is None else torch_threads
        self.clock: Clock = clock or MonotonicClock()
        self.core = DeviceCore(device_id, self.clock, moderation_hook, moderation_budget_ms, max_batch,
                               jpeg_quality, max_frame_bytes, input_hook)
        self._decode_workers = decode_workers
        self._post_q: queue.Queue[PendingFrame | None] = queue.Queue(maxsize=post_queue_size)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._decode_pool: ThreadPoolExecutor | None = None
        self._threads: list[threading.Thread] = []
        self._handles: dict[str, SessionHandle] = {}
        self._lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._threads:
                return
            self._stopping.clear()
            self._decode_pool = ThreadPoolExecutor(self._decode_workers,
                                                   thread_name_prefix=f"nf-decode-{self.device_id}")
            self._threads = [threading.Thread(target=self._worker, name=f"nf-worker-{self.device_id}", daemon=True),
                             threading.Thread(target=self._poster, name=f"nf-post-{self.device_id}", daemon=True)]
            for t in self._threads:
                t.start()
        for s in self.core.sessions():  # inputs that arrived before start
            if s.decoding:
                self._start_decode(s)

    def stop(self) -> None:
        """Close every session and join every thread this runtime started."""
        for h in list(self._handles.values()):
            h.close()
        with self._lock:
            threads, self._threads = self._threads, []
            pool, self._decode_pool = self._decode_pool, None
        if not threads:
            return
        self._stopping.set()
        self._wake.set()
        threads[0].join()
        self._post_q.put(None)  # the worker is gone, so the poster is the only one left to drain
        threads[1].join()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> DeviceRuntime:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- sessions -----------------------------------------------------------------------------------
    def open_session(self, config: SessionConfig, on_output: Callable[[OutputFrame], bool],
                     on_control_applied: Callable[[int, int], None] | None = None,
                     on_error: Callable[[SessionFault], None] | None = None) -> SessionHandle:
        s = self.core.open(config, Callbacks(on_output, on_control_applied, on_error))
        h = SessionHandle(self, s)
        with self._lock:
            self._handles[s.session_id] = h
        self._wake.set()
        return h

    def _forget(self, session_id: str) -> None:
        with self._lock:
            self._handles.pop(session_id, None)
        self._wake.set()

    def session_count(self) -> int:
        return len(self.core.sessions())

    def device_metrics(self) -> dict[str, Any]:
        d = self.core.metrics.snapshot(self.clock.now(), self.session_count()).as_dict()
        d["queue_depths"]["post"] = self._post_q.qsize()
        return d

    def session_metrics(self) -> list[SessionMetrics]:
        now = self.clock.now()
        return [s.metrics.snapshot(now) for s in self.core.sessions()]

    # -- threads ------------------------------------------------------------------------------------
    def _start_decode(self, s: Session) -> None:
        pool = self._decode_pool
        if pool is None:
            return  # not started: the flag stays set, start() or core.run_once() picks it up
        try:
            pool.submit(self._decode_job, s)
        except RuntimeError:  # pool shut down while stopping
            pass

    def _decode_job(self, s: Session) -> None:
        try:
            if self.core.decode_pending(s):
                self._wake.set()
        except Exception:
            log.exception("decode of %s failed", s.session_id)

    def _worker(self) -> None:
        core = self.core
        if self.torch_threads > 0:
            import torch

            # Set from this thread: with OpenMP the thread count is also a per-thread setting.
            torch.set_num_threads(self.torch_threads)
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                for s in core.decodes_due(self.clock.now()):
                    self._start_decode(s)
                ran, frames = core.step()
                for f in frames:
                    self._put_post(f)
            except Exception:
                log.exception("device %s worker iteration failed", self.device_id)
                ran, frames = False, []
            if not ran and not frames:
                self.clock.wait(self._wake, core.next_wakeup())

    def _put_post(self, f: PendingFrame) -> None:
        while not self._stopping.is_set():
            try:
                self._post_q.put(f, timeout=0.05)
                self.core.metrics.depth("post", self._post_q.qsize())
                return
            except queue.Full:
                continue

    def _poster(self) -> None:
        while True:
            f = self._post_q.get()
            if f is None:
                return
            try:
                self.core.post(f)
            except Exception:
                log.exception("post stage failed for %s", f.session_id)
