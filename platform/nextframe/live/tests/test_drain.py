"""Graceful drain in process (nextframe.live.drain): what a shutting-down server does to its sockets.

The real SIGTERM on a real daphne process is tests/test_drain_process.py; here the drain is run on
the test's own event loop, against sockets held through the Channels communicator.
"""
from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from nextframe.live import drain
from nextframe.live.models import LiveSession
from nextframe.live.tests.test_consumer import connect, next_frame, next_json, send, start
from nextframe.tenancy import actions

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture
def pool_and_key(live_pool, db):
    pool = live_pool(1.0)
    org = actions.create_org("acme", max_live_sessions=3)
    drain.reset()
    yield pool, actions.create_key(org)[1]
    drain.reset()


async def closed_with(comm) -> int:
    while True:
        message = await comm.receive_output(10)
        if message["type"] == "websocket.close":
            return message.get("code", 1000)


async def test_drain_ends_running_sessions_with_shutdown_closes_idle_sockets_and_admits_nothing(pool_and_key):
    pool, key = pool_and_key
    live = await connect(key)
    ready = await start(live, "dreamfield", width=64, height=64, fps=30)
    await next_frame(live)
    idle = await connect(key)  # authenticated, no session

    finished = await drain.drain(grace_s=10)

    ended = await next_json(live)
    assert ended["type"] == "session.ended" and ended["reason"] == "shutdown"
    assert ended["usage"]["frames"] >= 1 and float(ended["usage"]["gpu_seconds"]) > 0
    assert await closed_with(live) == 1000
    assert await closed_with(idle) == drain.CLOSE_GOING_AWAY
    assert finished  # nothing else was pending
    record = await database_sync_to_async(LiveSession.objects.get)(pk=ready["session_id"])
    assert record.status == "ended" and record.end_reason == "shutdown" and record.frames >= 1
    assert await database_sync_to_async(pool.active_leases)() == []  # the lease is released

    # While draining: a new socket is closed 1001 at once; readiness is 503.
    late = await connect(key)
    assert await closed_with(late) == drain.CLOSE_GOING_AWAY
    response = await database_sync_to_async(Client().get)("/readyz")
    assert response.status_code == 503 and response.json()["status"] == "draining"


async def test_a_session_start_while_draining_is_refused_as_capacity_with_a_retry_hint(pool_and_key):
    _, key = pool_and_key
    comm = await connect(key)
    drain._state.draining = True  # the drain began after this socket was told (or it slipped in between)
    await send(comm, type="session.start", model="dreamfield", width=64, height=64)
    error = await next_json(comm)
    assert error["type"] == "error" and error["code"] == "capacity_unavailable"
    assert error["retry_after_s"] == drain.RETRY_AFTER_S and "shutting down" in error["message"]
    assert await closed_with(comm) == 1013
    assert await database_sync_to_async(LiveSession.objects.count)() == 0  # nothing was admitted
