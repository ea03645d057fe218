import uuid

import pytest


@pytest.fixture
def live_pool(settings):
    """A fresh pool with a CPU device of the given capacity, and a fresh live host.

    Scaled-out profile: the Redis backend on the loopback Redis (a unique key prefix per test);
    embedded profile: the in-process backend.
    """
    from inference.pool import CpuProbe, Pool, build_pool
    from nextframe import capacity
    from nextframe.live import host

    made = []

    def make(capacity_value: float = 1.0):
        host.reset_host()
        if settings.REDIS_URL:
            from inference.pool.redis import RedisBackend

            backend = RedisBackend(settings.REDIS_URL, prefix=f"nftest:{uuid.uuid4().hex}:{{pool}}")
            made.append(backend)
            pool = Pool(backend, CpuProbe(capacity_value), ttl_s=15, node_id="test")
        else:
            pool = build_pool(None, probe=CpuProbe(capacity_value), ttl_s=15)
        capacity.set_pool(pool)
        return pool

    yield make
    host.reset_host()
    capacity.set_pool(None)
    for backend in made:
        client = backend.client if hasattr(backend, "client") else None
        prefix = getattr(backend, "prefix", None)
        if client is not None and prefix:
            for key in client.scan_iter(match=f"{prefix}*"):
                client.delete(key)
