"""A `backdrop` session over the live protocol, in process (WebsocketCommunicator), on both profiles.

The webcam is scikit-image's public-domain `astronaut` photo; the session starts on a green
background, and a control switching to `blur` must be in the output of the very next input frame.
"""
from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
import simplejpeg
from channels.testing import WebsocketCommunicator
from skimage import data

from inference import protocol
from nextframe.asgi import application
from nextframe.tenancy import actions

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

GREEN = np.array([0, 177, 64])
WALL, FACE = (slice(0, 20), slice(80, 125)), (slice(15, 40), slice(47, 60))  # in the 128x128 photo


@pytest.fixture
def key(settings):
    """A CPU device of capacity 1 (Redis-backed on the scaled profile) and an organisation's key."""
    from inference.pool import CpuProbe, Pool, build_pool
    from nextframe import capacity
    from nextframe.live import host

    host.reset_host()
    backend = None
    if settings.REDIS_URL:
        from inference.pool.redis import RedisBackend

        backend = RedisBackend(settings.REDIS_URL, prefix=f"nftest:{uuid.uuid4().hex}:{{pool}}")
        capacity.set_pool(Pool(backend, CpuProbe(1.0), ttl_s=15, node_id="test"))
    else:
        capacity.set_pool(build_pool(None, probe=CpuProbe(1.0), ttl_s=15))
    org = actions.create_org("backdrop-org", max_live_sessions=1)
    yield actions.create_key(org)[1]
    host.reset_host()
    capacity.set_pool(None)
    if backend is not None:
        for k in backend.client.scan_iter(match=f"{backend.prefix}*"):
            backend.client.delete(k)


async def _json(comm, kinds: set[str]) -> dict:
    while True:
        message = await comm.receive_output(20)
        assert message["type"] != "websocket.close", message
        if message.get("text") and json.loads(message["text"])["type"] in kinds:
            return json.loads(message["text"])


async def _frame(comm):
    while True:
        message = await comm.receive_output(20)
        assert message["type"] != "websocket.close", message
        if message.get("bytes") is not None:
            return protocol.unpack_output_frame(message["bytes"])


async def test_a_backdrop_session_replaces_the_background_and_switches_mode_at_the_next_frame(key):
    photo = np.ascontiguousarray(data.astronaut()[::4, ::4])
    jpeg = simplejpeg.encode_jpeg(photo, quality=95)
    comm = WebsocketCommunicator(application, "/v1/live", headers=[(b"authorization", f"Bearer {key}".encode())])
    assert (await comm.connect())[0]
    await comm.send_to(text_data=json.dumps({"type": "session.start", "model": "backdrop", "width": 128,
                                             "height": 128, "fps": 30, "params": {"mode": "color"}}))
    ready = await _json(comm, {"session.ready", "error"})
    assert ready["type"] == "session.ready", ready
    await comm.send_to(bytes_data=protocol.pack_input_frame(1, 1000, jpeg))
    first = await _frame(comm)
    pixels = simplejpeg.decode_jpeg(first.jpeg).astype(int)
    assert first.header.input_seq == 1 and first.header.control_seq == 0
    assert np.abs(pixels[WALL] - GREEN).mean() < 10
    assert np.abs(pixels[FACE] - photo[FACE]).mean() < 10
    await comm.send_to(text_data=json.dumps({"type": "control", "seq": 1, "params": {"mode": "blur"}}))
    await comm.send_to(bytes_data=protocol.pack_input_frame(2, 2000, jpeg))  # sent after the control
    second = await _frame(comm)
    assert second.header.input_seq == 2 and second.header.control_seq == 1
    pixels = simplejpeg.decode_jpeg(second.jpeg).astype(int)
    assert np.abs(pixels[WALL] - GREEN).mean() > 60                          # the room, blurred
    assert np.abs(pixels[WALL].mean((0, 1)) - photo[WALL].mean((0, 1))).max() < 25
    await comm.send_to(text_data=json.dumps({"type": "session.stop"}))
    ended = await _json(comm, {"session.ended"})
    assert ended["reason"] == "client" and ended["usage"]["frames"] == 2
    await comm.disconnect()
