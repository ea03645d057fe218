"""Nodes and session redirects, in process: the live consumer as node A, then as node B, over one pool.

Two `Pool`s share one backend (Redis with a key prefix of its own in the scaled pass, in-process in the
embedded pass), each a node with its own devices and URL; the test "becomes" a node by giving the
process that node's pool, id and host (what `python -m nextframe.web` has on a real node). The real
processes are in tests/test_nodes_cluster.py; the reference client's side is the last test here.
"""
from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from inference.pool import DeviceInfo, FakeProbe, MemoryBackend, Pool
from inference.testing import ManualClock
from nextframe import capacity
from nextframe.asgi import application
from nextframe.live import drain, host
from nextframe.live.models import LiveSession, Redirect
from nextframe.tenancy import actions

pytestmark = [pytest.mark.django_db(transaction=True)]

START = {"type": "session.start", "model": "dreamfield", "width": 64, "height": 64, "fps": 10}
TTL = 15.0


def cpu(capacity_value: float) -> FakeProbe:
    return FakeProbe([DeviceInfo("cpu", "cpu", "fake cpu", capacity_value, 0, 0, 0.0, 40.0)])


@dataclass
class Cluster:
    a: Pool
    b: Pool
    clock: ManualClock
    settings: object

    def node(self, name: str, probe: FakeProbe, url: bool = True) -> Pool:
        return Pool(self.a.backend, probe, clock=self.clock, ttl_s=TTL, node_id=name,
                    node_url=f"ws://{name}.test/v1/live" if url else "", routed_live=True)

    def become(self, pool: Pool) -> Pool:
        """This process is now `pool`'s node: its id, its pool, a fresh host (runtimes, keeper)."""
        host.reset_host()
        self.settings.NODE_ID = pool.node_id  # type: ignore[attr-defined]
        capacity.set_pool(pool)
        pool.refresh()
        return pool


@pytest.fixture
def cluster(settings):
    clock = ManualClock()
    made = None
    if settings.REDIS_URL:
        from inference.pool.redis import RedisBackend

        backend = made = RedisBackend(settings.REDIS_URL, prefix=f"nftest:{uuid.uuid4().hex}:{{pool}}")
    else:
        backend = MemoryBackend()
    # b has the larger device: the least-loaded rule places a start at a on b.
    a = Pool(backend, cpu(1.0), clock=clock, ttl_s=TTL, node_id="a", node_url="ws://a.test/v1/live", routed_live=True)
    b = Pool(backend, cpu(2.0), clock=clock, ttl_s=TTL, node_id="b", node_url="ws://b.test/v1/live", routed_live=True)
    b.refresh()
    yield Cluster(a, b, clock, settings)
    host.reset_host()
    capacity.set_pool(None)
    if made is not None:
        made.client.delete(*made.keys())


@pytest.fixture
def key(db) -> str:
    org = actions.create_org("acme", max_live_sessions=3)
    return actions.create_key(org)[1]


async def connect(key: str | None = None, ticket: str | None = None) -> WebsocketCommunicator:
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    comm = WebsocketCommunicator(application, "/v1/live" + (f"?ticket={ticket}" if ticket else ""), headers=headers)
    connected, _ = await comm.connect()
    assert connected
    return comm


async def next_json(comm, timeout: float = 30) -> dict:
    while True:
        message = await comm.receive_output(timeout)
        if message["type"] == "websocket.close":
            return {"type": "__closed__", "code": message.get("code", 1000)}
        if message.get("text") is not None:
            data = json.loads(message["text"])
            if data["type"] != "metrics":
                return data


async def start_at(comm, start: dict = START) -> dict:
    await comm.send_to(text_data=json.dumps(start))
    return await next_json(comm)


async def redirected(key: str) -> dict:
    """A session.start on this node, answered by session.redirect and a normal close."""
    comm = await connect(key)
    moved = await start_at(comm)
    assert moved["type"] == "session.redirect", moved
    assert set(moved) == {"type", "url", "ticket", "retry_after_s"} and moved["retry_after_s"] == 0
    assert await next_json(comm) == {"type": "__closed__", "code": 1000}
    return moved


async def stop(comm) -> dict:
    await comm.send_to(text_data='{"type":"session.stop"}')
    while (message := await next_json(comm))["type"] != "session.ended":
        pass
    return message


def records() -> list[LiveSession]:
    return list(LiveSession.objects.all())


@pytest.mark.asyncio
async def test_a_start_placed_on_another_node_is_redirected_there_and_adopted_once(cluster, key):
    cluster.become(cluster.a)
    moved = await redirected(key)
    assert moved["url"] == "ws://b.test/v1/live" and moved["ticket"].startswith("nft_")
    [lease] = cluster.a.active_leases()  # made by a, on b's device, heartbeated by nobody yet
    assert lease.node_id == "b" and lease.device_id == "b/cpu"
    assert await database_sync_to_async(records)() == []  # nothing ran on a

    cluster.become(cluster.b)
    comm = await connect(ticket=moved["ticket"])
    ready = await start_at(comm)
    assert ready["type"] == "session.ready", ready
    assert ready["reservation"]["device"] == "b/cpu" and ready["session_id"] == lease.session_id
    assert [r.lease_id for r in cluster.b.active_leases()] == [lease.lease_id]  # adopted, not a second one
    ended = await stop(comm)
    assert ended["reason"] == "client"
    assert cluster.b.active_leases() == []
    [record] = await database_sync_to_async(records)()
    assert record.node == "b" and record.end_reason == "client" and record.id == lease.session_id

    # The ticket was single-use: a replay is refused like any used ticket, and takes nothing.
    replay = await connect(ticket=moved["ticket"])
    assert await next_json(replay) == {"type": "__closed__", "code": 4401}
    assert cluster.b.active_leases() == []


@pytest.mark.asyncio
async def test_a_redirect_ticket_at_another_node_is_refused_wrong_node_and_stays_usable(cluster, key):
    cluster.become(cluster.a)
    moved = await redirected(key)
    [lease] = cluster.a.active_leases()
    cluster.become(cluster.node("c", cpu(1.0)))  # a third node: the ticket is not for it
    comm = await connect(ticket=moved["ticket"])
    error = await next_json(comm)
    assert error["type"] == "error" and error["code"] == "wrong_node" and "for node b" in error["message"]
    assert await next_json(comm) == {"type": "__closed__", "code": 4403}
    assert [r.lease_id for r in cluster.a.active_leases()] == [lease.lease_id]  # not released by c either
    # Not used up by the wrong node: the right one still takes it.
    cluster.become(cluster.b)
    comm = await connect(ticket=moved["ticket"])
    assert (await start_at(comm))["type"] == "session.ready"
    await stop(comm)


@pytest.mark.asyncio
async def test_a_redirect_nobody_follows_leaks_nothing(cluster, key):
    cluster.become(cluster.a)
    moved = await redirected(key)
    ticket = await database_sync_to_async(lambda: Redirect.objects.select_related("ticket").get().ticket)()
    assert ticket.expires_at - ticket.created_at <= timedelta(seconds=TTL + 1)  # dies with the lease
    assert len(cluster.a.active_leases()) == 1
    cluster.clock.advance(TTL + 0.1)  # nobody heartbeats it: the lease expires within the TTL
    assert cluster.a.active_leases() == []
    # A client that comes late (its lease gone) is still served: the start is placed anew.
    cluster.b.refresh()
    cluster.become(cluster.b)
    comm = await connect(ticket=moved["ticket"])
    ready = await start_at(comm)
    assert ready["type"] == "session.ready" and ready["reservation"]["device"] == "b/cpu"
    assert len(cluster.b.active_leases()) == 1
    await stop(comm)
    assert cluster.b.active_leases() == []


@pytest.mark.asyncio
async def test_a_different_start_after_a_redirect_is_placed_anew_and_the_adopted_lease_freed(cluster, key):
    cluster.become(cluster.a)
    moved = await redirected(key)
    [adopted] = cluster.a.active_leases()
    cluster.become(cluster.b)
    comm = await connect(ticket=moved["ticket"])
    ready = await start_at(comm, {**START, "width": 128, "height": 128})  # not the start that was redirected
    assert ready["type"] == "session.ready" and ready["reservation"]["device"] == "b/cpu"
    [lease] = cluster.b.active_leases()
    assert lease.lease_id != adopted.lease_id and lease.share > adopted.share  # its own size, not the adopted one
    await stop(comm)
    assert cluster.b.active_leases() == []


@pytest.mark.asyncio
async def test_a_redirected_client_that_leaves_before_starting_frees_the_adopted_reservation(cluster, key):
    cluster.become(cluster.a)
    moved = await redirected(key)
    cluster.become(cluster.b)
    comm = await connect(ticket=moved["ticket"])
    await asyncio.sleep(0.2)  # adopted at the handshake
    assert len(cluster.b.active_leases()) == 1
    await comm.disconnect()
    for _ in range(50):
        if not cluster.b.active_leases():
            break
        await asyncio.sleep(0.05)
    assert cluster.b.active_leases() == []


@pytest.mark.asyncio
async def test_an_edge_node_without_devices_redirects_and_a_gpu_node_keeps_its_sessions(cluster, key):
    edge = cluster.become(cluster.node("edge", FakeProbe([]), url=False))
    assert not edge.can_host()
    moved = await redirected(key)
    assert moved["url"] in {"ws://a.test/v1/live", "ws://b.test/v1/live"}
    # On a node with room (ties go home), the start stays: no redirect.
    cluster.become(cluster.b)
    comm = await connect(key)
    ready = await start_at(comm)
    assert ready["type"] == "session.ready" and ready["reservation"]["device"] == "b/cpu"
    await stop(comm)


@pytest.mark.asyncio
async def test_a_node_without_a_url_is_never_a_redirect_target(cluster, key):
    worker = cluster.node("worker", cpu(4.0), url=False)  # the largest device, but nobody can reach it
    worker.refresh()
    cluster.become(cluster.a)
    moved = await redirected(key)
    assert moved["url"] == "ws://b.test/v1/live"


@pytest.mark.asyncio
async def test_a_throttling_device_is_drained_and_new_sessions_land_on_the_other_node(cluster, key):
    a = cluster.become(cluster.node("a", cpu(3.0)))  # the larger device: starts stay here while healthy
    comm = await connect(key)
    assert (await start_at(comm))["reservation"]["device"] == "a/cpu"
    a.probe.set("cpu", throttle_reasons=["hw_thermal_slowdown"])  # type: ignore[attr-defined]
    a.refresh()
    assert a.usage()["a/cpu"]["draining"] and not a.can_host()
    moved = await redirected(key)
    assert moved["url"] == "ws://b.test/v1/live"
    assert (await stop(comm))["reason"] == "client"  # the running session went on on the drained device
    a.probe.set("cpu", throttle_reasons=[])  # type: ignore[attr-defined]
    a.refresh()
    comm = await connect(key)
    assert (await start_at(comm))["reservation"]["device"] == "a/cpu"
    await stop(comm)


@pytest.mark.asyncio
async def test_a_draining_node_leaves_placement_at_once(cluster, key):
    from nextframe.live import nodes

    cluster.become(cluster.a)
    cluster.b.draining = True  # b got SIGTERM: nextframe.live.nodes.retire
    cluster.b.refresh()
    comm = await connect(key)
    assert (await start_at(comm))["reservation"]["device"] == "a/cpu"
    await stop(comm)
    assert nodes.retire is not None and not drain.draining()


@pytest.mark.profile("embedded")
@pytest.mark.asyncio
async def test_the_embedded_single_node_never_redirects(key, settings):
    """The default pool of `nextframe up` (SQLite, node `local` for the web process and the worker)."""
    from inference.pool.sqlite import SqliteBackend

    host.reset_host()
    capacity.set_pool(None)
    try:
        pool = capacity.get_pool()
        assert pool.node_id == "local" and pool.routed_live
        # The clip worker's pool on the same file registers the same node: still one node.
        worker = Pool(SqliteBackend(str(settings.DATA_DIR / "pool.sqlite3")), cpu(1.0), ttl_s=TTL, node_id="local")
        worker.refresh()
        for _ in range(2):
            comm = await connect(key)
            ready = await start_at(comm)
            assert ready["type"] == "session.ready" and ready["reservation"]["device"] == "local/cpu", ready
            await stop(comm)
    finally:
        host.reset_host()
        capacity.set_pool(None)


# --- the reference client follows a redirect ------------------------------------------------------


@pytest.mark.django_db(transaction=False)
def test_the_reference_client_follows_a_redirect_with_its_ticket():
    """Two protocol servers: A answers session.start with a redirect to B; B takes only the ticket."""
    from websockets.asyncio.server import serve

    from inference.client import LiveClient, LiveClientError

    seen: dict[str, list] = {"a": [], "b": []}

    async def main() -> None:
        async def node_b(ws):
            seen["b"].append(("path", ws.request.path, ws.request.headers.get("Authorization")))
            async for raw in ws:
                seen["b"].append(json.loads(raw))
                if json.loads(raw)["type"] == "session.start":
                    await ws.send('{"type":"session.ready","session_id":"ls_1","model":"dreamfield","tier":"interactive",'
                                  '"width":64,"height":64,"fps":10,"frame_budget_ms":100,'
                                  '"reservation":{"device":"b/cpu","share":0.1},"price_per_gpu_second":"0","currency":"usd"}')

        async with serve(node_b, "127.0.0.1", 0) as b_server:
            b_url = f"ws://127.0.0.1:{b_server.sockets[0].getsockname()[1]}/v1/live"
            hops = {"n": 0}

            async def node_a(ws):
                async for raw in ws:
                    seen["a"].append(json.loads(raw))
                    hops["n"] += 1
                    target = b_url if hops["n"] == 1 else ws_a_url
                    await ws.send(json.dumps({"type": "session.redirect", "url": target,
                                              "ticket": f"nft_t{hops['n']}", "retry_after_s": 0}))
                    await ws.close(1000)

            async with serve(node_a, "127.0.0.1", 0) as a_server:
                ws_a_url = f"ws://127.0.0.1:{a_server.sockets[0].getsockname()[1]}/v1/live"
                async with LiveClient(ws_a_url, key="nf_test_k") as client:
                    ready = await client.start("dreamfield", 64, 64, 10, prompt="sea")
                    assert ready["reservation"]["device"] == "b/cpu" and client.redirects == [b_url]
                    # The redirect is not an event for the application: only what node b sent is.
                    assert [e["type"] async for e in _first(client)] == ["session.ready"]

            async def loop_a(ws):  # a node that only ever redirects to itself
                async for _raw in ws:
                    await ws.send(json.dumps({"type": "session.redirect", "url": loop_url, "ticket": "nft_x",
                                              "retry_after_s": 0}))
                    await ws.close(1000)

            async with serve(loop_a, "127.0.0.1", 0) as loop_server:
                loop_url = f"ws://127.0.0.1:{loop_server.sockets[0].getsockname()[1]}/v1/live"
                async with LiveClient(loop_url, key="nf_test_k") as client:
                    with pytest.raises(LiveClientError) as err:
                        await client.start("dreamfield")
                    assert err.value.code == "too_many_redirects" and len(client.redirects) == 3

    asyncio.run(main())
    start = {"type": "session.start", "model": "dreamfield", "width": 64, "height": 64, "fps": 10, "prompt": "sea"}
    assert seen["a"] == [start]
    assert seen["b"][0] == ("path", "/v1/live?ticket=nft_t1", None)  # the ticket is the credential there
    assert seen["b"][1:] == [start]  # the same session.start again


async def _first(client):
    """Events already buffered (none expected), without waiting for more."""
    while client._events:  # noqa: SLF001 - the test looks at the buffer, not the stream
        yield client._events.popleft()  # noqa: SLF001
