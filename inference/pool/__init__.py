"""The GPU pool: which device runs which session, admitted by reservation (see docs/pool.md).

Typical use on a node::

    pool = build_pool(os.environ.get("NEXTFRAME_REDIS_URL"))
    res = pool.reserve(org_id, session_id, share=spec.share, memory_bytes=spec.memory_bytes)
    keeper.add(res)          # a LeaseKeeper heartbeats it every ttl/3
    ...
    keeper.remove(res.lease_id); pool.release(res)
"""

from __future__ import annotations

import socket

from .keeper import LeaseKeeper
from .memory import MemoryBackend
from .policy import plan_reservation
from .pool import Backend, Pool
from .probe import (
    CPU_CAPACITY_ENV,
    CpuProbe,
    DeviceInfo,
    FakeProbe,
    FileProbe,
    NvmlProbe,
    Probe,
    assess_health,
    decode_clock_event_reasons,
    default_probe,
    parse_cpu_capacity,
)
from .types import (
    CapacityUnavailable,
    ConcurrencyLimit,
    DeviceRecord,
    LeaseLost,
    PoolError,
    Priority,
    Reservation,
    ReserveRequest,
    Snapshot,
)

__all__ = [
    "Backend", "CPU_CAPACITY_ENV", "CapacityUnavailable", "ConcurrencyLimit", "CpuProbe", "DeviceInfo",
    "DeviceRecord", "FakeProbe", "FileProbe", "LeaseKeeper", "LeaseLost", "MemoryBackend", "NvmlProbe", "Pool",
    "PoolError", "Priority", "Probe", "Reservation", "ReserveRequest", "Snapshot", "assess_health",
    "build_pool", "decode_clock_event_reasons", "default_probe", "parse_cpu_capacity", "plan_reservation",
]


def build_pool(
    redis_url: str | None,
    probe: Probe | None = None,
    node_id: str | None = None,
    ttl_s: float = 15.0,
    clip_share_max: float = 1.0,
    redis_prefix: str | None = None,
    node_url: str = "",
    routed_live: bool = False,
) -> Pool:
    """A Pool on Redis when a URL is given (scaled out), else in process (embedded default).

    The probe defaults to NVML when a GPU is found, else the CPU device; node_id defaults to the
    host name (it must be unique per node sharing one Redis)."""
    if probe is None:
        probe = default_probe()
    if node_id is None:
        node_id = socket.gethostname().replace("/", "_") or "local"
    if redis_url:
        from .redis import RedisBackend  # imported only when scaled out

        backend: Backend = RedisBackend(redis_url, **({"prefix": redis_prefix} if redis_prefix else {}))
    else:
        backend = MemoryBackend()
    return Pool(backend, probe, ttl_s=ttl_s, node_id=node_id, clip_share_max=clip_share_max,
                node_url=node_url, routed_live=routed_live)
