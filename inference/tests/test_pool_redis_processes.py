"""The Redis backend across real OS processes: racing for the last slot, dying while holding one.

These use Redis server time (no fake clock), as production does.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import uuid

import pytest

from inference.pool import CapacityUnavailable, FakeProbe, LeaseKeeper, Pool
from inference.testing import REDIS_URL, redis_client_or_skip

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ROUNDS = 20


def _prefix(base: str, i: int) -> str:
    return f"{base}:r{i}"


def _competitor(name: str, base: str, barrier, results) -> None:
    from inference.pool.redis import RedisBackend

    for i in range(ROUNDS):
        pool = Pool(RedisBackend(REDIS_URL, prefix=_prefix(base, i)), FakeProbe([]), ttl_s=30, node_id=name)
        pool.refresh()  # register this (device-less) node now, so reserve() is one script call
        barrier.wait(timeout=60)
        try:
            res = pool.reserve("org1", f"{name}-{i}", 0.5)
            results.put((i, name, res.token, res.device_id))
        except CapacityUnavailable:
            results.put((i, name, None, None))


def test_two_processes_race_for_the_last_slot_exactly_one_wins():
    from inference.pool.redis import RedisBackend

    client = redis_client_or_skip()
    base = f"nftest:{{{uuid.uuid4().hex}}}"
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_competitor, args=(n, base, barrier, results), daemon=True) for n in ("p1", "p2")]
    for p in procs:
        p.start()
    try:
        for i in range(ROUNDS):
            backend = RedisBackend(client, prefix=_prefix(base, i))
            owner = Pool(backend, FakeProbe.gpus(1), ttl_s=30, node_id="gpu")
            owner.reserve("org0", "held", 0.5)  # one slot of 0.5 left
            barrier.wait(timeout=60)
            outcomes = [results.get(timeout=60) for _ in procs]
            winners = [o for o in outcomes if o[2] is not None]
            assert len(winners) == 1, f"round {i}: {outcomes}"
            assert winners[0][3] == "gpu/cuda:0"
            usage = owner.usage()["gpu/cuda:0"]
            assert usage["reserved_live"] == pytest.approx(1.0) and usage["leases"] == 2
            client.delete(*backend.keys())
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
        client.delete(*[k for i in range(ROUNDS) for k in RedisBackend(client, _prefix(base, i)).keys()])  # noqa: SIM118 - RedisBackend.keys(), not a dict's
    assert [p.exitcode for p in procs] == [0, 0]


def _holder(prefix: str, ttl_s: float, ready) -> None:
    from inference.pool.redis import RedisBackend

    pool = Pool(RedisBackend(REDIS_URL, prefix=prefix), FakeProbe([]), ttl_s=ttl_s, node_id="doomed")
    res = pool.reserve("org1", "s1", 1.0)
    keeper = LeaseKeeper(pool).start()  # heartbeats every ttl/3 until the process is killed
    keeper.add(res)
    ready.put(res.lease_id)
    time.sleep(600)


def test_a_killed_holder_frees_its_capacity_within_the_ttl():
    from inference.pool.redis import RedisBackend

    client = redis_client_or_skip()
    ttl = 2.0
    backend = RedisBackend(client, prefix=f"nftest:{{{uuid.uuid4().hex}}}")
    pool = Pool(backend, FakeProbe.gpus(1), ttl_s=30, node_id="gpu")
    pool.refresh()
    ctx = mp.get_context("spawn")
    ready = ctx.Queue()
    proc = ctx.Process(target=_holder, args=(backend.prefix, ttl, ready), daemon=True)
    proc.start()
    try:
        lease_id = ready.get(timeout=60)
        time.sleep(ttl * 1.5)  # past the first expiry: only heartbeats keep it
        assert [r.lease_id for r in pool.active_leases()] == [lease_id]
        with pytest.raises(CapacityUnavailable):
            pool.reserve("org2", "s2", 1.0)
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        proc.join(timeout=10)
        with pytest.raises(CapacityUnavailable):  # not released: it is the TTL that frees it
            pool.reserve("org2", "s2", 1.0)
        res = None
        while res is None and time.monotonic() - killed < ttl + 5:
            try:
                res = pool.reserve("org2", "s2", 1.0)
            except CapacityUnavailable:
                time.sleep(0.05)
        assert res is not None, "capacity of a killed holder never came back"
        assert time.monotonic() - killed <= ttl + 1.0
    finally:
        if proc.is_alive():
            proc.kill()
        client.delete(*backend.keys())
