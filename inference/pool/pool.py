"""The GPU pool: admission by reservation, leases with heartbeats, draining, live-over-clip.

`Pool` is what callers use. It validates requests, keeps this node's devices registered from its
probe, and delegates the atomic part (check capacity, preempt, assign a fencing token) to a
backend: `MemoryBackend` in one process, `RedisBackend` across processes and machines. The
admission rules themselves are in `policy.py`.

A reservation is a lease: it expires `ttl_s` after the last heartbeat, so a process that dies
holding one frees its capacity within the TTL without anyone cleaning up.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from .probe import Probe
from .types import PRIORITIES, DeviceRecord, Priority, Reservation, ReserveRequest, Snapshot

Clock = Callable[[], float]

log = logging.getLogger(__name__)


class Backend(Protocol):
    """Atomic lease storage. `now=None` means the backend's own time base."""

    def register_devices(
        self, node_id: str, devices: list[DeviceRecord], ttl_s: float, now: float | None = None
    ) -> None: ...

    def reserve(self, req: ReserveRequest, now: float | None = None) -> Reservation: ...

    def heartbeat(self, lease_id: str, token: int, ttl_s: float, now: float | None = None) -> float: ...

    def release(self, lease_id: str, token: int, now: float | None = None) -> None: ...

    def snapshot(self, now: float | None = None) -> Snapshot: ...


class Pool:
    """Reservations of device share for live sessions and clip jobs."""

    def __init__(
        self,
        backend: Backend,
        probe: Probe,
        clock: Clock | None = None,
        ttl_s: float = 15.0,
        node_id: str = "local",
        clip_share_max: float = 1.0,
        device_ttl_s: float | None = None,
        node_url: str = "",
        routed_live: bool = False,
    ) -> None:
        """`clock` drives lease time (tests pass a fake one); None uses the backend's own time:
        wall time in process, Redis server TIME for Redis, so all nodes agree on expiry.

        `node_url` is the public WebSocket URL this node's devices are registered with (where other
        nodes redirect clients of sessions placed here; "" = none). With `routed_live`, live leases
        are placed only on this node's devices or on nodes with a URL (policy.placeable)."""
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s!r}")
        if not 0.0 <= clip_share_max <= 1.0:
            raise ValueError(f"clip_share_max must be within [0, 1], got {clip_share_max!r}")
        if "/" in node_id or not node_id:
            raise ValueError(f"node_id must be non-empty without '/', got {node_id!r}")
        self.backend = backend
        self.probe = probe
        self.ttl_s = float(ttl_s)
        self.node_id = node_id
        self.clip_share_max = float(clip_share_max)
        # A registration lives one lease TTL: a node that stops re-registering (every ttl/3, so one
        # slow probe read drains nothing) leaves placement within the TTL, like its leases.
        self.device_ttl_s = float(device_ttl_s if device_ttl_s is not None else ttl_s)
        self.node_url = node_url
        self.routed_live = routed_live
        # Set when the node shuts down: its devices stay registered (its sessions' leases still
        # heartbeat) but as draining, so nobody places or redirects a new session here.
        self.draining = False
        self.local_devices: list[DeviceRecord] = []  # as last registered
        self._clock = clock
        self._refresh_lock = threading.Lock()
        self._refreshed_at: float | None = None

    # -- time and devices ---------------------------------------------------------------------

    def _now(self) -> float | None:
        return None if self._clock is None else self._clock()

    def _local_time(self) -> float:
        return self._clock() if self._clock is not None else time.monotonic()

    def refresh(self) -> list[DeviceRecord]:
        """Re-read the probe and re-register this node's devices.

        An unhealthy device is registered as draining: it takes no new leases, but leases already
        on it keep running (and heartbeating) until their holders release them."""
        infos = self.probe.devices()
        records = [
            DeviceRecord(
                device_id=f"{self.node_id}/{d.id}", node_id=self.node_id, kind=d.kind, name=d.name,
                capacity=float(d.capacity), memory_total=int(d.memory_total),
                draining=self.draining or not d.healthy, expires_at=0.0,  # set by the backend
                url=self.node_url,
            )
            for d in infos
        ]
        with self._refresh_lock:
            self.backend.register_devices(self.node_id, records, self.device_ttl_s, self._now())
            self._refreshed_at = self._local_time()
            self.local_devices = records
        return records

    def can_host(self) -> bool:
        """Whether this node registered a device that may take a new live session (as last read;
        no backend call): False on an edge node (no device, capacity 0) or when all are drained."""
        self._ensure_fresh()
        return any(not d.draining and d.capacity > 0 for d in self.local_devices)

    def node_urls(self) -> dict[str, str]:
        """node id -> the URL its devices are registered with, for every live registration."""
        return {d.node_id: d.url for d in self.backend.snapshot(self._now()).devices}

    def _ensure_fresh(self) -> None:
        # Re-read the probe lazily, at most every ttl/3: a node whose LeaseKeeper is not running
        # (embedded default, tests) still keeps its registration alive and its drain state current.
        at = self._refreshed_at
        if at is None or self._local_time() - at >= self.ttl_s / 3:
            try:
                self.refresh()
            except Exception:
                # A failed probe read or an unreachable backend must not turn into a crash here:
                # the registration made earlier stays valid for device_ttl_s, and the backend call
                # that follows reports its own failure (Redis down -> CapacityUnavailable).
                log.exception("pool refresh failed; using the last registration")

    # -- leases -------------------------------------------------------------------------------

    def reserve(
        self,
        org_id: str,
        session_id: str,
        share: float,
        memory_bytes: int = 0,
        priority: Priority = "live",
        max_concurrent: int | None = None,
    ) -> Reservation:
        """Reserve `share` device-equivalents (and `memory_bytes`) for one session or clip job.

        Raises ConcurrencyLimit, CapacityUnavailable (with retry_after_s), or ValueError for a
        malformed request (nothing is reserved in any of these cases)."""
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not math.isfinite(share) or share <= 0:
            raise ValueError(f"share must be a finite number > 0, got {share!r}")
        if isinstance(memory_bytes, bool) or not isinstance(memory_bytes, int) or memory_bytes < 0:
            raise ValueError(f"memory_bytes must be an int >= 0, got {memory_bytes!r}")
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {PRIORITIES}, got {priority!r}")
        if max_concurrent is not None and (
            isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int) or max_concurrent < 0
        ):
            raise ValueError(f"max_concurrent must be an int >= 0 or None, got {max_concurrent!r}")
        if not org_id or not session_id:
            raise ValueError("org_id and session_id must be non-empty")
        self._ensure_fresh()
        req = ReserveRequest(
            lease_id=uuid.uuid4().hex, org_id=str(org_id), session_id=str(session_id),
            share=float(share), memory_bytes=memory_bytes, priority=priority,
            max_concurrent=max_concurrent, clip_share_max=self.clip_share_max, ttl_s=self.ttl_s,
            home_node=self.node_id if self.routed_live else None,
        )
        return self.backend.reserve(req, self._now())

    def heartbeat(self, res: Reservation) -> Reservation:
        """Extend the lease by ttl_s. Raises LeaseLost when it expired, was released, was
        preempted, or `res` carries a stale fencing token."""
        expires_at = self.backend.heartbeat(res.lease_id, res.token, self.ttl_s, self._now())
        return replace(res, expires_at=expires_at)

    def release(self, res: Reservation) -> None:
        """Give the lease back. Idempotent; a stale token releases nothing."""
        self.backend.release(res.lease_id, res.token, self._now())

    def active_leases(self, org_id: str | None = None) -> list[Reservation]:
        """Unexpired leases, of every node, optionally of one organisation (oldest first)."""
        leases = self.backend.snapshot(self._now()).leases
        return sorted((r for r in leases if org_id is None or r.org_id == org_id), key=lambda r: r.token)

    def usage(self) -> dict[str, dict]:
        """Per registered device: capacity, reserved_live, reserved_clip, memory_total,
        reserved_memory, leases (count), draining, node_id, kind, url."""
        self._ensure_fresh()
        snap = self.backend.snapshot(self._now())
        out: dict[str, dict] = {
            d.device_id: {
                "capacity": d.capacity, "reserved_live": 0.0, "reserved_clip": 0.0,
                "memory_total": d.memory_total, "reserved_memory": 0, "leases": 0, "draining": d.draining,
                "node_id": d.node_id, "kind": d.kind, "url": d.url,
            }
            for d in snap.devices
        }
        for r in snap.leases:
            row = out.get(r.device_id)
            if row is None:  # the device's node stopped registering; its leases still count
                row = out[r.device_id] = {
                    "capacity": 0.0, "reserved_live": 0.0, "reserved_clip": 0.0, "memory_total": 0,
                    "reserved_memory": 0,
                    "leases": 0, "draining": True, "node_id": r.node_id, "kind": "unknown", "url": "",
                }
            row["reserved_live" if r.priority == "live" else "reserved_clip"] += r.share
            row["reserved_memory"] += r.memory_bytes
            row["leases"] += 1
        return out
