"""Plain data shared by the pool, its backends and its callers: records, requests, errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Priority = Literal["live", "clip"]
PRIORITIES: tuple[str, ...] = ("live", "clip")

# Shares are floats in device-equivalents; sums of a few floats carry rounding error, so "fits"
# is decided with this tolerance (a device of capacity 1.0 takes ten sessions of 0.1).
EPSILON = 1e-9


@dataclass(frozen=True)
class Reservation:
    """A lease on a slice of one device. Valid until `expires_at` unless heartbeated.

    `token` is a fencing token: strictly increasing across all reservations of a backend, so a
    holder presenting an old token for a lease that was re-issued or taken away is refused.
    `expires_at` is in the backend's time base (Redis server time for the Redis backend).
    """

    lease_id: str
    device_id: str  # "<node_id>/<probe device id>", e.g. "gpu-3/cuda:0"
    share: float
    memory_bytes: int
    org_id: str
    session_id: str
    priority: Priority
    token: int
    expires_at: float
    node_id: str = ""


@dataclass(frozen=True)
class DeviceRecord:
    """A device as registered in the pool by its node (capacity, drain state, registration TTL)."""

    device_id: str
    node_id: str
    kind: str
    name: str
    capacity: float
    memory_total: int
    draining: bool
    expires_at: float
    # The public WebSocket URL of the node's live endpoint ("" when the node serves no live clients
    # of other nodes): where a session placed on this device is redirected (docs/pool.md, "Nodes").
    url: str = ""


@dataclass(frozen=True)
class ReserveRequest:
    lease_id: str
    org_id: str
    session_id: str
    share: float
    memory_bytes: int
    priority: Priority
    max_concurrent: int | None
    clip_share_max: float
    ttl_s: float
    # The requesting node when live placement is routed (Pool(routed_live=True)): a live lease then
    # goes only to this node's devices or to a node advertising a URL, and wins ties at home.
    home_node: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """Live devices and leases at time `now` (expired ones already left out)."""

    now: float
    devices: list[DeviceRecord]
    leases: list[Reservation]


class PoolError(Exception):
    code = "pool_error"


class CapacityUnavailable(PoolError):
    """No healthy device has room; `retry_after_s` is a hint for the client."""

    code = "capacity_unavailable"

    def __init__(self, retry_after_s: float, message: str = "no device has room for this session") -> None:
        super().__init__(f"{message} (retry after {retry_after_s:.0f} s)")
        self.retry_after_s = retry_after_s
        self.message = message


class ConcurrencyLimit(PoolError):
    """The organisation already holds `limit` reservations of this priority."""

    code = "concurrency_limit"

    def __init__(self, limit: int) -> None:
        super().__init__(f"organisation concurrency limit reached ({limit})")
        self.limit = limit


class LeaseLost(PoolError):
    """The lease is gone: reason is 'expired', 'released', 'preempted' or 'stale_token'."""

    code = "lease_lost"

    def __init__(self, reason: str, lease_id: str = "") -> None:
        super().__init__(f"lease {lease_id or '?'} lost: {reason}")
        self.reason = reason
        self.lease_id = lease_id
