"""`SimulatedRuntimeTransport`: the real frame loop (DeviceCore) on a FakeClock, single-threaded.

Each `next_frame(timeout)` runs the loop's stages inline (`DeviceCore.run_once`) and moves the fake
clock to the loop's next wake-up, so what an engine *does* - which frame reflects which control,
what it remembers - is measured exactly and reproducibly, while *speed* is idealised: compute takes
no fake time, so FPS equals the session's rate and TTFF is a scheduling delay. The tests use it to
pin the classifier's frame-logic rules; speed is measured by RuntimeTransport and the benchmarks.
"""
from __future__ import annotations

import collections
import time
from typing import Any

from .transport import AuditFrame, AuditSession, ModelInfo, local_model_info

_MAX_ITERATIONS = 100_000  # a loop that never produces nor waits is a bug, not a reason to hang


class _SimSession:
    def __init__(self, transport: SimulatedRuntimeTransport, session: Any,
                 outbox: collections.deque[AuditFrame]) -> None:
        self._t = transport
        self._s = session
        self._outbox = outbox

    async def send_frame(self, seq: int, jpeg: bytes) -> float:
        from inference.runtime.types import RawInput

        now = self._t.now()
        self._s.offer_raw(RawInput(seq, int(time.time() * 1e6), bytes(jpeg), now))
        return now

    async def send_control(self, seq: int, params: dict[str, Any]) -> float:
        now = self._t.now()
        self._s.offer_control(seq, None, self._s.spec.validate_params(params), now)
        return now

    async def next_frame(self, timeout: float) -> AuditFrame | None:
        clock, core = self._t.clock, self._t.core
        deadline = clock.now() + timeout
        for _ in range(_MAX_ITERATIONS):
            if self._outbox:
                return self._outbox.popleft()
            core.run_once()
            if self._outbox:
                continue
            now = clock.now()
            if now >= deadline:
                return None
            wake = core.next_wakeup()
            if wake is None or wake > deadline:
                clock.set(deadline)
            elif wake > now:
                clock.set(wake)
            else:
                clock.advance(0.001)  # due now but nothing came out (e.g. an input still decoding)
        raise RuntimeError("the simulated frame loop made no progress")

    async def close(self) -> dict[str, Any] | None:
        self._t.core.close(self._s.session_id)
        m = self._s.metrics.snapshot(self._t.clock.now())
        return {"fps": m.fps, "ttff_ms": m.ttff_ms, "deadline_misses": m.deadline_misses,
                "dropped_inputs": m.dropped_inputs, "control_lag_frames": m.control_lag_frames,
                "frames_out": m.frames_out}


class SimulatedRuntimeTransport:
    """DeviceCore + FakeClock; `clock` is exposed so tests can read the simulated time."""

    name = "simulated"

    def __init__(self, seed: int = 0) -> None:
        from inference.runtime import DeviceCore, FakeClock

        self.clock = FakeClock()
        self.core = DeviceCore("sim:0", self.clock)
        self._seed = seed

    def now(self) -> float:
        return self.clock.now()

    async def describe(self, model: str) -> ModelInfo:
        return local_model_info(model)

    async def open(self, model: str, width: int, height: int, fps: float,
                   params: dict[str, Any] | None = None) -> AuditSession:
        from inference.runtime import SessionConfig
        from inference.runtime.types import Callbacks

        outbox: collections.deque[AuditFrame] = collections.deque(maxlen=4096)

        def on_output(out: Any) -> bool:
            outbox.append(AuditFrame(out.frame_index, out.input_seq, out.control_seq, out.jpeg, self.clock.now()))
            return True

        session = self.core.open(SessionConfig(engine_id=model, width=width, height=height, fps=fps,
                                               params=params, seed=self._seed), Callbacks(on_output))
        return _SimSession(self, session, outbox)

    async def aclose(self) -> None:
        for s in self.core.sessions():
            self.core.close(s.session_id)
