"""A live session's lease survives a slow first start (a cold engine build), on the real SQLite pool.

The embedded `nextframe up` bug: the first session of a freshly started node reserved its lease,
then built its engine (torch import and model build, 12-13 s measured on a busy 2-core node) on
the event loop before handing the lease to the keeper; the 15 s lease expired unheartbeated and
the session ended with server_error ("lost its reservation (expired)") at the first heartbeat.
Here the engine build takes longer than the whole TTL.
"""
from __future__ import annotations

import asyncio
import json
import time

import pytest
from channels.testing import WebsocketCommunicator

from inference.engines.dreamfield import DreamfieldEngine
from nextframe.asgi import application
from nextframe.tenancy import actions

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

TTL_S = 1.5
BUILD_S = 4.0  # longer than the TTL: a lease held across it is lost unless it is heartbeated


class SlowToBuildDreamfield(DreamfieldEngine):
    def __init__(self) -> None:
        time.sleep(BUILD_S)
        super().__init__()


@pytest.fixture
def sqlite_pool(tmp_path, monkeypatch):
    from inference import engines
    from inference.pool import CpuProbe, Pool
    from inference.pool.sqlite import SqliteBackend
    from nextframe import capacity
    from nextframe.live import host

    host.reset_host()
    pool = Pool(SqliteBackend(str(tmp_path / "pool.sqlite3")), CpuProbe(1.0), ttl_s=TTL_S, node_id="local")
    capacity.set_pool(pool)
    monkeypatch.setitem(engines._BUILTIN_FACTORIES, "dreamfield", f"{__name__}:SlowToBuildDreamfield")
    saved = engines._INSTANCES.pop("dreamfield", None)  # built on first use, as in a fresh process
    yield pool
    host.reset_host()
    capacity.set_pool(None)
    engines._INSTANCES.pop("dreamfield", None)
    if saved is not None:
        engines._INSTANCES["dreamfield"] = saved


@pytest.fixture
def key(sqlite_pool, db):
    return actions.create_key(actions.create_org("acme", max_live_sessions=2))[1]


async def test_the_first_session_keeps_its_lease_through_a_slow_engine_build(sqlite_pool, key):
    comm = WebsocketCommunicator(application, "/v1/live", headers=[(b"authorization", f"Bearer {key}".encode())])
    assert (await comm.connect())[0]

    gaps: list[float] = []

    async def loop_clock() -> None:  # what every other connection of the node would see
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    clock = asyncio.create_task(loop_clock())
    await comm.send_to(text_data=json.dumps({"type": "session.start", "model": "dreamfield", "width": 64,
                                             "height": 64, "fps": 10, "prompt": "a steady clock"}))
    events, frames = [], 0
    deadline = None
    while deadline is None or time.monotonic() < deadline:
        message = await comm.receive_output(BUILD_S + 10)
        assert message["type"] != "websocket.close", events
        if message.get("bytes") is not None:
            frames += 1
            continue
        event = json.loads(message["text"])
        if event["type"] == "metrics":
            continue
        events.append(event)
        assert event["type"] == "session.ready", events  # no error, no session.ended
        deadline = time.monotonic() + 3 * TTL_S  # several heartbeats past the build
    clock.cancel()
    assert frames > 0
    [lease] = sqlite_pool.active_leases()
    assert lease.priority == "live"
    # The build ran off the event loop: the node kept serving its other connections meanwhile.
    assert max(gaps) < BUILD_S / 2, max(gaps)
    await comm.send_to(text_data=json.dumps({"type": "session.stop"}))
    while True:
        message = await comm.receive_output(10)
        if message.get("text") and json.loads(message["text"])["type"] == "session.ended":
            assert json.loads(message["text"])["reason"] != "server_error"
            break
    await comm.disconnect()
    assert sqlite_pool.active_leases() == []
