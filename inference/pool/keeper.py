"""LeaseKeeper: the background heartbeat that keeps a node's leases (and devices) alive.

One daemon thread per node heartbeats every reservation it was given (at once when given, then
every ttl/3 after its last heartbeat) and re-reads the probe every ttl/3, so the node's device
registration and drain state stay current. When a lease is lost (expired during a stall,
preempted by a live session, released elsewhere) the keeper stops tracking it and calls
`on_lost(reservation, error)` so the owner can stop its work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .pool import Pool
from .types import LeaseLost, Reservation

log = logging.getLogger(__name__)

OnLost = Callable[[Reservation, LeaseLost], None]
# A heartbeat that failed (backend unreachable) is tried again after this, not a whole interval
# later: with TTL/3 between tries, a Redis restart of TTL/3 could expire every lease of a node
# (tests/test_faults.py: a 3 s restart with a 6 s TTL ended every running session).
RETRY_S = 0.5


class LeaseKeeper:
    """Heartbeats reservations on a daemon thread. Use as a context manager or start()/stop().

    Each lease is heartbeated on its own schedule: at once when it is added, then every
    `interval_s` after its last heartbeat. The owner may hand a lease over late in its life (a
    session start that first builds its engine can take most of a TTL on a cold, busy node), so
    waiting for the keeper's next round could let it expire unseen; a heartbeat costs ~0.15 ms
    (SQLite) or one round trip (Redis), once per added lease.
    """

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
        self._due: dict[str, float] = {}  # lease_id -> time.monotonic() of its next heartbeat
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by add() and stop(): the thread re-plans at once
        self._thread: threading.Thread | None = None

    def add(self, res: Reservation) -> None:
        """Keep `res` alive from now on; its first heartbeat is due at once (it may be old already)."""
        with self._lock:
            self._held[res.lease_id] = res
            self._due[res.lease_id] = 0.0
        self._wake.set()

    def remove(self, lease_id: str) -> Reservation | None:
        with self._lock:
            self._due.pop(lease_id, None)
            return self._held.pop(lease_id, None)

    def current(self, lease_id: str) -> Reservation | None:
        """The latest heartbeated copy (newest expires_at), or None once lost or removed."""
        with self._lock:
            return self._held.get(lease_id)

    def tick(self) -> None:
        """One full round: refresh devices, heartbeat every held lease. Public so tests drive it."""
        self._refresh()
        with self._lock:
            held = list(self._held.values())
        self._beat(held)

    def _refresh(self) -> None:
        if self.refresh_devices:
            try:
                self.pool.refresh()
            except Exception:  # a failed probe read must not stop heartbeats
                log.exception("pool device refresh failed")

    def _beat(self, leases: list[Reservation]) -> None:
        for res in leases:
            try:
                fresh = self.pool.heartbeat(res)
            except LeaseLost as lost:
                with self._lock:
                    self._held.pop(res.lease_id, None)
                    self._due.pop(res.lease_id, None)
                if self.on_lost is not None:
                    try:
                        self.on_lost(res, lost)
                    except Exception:
                        log.exception("on_lost callback failed for lease %s", res.lease_id)
                continue
            except Exception:
                # Backend unreachable: keep trying, soon (not a whole interval later: a Redis
                # restart of a few seconds must not outlast the lease between two tries); if it
                # stays down past the TTL the next successful call reports the lease as expired.
                log.warning("heartbeat failed for lease %s", res.lease_id, exc_info=True)
                fresh = None
            with self._lock:
                if res.lease_id in self._held:  # not removed meanwhile
                    if fresh is not None:
                        self._held[res.lease_id] = fresh
                    wait = self.interval_s if fresh is not None else min(self.interval_s, RETRY_S)
                    self._due[res.lease_id] = time.monotonic() + wait

    def _run(self) -> None:
        next_refresh = time.monotonic() + self.interval_s
        while not self._stop.is_set():
            now = time.monotonic()
            if self.refresh_devices and now >= next_refresh:
                self._refresh()
                next_refresh = time.monotonic() + self.interval_s
            with self._lock:
                due = [self._held[lease_id] for lease_id, at in self._due.items() if at <= now]
                upcoming = min(self._due.values(), default=now + self.interval_s)
            if due:
                self._beat(due)
                continue
            if self.refresh_devices:
                upcoming = min(upcoming, next_refresh)
            # add() sets _wake after updating _due: an add landing after the plan above wakes this
            # wait at once, one landing before it was already in the plan.
            self._wake.wait(max(0.0, upcoming - time.monotonic()))
            self._wake.clear()

    def start(self) -> LeaseKeeper:
        if self._thread is not None:
            raise RuntimeError("LeaseKeeper already started")
        self._stop.clear()
        self._wake.clear()
        self._thread = threading.Thread(target=self._run, name="nextframe-lease-keeper", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop heartbeating and join the thread (leases are not released: that is the owner's)."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise RuntimeError("LeaseKeeper thread did not stop")

    def __enter__(self) -> LeaseKeeper:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
