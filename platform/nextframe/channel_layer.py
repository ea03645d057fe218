"""The Redis channel layer, made to outlive a Redis restart.

channels_redis raises from `receive()` when Redis goes away (its blocking pop fails with
"Connection closed by server", then "Connection refused" until Redis is back). channels runs that
receive beside the WebSocket's own, so the error ended the consumer: every live socket of a node
closed with 1011 and its session ended `server_error`, although frames never pass through Redis
(measured: tests/test_faults.py, a 3 s Redis restart ended every running session). Here a receive
that fails on the connection waits and tries again; the socket and its session carry on, and
group messages (key revocations) reach it again once Redis is back. Sessions also re-read their
key from the database every few seconds, so a revocation made during the outage still lands.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.exceptions
from channels_redis.core import RedisChannelLayer

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.1
RETRY_MAX_S = 2.0


class ResilientRedisChannelLayer(RedisChannelLayer):
    """RedisChannelLayer whose `receive` retries (0.1 s, doubling to 2 s) while Redis is unreachable."""

    async def receive(self, channel: str) -> dict[str, Any]:
        delay = RETRY_FIRST_S
        while True:
            try:
                return await super().receive(channel)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
                log.warning("channel layer receive failed (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
