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
import collections
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
    """A frame check's decision to replace a frame (`category` says why). `source` (input|output) and
    `detector` (hash|classifier) go into the `moderation` message when given; `end` ends the session
    with reason `moderation` (the organisation's max_violations was reached)."""

    category: str
    replacement: np.ndarray
    source: str | None = None
    detector: str | None = None
    end: bool = False


# (context, frame_index, pixels HxWx3 uint8) -> None to pass the frame, or a verdict replacing it.
FrameCheck = Callable[[SessionContext, int, "np.ndarray"], "FrameVerdict | None"]
# Told (from a runtime thread) that a frame of the session was replaced:
# (frame_index, category, source, detector, end) - the last three as keywords.
OnModeration = Callable[..., None]
# Told that a session was opened (called where the database may be used: the service's start) or
# let go, with its context, so a check can prepare and then drop what it keeps for it.
OnOpen = Callable[[SessionContext], None]
OnRelease = Callable[[SessionContext], None]


# How long a frame check waits for its session to be registered before failing closed.
REGISTRATION_WAIT_S = 1.0


class LiveHost:
    def __init__(self, frame_check: FrameCheck | None = None, input_check: FrameCheck | None = None,
                 on_open: OnOpen | None = None, on_release: OnRelease | None = None) -> None:
        self._lock = threading.Lock()
        self.input_check = input_check
        self.on_open, self.on_release = on_open, on_release
        self._runtimes: dict[str, DeviceRuntime] = {}
        self._on_lost: dict[str, Callable[[str], None]] = {}
        self._keeper: LeaseKeeper | None = None
        self.frame_check = frame_check
        # runtime session id -> (context, on_moderation), for the frame check's hook.
        self._moderated: dict[str, tuple[SessionContext, OnModeration]] = {}
        self._registered = threading.Condition(self._lock)
        self._gone: collections.deque[str] = collections.deque(maxlen=1024)  # recently let go: no waiting
        # Runtime sessions the platform runs on itself (audits on test patterns): never moderated.
        self._exempt: collections.deque[str] = collections.deque(maxlen=1024)

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
                input_hook = self._moderate_input if self.input_check is not None else None
                runtime = DeviceRuntime(device_id=local, moderation_hook=hook, input_hook=input_hook)
                runtime.start()
                self._runtimes[local] = runtime
            return runtime

    def moderate(self, runtime_session_id: str, context: SessionContext, on_moderation: OnModeration) -> None:
        """Give a runtime session its context for the frame check (a no-op without a check)."""
        if self.frame_check is not None or self.input_check is not None:
            with self._registered:
                self._moderated[runtime_session_id] = (context, on_moderation)
                self._registered.notify_all()

    def prepare(self, context: SessionContext) -> None:
        """Before a session opens (where the database may be used): the checks load what they need."""
        if self.on_open is not None and (self.frame_check is not None or self.input_check is not None):
            self.on_open(context)

    def release(self, context: SessionContext) -> None:
        """A prepared session that never opened (its start failed): the checks drop what they kept."""
        if self.on_release is not None:
            self.on_release(context)

    def exempt(self, runtime_session_id: str) -> None:
        """A session the platform opened on itself (an audit): its frames pass the checks unchecked."""
        with self._registered:
            self._exempt.append(runtime_session_id)
            self._registered.notify_all()

    def unmoderate(self, runtime_session_id: str) -> None:
        with self._lock:
            entry = self._moderated.pop(runtime_session_id, None)
            self._gone.append(runtime_session_id)
        if entry is not None and self.on_release is not None:
            self.on_release(entry[0])

    def _moderate_frame(self, runtime_session_id: str, frame_index: int, pixels: np.ndarray) -> np.ndarray | None:
        """The runtimes' moderation hook (on their post thread, inside the moderation budget)."""
        return self._apply(self.frame_check, runtime_session_id, frame_index, pixels)

    def _moderate_input(self, runtime_session_id: str, seq: int, pixels: np.ndarray) -> np.ndarray | None:
        """The runtimes' input hook (on a decode thread, before the model sees the frame)."""
        return self._apply(self.input_check, runtime_session_id, seq, pixels)

    def _apply(self, check: FrameCheck | None, runtime_session_id: str, frame_index: int,
               pixels: np.ndarray) -> np.ndarray | None:
        if check is None:
            return None
        with self._registered:
            # A session's first frame can be ready before `moderate` registers it (a few lines later in
            # the service's start): wait for that briefly rather than withhold the frame.
            self._registered.wait_for(lambda: runtime_session_id in self._moderated or runtime_session_id in self._gone
                                      or runtime_session_id in self._exempt, timeout=REGISTRATION_WAIT_S)
            entry = self._moderated.get(runtime_session_id)
            if entry is None and runtime_session_id in self._exempt:
                return None
        if entry is None:
            # Fail closed (the runtime withholds the frame): a frame is never sent unchecked.
            raise LookupError(f"no moderation context for runtime session {runtime_session_id}")
        context, on_moderation = entry
        verdict = check(context, frame_index, pixels)
        if verdict is None:
            return None
        if verdict.source is None and verdict.detector is None and not verdict.end:
            on_moderation(frame_index, verdict.category)
        else:
            on_moderation(frame_index, verdict.category, source=verdict.source, detector=verdict.detector,
                          end=verdict.end)
        return verdict.replacement

    def _started_keeper(self) -> LeaseKeeper:
        from inference.pool import LeaseKeeper

        if self._keeper is None:  # under self._lock
            self._keeper = LeaseKeeper(self.pool, on_lost=self._lost)
            self._keeper.start()
        return self._keeper

    def start(self) -> None:
        """Start the keeper now rather than at the first session: a serving node re-registers its
        devices every ttl/3 from its start (nextframe.live.nodes), idle or not."""
        with self._lock:
            self._started_keeper()

    def keep(self, reservation: Reservation, on_lost: Callable[[str], None]) -> None:
        with self._lock:
            keeper = self._started_keeper()
            self._on_lost[reservation.lease_id] = on_lost
            keeper.add(reservation)

    def holds(self, reservation: Reservation) -> bool:
        """Whether the keeper still heartbeats this lease (not lost, not forgotten)."""
        keeper = self._keeper
        return keeper is not None and keeper.current(reservation.lease_id) is not None

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
            _host = LiveHost(**moderation_checks())
            atexit.register(_host.shutdown)
        return _host


def moderation_checks() -> dict[str, Any]:
    """The host's checks from settings.LIVE_MODERATION (a dotted path to a function returning the
    LiveHost keyword arguments); none when it is empty."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    path = getattr(settings, "LIVE_MODERATION", "")
    return import_string(path)() if path else {}


def reset_host() -> None:
    """Stop and forget this process's host (tests swap pools between cases)."""
    global _host
    with _host_lock:
        host, _host = _host, None
    if host is not None:
        host.shutdown()
