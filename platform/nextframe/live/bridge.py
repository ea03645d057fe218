"""The thread bridge of a live socket: from the runtime's and the lease keeper's threads to the
socket's event loop. It is the `SessionEvents` the session service hands to the runtime.

Output frames go into a small bounded buffer: a slow reader loses frames (counted by the runtime as
dropped outputs) instead of growing a backlog of stale video, and none are taken while the socket's
write buffer is backed up (nextframe.live.flow). Text (control.applied, moderation, non-fatal
errors) goes through the same queue, so it stays in order with the frames around it. A fatal
fault or a lost lease is handed to the loop as a coroutine (`error` then `end`). `drain` is the
sender.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from inference import protocol
from inference.error_codes import EndReason, ErrorCode

if TYPE_CHECKING:
    from inference.runtime import OutputFrame, SessionFault
    from nextframe.live.flow import SocketFlow
    from nextframe.live.service import LiveSessionService

log = logging.getLogger(__name__)

# Output frames waiting for the socket. Small on purpose (see the module docstring).
OUTPUT_BUFFER = 2
# A moderation end that comes before the session's admission completed waits up to 50 ms x this.
ADMISSION_WAIT_STEPS = 200


class SocketBridge:
    """SessionEvents for one socket: every method is called from a foreign thread and never blocks."""

    def __init__(self, loop: asyncio.AbstractEventLoop, flow: SocketFlow | None, service: LiveSessionService, *,
                 error: Callable[[ErrorCode, str], Awaitable[None]],
                 end: Callable[[EndReason], Awaitable[None]]) -> None:
        self.loop, self.flow, self.service = loop, flow, service
        self._error, self._end = error, end
        self.outbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.pending = 0
        self._lock = threading.Lock()

    def on_output(self, out: OutputFrame) -> bool:
        if self.flow is not None and self.flow.backed_up:
            return False  # the socket has not taken the last frames: drop (the runtime counts it)
        with self._lock:
            if self.pending >= OUTPUT_BUFFER or self.service.ended:
                return False
            self.pending += 1
        self._put("frame", out)
        return True

    def on_control_applied(self, seq: int, frame_index: int) -> None:
        self._put("text", protocol.ControlApplied(seq, frame_index).to_json())

    def on_moderation(self, frame_index: int, category: str, *, source: str | None = None,
                      detector: str | None = None, end: bool = False) -> None:
        self._put("text", protocol.Moderation(frame_index, "replaced", category, source, detector).to_json())
        if end:  # the organisation's max_violations: say so, then end the session (reason moderation)
            self._put("text", protocol.Moderation(frame_index, "ended", category, source, detector).to_json())
            self._schedule(self._end_for_moderation)

    def on_error(self, fault: SessionFault) -> None:
        if fault.fatal:  # the engine failed: the session can produce nothing more. Say so, then end it.
            self._schedule(lambda: self._fail(fault.code, fault.message))
        else:
            self._put("error", (fault.code, fault.message))

    def on_lease_lost(self, reason: str) -> None:
        log.warning("live session %s lost its reservation (%s)", self.service.record_id, reason)
        self._schedule(lambda: self._end(EndReason.SERVER_ERROR))

    async def _end_for_moderation(self) -> None:
        """End the session for moderation. The first frame can be checked while `start` is still
        admitting the session on its thread: wait for the admission (or its failure) first."""
        for _ in range(ADMISSION_WAIT_STEPS):
            if self.service.admitted or self.service.ended:
                break
            await asyncio.sleep(0.05)
        await self._end(EndReason.MODERATION)

    async def _fail(self, code: ErrorCode, message: str) -> None:
        """On the loop: tell the client why its session failed, then end it with server_error."""
        if not self.service.running:
            return
        log.error("live session %s failed: %s", self.service.record_id, message)
        try:
            await self._error(code, message)
        finally:
            await self._end(EndReason.SERVER_ERROR)

    def _put(self, kind: str, item: Any) -> None:
        self.loop.call_soon_threadsafe(self.outbox.put_nowait, (kind, item))

    def _schedule(self, make: Callable[[], Awaitable[None]]) -> None:
        self.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(make()))

    async def drain(self, send_frame: Callable[[OutputFrame], Awaitable[None]],
                    send_text: Callable[[str], Awaitable[None]],
                    send_error: Callable[[ErrorCode, str], Awaitable[None]]) -> None:
        """Forever: take what the threads queued and send it (the session's sender task)."""
        while True:
            kind, item = await self.outbox.get()
            if kind == "frame":
                with self._lock:
                    self.pending -= 1
                await send_frame(item)
            elif kind == "error":
                await send_error(*item)
            else:
                await send_text(item)
