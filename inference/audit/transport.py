"""How the audit talks to a model: the `Transport` interface and its in-process implementation.

A transport opens sessions (`open`) and describes models (`describe`); an `AuditSession` sends input
frames and controls and yields output frames with their protocol headers and arrival times. Two
implementations: `RuntimeTransport` (here) drives a DeviceRuntime in this process - "this
deployment" for `nextframe audit --model` and the platform's background audits - and
`WebSocketTransport` (ws_transport.py) speaks protocol v1 to any endpoint. The diagnostics only see
this interface, so both are measured by exactly the same code.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from inference.protocol import NO_INPUT_SEQ

#: Output frames waiting for the audit: bounded, the oldest is dropped (and counted) when full.
MAX_QUEUED_FRAMES = 512


class AuditError(Exception):
    """The audit could not measure (no frames, refused session, preempted ...); `.code` names the fault."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class AuditPlanError(ValueError):
    """The plan does not fit the model (a probe parameter it does not have, a size it refuses): bad usage."""


@dataclass(frozen=True)
class ModelInfo:
    """What the audit needs to know about a model before measuring it."""

    id: str
    kind: str                      # video-to-video | text-to-video
    declared_tier: str | None
    params: list[dict[str, Any]]   # GET /v1/models `params` items
    default_width: int = 256
    default_height: int = 256


def local_model_info(model: str) -> ModelInfo:
    """A model of this process's engine registry, described as a transport describes it."""
    from inference.engines import get_spec

    spec = get_spec(model)
    return ModelInfo(spec.id, spec.kind, spec.declared_tier, [p.to_dict() for p in spec.params],
                     spec.default_width, spec.default_height)


@dataclass(frozen=True)
class AuditFrame:
    """One output frame as the audit saw it: header fields, JPEG, and arrival time (transport clock)."""

    frame_index: int
    input_seq: int
    control_seq: int
    jpeg: bytes
    received_at: float

    @property
    def has_input(self) -> bool:
        return self.input_seq != NO_INPUT_SEQ


class AuditSession(Protocol):
    async def send_frame(self, seq: int, jpeg: bytes) -> float:
        """Send one input frame; returns the send time."""
        ...

    async def send_control(self, seq: int, params: dict[str, Any]) -> float:
        """Send one control; returns the send time."""
        ...

    async def next_frame(self, timeout: float) -> AuditFrame | None:
        """The next output frame, or None when none came within `timeout` seconds."""
        ...

    async def close(self) -> dict[str, Any] | None:
        """End the session; returns the server's own metrics when it reports them."""
        ...


class Transport(Protocol):
    name: str

    def now(self) -> float:
        """The clock of send and receive times (monotonic seconds)."""
        ...

    async def describe(self, model: str) -> ModelInfo: ...

    async def open(self, model: str, width: int, height: int, fps: float,
                   params: dict[str, Any] | None = None) -> AuditSession: ...

    async def aclose(self) -> None: ...


class FrameInbox:
    """Bounded hand-over of frames from any thread to the audit's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._q: asyncio.Queue[AuditFrame] = asyncio.Queue()
        self.dropped = 0

    def _put(self, frame: AuditFrame) -> None:
        if self._q.qsize() >= MAX_QUEUED_FRAMES:
            self._q.get_nowait()
            self.dropped += 1
        self._q.put_nowait(frame)

    def put_threadsafe(self, frame: AuditFrame) -> None:
        try:
            self._loop.call_soon_threadsafe(self._put, frame)
        except RuntimeError:  # the loop is closed: the audit is over, the frame is not wanted
            pass

    def put(self, frame: AuditFrame) -> None:
        self._put(frame)

    async def get(self, timeout: float) -> AuditFrame | None:
        try:
            return await asyncio.wait_for(self._q.get(), timeout)
        except TimeoutError:
            return None


class _RuntimeSession:
    def __init__(self, transport: RuntimeTransport, handle: Any, inbox: FrameInbox,
                 release: Callable[[], None] | None = None) -> None:
        self._t = transport
        self._h = handle
        self._inbox = inbox
        self._release = release

    async def send_frame(self, seq: int, jpeg: bytes) -> float:
        t = self._t.now()
        self._h.submit_frame(seq, int(time.time() * 1e6), jpeg)
        return t

    async def send_control(self, seq: int, params: dict[str, Any]) -> float:
        t = self._t.now()
        self._h.apply_control(seq, params=params)
        return t

    async def next_frame(self, timeout: float) -> AuditFrame | None:
        if self._t.lost is not None:
            raise AuditError("preempted", f"the audit's capacity was taken back: {self._t.lost}")
        return await self._inbox.get(timeout)

    async def close(self) -> dict[str, Any] | None:
        try:
            m = self._h.close()
        finally:
            if self._release is not None:
                self._release()
        return {"fps": m.fps, "ttff_ms": m.ttff_ms, "deadline_misses": m.deadline_misses,
                "dropped_inputs": m.dropped_inputs, "jitter_ms": m.jitter_ms,
                "control_lag_frames": m.control_lag_frames, "control_lag_frames_max": m.control_lag_frames_max,
                "frames_out": m.frames_out}


class RuntimeTransport:
    """Drives a DeviceRuntime in this process (one is created and owned when none is given).

    Subclasses may override `acquire(model, width, height, fps)` to choose the runtime per session
    and hold capacity for it (the platform reserves a pool share); it returns (runtime, release).
    """

    name = "runtime"

    def __init__(self, runtime: Any | None = None, seed: int = 0) -> None:
        self._runtime = runtime
        self._owned = runtime is None
        self._seed = seed
        #: Set (to a reason) when a session's capacity is taken back, e.g. a live session preempted
        #: the audit's clip-priority lease: the audit stops instead of running unreserved.
        self.lost: str | None = None

    def now(self) -> float:
        return time.monotonic()

    def _rt(self) -> Any:
        if self._runtime is None:
            from inference.runtime import DeviceRuntime  # torch: only when an audit really runs

            self._runtime = DeviceRuntime(device_id="audit:0")
            self._runtime.start()
        return self._runtime

    async def describe(self, model: str) -> ModelInfo:
        return local_model_info(model)

    async def open(self, model: str, width: int, height: int, fps: float,
                   params: dict[str, Any] | None = None) -> AuditSession:
        from inference.runtime import SessionConfig

        inbox = FrameInbox(asyncio.get_running_loop())
        clock = self.now

        def on_output(out: Any) -> bool:
            inbox.put_threadsafe(AuditFrame(out.frame_index, out.input_seq, out.control_seq, out.jpeg, clock()))
            return True

        config = SessionConfig(engine_id=model, width=width, height=height, fps=fps, params=params,
                               seed=self._seed)
        runtime, release = self.acquire(model, width, height, fps)
        try:
            handle = runtime.open_session(config, on_output)
        except BaseException:
            if release is not None:
                release()
            raise
        return _RuntimeSession(self, handle, inbox, release)

    def acquire(self, model: str, width: int, height: int, fps: float) -> tuple[Any, Callable[[], None] | None]:
        """The runtime a new session runs on, and what to call when it ends."""
        return self._rt(), None

    async def aclose(self) -> None:
        if self._owned and self._runtime is not None:
            self._runtime.stop()
            self._runtime = None
