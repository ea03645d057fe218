"""LeaseKeeper: the background heartbeat that keeps a node's leases (and devices) alive.

One daemon thread per node heartbeats every reservation it was given, every ttl/3, and re-reads
the probe so the node's device registration and drain state stay current. When a lease is lost
(expired during a stall, preempted by a live session, released elsewhere) the keeper stops
tracking it and calls `on_lost(reservation, error)` so the owner can stop its work.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .pool import Pool
from .types import LeaseLost, Reservation

log = logging.getLogger(__name__)

OnLost = Callable[[Reservation, LeaseLost], None]


class LeaseKeeper:
    """Heartbeats reservations on a daemon thread. Use as a context manager or start()/stop()."""

    def __init__(
        self,
        pool: Pool,
        on_lost: OnLost | None = None,
        interval_s: float | None = None,
        refresh_devices: bool = True,
    ) -> None:
        self.pool = pool
        self.on_lost = on_lost
        self.interval_s = interval_s if interval_s is not None else pool.ttl_s / 3
        self.refresh_devices = refresh_devices
        self._held: dict[str, Reservation] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, res: Reservation) -> None:
        with self._lock:
            self._held[res.lease_id] = res

    def remove(self, lease_id: str) -> Reservation | None:
        with self._lock:
            return self._held.pop(lease_id, None)

    def current(self, lease_id: str) -> Reservation | None:
        """The latest heartbeated copy (newest expires_at), or None once lost or removed."""
        with self._lock:
            return self._held.get(lease_id)

    def tick(self) -> None:
        """One round: refresh devices, heartbeat every held lease. Public so tests drive it."""
        if self.refresh_devices:
            try:
                self.pool.refresh()
            except Exception:  # a failed probe read must not stop heartbeats
                log.exception("pool device refresh failed")
        with self._lock:
            held = list(self._held.values())
        for res in held:
            try:
                fresh = self.pool.heartbeat(res)
            except LeaseLost as lost:
                with self._lock:
                    self._held.pop(res.lease_id, None)
                if self.on_lost is not None:
                    try:
                        self.on_lost(res, lost)
                    except Exception:
                        log.exception("on_lost callback failed for lease %s", res.lease_id)
                continue
            except Exception:
                # Backend unreachable: keep trying; if it stays down past the TTL the next
                # successful call reports the lease as expired.
                log.warning("heartbeat failed for lease %s", res.lease_id, exc_info=True)
                continue
            with self._lock:
                if res.lease_id in self._held:  # not removed meanwhile
                    self._held[res.lease_id] = fresh

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()

    def start(self) -> LeaseKeeper:
        if self._thread is not None:
            raise RuntimeError("LeaseKeeper already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="nextframe-lease-keeper", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop heartbeating and join the thread (leases are not released: that is the owner's)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise RuntimeError("LeaseKeeper thread did not stop")

    def __enter__(self) -> LeaseKeeper:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
