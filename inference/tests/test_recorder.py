"""Keeping what a session made: `client.SessionRecorder` and `nextframe live --output/--save-frames`."""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
from websockets.asyncio.server import ServerConnection, serve

from inference import live_cli
from inference import protocol as p
from inference.client import ReceivedFrame, SessionRecorder
from inference.video import probe_mp4


def frame_jpeg(i: int, width: int, height: int) -> bytes:
    """A frame whose colour says its number (so decoded frames can be matched to what was sent)."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[..., 0] = (i * 40) % 256
    arr[..., 1] = 255 - (i * 40) % 256
    arr[..., 2] = 128
    return simplejpeg.encode_jpeg(arr, quality=95, colorspace="RGB")


def received(i: int, width: int, height: int) -> ReceivedFrame:
    header = p.OutputFrameHeader(i, i, 0, 0)
    return ReceivedFrame(header, frame_jpeg(i, width, height), 0.0)


def decoded_frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.mark.parametrize("width, height, mp4_size", [(64, 48, (64, 48)), (33, 17, (32, 16))])
async def test_recorder_writes_an_mp4_and_numbered_jpegs(tmp_path, width, height, mp4_size):
    out, frames_dir = tmp_path / "out.mp4", tmp_path / "frames"
    recorder = SessionRecorder(str(out), str(frames_dir), max_queued=2)  # add() must wait, not drop
    recorder.open(width, height, 12.0)
    for i in range(7):
        await recorder.add(received(i, width, height))
    summary = await recorder.close()
    assert summary["frames"] == summary["output_frames"] == 7
    info = probe_mp4(out)
    assert (info["frames"], info["width"], info["height"], info["fps"], info["codec"]) == (7, *mp4_size, 12.0, "h264")
    jpegs = sorted(frames_dir.iterdir())
    assert [f.name for f in jpegs] == [f"frame_{i:06d}.jpg" for i in range(7)]
    assert simplejpeg.decode_jpeg_header(jpegs[0].read_bytes())[:2] == (height, width)  # every pixel kept
    for i, arr in enumerate(decoded_frames(out)):  # the MP4 holds those frames, in order
        assert abs(int(arr[..., 0].mean()) - (i * 40) % 256) < 12, i


async def test_recorder_reports_a_frame_that_is_not_the_session_size(tmp_path):
    recorder = SessionRecorder(str(tmp_path / "out.mp4"))
    recorder.open(64, 48, 10)
    await recorder.add(received(0, 64, 48))
    await recorder.add(received(1, 320, 240))  # a server that changed the size mid-session
    with pytest.raises(Exception, match="dimensions|shape"):
        await recorder.close()
    assert not (tmp_path / "out.mp4").exists() and list(tmp_path.iterdir()) == []  # no half file left


def test_recorder_needs_somewhere_to_write():
    with pytest.raises(ValueError):
        SessionRecorder()


def test_cli_refuses_an_output_in_a_missing_folder(tmp_path, capsys):
    code = live_cli.main(["--model", "identity", "--output", str(tmp_path / "nope" / "out.mp4")])
    assert code == 1 and "its folder does not exist" in capsys.readouterr().err


def test_cli_refuses_a_frames_folder_holding_another_runs_frames(tmp_path, capsys):
    (tmp_path / "frame_000000.jpg").write_bytes(b"old")
    assert live_cli.main(["--model", "identity", "--save-frames", str(tmp_path)]) == 1
    assert "already holds frame_*.jpg" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert live_cli.main(["--model", "identity", "--save-frames", str(tmp_path / "file")]) == 1
    assert "is not a folder" in capsys.readouterr().err


class DroppingServer:
    """Sends session.ready and N frames, then drops the connection (no session.ended)."""

    def __init__(self, frames: int, width: int, height: int) -> None:
        self.frames, self.width, self.height = frames, width, height
        self.url = ""
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Future | None = None

    async def handler(self, ws: ServerConnection) -> None:
        await ws.recv()  # session.start
        await ws.send(p.SessionReady("sess-x", "identity", "streaming", self.width, self.height, 15, 66.0,
                                     "cpu:0", 0.1, "0").to_json())
        for i in range(self.frames):
            await ws.send(p.pack_output_frame(i, None, 0, 0, frame_jpeg(i, self.width, self.height)))
        await ws.close(1011, "server went away")

    def run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.stop = self.loop.create_future()
            async with serve(self.handler, "127.0.0.1", 0) as srv:
                self.url = f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}/"
                self.ready.set()
                await self.stop

        asyncio.run(main())


def test_cli_keeps_what_arrived_when_the_server_drops_the_session(tmp_path, capsys):
    server = DroppingServer(9, 48, 32)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert server.ready.wait(10)
    try:
        out, frames_dir = tmp_path / "out.mp4", tmp_path / "frames"
        code = live_cli.main(["--url", server.url, "--key", "k", "--model", "identity",
                              "--output", str(out), "--save-frames", str(frames_dir)])
    finally:
        server.loop.call_soon_threadsafe(server.stop.set_result, None)
        thread.join(10)
    printed = capsys.readouterr()
    assert code == 1 and "server went away" in printed.err
    assert f"saved {out} (9 frames, 48x32 @ 15 fps, H.264), 9 JPEGs in {frames_dir}" in printed.out
    assert probe_mp4(out)["frames"] == 9 and len(list(frames_dir.iterdir())) == 9
    assert [f.name for f in tmp_path.iterdir() if f.name.endswith(".part")] == []
