"""Moderation on a live socket, in process: blocked prompts at start and at control while the stream
goes on; listed images replaced on input and on output in the very frame; sampled classification;
max_violations ending the session; every decision in the audit log (issue 11)."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest
import simplejpeg
from channels.db import database_sync_to_async

from inference import protocol
from moderation import actions as moderation
from moderation.models import BlockedHash, ModerationEvent, ModerationPolicy
from moderation.phash import phash, to_hex
from moderation.tests.test_frames import RedClassifier, picture
from nextframe.live.tests.test_consumer import connect, next_frame, next_json, send, start, stop
from nextframe.tenancy import actions

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture
def org(live_pool, db):
    live_pool(1.0)
    moderation.forget_snapshots()
    return actions.create_org("acme", max_live_sessions=2)


@pytest.fixture
def key(org):
    return actions.create_key(org)[1]


def set_policy(org, **values) -> None:
    ModerationPolicy.objects.update_or_create(organization=org, defaults={"settings": values})


async def events_of(org) -> list[ModerationEvent]:
    await asyncio.to_thread(moderation.audit.flush)
    return await database_sync_to_async(lambda: list(ModerationEvent.objects.filter(organization=org)
                                                     .order_by("created_at", "pk")))()


async def test_a_blocked_prompt_is_refused_at_start_and_at_control_while_the_stream_goes_on(key, org):
    comm = await connect(key)
    await send(comm, type="session.start", model="dreamfield", width=64, height=64, prompt="a n.a.k.e.d woman")
    refused = await next_json(comm)
    assert refused["type"] == "error" and refused["code"] == "moderation"
    ready = await start(comm, "dreamfield", width=64, height=64, fps=30, prompt="ocean")  # the socket stayed open
    await next_frame(comm)
    await send(comm, type="control", seq=1, prompt="pоrn")  # Cyrillic о
    rejected = await next_json(comm)
    assert rejected == {"type": "control.rejected", "seq": 1, "code": "moderation",
                        "message": rejected["message"]} and "sexual" in rejected["message"]
    before = await next_frame(comm)
    after = await next_frame(comm)  # the previous prompt keeps playing
    assert after.header.frame_index > before.header.frame_index and after.header.control_seq == 0
    await send(comm, type="control", seq=2, prompt="forest")
    assert (await next_json(comm))["type"] == "control.applied"
    await stop(comm)
    events = await events_of(org)
    assert [(e.source, e.detector, e.action, e.category) for e in events] == [
        ("prompt", "terms", "rejected", "sexual"), ("prompt", "terms", "rejected", "sexual")]
    assert events[1].session_id == ready["session_id"]


async def test_a_listed_input_frame_is_replaced_before_the_model_sees_it(key, org):
    listed = picture(11, 128)
    await database_sync_to_async(BlockedHash.objects.create)(organization=org, phash=to_hex(phash(listed)),
                                                            category="listed_image")
    await database_sync_to_async(set_policy)(org, max_violations=10)
    comm = await connect(key)
    await start(comm, "identity", width=64, height=64, fps=30)
    # Sent larger than the session and re-encoded: the decoder resizes it, the hash still matches.
    await comm.send_to(bytes_data=protocol.pack_input_frame(5, 1, simplejpeg.encode_jpeg(listed, quality=60)))
    announced = await next_json(comm)
    assert announced == {"type": "moderation", "frame": 5, "action": "replaced", "category": "listed_image",
                         "source": "input", "detector": "hash"}
    out = await next_frame(comm)
    assert out.header.input_seq == 5
    assert abs(simplejpeg.decode_jpeg(out.jpeg).astype(float).mean() - 128) < 3  # the neutral placeholder
    clean = picture(12, 64)
    await comm.send_to(bytes_data=protocol.pack_input_frame(6, 2, simplejpeg.encode_jpeg(clean, quality=90)))
    out = await next_frame(comm)
    assert out.header.input_seq == 6 and abs(simplejpeg.decode_jpeg(out.jpeg).astype(float).mean() - 128) > 3
    await stop(comm)
    events = await events_of(org)
    assert [(e.source, e.detector, e.frame, e.action) for e in events] == [("input", "hash", 5, "replaced")]


async def test_a_listed_output_frame_is_replaced_in_that_frame_and_max_violations_ends_the_session(key, org):
    from inference.batch import render_frames

    first = next(iter(render_frames("dreamfield", 64, 64, 30, 1, "ocean")))
    await database_sync_to_async(BlockedHash.objects.create)(organization=org, phash=to_hex(phash(first)),
                                                            category="listed_output")
    await database_sync_to_async(set_policy)(org, max_violations=1)
    comm = await connect(key)
    await start(comm, "dreamfield", width=64, height=64, fps=30, prompt="ocean")
    assert await next_json(comm) == {"type": "moderation", "frame": 0, "action": "replaced",
                                     "category": "listed_output", "source": "output", "detector": "hash"}
    texts, frames = [], []
    deadline = asyncio.get_running_loop().time() + 20
    while True:  # everything until the server closes: the ending may overtake the replaced frame
        assert asyncio.get_running_loop().time() < deadline, (texts, [f.header for f in frames][:5])
        message = await comm.receive_output(10)
        if message["type"] == "websocket.close":
            break
        if message.get("bytes") is not None:
            frames.append(protocol.unpack_output_frame(message["bytes"]))
        elif message.get("text"):
            texts.append(protocol.parse_server_message(message["text"]))
    kinds = [t["type"] for t in texts if t["type"] != "metrics"]
    assert kinds[0] == "moderation" and texts[0]["action"] == "ended" and kinds[-1] == "session.ended"
    assert [t for t in texts if t["type"] == "session.ended"][0]["reason"] == "moderation"
    for frame in frames:  # whatever frame 0 reached the client is the placeholder, never the listed image
        if frame.header.frame_index == 0:
            assert abs(simplejpeg.decode_jpeg(frame.jpeg).astype(float).mean() - 128) < 3
    events = await events_of(org)
    assert [(e.source, e.detector, e.frame, e.action) for e in events][:2] == [
        ("output", "hash", 0, "replaced"), ("output", "hash", 0, "ended")]


async def test_sampled_classification_replaces_outputs_from_the_next_frame_until_cleared(key, org):
    from moderation.live import LiveModeration
    from nextframe.live import host as live_host

    await database_sync_to_async(set_policy)(org, frame_classifier="sampled", classifier_every_n_frames=1,
                                             classifier_threshold=0.5, max_violations=10)
    checks = LiveModeration(image_classifier=RedClassifier())
    live_host.reset_host()
    live_host._host = live_host.LiveHost(frame_check=checks.check_output, input_check=checks.check_input,
                                         on_open=checks.open, on_release=checks.release)
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 255
    comm = await connect(key)
    await start(comm, "identity", width=64, height=64, fps=30)
    announced = None
    seq = 0
    while announced is None:  # keep streaming red: the first flagged sample replaces the frames after it
        seq += 1
        await comm.send_to(bytes_data=protocol.pack_input_frame(seq, seq, simplejpeg.encode_jpeg(red, quality=90)))
        message = await comm.receive_output(10)
        if message.get("text") and '"moderation"' in message["text"]:
            announced = protocol.parse_server_message(message["text"])
        assert seq < 50
    assert (announced["source"], announced["detector"], announced["category"]) == ("output", "classifier", "test_red")
    replaced = await next_frame(comm)
    assert abs(simplejpeg.decode_jpeg(replaced.jpeg).astype(float).mean() - 128) < 3
    green = np.zeros((64, 64, 3), np.uint8)
    green[..., 1] = 200
    cleared = False
    for _ in range(40):  # clean input: a later sample clears the flag and the real frames come back
        seq += 1
        await comm.send_to(bytes_data=protocol.pack_input_frame(seq, seq, simplejpeg.encode_jpeg(green, quality=90)))
        out = await next_frame(comm)
        if simplejpeg.decode_jpeg(out.jpeg)[..., 1].mean() > 150:
            cleared = True
            break
    assert cleared
    await stop(comm)
    actions_seen = [e.action for e in await events_of(org)]
    assert actions_seen[:1] == ["flagged"] and "cleared" in actions_seen
    live_host.reset_host()
