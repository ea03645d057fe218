"""The reference client against an in-test WebSocket server that speaks protocol v1.

The fake server is faithful to the server side of PROTOCOL.md (auth on the upgrade, session.ready,
echoed frames with an output header, control.applied on the frame that reflects a control, metrics,
session.ended then close) but has no engine: output frames are the input JPEGs.
"""

from __future__ import annotations

import asyncio
import json
import re
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import simplejpeg
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request

from inference import client as c
from inference import live_cli
from inference import protocol as p

KEY = "nf_test_abc_secret"
REPO_ROOT = Path(__file__).resolve().parents[2]
TICKET = "tkt-123"


class FakeServer:
    """A protocol v1 server with scriptable refusals, recording what it received."""

    def __init__(self) -> None:
        self.received: list[Any] = []
        self.metrics_every = 5
        self.applied_after_frame = False
        self.url = ""

    def check_auth(self, connection: ServerConnection, request: Request):
        if request.headers.get("Authorization") == f"Bearer {KEY}" or f"ticket={TICKET}" in request.path:
            return None
        return connection.respond(HTTPStatus.UNAUTHORIZED, '{"error":{"code":"unauthenticated","message":"bad key"}}\n')

    async def handler(self, ws: ServerConnection) -> None:
        started = False
        frame_index = 0
        control_seq = 0
        pending: int | None = None
        async for raw in ws:
            if isinstance(raw, bytes):
                if not started:
                    await ws.send(p.Error("not_started", "send session.start first").to_json())
                    continue
                try:
                    frame = p.unpack_input_frame(raw)
                except p.ProtocolError as exc:
                    await ws.send(exc.to_json())
                    continue
                self.received.append(frame)
                applied = pending
                if applied is not None:
                    control_seq, pending = applied, None
                    if not self.applied_after_frame:
                        await ws.send(p.ControlApplied(applied, frame_index).to_json())
                await ws.send(p.pack_output_frame(frame_index, frame.seq, frame.capture_ts_us, control_seq, frame.jpeg))
                if applied is not None and self.applied_after_frame:
                    # Either order is legal; the real consumer sends the notice after the frame.
                    await ws.send(p.ControlApplied(applied, frame_index).to_json())
                frame_index += 1
                if frame_index % self.metrics_every == 0:
                    await ws.send(self.metrics(frame_index))
                continue
            try:
                msg = p.parse_client_message(raw)
            except p.ProtocolError as exc:
                await ws.send(exc.to_json())
                continue
            self.received.append(msg)
            if isinstance(msg, p.SessionStart):
                if msg.model == "busy":
                    await ws.send(p.Error("capacity_unavailable", "no GPU free", retry_after_s=5).to_json())
                    await ws.close(p.CLOSE_TRY_AGAIN, "no capacity")
                    return
                if msg.model == "unknown":
                    await ws.send(p.Error("unknown_model", f"no model {msg.model!r}").to_json())
                    continue
                started = True
                await ws.send(p.SessionReady("sess-1", msg.model, "interactive", msg.width or 64,
                                             msg.height or 48, msg.fps or 30, 33.3, "cpu:0", 0.5, "0.0001").to_json())
                if msg.model == "revoked-soon":
                    await ws.send(p.SessionEnded("revoked", p.Usage(0.0, 0, "0")).to_json())
                    await ws.close()
                    return
                if msg.model == "kicked":
                    await ws.close(p.CLOSE_UNAUTHENTICATED, "key revoked")
                    return
            elif isinstance(msg, p.Control):
                if msg.prompt == "forbidden":
                    await ws.send(p.ControlRejected(msg.seq, "moderation", "prompt refused").to_json())
                else:
                    pending = msg.seq
            elif isinstance(msg, p.SessionStop):
                await ws.send(self.metrics(frame_index))
                await ws.send(p.SessionEnded("client", p.Usage(frame_index * 0.01, frame_index, "0.0123")).to_json())
                await ws.close()
                return

    @staticmethod
    def metrics(frames: int) -> str:
        return p.Metrics(frames, 30.0, 12.0, 5.0, 7.5, 9.0, 0.4, 0, 0, frames * 0.01).to_json()


@pytest.fixture
async def server():
    fake = FakeServer()
    async with serve(fake.handler, "127.0.0.1", 0, process_request=fake.check_auth) as srv:
        port = srv.sockets[0].getsockname()[1]
        fake.url = f"ws://127.0.0.1:{port}/v1/live"
        yield fake


def jpeg(value: int = 128) -> bytes:
    return simplejpeg.encode_jpeg(np.full((16, 16, 3), value, np.uint8), colorspace="RGB")


def _kind(event: c.Event) -> str:
    """An event's `type`, or "frame" for an output frame."""
    return "frame" if isinstance(event, c.ReceivedFrame) else event["type"]


async def next_of(client: c.LiveClient, kind: type | str) -> Any:
    async for event in client:
        if isinstance(event, c.ReceivedFrame) and kind is c.ReceivedFrame:
            return event
        if isinstance(event, dict) and event["type"] == kind:
            return event
    raise AssertionError(f"no {kind} before the end")


# --- the client ------------------------------------------------------------------------------


async def test_full_session(server: FakeServer) -> None:
    async with c.LiveClient(server.url, key=KEY, clock=lambda: 42.0) as client:
        ready = await client.start("identity", width=64, height=48, fps=30, prompt="hi", params={"s": 1})
        assert ready["type"] == "session.ready" and ready["session_id"] == "sess-1"
        assert ready["reservation"] == {"device": "cpu:0", "share": 0.5}
        assert server.received[0] == p.SessionStart("identity", 64, 48, 30, "hi", {"s": 1})
        assert await next_of(client, "session.ready") == ready  # also delivered as an event

        await client.send_frame(7, 123456789, jpeg())
        frame = await next_of(client, c.ReceivedFrame)
        assert frame.header == p.OutputFrameHeader(0, 7, 123456789, 0)
        assert frame.jpeg == jpeg() and frame.received_at == 42.0

        await client.control(1, prompt="a cat")
        await client.send_frame(8, 5, jpeg())
        applied = await next_of(client, "control.applied")
        assert applied == {"type": "control.applied", "seq": 1, "frame": 1}
        assert (await next_of(client, c.ReceivedFrame)).header.control_seq == 1

        await client.control(2, prompt="forbidden")
        assert (await next_of(client, "control.rejected"))["code"] == "moderation"

        ended = await client.stop()
        assert ended["reason"] == "client"
        assert ended["usage"] == {"gpu_seconds": 0.02, "frames": 2, "cost": "0.0123", "currency": "usd"}
        rest = [e async for e in client]  # iteration ends after the server closes
        assert [_kind(e) for e in rest] == ["metrics", "session.ended"]
        assert client.dropped_events == 0


async def test_ticket_in_query_string(server: FakeServer) -> None:
    async with c.LiveClient(server.url + "?x=1", ticket=TICKET) as client:
        assert "ticket=tkt-123" in client.url and "x=1" in client.url
        assert (await client.start("identity"))["width"] == 64


async def test_refused_handshake(server: FakeServer) -> None:
    with pytest.raises(c.LiveClientError) as info:
        async with c.LiveClient(server.url, key="nf_test_wrong"):
            pass
    err = info.value
    assert (err.code, err.http_status, err.message) == ("unauthenticated", 401, "bad key")
    assert err.is_auth
    with pytest.raises(c.LiveClientError) as info:
        async with c.LiveClient(server.url):
            pass
    assert info.value.is_auth


async def test_connection_refused() -> None:
    with pytest.raises(c.LiveClientError) as info:
        async with c.LiveClient("ws://127.0.0.1:9/v1/live", key=KEY, open_timeout=2):
            pass
    assert info.value.code == "connection_failed" and not info.value.is_auth


async def test_capacity_refusal_carries_code_retry_and_close(server: FakeServer) -> None:
    async with c.LiveClient(server.url, key=KEY) as client:
        with pytest.raises(c.LiveClientError) as info:
            await client.start("busy")
    err = info.value
    assert (err.code, err.retry_after_s, err.close_code) == ("capacity_unavailable", 5, 1013)
    assert not err.is_auth


async def test_non_fatal_start_error_fails_start(server: FakeServer, monkeypatch) -> None:
    monkeypatch.setattr(c, "ERROR_CLOSE_GRACE_S", 0.0)  # the server will not close: do not wait
    async with c.LiveClient(server.url, key=KEY) as client:
        with pytest.raises(c.LiveClientError) as info:
            await client.start("unknown")
        assert (info.value.code, info.value.close_code) == ("unknown_model", None)


async def test_close_4401_mid_session_raises_from_iteration_and_stop(server: FakeServer) -> None:
    async with c.LiveClient(server.url, key=KEY) as client:
        await client.start("kicked")
        with pytest.raises(c.LiveClientError) as info:
            async for _ in client:
                pass
        assert (info.value.code, info.value.close_code) == ("unauthenticated", 4401)
        assert info.value.is_auth
        with pytest.raises(c.LiveClientError):
            await client.stop()
        with pytest.raises(c.LiveClientError) as info:
            await client.send_frame(1, 1, jpeg())
        assert info.value.close_code == 4401


async def test_server_ended_session_stop_returns_it(server: FakeServer) -> None:
    async with c.LiveClient(server.url, key=KEY) as client:
        await client.start("revoked-soon")
        ended = await client.stop()
        assert ended["reason"] == "revoked"
        assert [_kind(e) async for e in client] == ["session.ready", "session.ended"]


async def test_bounded_buffer_drops_frames_first_and_never_blocks_stop(server: FakeServer) -> None:
    async with c.LiveClient(server.url, key=KEY, max_pending_events=4) as client:
        await client.start("identity")
        for seq in range(10):
            await client.send_frame(seq, seq, jpeg())
        ended = await client.stop()  # nobody iterated: stop still gets its answer
        assert ended["usage"]["frames"] == 10
        events = [e async for e in client]
    # ready + 10 frames + metrics at 5 and 10 + final metrics + ended = 15 events into 4 slots.
    assert client.dropped_events == 11
    assert [_kind(e) for e in events] == ["metrics", "metrics", "metrics", "session.ended"]


async def test_server_protocol_violation_is_reported(server: FakeServer) -> None:
    async def bad_handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(b"\x00\x01")  # shorter than an output header

    async with serve(bad_handler, "127.0.0.1", 0) as srv:
        url = f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}/"
        async with c.LiveClient(url) as client:
            with pytest.raises(c.LiveClientError) as info:
                await client.start("x", timeout=5)
            assert info.value.code == "bad_message"


async def test_client_side_argument_checks(server: FakeServer) -> None:
    async with c.LiveClient(server.url, key=KEY) as client:
        with pytest.raises(ValueError):
            await client.control(1)
        with pytest.raises(ValueError):
            await client.send_frame(-1, 0, jpeg())
        # Sending before start: the server answers not_started and the session goes on.
        await client.send_frame(0, 0, jpeg())
        assert (await next_of(client, "error"))["code"] == "not_started"


# --- input sources ---------------------------------------------------------------------------


def test_pattern_source_moves_and_has_the_size() -> None:
    source = c.pattern_source(64, 48)
    first, second = next(source), next(source)
    a = simplejpeg.decode_jpeg(first)
    b = simplejpeg.decode_jpeg(second)
    assert a.shape == (48, 64, 3)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 1  # it moves


def test_file_source_video_loops_and_image_repeats(tmp_path: Path) -> None:
    from inference.video import encode_mp4

    frames = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(3)]
    encode_mp4(frames, tmp_path / "in.mp4", 10, 64, 48)
    out = [simplejpeg.decode_jpeg(j) for j in _take(c.file_source(str(tmp_path / "in.mp4"), 32, 24), 7)]
    assert all(f.shape == (24, 32, 3) for f in out)
    means = [round(float(f.mean()) / 40) for f in out]
    assert means == [0, 1, 2, 0, 1, 2, 0]  # looped
    finite = list(c.file_source(str(tmp_path / "in.mp4"), 32, 24, loop=False))
    assert len(finite) == 3

    image = tmp_path / "still.jpg"
    image.write_bytes(simplejpeg.encode_jpeg(np.full((20, 30, 3), 200, np.uint8), colorspace="RGB"))
    stills = _take(c.file_source(str(image), 16, 16), 5)
    assert len(stills) == 5 and len(set(stills)) == 1
    assert simplejpeg.decode_jpeg(stills[0]).shape == (16, 16, 3)
    with pytest.raises(FileNotFoundError):
        next(c.file_source(str(tmp_path / "nope.mp4"), 16, 16))


def _take(it, n: int) -> list:
    return [next(it) for _ in range(n)]


# --- the CLI ---------------------------------------------------------------------------------


async def cli(argv: list[str]) -> int:
    # main() runs its own event loop (asyncio.run), so it runs in a thread beside the server's.
    return await asyncio.to_thread(live_cli.main, argv)


async def test_cli_session_with_pattern_and_controls(server: FakeServer, capsys) -> None:
    server.metrics_every = 2
    server.applied_after_frame = True
    code = await cli(["live", "--url", server.url, "--key", KEY, "--model", "identity", "--input", "pattern",
                      "--width", "64", "--height", "48", "--fps", "60", "--duration", "0.6",
                      "--control-every", "3", "--prompt", "p", "--param", "strength=0.5"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "session sess-1: identity 64x48 @ 60 fps, tier interactive" in out
    assert "frames " in out and "latency p50 5.0 p95 7.5 p99 9.0 ms" in out
    assert "session ended (client)" in out and "cost 0.0123 usd" in out
    start = server.received[0]
    assert start.params == {"strength": 0.5} and start.prompt == "p"
    frames = [m for m in server.received if isinstance(m, p.InputFrame)]
    assert frames and [f.seq for f in frames] == list(range(len(frames)))
    # 0.6 s at 60 fps is ~36 frames: far more than the 3 that trigger the first control.
    controls = [m for m in server.received if isinstance(m, p.Control)]
    assert controls[0] == p.Control(1, "p #1")
    # The lag in frames is printed even though the notice arrives after the frame (0 frames when
    # the control beat the next input to the server, which is the usual case, not a guaranteed one).
    assert re.search(r"control 1 applied at frame \d+ \(lag \d+ frames\)", out)
    assert "round trip p50" in out and "control-to-frame p50" in out


async def test_cli_json_lines(server: FakeServer, capsys) -> None:
    code = await cli(["--url", server.url, "--key", KEY, "--model", "identity", "--duration", "0.05", "--json"])
    out, _ = capsys.readouterr()
    assert code == 0
    kinds = [json.loads(line)["type"] for line in out.splitlines()]
    assert kinds[0] == "session.ready" and kinds[-1] == "session.ended" and "metrics" in kinds
    assert kinds.count("session.ready") == 1


@pytest.mark.parametrize(
    ("argv", "expected", "message"),
    [
        (["--key", "nf_test_wrong", "--model", "identity"], 2, "unauthenticated"),
        (["--key", KEY, "--model", "busy"], 1, "retry after 5 s"),
        (["--key", KEY, "--model", "revoked-soon"], 2, ""),
        (["--key", KEY, "--model", "kicked", "--duration", "5"], 2, "4401"),
        (["--key", KEY, "--model", "identity", "--input", "/no/such.mp4"], 1, "no such file"),
        (["--key", KEY, "--model", "identity", "--param", "novalue"], 1, "KEY=VALUE"),
    ],
)
async def test_cli_failures_exit_codes(server: FakeServer, capsys, argv, expected, message) -> None:
    code = await cli(["--url", server.url, *argv])
    _, err = capsys.readouterr()
    assert code == expected, err
    assert message in err


def test_cli_usage_errors_return_instead_of_exiting(capsys) -> None:
    assert live_cli.main(["--url", "ws://x"]) == 2  # --model missing
    assert "--model" in capsys.readouterr().err
    assert live_cli.main(["--help"]) == 0


def test_format_metrics_handles_missing_numbers() -> None:
    line = live_cli.format_metrics({"type": "metrics", "frames_out": 3, "fps": None, "ttff_ms": None,
                             "latency_ms": {"p50": None, "p95": None, "p99": None}})
    assert line.startswith("frames 3 | fps - | ttff - ms | latency p50 - p95 - p99 - ms")


async def test_cli_ctrl_c_stops_the_session_cleanly(server: FakeServer) -> None:
    """A real process gets SIGINT mid-session: it sends session.stop, prints the usage, exits 0."""
    import os
    import signal
    import sys

    code = ("import sys; from inference.live_cli import main; sys.exit(main(sys.argv[1:]))")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "live", "--url", server.url, "--key", KEY, "--model", "identity",
        "--input", "pattern", "--fps", "30",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=str(REPO_ROOT), env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    first = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert first.startswith(b"session sess-1"), first
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert b"session ended (client)" in out
    assert isinstance(server.received[-1], p.SessionStop)


async def test_stop_times_out_when_the_server_never_answers() -> None:
    async def silent(ws: ServerConnection) -> None:
        await ws.send(p.SessionReady("s", "m", "streaming", 8, 8, 1, 1000.0, "cpu:0", 1.0, "0").to_json())
        async for _ in ws:  # reads session.stop and says nothing
            pass

    async with serve(silent, "127.0.0.1", 0) as srv:
        url = f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}/"
        async with c.LiveClient(url) as client:
            assert (await client.start("m"))["tier"] == "streaming"
            with pytest.raises(c.LiveClientError) as info:
                await client.stop(timeout=0.05)
            assert info.value.code == "timeout"


def test_file_source_rejects_a_corrupt_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 4000)
    with pytest.raises(ValueError, match="cannot decode"):
        next(c.file_source(str(junk), 16, 16))


async def test_cli_corrupt_input_ends_the_session_and_fails(server: FakeServer, tmp_path: Path, capsys) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 4000)
    code = await cli(["--url", server.url, "--key", KEY, "--model", "identity", "--input", str(junk)])
    _, err = capsys.readouterr()
    assert code == 1 and "cannot decode" in err
    assert isinstance(server.received[-1], p.SessionStop)  # the session was still ended politely


def test_file_source_centre_crops_instead_of_squashing(tmp_path: Path) -> None:
    from inference.video import encode_mp4

    frame = np.zeros((64, 128, 3), np.uint8)
    frame[:, :32] = (255, 0, 0)
    frame[:, 32:96] = (0, 255, 0)
    frame[:, 96:] = (0, 0, 255)
    encode_mp4([frame] * 3, tmp_path / "wide.mp4", fps=10, width=128, height=64)
    out = simplejpeg.decode_jpeg(next(c.file_source(str(tmp_path / "wide.mp4"), 64, 64)))
    row = out[32].astype(int)
    # All of a centre crop is the green middle; a squashed frame would show red and blue at the edges.
    assert (row[:, 1] > 150).all() and (row[:, 0] < 100).all() and (row[:, 2] < 100).all()
