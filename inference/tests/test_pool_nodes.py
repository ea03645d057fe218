"""Nodes in the pool, on both backends: URLs in registrations, routed live placement, leaving within
the TTL, draining a whole node; and FileProbe, the simulated devices of a real node process."""
from __future__ import annotations

import json
import uuid

import pytest

from inference.pool import CapacityUnavailable, DeviceInfo, FakeProbe, FileProbe, MemoryBackend, Pool
from inference.pool.types import ReserveRequest
from inference.testing import ManualClock, redis_client_or_skip

TTL = 15.0


@pytest.fixture(params=["memory", "redis"])
def backend(request):
    if request.param == "memory":
        yield MemoryBackend()
        return
    from inference.pool.redis import RedisBackend

    made = RedisBackend(redis_client_or_skip(), prefix=f"nftest:{{{uuid.uuid4().hex}}}")
    yield made
    made.client.delete(*made.keys())


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def cpu(capacity: float) -> FakeProbe:
    return FakeProbe([DeviceInfo("cpu", "cpu", "cpu", capacity, 0, 0, 0.0, None)])


def node(backend, clock, name: str, capacity: float, url: bool = True, routed: bool = True) -> Pool:
    pool = Pool(backend, cpu(capacity), clock=clock, ttl_s=TTL, node_id=name,
                node_url=f"wss://x/nodes/{name}/v1/live" if url else "", routed_live=routed)
    pool.refresh()
    return pool


def test_registrations_carry_the_node_url(backend, clock):
    a = node(backend, clock, "a", 1.0)
    node(backend, clock, "worker", 1.0, url=False)
    assert a.node_urls() == {"a": "wss://x/nodes/a/v1/live", "worker": ""}
    assert a.usage()["a/cpu"]["url"] == "wss://x/nodes/a/v1/live"


def test_routed_live_placement_goes_home_or_to_a_node_with_a_url(backend, clock):
    a = node(backend, clock, "a", 1.0)
    node(backend, clock, "worker", 8.0, url=False)  # the most room, but no client can be sent there
    b = node(backend, clock, "b", 2.0)
    first = a.reserve("org", "s1", 0.5)
    assert first.node_id == "b"  # least loaded among a and b
    # Clips are not routed (they run where their worker is): the worker's device takes them.
    assert a.reserve("org", "c1", 0.5, priority="clip").node_id == "worker"
    # Unrouted pools (the pool contract, a single node) keep the plain rule.
    unrouted = node(backend, clock, "u", 0.1, url=False, routed=False)
    assert unrouted.reserve("org", "s2", 0.5).node_id == "worker"
    del b


def test_a_tie_stays_home_so_equal_nodes_never_redirect(backend, clock):
    b = node(backend, clock, "b", 1.0)
    a = node(backend, clock, "a", 1.0)  # "a/cpu" sorts first: without the home rule b would lose ties
    assert b.reserve("org", "s1", 0.25).node_id == "b"
    assert a.reserve("org", "s2", 0.25).node_id == "a"


def test_a_node_that_stops_registering_leaves_placement_within_one_ttl(backend, clock):
    a = node(backend, clock, "a", 1.0)
    b = node(backend, clock, "b", 2.0)
    lease = a.reserve("org", "s1", 0.5)
    assert lease.node_id == "b" and a.device_ttl_s == TTL
    clock.advance(TTL - 0.1)
    a.refresh()  # a is alive; b stopped (killed) after its last registration
    assert set(a.usage()) == {"a/cpu", "b/cpu"}
    clock.advance(0.2)
    assert set(a.usage()) == {"a/cpu"} and a.active_leases() == []  # its device and its lease
    assert a.reserve("org", "s2", 0.5).node_id == "a"
    del b


def test_a_draining_node_is_registered_draining_and_takes_nothing_new(backend, clock):
    a = node(backend, clock, "a", 1.0)
    b = node(backend, clock, "b", 2.0)
    held = a.reserve("org", "s1", 0.5)
    assert held.node_id == "b"
    b.draining = True  # SIGTERM on b (nextframe.live.nodes.retire)
    b.refresh()
    assert b.usage()["b/cpu"]["draining"] and not b.can_host() and a.can_host()
    assert a.reserve("org", "s2", 0.5).node_id == "a"
    b.heartbeat(held)  # its running sessions go on
    with pytest.raises(CapacityUnavailable):
        b.reserve("org", "s3", 0.6)


def test_an_edge_node_has_nothing_to_host():
    edge = Pool(MemoryBackend(), FakeProbe([]), ttl_s=TTL, node_id="edge")
    assert not edge.can_host()
    zero = Pool(MemoryBackend(), cpu(0.0), ttl_s=TTL, node_id="zero")
    assert not zero.can_host()


def test_the_policy_and_the_lua_script_agree_on_the_home_rule_for_clips_and_unrouted_requests():
    from inference.pool.policy import placeable
    from inference.pool.types import DeviceRecord

    def request(priority, home) -> ReserveRequest:
        return ReserveRequest("l", "o", "s", 0.1, 0, priority, None, 1.0, TTL, home_node=home)

    far = DeviceRecord("w/cpu", "w", "cpu", "cpu", 1.0, 0, False, 0.0)
    assert not placeable(request("live", "a"), far)
    assert placeable(request("clip", "a"), far) and placeable(request("live", None), far)


# --- FileProbe ---------------------------------------------------------------------------------


def test_file_probe_rereads_the_file_and_applies_the_drain_rule(tmp_path):
    path = tmp_path / "devices.json"
    path.write_text(json.dumps({"devices": [{"id": "gpu0", "capacity": 2.0, "memory_total": 1024}]}))
    probe = FileProbe(path)
    [device] = probe.devices()
    assert (device.id, device.kind, device.capacity, device.memory_total, device.healthy) == ("gpu0", "cpu", 2.0, 1024, True)
    path.write_text(json.dumps({"devices": [{"id": "gpu0", "throttle_reasons": ["hw_thermal_slowdown"]}]}))
    assert probe.devices()[0].healthy is False
    path.write_text(json.dumps({"devices": [{"id": "gpu0", "throttle_reasons": ["sw_power_cap"], "temperature_c": 90}]}))
    assert probe.devices()[0].healthy is False  # too hot
    path.write_text(json.dumps({"devices": []}))
    assert probe.devices() == []


@pytest.mark.parametrize("content", ["not json", '{"nodevices": []}', '{"devices": [{"capacity": 1}]}',
                                     '{"devices": [{"id": "x", "capacity": -1}]}', '{"devices": [{"id": "x", "kind": "tpu"}]}'])
def test_file_probe_refuses_a_bad_file_naming_it(tmp_path, content):
    path = tmp_path / "devices.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="devices.json"):
        FileProbe(path).devices()
    with pytest.raises(ValueError, match="missing"):
        FileProbe(tmp_path / "missing.json").devices()
