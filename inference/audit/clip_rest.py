"""Audit of a deployment's clip tier over its REST API (`nextframe audit --url ... --clip`).

For each session: POST /v1/clips (text-to-video: JSON; video-to-video: multipart with a small
synthetic MP4 as the input), then poll GET /v1/clips/{id} and GET /v1/clips/{id}/video every
`poll_s` (the video first, the status right after it) until BOTH of two moments have been seen
by the client:
- `ttff_ms` (first frame delivered): when the first GET .../video that answers 200 with a file
  that decodes to at least one frame has arrived;
- `complete_ms` (last frame computed): the first poll whose status reports every frame rendered
  (progress.frames_done >= frames, or status succeeded). Asked right after each video poll, so for
  a tier whose video exists only once rendering is done it comes at most one request after ttff.
Both are measured from the last poll that still saw the clip `queued` (the POST when none did), so
queue wait is left out up to one poll interval; `clip_timings` keeps the queue wait seen and the
request-to-playable time. A fast-batch tier shows ttff ~= complete (nothing downloads before the
whole clip exists, and "done" is asked right after the download has arrived); a tier that served playable output early shows ttff well below complete and
is not labelled fast-batch. Both moments have the poll interval's resolution. The final file is
decoded back to check it holds every frame. The server's own timings (time_to_first_frame_s,
queued_s, run_s, fps_throughput) are kept in `server_reported`, for comparison only.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
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


Requester = Callable[..., "tuple[int, bytes]"]


def _one_clip(base: str, key: str | None, model: str, kind: str, width: int, height: int, fps: int, frames: int,
              poll_s: float, timeout_s: float, request: Requester, clock: Callable[[], float],
              sleep: Callable[[float], None]) -> dict[str, Any]:
    req = {"model": model, "prompt": "audit", "width": width, "height": height, "fps": fps, "frames": frames}
    if kind == "video-to-video":
        body, ctype = _multipart({"request": json.dumps(req)}, "input.mp4", _input_video(width, height, fps, frames))
    else:
        body, ctype = json.dumps(req).encode(), "application/json"
    t0 = clock()
    status, raw = request("POST", f"{base}/clips", key, body, ctype)
    if status != 202:
        raise AuditError("clip_refused", f"POST /v1/clips answered {status}: {raw[:300].decode(errors='replace')}")
    clip_id = json.loads(raw)["id"]
    # The clip's run starts after the last poll that still saw it queued (t0 when none did): times
    # are taken from there, so a queue wait common to both moments does not push their ratio to 1.
    start = t0
    rendered_at = video_at = None
    video = b""
    last: dict[str, Any] = {}
    # Poll until BOTH moments are seen: the video arriving first does not end the measurement. The
    # video is asked for first and the status right after it, so a clip that succeeds between two
    # polls is seen done within one request of its video: a fast-batch tier is never caught by the
    # poll interval, while a tier serving video early reports "not done" after it for a while.
    while rendered_at is None or video_at is None:
        if clock() - t0 >= timeout_s:
            raise AuditError("clip_timeout", f"within {timeout_s} s: video {'seen' if video_at else 'not seen'}, "
                                             f"rendering {'finished' if rendered_at else 'not finished'} "
                                             f"(last status {last.get('status')})")
        candidate = None
        if video_at is None:
            status, raw = request("GET", f"{base}/clips/{clip_id}/video", key)
            if status == 200:
                candidate = (clock(), raw)  # delivered: the download has arrived
        polled_at = clock()  # decoding the download waits until the status is asked: it takes time
        status, raw = request("GET", f"{base}/clips/{clip_id}", key)
        if status == 200:
            last = json.loads(raw)
            prog = last.get("progress") or {}
            state = last.get("status")
            if state == "queued" and rendered_at is None and video_at is None:
                start = polled_at
            total, done_frames = prog.get("frames"), prog.get("frames_done")
            done = total and done_frames is not None and done_frames >= total
            if rendered_at is None and (done or state == "succeeded"):
                rendered_at = polled_at
            if state in ("failed", "blocked", "cancelled"):
                raise AuditError("clip_failed", f"the clip ended {state}: {last.get('error')}")
        if candidate is not None and _frames_in(candidate[1]) >= 1:  # it plays: the first frame is delivered
            video_at, video = candidate
        if rendered_at is None or video_at is None:
            sleep(poll_s)
    if rendered_at > video_at:
        # Playable output existed before rendering finished: the final file is what must hold every frame.
        status, raw = request("GET", f"{base}/clips/{clip_id}/video", key)
        video = raw if status == 200 else video
    got = _frames_in(video)
    if got != frames:
        raise AuditError("clip_incomplete", f"the video holds {got} frames, {frames} were asked for")
    request("DELETE", f"{base}/clips/{clip_id}", key)
    return {"ttff_ms": (video_at - start) * 1000.0, "complete_ms": (rendered_at - start) * 1000.0,
            "queued_ms": (start - t0) * 1000.0, "request_to_playable_ms": (video_at - t0) * 1000.0,
            "timings": last.get("timings") or {}}


def audit_clip_url(live_url: str, key: str | None, model: str, width: int = 64, height: int = 64, fps: int = 30,
                   frames: int = 30, sessions: int = 2, poll_s: float = 0.05, timeout_s: float = 120.0,
                   request: Requester | None = None, clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> Evidence:
    """Time `sessions` clips through the endpoint's REST clip API; return classified Evidence.

    `request(method, url, key, body=None, content_type=None) -> (status, body)`, `clock` and `sleep`
    default to urllib, time.monotonic and time.sleep (tests script a clip API with them).
    """
    request = request or _request
    if isinstance(fps, bool) or not float(fps).is_integer() or fps < 1:
        raise ValueError(f"a clip's fps must be a whole number >= 1 (MP4 frame timing), got {fps:g}")
    if width < 1 or height < 1 or width % 2 or height % 2:
        raise ValueError(f"a clip needs a positive, even width and height (H.264), got {width}x{height}")
    fps = int(fps)
    models = models_url(live_url)
    base = models.rsplit("/models", 1)[0]
    status, raw = request("GET", models, key)
    if status != 200:
        raise AuditError("no_catalog", f"GET {models} answered {status}")
    listing = json.loads(raw)
    info = next((m for m in listing.get("data", []) if m.get("id") == model), None)
    if info is None:
        from inference.engines import UnknownModel

        raise UnknownModel(f"model {model!r} is not listed by {models}")
    runs = [_one_clip(base, key, model, info.get("kind", "text-to-video"), width, height, fps, frames, poll_s,
                      timeout_s, request, clock, sleep) for _ in range(sessions)]
    ev = Evidence(model=model, kind=info.get("kind", "text-to-video"), transport="clip-rest", width=width,
                  height=height, fps=float(fps), sessions=sessions, declared_tier="fast-batch")
    ev.ttff_samples_ms = [round(r["ttff_ms"], 3) for r in runs]
    ev.ttff_ms = p50(ev.ttff_samples_ms)
    ev.complete_ms = p50([r["complete_ms"] for r in runs])
    ev.plan = {"kind": "clip", "width": width, "height": height, "fps": float(fps), "frames": frames,
               "sessions": sessions}
    ev.clip_timings = {"complete_samples_ms": [round(r["complete_ms"], 3) for r in runs],
                       "queued_ms": p50([r["queued_ms"] for r in runs]),
                       "request_to_playable_ms": p50([r["request_to_playable_ms"] for r in runs]),
                       "poll_s": poll_s}
    ev.fps_sustained = round(frames / (ev.complete_ms / 1000.0), 3) if ev.complete_ms else None
    ev.frames_received = frames * sessions
    ev.mid_run_control = False  # the clip API has no control while rendering
    server = [r["timings"] for r in runs]

    def med(key_: str) -> float | None:
        vals = [t[key_] for t in server if isinstance(t.get(key_), (int, float))]
        return round(float(np.median(vals)), 3) if vals else None

    ev.server_reported = {"time_to_first_frame_s": med("time_to_first_frame_s"), "queued_s": med("queued_s"),
                          "run_s": med("run_s"), "fps_throughput": med("fps_throughput")}
    return apply_verdict(ev)
