"""Audit of a deployment's clip tier over its REST API (`nextframe audit --url ... --clip`).

For each session: POST /v1/clips (text-to-video: JSON; video-to-video: multipart with a small
synthetic MP4 as the input), then poll GET /v1/clips/{id} and GET /v1/clips/{id}/video every
`poll_s`. Two moments are measured from the client:
- `complete_ms`: when the server first reports every frame rendered (progress.frames_done ==
  frames), or the video's arrival if that was never seen first;
- `ttff_ms`: when the video first downloads (the first playable output).
A fast-batch tier has ttff >= complete: nothing plays before the whole clip exists. A tier that
served playable output early (a streaming renderer) would show ttff well below complete. The
downloaded file is decoded back to check it holds every frame. The server's own timings
(time_to_first_frame_s, queued_s, run_s, fps_throughput) are kept in `server_reported`.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import numpy as np

from . import pixels as px
from .classifier import apply_verdict
from .evidence import Evidence, p50
from .transport import AuditError
from .ws_transport import models_url


def _request(method: str, url: str, key: str | None, body: bytes | None = None,
             content_type: str | None = None, timeout: float = 30.0) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if content_type:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the user's endpoint
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read() or b""


def _multipart(fields: dict[str, str], file_name: str, file_bytes: bytes) -> tuple[bytes, str]:
    boundary = f"nf-audit-{uuid.uuid4().hex}"
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append((f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="{file_name}"\r\n'
                  "Content-Type: video/mp4\r\n\r\n").encode() + file_bytes + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _input_video(width: int, height: int, fps: int, frames: int) -> bytes:
    from inference.video import encode_mp4

    with tempfile.TemporaryDirectory(prefix="nextframe-audit-") as tmp:
        path = os.path.join(tmp, "input.mp4")
        encode_mp4([px.pattern(width, height, t) for t in range(frames)], path, fps=fps, width=width, height=height)
        with open(path, "rb") as fh:
            return fh.read()


def _frames_in(mp4: bytes) -> int:
    from inference.video import probe_mp4

    with tempfile.TemporaryDirectory(prefix="nextframe-audit-") as tmp:
        path = os.path.join(tmp, "clip.mp4")
        with open(path, "wb") as fh:
            fh.write(mp4)
        return int(probe_mp4(path)["frames"])


def _one_clip(base: str, key: str | None, model: str, kind: str, width: int, height: int, fps: int, frames: int,
              poll_s: float, timeout_s: float) -> dict[str, Any]:
    request = {"model": model, "prompt": "audit", "width": width, "height": height, "fps": fps, "frames": frames}
    if kind == "video-to-video":
        body, ctype = _multipart({"request": json.dumps(request)}, "input.mp4", _input_video(width, height, fps, frames))
    else:
        body, ctype = json.dumps(request).encode(), "application/json"
    t0 = time.monotonic()
    status, raw = _request("POST", f"{base}/clips", key, body, ctype)
    if status != 202:
        raise AuditError("clip_refused", f"POST /v1/clips answered {status}: {raw[:300].decode(errors='replace')}")
    clip_id = json.loads(raw)["id"]
    rendered_at = video_at = None
    video = b""
    last: dict[str, Any] = {}
    while time.monotonic() - t0 < timeout_s:
        status, raw = _request("GET", f"{base}/clips/{clip_id}", key)
        if status == 200:
            last = json.loads(raw)
            prog = last.get("progress") or {}
            if rendered_at is None and prog.get("frames") and prog.get("frames_done") == prog.get("frames"):
                rendered_at = time.monotonic()
            if last.get("status") in ("failed", "blocked", "cancelled"):
                raise AuditError("clip_failed", f"the clip ended {last.get('status')}: {last.get('error')}")
        status, raw = _request("GET", f"{base}/clips/{clip_id}/video", key)
        if status == 200:
            video_at, video = time.monotonic(), raw
            break
        time.sleep(poll_s)
    if video_at is None:
        raise AuditError("clip_timeout", f"no playable video within {timeout_s} s (last status {last.get('status')})")
    got = _frames_in(video)
    if got != frames:
        raise AuditError("clip_incomplete", f"the video holds {got} frames, {frames} were asked for")
    _request("DELETE", f"{base}/clips/{clip_id}", key)
    return {"ttff_ms": (video_at - t0) * 1000.0, "complete_ms": ((rendered_at or video_at) - t0) * 1000.0,
            "rendered_seen_first": rendered_at is not None, "timings": last.get("timings") or {}}


def audit_clip_url(live_url: str, key: str | None, model: str, width: int = 64, height: int = 64, fps: int = 30,
                   frames: int = 30, sessions: int = 2, poll_s: float = 0.05, timeout_s: float = 120.0) -> Evidence:
    """Time `sessions` clips through the endpoint's REST clip API; return classified Evidence."""
    models = models_url(live_url)
    base = models.rsplit("/models", 1)[0]
    status, raw = _request("GET", models, key)
    if status != 200:
        raise AuditError("no_catalog", f"GET {models} answered {status}")
    listing = json.loads(raw)
    info = next((m for m in listing.get("data", []) if m.get("id") == model), None)
    if info is None:
        from inference.engines import UnknownModel

        raise UnknownModel(f"model {model!r} is not listed by {models}")
    runs = [_one_clip(base, key, model, info.get("kind", "text-to-video"), width, height, fps, frames, poll_s, timeout_s)
            for _ in range(sessions)]
    ev = Evidence(model=model, kind=info.get("kind", "text-to-video"), transport="clip-rest", width=width,
                  height=height, fps=float(fps), sessions=sessions, declared_tier="fast-batch")
    ev.ttff_samples_ms = [round(r["ttff_ms"], 3) for r in runs]
    ev.ttff_ms = p50(ev.ttff_samples_ms)
    ev.complete_ms = p50([r["complete_ms"] for r in runs])
    ev.fps_sustained = round(frames / (ev.ttff_ms / 1000.0), 3) if ev.ttff_ms else None
    ev.frames_received = frames * sessions
    ev.mid_run_control = False  # the clip API has no control while rendering
    server = [r["timings"] for r in runs]

    def med(key_: str) -> float | None:
        vals = [t[key_] for t in server if isinstance(t.get(key_), (int, float))]
        return round(float(np.median(vals)), 3) if vals else None

    ev.server_reported = {"time_to_first_frame_s": med("time_to_first_frame_s"), "queued_s": med("queued_s"),
                          "run_s": med("run_s"), "fps_throughput": med("fps_throughput"),
                          "rendered_seen_before_video": sum(1 for r in runs if r["rendered_seen_first"]),
                          "poll_s": poll_s}
    return apply_verdict(ev)
