"""Live protocol v1 against a real daphne server with a real WebSocket client (the reference client)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest

from inference.client import LiveClient, LiveClientError, ReceivedFrame, pattern_source
from tests.server import http, running_server, scaled_services

pytestmark = pytest.mark.slow


async def run_session(server) -> dict:
    async with LiveClient(server.ws, key=server.key) as client:
        ready = await client.start("dreamfield", width=64, height=64, fps=30, prompt="sunrise")
        frames, applied = [], None
        await client.control(1, params={"palette": "fire"})
        async for event in client:
            if isinstance(event, ReceivedFrame):
                frames.append(event)
            elif event.get("type") == "control.applied":
                applied = event
            if applied and frames and frames[-1].header.frame_index >= applied["frame"] + 2:
                break
        ended = await client.stop()
    return {"ready": ready, "frames": frames, "applied": applied, "ended": ended}


@pytest.mark.parametrize("profile", ["embedded", "scaled"])
def test_full_session_revocation_and_records_on_a_real_server(tmp_path, profile):
    services = scaled_services() if profile == "scaled" else contextlib.nullcontext({})
    with services as extra, running_server(tmp_path, extra) as server:
        result = asyncio.run(run_session(server))
        applied = result["applied"]
        for frame in result["frames"]:
            assert frame.header.control_seq == (1 if frame.header.frame_index >= applied["frame"] else 0)
        assert result["ended"]["reason"] == "client"
        status, listing = http("GET", f"{server.base}/v1/sessions", server.key)
        assert status == 200 and listing["data"][0]["id"] == result["ready"]["session_id"]
        assert listing["data"][0]["status"] == "ended" and listing["data"][0]["usage"]["frames"] > 0

        # Revocation from another process (the CLI) ends the session within 5 s.
        async def revoked_session() -> tuple[str, float]:
            async with LiveClient(server.ws, key=server.key) as client:
                await client.start("dreamfield", width=64, height=64)
                started = time.monotonic()
                proc = await asyncio.create_subprocess_exec(
                    *server.cli("revokekey", server.key, dry=True), env=server.env)
                await proc.wait()
                revoked_at = time.monotonic()
                async for event in client:
                    if isinstance(event, dict) and event.get("type") == "session.ended":
                        return event["reason"], time.monotonic() - revoked_at
                    if time.monotonic() - started > 30:
                        return "timeout", 99.0
            return "closed", 99.0

        reason, seconds = asyncio.run(revoked_session())
        assert reason == "revoked" and seconds < 5
        with pytest.raises(LiveClientError) as refused:
            asyncio.run(run_session(server))
        assert refused.value.close_code == 4401 or refused.value.is_auth


def test_nextframe_live_cli_streams_metrics(tmp_path):
    with running_server(tmp_path) as server:
        done = server.cli("live", "--url", server.ws, "--key", server.key, "--model", "identity", "--input", "pattern",
                          "--width", "64", "--height", "64", "--duration", "2.5", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        kinds = {event.get("type") for event in events}
        assert "metrics" in kinds and "session.ended" in kinds, done.stdout
        metrics = [e for e in events if e.get("type") == "metrics"][-1]
        assert metrics["frames_out"] > 0


def test_a_message_over_the_largest_frame_is_refused_by_daphne_and_the_server_lives_on(tmp_path):
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from inference import protocol
    from inference.codec import MAX_FRAME_BYTES

    async def oversize(server) -> tuple[bool, int | None]:
        async with connect(server.ws, additional_headers={"Authorization": f"Bearer {server.key}"},
                           max_size=None) as ws:
            await ws.send(json.dumps({"type": "session.start", "model": "identity", "width": 64, "height": 64}))
            assert json.loads(await ws.recv())["type"] == "session.ready"
            # A frame of 1.5 MiB is within MAX_FRAME_BYTES (2 MiB), above daphne's 1 MiB default:
            # the server must take it (an answer arrives, not a close).
            big = pattern_jpeg() + b"\0" * (3 * 2**19)
            await ws.send(protocol.pack_input_frame(1, 1, big))
            answer = await asyncio.wait_for(ws.recv(), 10)
            assert isinstance(answer, bytes) or json.loads(answer)["type"] in {"error", "metrics"}
            await ws.send(protocol.pack_input_frame(2, 2, b"\xff\xd8" + b"\0" * (MAX_FRAME_BYTES + 1024)))
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed as closed:
                return True, closed.rcvd.code if closed.rcvd else None
            except TimeoutError:
                return False, None

    def pattern_jpeg() -> bytes:
        return next(pattern_source(64, 64))

    with running_server(tmp_path) as server:
        closed, code = asyncio.run(oversize(server))
        # daphne (autobahn) fails the connection while the message arrives, before it is buffered
        # whole: with a 1009 "message too big" close frame, or by dropping the TCP connection.
        assert closed and code in (1009, None)
        result = asyncio.run(run_session(server))  # the server still serves
        assert result["ended"]["reason"] == "client"
        # The dropped connection still freed its reservation and recorded its session.
        status, listing = http("GET", f"{server.base}/v1/sessions?status=active", server.key)
        assert status == 200 and listing["data"] == []
