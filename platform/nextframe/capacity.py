"""The process-wide GPU pool of this node, configured from settings.

Scaled out (REDIS_URL): the Redis backend, shared by every daphne node and Celery worker.
Embedded default: a SQLite lease file in the data dir, so that the web process (live sessions) and
the embedded Celery worker (clips) share one view of the device and a clip can never take capacity
a live session needs. Tests may call `set_pool()` with a pool built on a fake probe.
"""
from __future__ import annotations

import threading

from django.conf import settings

_lock = threading.Lock()
_pool = None


def build_default_pool():
    from inference.pool import CpuProbe, Pool, build_pool, default_probe

    probe = default_probe()
    if probe.__class__.__name__ == "CpuProbe":
        probe = CpuProbe(settings.CPU_CAPACITY)
    if settings.REDIS_URL:
        return build_pool(settings.REDIS_URL, probe=probe, ttl_s=settings.POOL_LEASE_TTL_S)
    try:
        from inference.pool.sqlite import SqliteBackend
    except ImportError:  # pragma: no cover - until the SQLite backend exists, stay in process
        return build_pool(None, probe=probe, ttl_s=settings.POOL_LEASE_TTL_S)
    backend = SqliteBackend(str(settings.DATA_DIR / "pool.sqlite3"))
    return Pool(backend, probe, ttl_s=settings.POOL_LEASE_TTL_S, node_id="local")


def get_pool():
    global _pool
    if _pool is None:
        with _lock:
            if _pool is None:
                _pool = build_default_pool()
    return _pool


def set_pool(pool) -> None:
    """Replace this process's pool (tests, or a node with a custom probe)."""
    global _pool
    with _lock:
        _pool = pool
