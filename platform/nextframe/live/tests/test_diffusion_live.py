"""sd-stream and causal-video served through protocol v1 from tiny folders written by the test (in process).

GET /v1/models lists them because their folders exist; a live session streams frames, takes a prompt
control at the next frame (interactive) or the next chunk (streaming), and ends cleanly.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import simplejpeg
from channels.db import database_sync_to_async

from inference import protocol
from nextframe.live.tests import test_consumer as consumer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio,
              pytest.mark.usefixtures("tiny_models", "one_torch_thread")]

key = consumer.key  # the fixture: a pool of capacity 1.0 and an organisation's live key
connect, next_json, send, stop = consumer.connect, consumer.next_json, consumer.send, consumer.stop


async def frames_until_applied(comm, timeout: float = 30):
    applied, frames = None, []
    while applied is None or not frames or frames[-1].header.frame_index < applied["frame"]:
        message = await comm.receive_output(timeout)
        if message.get("bytes") is not None:
            frames.append(protocol.unpack_output_frame(message["bytes"]))
        elif message.get("text"):
            data = json.loads(message["text"])
            assert data["type"] in {"control.applied", "metrics"}, data
            if data["type"] == "control.applied":
                applied = data
    return applied, frames


def pattern(i: int) -> bytes:
    y, x = np.mgrid[0:64, 0:64]
    arr = np.stack([(x * 4 + 9 * i) % 256, y * 4, (x + y) % 256], -1).astype(np.uint8)
    return simplejpeg.encode_jpeg(arr, quality=90)


async def test_models_list_them_and_sd_stream_serves_a_webcam_session_with_a_prompt_control(key, client_for):
    body = await database_sync_to_async(lambda: client_for(key).get("/v1/models").json())()
    listed = {m["id"]: m for m in body["data"]}
    assert {"sd-stream", "sd-stream-t2v", "causal-video", "causal-video-chunked"} <= set(listed)
    assert listed["causal-video-chunked"]["chunk_frames"] == 4
    comm = await connect(key)
    await send(comm, type="session.start", model="sd-stream", width=64, height=64, fps=30, prompt="a red car",
               params={"similarity_filter": False})
    ready = await next_json(comm, 30)
    assert ready["type"] == "session.ready" and ready["tier"] == "interactive", ready
    await comm.send_to(bytes_data=protocol.pack_input_frame(1, 1000, pattern(1)))
    first = None
    while first is None:
        message = await comm.receive_output(30)
        if message.get("bytes") is not None:
            first = protocol.unpack_output_frame(message["bytes"])
    assert first.header.input_seq == 1 and simplejpeg.decode_jpeg(first.jpeg).shape == (64, 64, 3)
    await send(comm, type="control", seq=1, prompt="zebra stripes", params={"strength": 0.9})
    for i in range(2, 5):
        await comm.send_to(bytes_data=protocol.pack_input_frame(i, 1000 * i, pattern(i)))
    applied, frames = await frames_until_applied(comm)
    assert applied["seq"] == 1
    after = [f for f in frames if f.header.frame_index >= applied["frame"]]
    assert after and all(f.header.control_seq == 1 for f in after)
    ended = await stop(comm)
    assert ended["reason"] == "client"


async def test_causal_video_chunked_streams_chunks_and_takes_a_prompt_at_a_chunk_boundary(key):
    comm = await connect(key)
    await send(comm, type="session.start", model="causal-video-chunked", width=32, height=32, fps=16,
               prompt="a beach", params={"steps": 1, "window": 4})
    ready = await next_json(comm, 30)
    assert ready["type"] == "session.ready" and ready["tier"] == "streaming", ready
    await send(comm, type="control", seq=3, prompt="a city at night")
    applied, frames = await frames_until_applied(comm)
    assert applied["seq"] == 3 and applied["frame"] % 4 == 0
    assert all(simplejpeg.decode_jpeg(f.jpeg).shape == (32, 32, 3) for f in frames)
    await send(comm, type="control", seq=4, params={"window": 0})
    rejected = await next_json(comm, 30)
    assert rejected["type"] == "control.rejected" and rejected["code"] == "invalid_params", rejected
    ended = await stop(comm)
    assert ended["reason"] == "client"


async def test_still_webcam_inputs_are_skipped_by_the_similarity_filter_and_counted_in_metrics(key, settings):
    settings.LIVE_METRICS_INTERVAL_S = 0.1
    comm = await connect(key)
    await send(comm, type="session.start", model="sd-stream", width=64, height=64, fps=30,
               params={"similarity_threshold": 0.9})
    assert (await next_json(comm, 30))["type"] == "session.ready"
    skipped = 0
    for i in range(1, 40):
        await comm.send_to(bytes_data=protocol.pack_input_frame(i, 1000 * i, pattern(0)))  # the same picture
        while True:
            message = await comm.receive_output(30)
            if message.get("bytes") is not None:
                break
            data = json.loads(message["text"])
            if data["type"] == "metrics":
                skipped = data.get("skipped_inputs", 0)
        if skipped >= 3:
            break
    assert skipped >= 3
    ended = await stop(comm)
    assert ended["reason"] == "client"
