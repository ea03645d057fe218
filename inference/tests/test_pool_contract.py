"""The pool contract, run against both backends (in-process and the real Redis on loopback).

Time is a fake clock handed to the Pool, so expiry is exact and nothing sleeps; the Redis
backend takes that clock's value instead of the server TIME (production passes none).
"""

from __future__ import annotations

import math
import random
import uuid

import pytest

from inference.pool import (
    CapacityUnavailable,
    ConcurrencyLimit,
    CpuProbe,
    DeviceInfo,
    FakeProbe,
    LeaseLost,
    MemoryBackend,
    Pool,
)
from inference.testing import ManualClock, redis_client_or_skip

TTL = 15.0
GiB = 2**30


@pytest.fixture(params=["memory", "redis"])
def backend_factory(request):
    """Returns make() -> a backend; every make() in one test shares the same store."""
    if request.param == "memory":
        shared = MemoryBackend()
        yield lambda: shared
        return
    from inference.pool.redis import RedisBackend

    client = redis_client_or_skip()
    prefix = f"nftest:{{{uuid.uuid4().hex}}}"
    made: list[RedisBackend] = []

    def make() -> RedisBackend:
        made.append(RedisBackend(client, prefix=prefix))
        return made[-1]

    yield make
    client.delete(*made[0].keys()) if made else None


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_pool(backend_factory, clock):
    def make(probe=None, **kw) -> Pool:
        return Pool(backend_factory(), probe or FakeProbe.gpus(1), clock=clock, ttl_s=TTL, **kw)

    return make


def totals(pool: Pool) -> tuple[float, int]:
    u = pool.usage()
    return sum(d["reserved_live"] + d["reserved_clip"] for d in u.values()), sum(d["leases"] for d in u.values())


# -- admission and refusal ---------------------------------------------------------------------

def test_admits_until_full_then_refuses_with_retry_hint(make_pool, clock):
    pool = make_pool()
    a = pool.reserve("org1", "s1", 0.5)
    clock.advance(5)
    pool.reserve("org1", "s2", 0.5)
    with pytest.raises(CapacityUnavailable) as err:
        pool.reserve("org1", "s3", 0.1)
    assert err.value.code == "capacity_unavailable"
    # The soonest expiry is a's, 10 s from now: that is when a dead holder's slot frees at latest.
    assert err.value.retry_after_s == pytest.approx(a.expires_at - clock())
    assert err.value.retry_after_s == pytest.approx(10.0)
    assert totals(pool) == (pytest.approx(1.0), 2)


def test_retry_hint_is_clamped(make_pool, clock):
    pool = make_pool(FakeProbe.gpus(1, capacity=0.5))
    pool.reserve("org1", "s1", 0.5)
    clock.advance(TTL - 0.2)
    with pytest.raises(CapacityUnavailable) as err:
        pool.reserve("org1", "s2", 0.5)
    assert err.value.retry_after_s == 1.0
    with pytest.raises(CapacityUnavailable) as err:
        pool.reserve("org1", "s3", 0.6)  # larger than any device: nothing to wait for
    assert 1.0 <= err.value.retry_after_s <= 30.0


@pytest.mark.parametrize("probe", [CpuProbe(0.0), FakeProbe.gpus(2, capacity=0.0)], ids=["cpu", "gpus"])
def test_capacity_zero_admits_nothing(make_pool, probe):
    pool = make_pool(probe)
    for priority in ("live", "clip"):
        with pytest.raises(CapacityUnavailable) as err:
            pool.reserve("org1", "s1", 0.01, priority=priority)
        assert err.value.retry_after_s == 30.0
    assert totals(pool) == (0.0, 0)


def test_release_frees_and_is_idempotent(make_pool):
    pool = make_pool()
    a = pool.reserve("org1", "s1", 1.0)
    with pytest.raises(CapacityUnavailable):
        pool.reserve("org1", "s2", 1.0)
    pool.release(a)
    pool.release(a)
    b = pool.reserve("org1", "s2", 1.0)
    assert b.token > a.token
    with pytest.raises(LeaseLost) as err:
        pool.heartbeat(a)
    assert err.value.reason == "released"


def test_memory_is_reserved_too(make_pool):
    pool = make_pool(FakeProbe.gpus(1, memory_total=10 * GiB))
    pool.reserve("org1", "s1", 0.1, memory_bytes=6 * GiB)
    with pytest.raises(CapacityUnavailable):
        pool.reserve("org1", "s2", 0.1, memory_bytes=5 * GiB)
    pool.reserve("org1", "s3", 0.1, memory_bytes=4 * GiB)
    assert pool.usage()["local/cuda:0"]["reserved_memory"] == 10 * GiB


@pytest.mark.parametrize("kwargs", [
    {"share": 0}, {"share": -0.5}, {"share": math.nan}, {"share": math.inf},
    {"share": 0.1, "priority": "batch"}, {"share": 0.1, "memory_bytes": -1},
    {"share": 0.1, "max_concurrent": -1}, {"share": True}, {"share": "0.5"}, {"share": 0.1, "memory_bytes": 1.5},
])
def test_malformed_requests_raise_and_reserve_nothing(make_pool, kwargs):
    pool = make_pool()
    with pytest.raises(ValueError):
        pool.reserve("org1", "s1", **kwargs)
    assert totals(pool) == (0.0, 0)


def test_places_on_least_loaded_device(make_pool):
    pool = make_pool(FakeProbe.gpus(2))
    a = pool.reserve("org1", "s1", 0.5)
    b = pool.reserve("org1", "s2", 0.25)
    c = pool.reserve("org1", "s3", 0.25)
    assert a.device_id != b.device_id  # spread, not packed
    assert c.device_id == b.device_id  # b's device had 0.75 left, a's 0.5
    assert a.node_id == "local" and a.device_id.startswith("local/")


# -- leases: TTL, heartbeats, fencing ------------------------------------------------------------

def test_ttl_expiry_frees_a_dead_holders_capacity(make_pool, clock):
    pool = make_pool()
    dead = pool.reserve("org1", "s1", 1.0)
    clock.advance(TTL - 0.01)
    with pytest.raises(CapacityUnavailable):
        pool.reserve("org1", "s2", 1.0)
    clock.advance(0.02)
    assert totals(pool) == (0.0, 0)
    fresh = pool.reserve("org1", "s2", 1.0)
    with pytest.raises(LeaseLost) as err:
        pool.heartbeat(dead)
    assert err.value.reason == "expired"
    pool.heartbeat(fresh)  # the new holder is unaffected


def test_heartbeats_keep_a_lease_past_its_ttl(make_pool, clock):
    pool = make_pool()
    res = pool.reserve("org1", "s1", 1.0)
    for _ in range(6):  # 6 x 0.9 TTL: well past the original expiry
        clock.advance(TTL * 0.9)
        res = pool.heartbeat(res)
        assert res.expires_at == pytest.approx(clock() + TTL)
    with pytest.raises(CapacityUnavailable):
        pool.reserve("org1", "s2", 0.5)
    assert [r.lease_id for r in pool.active_leases()] == [res.lease_id]


def test_heartbeat_after_expiry_is_refused_even_if_nobody_swept(make_pool, clock):
    pool = make_pool()
    res = pool.reserve("org1", "s1", 1.0)
    clock.advance(TTL + 1)
    with pytest.raises(LeaseLost) as err:
        pool.heartbeat(res)
    assert err.value.reason == "expired"


def test_fencing_tokens_increase_and_reject_a_stale_holder(make_pool, clock):
    pool = make_pool(FakeProbe.gpus(4))
    tokens = [pool.reserve("org1", f"s{i}", 0.5).token for i in range(6)]
    assert tokens == sorted(tokens) and len(set(tokens)) == 6
    res = pool.reserve("org1", "s9", 0.5)
    forged = type(res)(**{**res.__dict__, "token": res.token - 1})
    with pytest.raises(LeaseLost) as err:
        pool.heartbeat(forged)
    assert err.value.reason == "stale_token"
    pool.release(forged)  # a stale token frees nothing
    assert res.lease_id in {r.lease_id for r in pool.active_leases()}
    pool.heartbeat(res)


def test_dead_nodes_devices_leave_placement(backend_factory, clock):
    a = Pool(backend_factory(), FakeProbe.gpus(1), clock=clock, ttl_s=TTL, node_id="a")
    b = Pool(backend_factory(), FakeProbe.gpus(1), clock=clock, ttl_s=TTL, node_id="b")
    b.refresh()
    assert set(a.usage()) == {"a/cuda:0", "b/cuda:0"}
    first = a.reserve("org1", "s1", 1.0)
    second = a.reserve("org1", "s2", 1.0)  # lands on b's device, through the shared store
    assert {first.node_id, second.node_id} == {"a", "b"}
    clock.advance(a.device_ttl_s + 1)  # b stops re-registering (its process died)
    assert set(a.usage()) == {"a/cuda:0"}
    a.reserve("org1", "s3", 1.0)
    with pytest.raises(CapacityUnavailable):
        a.reserve("org1", "s4", 0.5)


# -- organisations ---------------------------------------------------------------------------

def test_concurrency_limit_per_org_leaves_others_unaffected(make_pool):
    pool = make_pool(FakeProbe.gpus(2))
    held = [pool.reserve("org1", f"s{i}", 0.1, max_concurrent=2) for i in range(2)]
    with pytest.raises(ConcurrencyLimit) as err:
        pool.reserve("org1", "s3", 0.1, max_concurrent=2)
    assert err.value.code == "concurrency_limit" and err.value.limit == 2
    pool.reserve("org2", "t1", 0.1, max_concurrent=2)
    pool.reserve("org1", "c1", 0.1, priority="clip", max_concurrent=2)  # clips are counted apart
    pool.release(held[0])
    pool.reserve("org1", "s3", 0.1, max_concurrent=2)
    assert len(pool.active_leases("org1")) == 3 and len(pool.active_leases("org2")) == 1
    with pytest.raises(ConcurrencyLimit):
        pool.reserve("org3", "x", 0.1, max_concurrent=0)


# -- draining ------------------------------------------------------------------------------

@pytest.mark.parametrize("change", [
    {"throttle_reasons": ["hw_thermal_slowdown"]},
    {"throttle_reasons": ["hw_power_brake_slowdown"]},
    {"throttle_reasons": ["hw_slowdown", "sw_power_cap"]},
    {"temperature_c": 85.0},
])
def test_throttling_or_hot_device_is_drained(make_pool, change):
    probe = FakeProbe.gpus(2)
    pool = make_pool(probe)
    old = pool.reserve("org1", "s1", 0.5)
    bad = old.device_id.split("/", 1)[1]
    probe.set(bad, **change)
    pool.refresh()
    assert pool.usage()[old.device_id]["draining"] is True
    for i in range(2):  # new sessions go to the other device only
        assert pool.reserve("org1", f"n{i}", 0.5).device_id != old.device_id
    with pytest.raises(CapacityUnavailable):
        pool.reserve("org1", "n3", 0.1)  # the drained device still has 0.5 free: unused
    pool.heartbeat(old)  # existing work keeps running on it
    probe.set(bad, throttle_reasons=[], temperature_c=40.0)
    pool.refresh()
    assert pool.reserve("org1", "n4", 0.5).device_id == old.device_id


def test_benign_clock_reasons_do_not_drain(make_pool):
    probe = FakeProbe.gpus(1)
    pool = make_pool(probe)
    probe.set("cuda:0", throttle_reasons=["gpu_idle", "applications_clocks_setting", "sw_power_cap"],
              temperature_c=84.0)
    pool.refresh()
    assert pool.usage()["local/cuda:0"]["draining"] is False
    pool.reserve("org1", "s1", 1.0)


# -- live over clips -----------------------------------------------------------------------

def test_live_preempts_newest_clips_first_and_only_as_many_as_needed(make_pool):
    pool = make_pool()
    older = pool.reserve("org1", "c1", 0.3, priority="clip")
    newer = pool.reserve("org2", "c2", 0.4, priority="clip")
    live = pool.reserve("org3", "s1", 0.5)  # 0.3 free: needs the 0.4 clip gone, not the 0.3 one
    with pytest.raises(LeaseLost) as err:
        pool.heartbeat(newer)
    assert err.value.reason == "preempted"
    pool.heartbeat(older)
    pool.heartbeat(live)
    usage = pool.usage()["local/cuda:0"]
    assert usage["reserved_live"] == pytest.approx(0.5) and usage["reserved_clip"] == pytest.approx(0.3)


def test_preemption_picks_the_device_losing_least_clip_work(make_pool):
    pool = make_pool(FakeProbe.gpus(2))
    big = pool.reserve("org1", "c1", 1.0, priority="clip")
    small = [pool.reserve("org1", f"c{i}", 0.5, priority="clip") for i in (2, 3)]
    assert {s.device_id for s in small} != {big.device_id}
    live = pool.reserve("org2", "s1", 0.5)
    assert live.device_id == small[0].device_id
    lost = [s for s in small if _is_lost(pool, s)]
    assert len(lost) == 1 and lost[0].lease_id == small[1].lease_id  # the newer of the two
    pool.heartbeat(big)


def _is_lost(pool: Pool, res) -> bool:
    try:
        pool.heartbeat(res)
    except LeaseLost:
        return True
    return False


def test_live_is_never_preempted_and_clips_never_preempt(make_pool):
    pool = make_pool()
    lives = [pool.reserve("org1", f"s{i}", 0.5) for i in range(2)]
    with pytest.raises(CapacityUnavailable):
        pool.reserve("org2", "s3", 0.5)
    with pytest.raises(CapacityUnavailable):
        pool.reserve("org2", "c1", 0.1, priority="clip")
    for res in lives:
        pool.heartbeat(res)
    pool.release(lives[0])
    clip = pool.reserve("org2", "c1", 0.5, priority="clip")
    with pytest.raises(CapacityUnavailable):
        pool.reserve("org2", "c2", 0.5, priority="clip")  # a clip does not preempt a clip
    pool.heartbeat(clip)


def test_live_refused_when_even_preempting_all_clips_is_not_enough(make_pool):
    pool = make_pool()
    pool.reserve("org1", "s1", 0.6)
    clip = pool.reserve("org1", "c1", 0.4, priority="clip")
    with pytest.raises(CapacityUnavailable):
        pool.reserve("org2", "s2", 0.5)
    pool.heartbeat(clip)  # nothing was preempted for a refusal


def test_preemption_frees_memory_as_well(make_pool):
    pool = make_pool(FakeProbe.gpus(1, memory_total=10 * GiB))
    clip = pool.reserve("org1", "c1", 0.1, memory_bytes=8 * GiB, priority="clip")
    pool.reserve("org2", "s1", 0.1, memory_bytes=5 * GiB)
    assert _is_lost(pool, clip)


def test_clip_share_max_caps_clips_per_device(make_pool):
    pool = make_pool(FakeProbe.gpus(1), clip_share_max=0.5)
    pool.reserve("org1", "c1", 0.3, priority="clip")
    with pytest.raises(CapacityUnavailable):
        pool.reserve("org1", "c2", 0.3, priority="clip")
    pool.reserve("org1", "c3", 0.2, priority="clip")
    pool.reserve("org2", "s1", 0.5)  # live uses the rest
    assert totals(pool) == (pytest.approx(1.0), 3)


# -- a long random run leaks nothing -----------------------------------------------------------

def test_random_cycles_leave_nothing_reserved(make_pool, clock):
    rng = random.Random(4)
    probe = FakeProbe.gpus(3)
    pool = make_pool(probe, clip_share_max=0.7)
    held = []
    for step in range(200):
        op = rng.random()
        if op < 0.45:
            try:
                held.append(pool.reserve(f"org{rng.randrange(3)}", f"s{step}", rng.choice([0.1, 0.25, 0.3, 0.5]),
                                         priority=rng.choice(["live", "live", "clip"]), max_concurrent=4))
            except (CapacityUnavailable, ConcurrencyLimit):
                pass
        elif op < 0.65 and held:
            res = held.pop(rng.randrange(len(held)))
            pool.release(res)
        elif op < 0.75 and held:
            held.pop(rng.randrange(len(held)))  # the holder dies without a word
        elif op < 0.8:
            probe.set(f"cuda:{rng.randrange(3)}", temperature_c=rng.choice([40.0, 90.0]))
            pool.refresh()
        else:
            alive = []
            for res in held:
                try:
                    alive.append(pool.heartbeat(res))
                except LeaseLost:  # expired (not heartbeated in time) or preempted by a live one
                    pass
            held = alive
        clock.advance(rng.uniform(0, 3))
        for dev in pool.usage().values():  # never more reserved than there is
            assert dev["reserved_live"] + dev["reserved_clip"] <= dev["capacity"] + 1e-9
            assert dev["reserved_clip"] <= 0.7 * dev["capacity"] + 1e-9
    for res in held:
        pool.release(res)
    clock.advance(TTL + 0.1)  # the abandoned ones expire
    assert totals(pool) == (0.0, 0)
    assert pool.active_leases() == []


def test_cpu_device_from_probe_is_registered(make_pool):
    pool = make_pool(CpuProbe(2.5))
    usage = pool.usage()
    assert list(usage) == ["local/cpu"] and usage["local/cpu"]["capacity"] == 2.5
    assert usage["local/cpu"]["kind"] == "cpu"
    for i in range(5):
        pool.reserve("org1", f"s{i}", 0.5)


def test_device_info_defaults():
    info = DeviceInfo("cuda:0", "cuda", "x", 1.0, 1, 1, None, None)
    assert info.healthy and info.throttle_reasons == []


def test_unreachable_redis_refuses_admission_with_a_retry_hint():
    from inference.pool.redis import RedisBackend

    pool = Pool(RedisBackend("redis://127.0.0.1:1/15?socket_connect_timeout=0.5"), FakeProbe.gpus(1))
    with pytest.raises(CapacityUnavailable) as err:
        pool.reserve("org1", "s1", 0.5)
    assert err.value.retry_after_s == 5.0 and "unreachable" in err.value.message


def test_lost_lease_reasons_are_forgotten_after_a_while(make_pool, clock):
    pool = make_pool(FakeProbe.gpus(1, capacity=100.0))
    gone = [pool.reserve("org1", f"s{i}", 0.5) for i in range(40)]
    for res in gone:
        pool.release(res)
    clock.advance(121)  # tombstones live 120 s; they are swept on a later reserve (1 in 32)
    for i in range(40):
        pool.reserve("org1", f"t{i}", 0.5)
    with pytest.raises(LeaseLost) as err:
        pool.heartbeat(gone[0])
    assert err.value.reason == "expired"
    backend = pool.backend  # and the store does not accumulate them forever:
    if isinstance(backend, MemoryBackend):
        assert len(backend._tombstones) == 0
    elif type(backend).__name__ == "RedisBackend":
        assert backend.client.hlen(backend.keys()[3]) == 0
