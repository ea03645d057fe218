"""This node's live-serving machinery: the device runtimes and the lease keeper, one per process.

The session service (nextframe.live.service) asks the pool for a reservation, then opens its session
on the DeviceRuntime of the reserved device. The LeaseKeeper heartbeats every live lease of the
process; if one is lost (the process stalled past the TTL, say) the owning session is told and ends.

Frame moderation enters here: a host built with a `frame_check` gives its runtimes a moderation hook
that finds the session's context (organisation, session id, policy) by the runtime's session id,
asks the check, and reports a replaced frame to the session's `on_moderation`. Without a check (the
default) the runtimes run with no hook at all.
"""
from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nextframe.capacity import get_pool

if TYPE_CHECKING:
    import numpy as np

    from inference.pool import LeaseKeeper, Pool
    from inference.pool.types import Reservation
    from inference.runtime import DeviceRuntime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionContext:
    """Who a live session serves, for the moderation checks: organisation, session, policy."""

    organization_id: str
    session_id: str
    model: str
    policy: str = "default"


@dataclass(frozen=True)
class FrameVerdict:
    """A frame check's decision to replace an output frame (`category` says why)."""

    category: str
    replacement: np.ndarray


# (context, frame_index, pixels HxWx3 uint8) -> None to pass the frame, or a verdict replacing it.
FrameCheck = Callable[[SessionContext, int, "np.ndarray"], "FrameVerdict | None"]
# Told (from a runtime thread) that a frame of the session was replaced: (frame_index, category).
OnModeration = Callable[[int, str], None]


class LiveHost:
    def __init__(self, frame_check: FrameCheck | None = None) -> None:
        self._lock = threading.Lock()
        self._runtimes: dict[str, DeviceRuntime] = {}
        self._on_lost: dict[str, Callable[[str], None]] = {}
        self._keeper: LeaseKeeper | None = None
        self.frame_check = frame_check
        # runtime session id -> (context, on_moderation), for the frame check's hook.
        self._moderated: dict[str, tuple[SessionContext, OnModeration]] = {}

    @property
    def pool(self) -> Pool:
        return get_pool()

    def runtime_for(self, device_id: str) -> DeviceRuntime:
        """The DeviceRuntime serving a reserved device (`<node>/<device>`), started on first use."""
        from inference.runtime import DeviceRuntime

        local = device_id.split("/", 1)[-1]
        with self._lock:
            runtime = self._runtimes.get(local)
            if runtime is None:
                hook = self._moderate_frame if self.frame_check is not None else None
                runtime = DeviceRuntime(device_id=local, moderation_hook=hook)
                runtime.start()
                self._runtimes[local] = runtime
            return runtime

    def moderate(self, runtime_session_id: str, context: SessionContext, on_moderation: OnModeration) -> None:
        """Give a runtime session its context for the frame check (a no-op without a check)."""
        if self.frame_check is not None:
            with self._lock:
                self._moderated[runtime_session_id] = (context, on_moderation)

    def unmoderate(self, runtime_session_id: str) -> None:
        with self._lock:
            self._moderated.pop(runtime_session_id, None)

    def _moderate_frame(self, runtime_session_id: str, frame_index: int, pixels: np.ndarray) -> np.ndarray | None:
        """The runtimes' moderation hook (on their post thread, inside the moderation budget)."""
        check = self.frame_check
        with self._lock:
            entry = self._moderated.get(runtime_session_id)
        if check is None:
            return None
        if entry is None:
            # Fail closed (the runtime withholds the frame): a frame is never sent unchecked.
            raise LookupError(f"no moderation context for runtime session {runtime_session_id}")
        context, on_moderation = entry
        verdict = check(context, frame_index, pixels)
        if verdict is None:
            return None
        on_moderation(frame_index, verdict.category)
        return verdict.replacement

    def keep(self, reservation: Reservation, on_lost: Callable[[str], None]) -> None:
        from inference.pool import LeaseKeeper

        with self._lock:
            if self._keeper is None:
                self._keeper = LeaseKeeper(self.pool, on_lost=self._lost)
                self._keeper.start()
            self._on_lost[reservation.lease_id] = on_lost
            self._keeper.add(reservation)

    def forget(self, reservation: Reservation) -> None:
        with self._lock:
            self._on_lost.pop(reservation.lease_id, None)
            keeper = self._keeper
        if keeper is not None:
            keeper.remove(reservation.lease_id)

    def current(self, reservation: Reservation) -> Reservation:
        """The newest heartbeated copy of a lease (its token and expiry), for release."""
        keeper = self._keeper
        latest = keeper.current(reservation.lease_id) if keeper is not None else None
        return latest or reservation

    def _lost(self, reservation: Reservation, error: Any) -> None:
        with self._lock:
            callback = self._on_lost.pop(reservation.lease_id, None)
        if callback is not None:
            callback(str(getattr(error, "reason", error)))

    def runtimes(self) -> list[DeviceRuntime]:
        """The device runtimes started in this process (for /metrics)."""
        with self._lock:
            return list(self._runtimes.values())

    def shutdown(self) -> None:
        with self._lock:
            runtimes, self._runtimes = list(self._runtimes.values()), {}
            keeper, self._keeper = self._keeper, None
        for runtime in runtimes:
            runtime.stop()
        if keeper is not None:
            keeper.stop()


_host: LiveHost | None = None
_host_lock = threading.Lock()


def get_host() -> LiveHost:
    global _host
    with _host_lock:
        if _host is None:
            _host = LiveHost()
            atexit.register(_host.shutdown)
        return _host


def reset_host() -> None:
    """Stop and forget this process's host (tests swap pools between cases)."""
    global _host
    with _host_lock:
        host, _host = _host, None
    if host is not None:
        host.shutdown()
