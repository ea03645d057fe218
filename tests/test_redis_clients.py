"""Every Redis client the platform makes has deliberate timeouts (docs/operations.md, "Redis timeouts").

redis-py 8 reads for at most 5 s by default and retries ten times; the channel layer's blocking pop
waits 5 s. These tests build each client as a scaled-out process does (REDIS_URL set, real Redis)
and check that no socket timeout is shorter than a blocking read it serves, and that a stalled
Redis fails a pool call in bounded time. The scaled-out soak (tests/test_scaled_soak.py) shows the
consequence end to end on a real server.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from nextframe.testing import REDIS_URL, need_service
from tests.server import clean_env

# Clients built as a scaled-out process builds them, on the real Redis: in the scaled-out pass.
pytestmark = pytest.mark.profile("scaled")

PROBE = r"""
import json, django
django.setup()
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from nextframe.celery import app

layer = get_channel_layer()
pool = layer.create_pool(0)
with app.connection_for_write() as conn:
    channel = conn.default_channel
    broker = channel.client.connection_pool.connection_kwargs
    brpop = channel.brpop_timeout
from inference.pool.redis import RedisBackend
pool_kwargs = RedisBackend(__import__("os").environ["REDIS_URL"]).client.connection_pool.connection_kwargs
print(json.dumps({
    "layer": {"blocking_pop_s": layer.brpop_timeout, "socket_timeout": pool.connection_kwargs.get("socket_timeout", "default"),
              "connect_timeout": pool.connection_kwargs.get("socket_connect_timeout", "default")},
    "broker": {"blocking_pop_s": brpop, "socket_timeout": broker.get("socket_timeout"),
               "connect_timeout": broker.get("socket_connect_timeout")},
    "pool": {"socket_timeout": pool_kwargs.get("socket_timeout", "default"),
             "connect_timeout": pool_kwargs.get("socket_connect_timeout", "default")},
}))
"""


def test_no_redis_client_times_out_before_its_blocking_read_returns(tmp_path):
    need_service("Redis", REDIS_URL)
    env = clean_env({"REDIS_URL": REDIS_URL, "DJANGO_SETTINGS_MODULE": "nextframe.settings",
                     "NEXTFRAME_DATA_DIR": str(tmp_path)})
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    clients = json.loads(out.stdout.strip().splitlines()[-1])
    for name, c in clients.items():
        # Explicit, finite numbers (never the library default, never "wait forever").
        assert isinstance(c["socket_timeout"], (int, float)) and isinstance(c["connect_timeout"], (int, float)), (name, c)
        # A blocking read may take its whole timeout plus a round trip: the socket must wait longer.
        assert c["socket_timeout"] >= c.get("blocking_pop_s", 0) + 2, (name, c)


def _stalled_redis() -> tuple[socket.socket, str]:
    """A TCP server that accepts connections and never answers: Redis stuck (or a dead peer)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    return server, f"redis://127.0.0.1:{server.getsockname()[1]}/0"


def test_a_stalled_redis_fails_a_pool_heartbeat_well_within_the_lease_ttl():
    import redis

    from inference.pool.redis import RedisBackend

    server, url = _stalled_redis()
    try:
        backend = RedisBackend(url)
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            backend.heartbeat("lease-1", 1, ttl_s=15.0)
        took = time.monotonic() - started
    finally:
        server.close()
    # The LeaseKeeper heartbeats every TTL/3 (5 s at the default 15 s TTL) on one thread, and tries
    # again on its next round: a call that blocks as long as a round makes it miss beats of every
    # other lease it holds. redis-py 8's default read timeout held it 5.0 s here.
    assert took < 4.0, f"a heartbeat against a stalled Redis blocked {took:.1f} s"
