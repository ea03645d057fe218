"""In-process pool backend: the embedded default (one process holds every lease).

State lives in dicts behind one lock; every operation first drops what has expired, so expiry
needs no background thread. Time comes from the caller (`now`), which lets tests drive a fake
clock; without one it is `time.time()`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from .policy import plan_reservation
from .types import DeviceRecord, LeaseLost, Reservation, ReserveRequest, Snapshot

# How long a lost lease's reason is remembered, so a late heartbeat hears "preempted" rather
# than a bare "expired". Bounded: swept with everything else.
TOMBSTONE_S = 120.0


class MemoryBackend:
    """Leases and device registrations in this process's memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._devices: dict[str, DeviceRecord] = {}
        self._leases: dict[str, Reservation] = {}
        self._tombstones: dict[str, tuple[str, float]] = {}
        self._token = 0
        self._sweeps = 0

    @staticmethod
    def _now(now: float | None) -> float:
        return time.time() if now is None else now

    def _sweep(self, now: float) -> None:
        for lease_id, lease in list(self._leases.items()):
            if lease.expires_at <= now:
                del self._leases[lease_id]
                self._tombstones[lease_id] = ("expired", now + TOMBSTONE_S)
        for device_id, device in list(self._devices.items()):
            if device.expires_at <= now:
                del self._devices[device_id]
        # Tombstones only need forgetting eventually: scan them on every 32nd sweep, not each one.
        self._sweeps += 1
        if self._sweeps % 32 == 0:
            for lease_id, (_, until) in list(self._tombstones.items()):
                if until <= now:
                    del self._tombstones[lease_id]

    def register_devices(
        self, node_id: str, devices: list[DeviceRecord], ttl_s: float, now: float | None = None
    ) -> None:
        """Replace `node_id`'s registered devices; they vanish unless re-registered within ttl_s."""
        now = self._now(now)
        with self._lock:
            for device_id, device in list(self._devices.items()):
                if device.node_id == node_id:
                    del self._devices[device_id]
            for device in devices:
                self._devices[device.device_id] = replace(device, node_id=node_id, expires_at=now + ttl_s)

    def reserve(self, req: ReserveRequest, now: float | None = None) -> Reservation:
        now = self._now(now)
        with self._lock:
            self._sweep(now)
            device_id, victims = plan_reservation(
                req, list(self._devices.values()), list(self._leases.values()), now)
            for lease_id in victims:
                del self._leases[lease_id]
                self._tombstones[lease_id] = ("preempted", now + TOMBSTONE_S)
            self._token += 1
            lease = Reservation(
                lease_id=req.lease_id, device_id=device_id, share=req.share,
                memory_bytes=req.memory_bytes, org_id=req.org_id, session_id=req.session_id,
                priority=req.priority, token=self._token, expires_at=now + req.ttl_s,
                node_id=self._devices[device_id].node_id,
            )
            self._leases[lease.lease_id] = lease
            return lease

    def _current(self, lease_id: str, token: int) -> Reservation:
        lease = self._leases.get(lease_id)
        if lease is None:
            reason = self._tombstones.get(lease_id, ("expired", 0.0))[0]
            raise LeaseLost(reason, lease_id)
        if lease.token != token:
            raise LeaseLost("stale_token", lease_id)
        return lease

    def heartbeat(self, lease_id: str, token: int, ttl_s: float, now: float | None = None) -> float:
        now = self._now(now)
        with self._lock:
            # No full sweep here: every lease heartbeats every ttl/3, so sweeping would make one
            # round of heartbeats quadratic in the number of leases. Check this lease only.
            lease = self._current(lease_id, token)
            if lease.expires_at <= now:
                del self._leases[lease_id]
                self._tombstones[lease_id] = ("expired", now + TOMBSTONE_S)
                raise LeaseLost("expired", lease_id)
            expires_at = now + ttl_s
            self._leases[lease_id] = replace(lease, expires_at=expires_at)
            return expires_at

    def release(self, lease_id: str, token: int, now: float | None = None) -> None:
        now = self._now(now)
        with self._lock:
            lease = self._leases.get(lease_id)
            # A stale token must not free the lease of whoever holds it now.
            if lease is not None and lease.token == token:
                del self._leases[lease_id]
                self._tombstones[lease_id] = ("released", now + TOMBSTONE_S)

    def snapshot(self, now: float | None = None) -> Snapshot:
        now = self._now(now)
        with self._lock:
            self._sweep(now)
            return Snapshot(now, list(self._devices.values()), list(self._leases.values()))
