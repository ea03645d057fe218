"""The process-wide GPU pool of this node, configured from settings.

Scaled out (REDIS_URL): the Redis backend, shared by every daphne node and Celery worker; this
node is NODE_ID, and a session placed on another node's device is redirected there (nextframe.live.redirect).
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
    from inference.pool import CpuProbe, FileProbe, Pool, Probe, build_pool, default_probe

    probe: Probe
    if settings.DEVICES_FILE:
        probe = FileProbe(settings.DEVICES_FILE)
    else:
        probe = default_probe()
        if probe.__class__.__name__ == "CpuProbe":
            probe = CpuProbe(settings.CPU_CAPACITY)
    if settings.REDIS_URL:
        # Routed: a live session goes to this node's devices or to a node it can redirect the client
        # to (one that advertises a URL); the URL itself is registered by the serving process only
        # (nextframe.live.nodes.serve), never by a worker or a command sharing the node id.
        return build_pool(settings.REDIS_URL, probe=probe, node_id=settings.NODE_ID, ttl_s=settings.POOL_LEASE_TTL_S,
                          redis_prefix=settings.POOL_KEY_PREFIX, routed_live=True)
    # Embedded: one machine, one node ("local") for the web process and the worker alike: never a redirect.
    from inference.pool.sqlite import SqliteBackend

    backend = SqliteBackend(str(settings.DATA_DIR / "pool.sqlite3"))
    return Pool(backend, probe, ttl_s=settings.POOL_LEASE_TTL_S, node_id="local", routed_live=True)


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
