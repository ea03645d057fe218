"""Audit of the clip tier: render a small clip the way a clip job does and time the playable file.

The clip tier's first output is the MP4 itself (PROTOCOL.md: "time to first frame = time to the
playable file"), so TTFF is measured from the request to the moment the file exists (encode_mp4
publishes it atomically) and `complete_ms` is the same moment: the ratio is 1 by construction of
the tier, and the audit checks it by measuring, then decoding the file back (`probe_mp4`) to be sure
every frame is in it. The clip API takes no control while rendering (`mid_run_control` is False).

This runs the engine's `render_clip` and `inference.video.encode_mp4` directly - the same two calls
a clip job makes - rather than going through the job queue, so it can run outside Django (CLI) and
the number is the tier's own cost, without the queue wait of a busy deployment.
"""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from . import pixels as px
from .classifier import apply_verdict
from .evidence import Evidence, p50


def _render_once(model: str, width: int, height: int, fps: int, frames: int, workdir: str,
                 i: int) -> tuple[float, float, float, int]:
    """(ms to the playable file, ms rendering, ms encoding, frames found in the file)."""
    from inference.engines import get_engine
    from inference.video import encode_mp4, probe_mp4

    engine = get_engine(model)
    spec = engine.spec
    params = spec.resolve_params(None)
    t0 = time.monotonic()
    state = engine.new_state(width, height, "", params, i, float(fps))
    inputs = None
    if spec.kind == "video-to-video":
        inputs = np.stack([px.pattern(width, height, t) for t in range(frames)])
    rendered = engine.render_clip(state, frames, "", params, input_frames=inputs)
    t_rendered = time.monotonic()
    path = os.path.join(workdir, f"audit-{model}-{i}.mp4")
    encode_mp4(list(rendered), path, fps=fps, width=width, height=height)
    t_file = time.monotonic()  # the file appears here, whole (atomic rename): the first playable moment
    probed = probe_mp4(path)
    os.unlink(path)
    return ((t_file - t0) * 1000.0, (t_rendered - t0) * 1000.0, (t_file - t_rendered) * 1000.0,
            int(probed["frames"]))


def audit_clip(model: str, width: int = 64, height: int = 64, fps: int = 30, frames: int = 30,
               sessions: int = 3) -> Evidence:
    """Time `sessions` small clips of `model`; return classified Evidence (transport "clip")."""
    from inference.engines import get_spec

    spec = get_spec(model)
    ttffs, renders, encodes = [], [], []
    with tempfile.TemporaryDirectory(prefix="nextframe-audit-") as workdir:
        for i in range(sessions):
            to_file, render, encode, got = _render_once(model, width, height, fps, frames, workdir, i)
            if got != frames:
                raise RuntimeError(f"the clip holds {got} frames, {frames} were rendered")
            ttffs.append(round(to_file, 3))
            renders.append(render)
            encodes.append(encode)
    ev = Evidence(model=model, kind=spec.kind, transport="clip", width=width, height=height, fps=float(fps),
                  sessions=sessions, declared_tier="fast-batch")
    ev.ttff_samples_ms = ttffs
    ev.ttff_ms = p50(ttffs)
    # The whole clip is delivered by the same event that delivers its first frame: the file.
    ev.complete_ms = ev.ttff_ms
    ev.server_reported = {"render_ms": p50(renders), "encode_ms": p50(encodes), "frames_per_clip": frames}
    ev.fps_sustained = round(frames / (ev.complete_ms / 1000.0), 3) if ev.complete_ms else None
    ev.frames_received = frames * sessions
    ev.mid_run_control = False
    return apply_verdict(ev)
