"""The scaled profile's channel layer outlives a Redis restart (nextframe.channel_layer): a pending
receive waits while Redis is down and gets the message sent once it is back, where channels_redis's
own layer raises (which closed every live socket of a node with 1011; tests/test_faults.py runs the
whole cluster through the restart). Needs only a redis-server binary: a private one on a free port."""
from __future__ import annotations

import asyncio

import pytest
import redis.exceptions
from channels_redis.core import RedisChannelLayer

from nextframe.channel_layer import ResilientRedisChannelLayer
from tests.faults import PrivateRedis, need_redis_server

pytestmark = pytest.mark.profile("embedded")  # its own Redis: once per `make test`


async def _restart_under(layer: RedisChannelLayer, server: PrivateRedis) -> tuple[asyncio.Task, str]:
    """Start a receive on a fresh channel, then stop Redis under it (SHUTDOWN SAVE)."""
    channel = await layer.new_channel()
    receive = asyncio.create_task(layer.receive(channel))
    await asyncio.sleep(0.3)  # the receive is blocked in Redis's BZPOPMIN
    await asyncio.to_thread(server.shutdown)
    await asyncio.sleep(1.0)
    return receive, channel


async def test_a_receive_waits_out_a_redis_restart_and_gets_the_next_message(tmp_path):
    need_redis_server()
    with PrivateRedis(tmp_path / "redis") as server:
        layer = ResilientRedisChannelLayer(hosts=[{"address": server.url}])
        try:
            receive, channel = await _restart_under(layer, server)
            assert not receive.done(), receive  # waiting, not failed
            await asyncio.to_thread(server.start)
            await layer.send(channel, {"type": "key.revoked"})
            message = await asyncio.wait_for(receive, 15)
            assert message == {"type": "key.revoked"}
        finally:
            await layer.flush()
            await layer.close_pools()


async def test_channels_redis_alone_raises_from_the_receive(tmp_path):
    """What the resilient layer fixes (the contrast: this test fails once channels_redis retries)."""
    need_redis_server()
    with PrivateRedis(tmp_path / "redis") as server:
        layer = RedisChannelLayer(hosts=[{"address": server.url}])
        try:
            receive, _ = await _restart_under(layer, server)
            with pytest.raises((redis.exceptions.ConnectionError, OSError)):
                await asyncio.wait_for(receive, 15)
        finally:
            await asyncio.to_thread(server.start)
            await layer.flush()
            await layer.close_pools()
