"""LeaseKeeper: heartbeats on a thread, reports lost leases, refreshes devices, stops cleanly."""

from __future__ import annotations

import threading
import time

import pytest

from inference.pool import FakeProbe, LeaseKeeper, LeaseLost, MemoryBackend, Pool
from inference.testing import ManualClock

TTL = 15.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(500.0)


def keeper_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "nextframe-lease-keeper"]


def test_tick_keeps_leases_alive_past_their_ttl(clock):
    pool = Pool(MemoryBackend(), FakeProbe.gpus(1), clock=clock, ttl_s=TTL)
    res = pool.reserve("org1", "s1", 1.0)
    keeper = LeaseKeeper(pool)
    keeper.add(res)
    for _ in range(5):
        clock.t += TTL * 0.8
        keeper.tick()
    assert keeper.current(res.lease_id).expires_at == clock() + TTL
    assert [r.lease_id for r in pool.active_leases()] == [res.lease_id]
    keeper.remove(res.lease_id)
    clock.t += TTL
    keeper.tick()
    assert pool.active_leases() == []  # no longer heartbeated: expired


def test_lost_lease_is_reported_once_and_dropped(clock):
    pool = Pool(MemoryBackend(), FakeProbe.gpus(1), clock=clock, ttl_s=TTL)
    lost: list[tuple[str, str]] = []
    keeper = LeaseKeeper(pool, on_lost=lambda res, err: lost.append((res.session_id, err.reason)))
    clip = pool.reserve("org1", "clip1", 0.3, priority="clip")
    other = pool.reserve("org1", "clip2", 0.5, priority="clip")
    keeper.add(clip)
    keeper.add(other)
    pool.reserve("org2", "live1", 0.5)  # preempts the newest clip only, which is enough
    keeper.tick()
    keeper.tick()
    assert lost == [("clip2", "preempted")]
    assert keeper.current(other.lease_id) is None and keeper.current(clip.lease_id) is not None


def test_a_failing_callback_or_backend_does_not_stop_the_others(clock):
    class Flaky(MemoryBackend):
        fail = True

        def heartbeat(self, lease_id, token, ttl_s, now=None):
            if self.fail:
                raise ConnectionError("backend down")
            return super().heartbeat(lease_id, token, ttl_s, now)

    backend = Flaky()
    pool = Pool(backend, FakeProbe.gpus(1), clock=clock, ttl_s=TTL)
    res = pool.reserve("org1", "s1", 0.5)
    keeper = LeaseKeeper(pool, on_lost=lambda r, e: (_ for _ in ()).throw(RuntimeError("callback bug")))
    keeper.add(res)
    keeper.tick()  # backend down: still tracked
    assert keeper.current(res.lease_id) == res
    clock.t += TTL + 1
    backend.fail = False
    keeper.tick()  # now the lease is found expired; the callback raises; tick survives
    assert keeper.current(res.lease_id) is None


def test_tick_refreshes_devices_so_drain_state_follows_the_probe(clock):
    probe = FakeProbe.gpus(1)
    pool = Pool(MemoryBackend(), probe, clock=clock, ttl_s=TTL)
    keeper = LeaseKeeper(pool)
    keeper.tick()
    probe.set("cuda:0", temperature_c=95.0)
    keeper.tick()
    assert pool.usage()["local/cuda:0"]["draining"] is True


def test_thread_heartbeats_and_stops_cleanly():
    pool = Pool(MemoryBackend(), FakeProbe.gpus(1), ttl_s=3.0)  # real time
    res = pool.reserve("org1", "s1", 0.5)
    before = set(keeper_threads())
    with LeaseKeeper(pool, interval_s=0.01) as keeper:
        [thread] = set(keeper_threads()) - before
        keeper.add(res)
        deadline = time.monotonic() + 10
        while keeper.current(res.lease_id).expires_at == res.expires_at and time.monotonic() < deadline:
            time.sleep(0.01)
        assert keeper.current(res.lease_id).expires_at > res.expires_at
    assert not thread.is_alive() and set(keeper_threads()) == before  # joined, none left behind
    pool.heartbeat(res)  # stopping the keeper does not release: the owner does
    pool.release(res)
    with pytest.raises(LeaseLost):
        pool.heartbeat(res)


def _wait_for(predicate, timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_lease_handed_over_late_in_its_life_is_heartbeated_at_once(clock, tmp_path):
    """The embedded `nextframe up` bug: a live session reserved, then built its engine (cold torch
    import and model build: 12-13 s on a busy 2-core node) before handing the lease to the running
    keeper, whose next round came a whole interval later -- after the 15 s TTL. The real SQLite
    backend, as the web process uses it; the pool's clock stands in for the slow start."""
    from inference.pool.sqlite import SqliteBackend

    pool = Pool(SqliteBackend(str(tmp_path / "pool.sqlite3")), FakeProbe.gpus(1), clock=clock, ttl_s=TTL,
                device_ttl_s=3600.0)
    with LeaseKeeper(pool, interval_s=60.0, refresh_devices=False) as keeper:  # rounds far apart, in real time
        res = pool.reserve("org1", "s1", 0.5)
        clock.t += TTL - 1.0  # the session start takes most of the TTL before keep()
        keeper.add(res)
        assert _wait_for(lambda: keeper.current(res.lease_id).expires_at == clock() + TTL), \
            "the keeper did not heartbeat a newly added lease before its next round"
        clock.t += TTL - 1.0  # past the reservation's first expiry, within the heartbeated one
        assert [r.session_id for r in pool.active_leases()] == ["s1"]
        pool.heartbeat(keeper.current(res.lease_id))


def test_a_failed_heartbeat_is_retried_soon_not_a_whole_interval_later():
    """A backend away for a few seconds (a Redis restart) must not outlast the lease between two
    tries: with TTL/3 between them a 3 s restart expired every lease of a 6 s TTL (tests/test_faults.py)."""
    from inference.pool.keeper import RETRY_S

    class Restarting(MemoryBackend):
        calls = 0

        def heartbeat(self, lease_id, token, ttl_s, now=None):
            self.calls += 1
            if self.calls <= 2:  # the first two tries find it down
                raise ConnectionError("Connection refused")
            return super().heartbeat(lease_id, token, ttl_s, now)

    backend = Restarting()
    pool = Pool(backend, FakeProbe.gpus(1), ttl_s=30.0)  # real time; interval 10 s
    res = pool.reserve("org1", "s1", 0.5)
    with LeaseKeeper(pool, refresh_devices=False) as keeper:
        keeper.add(res)
        started = time.monotonic()
        assert _wait_for(lambda: backend.calls >= 3, timeout_s=3 * RETRY_S + 2.0), backend.calls
        assert time.monotonic() - started < 3 * RETRY_S + 1.5
        assert _wait_for(lambda: keeper.current(res.lease_id).expires_at > res.expires_at)
        calls = backend.calls
        time.sleep(3 * RETRY_S)
        assert backend.calls == calls  # healthy again: back to one heartbeat per interval
