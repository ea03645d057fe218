"""`nextframe live --output out.mp4 --save-frames DIR` against a real `nextframe up`: the MP4 decodes
to as many frames as the session delivered, at the session's size and fps, and holds those frames."""
from __future__ import annotations

import re

import numpy as np
import pytest
import simplejpeg

from inference.video import probe_mp4
from tests.server import running_server

# The server picks its own profile (embedded unless a case says otherwise): once per `make test`.
pytestmark = [pytest.mark.slow, pytest.mark.profile("embedded")]


def test_live_output_keeps_what_the_session_made(tmp_path):
    out, frames_dir = tmp_path / "session.mp4", tmp_path / "frames"
    with running_server(tmp_path) as server:
        done = server.cli("live", "--url", server.ws, "--key", server.key, "--model", "identity", "--input", "pattern",
                          "--width", "96", "--height", "64", "--fps", "12", "--duration", "3",
                          "--output", str(out), "--save-frames", str(frames_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    received = int(re.search(r"client: (\d+) frames received", done.stdout).group(1))
    assert received >= 5, done.stdout
    assert f"saved {out} ({received} frames, 96x64 @ 12 fps, H.264), {received} JPEGs in {frames_dir}" in done.stdout

    info = probe_mp4(out)
    assert (info["frames"], info["width"], info["height"], info["fps"], info["codec"]) == (received, 96, 64, 12.0, "h264")
    jpegs = sorted(frames_dir.iterdir())
    assert [f.name for f in jpegs] == [f"frame_{i:06d}.jpg" for i in range(received)]

    # The identity model returns the pattern: frame i of the MP4 is JPEG i (H.264 is lossy, close).
    import av

    with av.open(str(out)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    for i in (0, received // 2, received - 1):
        jpeg = simplejpeg.decode_jpeg(jpegs[i].read_bytes(), colorspace="RGB").astype(np.int16)
        assert jpeg.shape == (64, 96, 3)
        assert np.abs(decoded[i] - jpeg).mean() < 12, i
    # ... and the pattern moved: not one frame repeated.
    assert np.abs(decoded[0].astype(np.int16) - decoded[-1]).mean() > 20
