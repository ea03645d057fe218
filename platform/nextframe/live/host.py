"""This node's live-serving machinery: the device runtimes and the lease keeper, one per process.

The consumer asks the pool for a reservation, then opens its session on the DeviceRuntime of the
reserved device. The LeaseKeeper heartbeats every live lease of the process; if one is lost (the
process stalled past the TTL, say) the owning consumer is told and ends its session.
"""
from __future__ import annotations

import atexit
import logging
import threading
from typing import Callable

from nextframe.capacity import get_pool

log = logging.getLogger(__name__)


class LiveHost:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runtimes: dict[str, object] = {}
        self._on_lost: dict[str, Callable[[str], None]] = {}
        self._keeper = None

    @property
    def pool(self):
        return get_pool()

    def runtime_for(self, device_id: str):
        """The DeviceRuntime serving a reserved device (`<node>/<device>`), started on first use."""
        from inference.runtime import DeviceRuntime

        local = device_id.split("/", 1)[-1]
        with self._lock:
            runtime = self._runtimes.get(local)
            if runtime is None:
                runtime = DeviceRuntime(device_id=local)
                runtime.start()
                self._runtimes[local] = runtime
            return runtime

    def keep(self, reservation, on_lost: Callable[[str], None]) -> None:
        from inference.pool import LeaseKeeper

        with self._lock:
            if self._keeper is None:
                self._keeper = LeaseKeeper(self.pool, on_lost=self._lost)
                self._keeper.start()
            self._on_lost[reservation.lease_id] = on_lost
            self._keeper.add(reservation)

    def forget(self, reservation) -> None:
        with self._lock:
            self._on_lost.pop(reservation.lease_id, None)
            keeper = self._keeper
        if keeper is not None:
            keeper.remove(reservation.lease_id)

    def current(self, reservation):
        """The newest heartbeated copy of a lease (its token and expiry), for release."""
        keeper = self._keeper
        latest = keeper.current(reservation.lease_id) if keeper is not None else None
        return latest or reservation

    def _lost(self, reservation, error) -> None:
        with self._lock:
            callback = self._on_lost.pop(reservation.lease_id, None)
        if callback is not None:
            callback(str(getattr(error, "reason", error)))

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
