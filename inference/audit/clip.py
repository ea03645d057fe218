"""Audit of the clip tier: render small clips the way a clip job does and time two measured moments.

Per clip, on the audit's clock, from the moment the render is started:
- `ttff_ms` - *first frame deliverable*: the first moment a file the tier published (made available
  for download, as a clip job does when it stores the video) decodes to at least one frame;
- `complete_ms` - *last frame computed*: the moment the renderer handed over the clip's last frame.
Both come from events the audit observes itself (`ClipEvents`): nothing is assigned from the other.
A fast-batch tier publishes its file only after every frame is computed (and encoded), so
ttff >= complete and rule 1 labels it fast-batch; a tier that published playable output early
(a streaming renderer) shows ttff well below complete and is *not* labelled fast-batch.
The last file published must decode to every frame. The clip API has no control while rendering
(`mid_run_control` is False).

`InProcessClipTier` makes the same calls a clip job makes - `inference.batch.render_frames` in
batches of whole chunks, streamed into `inference.video.encode_mp4` (atomic publish) - without the
job queue: the numbers are the tier's own cost and exclude any queue wait. `guard` is called before
each frame is handed over; raising there stops the render (the platform's pool lease was lost).
"""
from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np

from . import pixels as px
from .classifier import apply_verdict
from .evidence import Evidence, p50
from .transport import AuditError

#: Frames a clip job renders per batch (CLIP_BATCH_FRAMES), rounded to whole engine chunks.
CLIP_BATCH_FRAMES = 8
#: A short clip rendered and discarded first: loading the engine and the encoder is not the tier's per-clip cost.
WARMUP_FRAMES = 2


def _frames_in(path: str) -> int:
    """Frames a file decodes to; 0 when it is not (yet) a playable video."""
    from inference.video import probe_mp4

    try:
        return int(probe_mp4(path)["frames"])
    except Exception:  # noqa: BLE001 - a partial or broken file is simply not playable
        return 0


class ClipEvents:
    """What the audit observes of one clip render, timed on the audit's clock."""

    def __init__(self, frames: int, clock: Callable[[], float], guard: Callable[[], None] | None = None) -> None:
        self.frames = frames
        self._clock = clock
        self._guard = guard
        self.started_at = clock()
        self.frames_computed = 0
        self.last_frame_at: float | None = None
        self.first_playable_at: float | None = None
        self.published = 0
        self.last_published_frames = 0

    def frame_computed(self) -> None:
        """The renderer hands over one computed frame (the last one marks rendering finished)."""
        if self._guard is not None:
            self._guard()
        self.frames_computed += 1
        if self.frames_computed == self.frames:
            self.last_frame_at = self._clock()

    def publish(self, path: str) -> None:
        """The tier makes `path` available to the client; the first one that plays is the first frame."""
        at = self._clock()  # before decoding it: the audit's own check is not the tier's time
        got = _frames_in(path)
        self.published += 1
        self.last_published_frames = got
        if got >= 1 and self.first_playable_at is None:
            self.first_playable_at = at


class ClipTier(Protocol):
    """Something that renders a clip, reporting frames computed and files published to `events`."""

    name: str

    def render(self, model: str, width: int, height: int, fps: int, frames: int, seed: int, workdir: str,
               events: ClipEvents) -> None: ...


def clip_batch(chunk_frames: int, requested: int = CLIP_BATCH_FRAMES) -> int:
    """A clip job's batch: a whole number of the engine's chunks, at least one chunk."""
    chunk = max(1, int(chunk_frames))
    return max(chunk, (max(1, requested) // chunk) * chunk)


class InProcessClipTier:
    """This code base's clip tier: render_frames streamed into encode_mp4, published whole."""

    name = "clip"

    def render(self, model: str, width: int, height: int, fps: int, frames: int, seed: int, workdir: str,
               events: ClipEvents) -> None:
        from inference.batch import render_frames
        from inference.engines import get_spec
        from inference.video import encode_mp4

        spec = get_spec(model)
        inputs = None
        if spec.kind == "video-to-video":
            inputs = (px.pattern(width, height, t) for t in range(frames))
        rendered = render_frames(model, width, height, float(fps), frames, "", None, seed,
                                 clip_batch(spec.chunk_frames), inputs)

        def handed_over() -> Iterator[np.ndarray]:
            for frame in rendered:
                events.frame_computed()
                yield frame

        path = os.path.join(workdir, f"audit-{model}-{seed}.mp4")
        encode_mp4(handed_over(), path, fps=fps, width=width, height=height)
        events.publish(path)  # encode_mp4 renamed it into place whole: the first playable moment


def check_clip_size(model: str, width: int, height: int, fps: float) -> int:
    """Validate a clip audit's size and rate against the model and H.264; returns the integer fps.

    Raises ValueError (odd or out-of-range size, non-integer fps) or UnknownModel.
    """
    from inference.engines import InvalidParams, get_spec

    spec = get_spec(model)
    if isinstance(fps, bool) or not float(fps).is_integer() or fps < 1:
        raise ValueError(f"a clip's fps must be a whole number >= 1 (MP4 frame timing), got {fps:g}")
    try:
        spec.resolve_size(width, height, float(fps))
    except InvalidParams as exc:
        raise ValueError(str(exc)) from None
    if width % 2 or height % 2:
        raise ValueError(f"H.264 (yuv420p) needs an even width and height, got {width}x{height}")
    return int(fps)


def audit_clip(model: str, width: int = 64, height: int = 64, fps: int = 30, frames: int = 30,
               sessions: int = 3, tier: ClipTier | None = None, clock: Callable[[], float] = time.monotonic,
               guard: Callable[[], None] | None = None, warmup: bool = True) -> Evidence:
    """Time `sessions` small clips of `model` through `tier` (after a discarded warm-up clip);
    return classified Evidence."""
    from inference.engines import get_spec

    spec = get_spec(model)
    fps = check_clip_size(model, width, height, fps)
    if frames < 1 or sessions < 1:
        raise ValueError("a clip audit needs frames >= 1 and sessions >= 1")
    tier = tier or InProcessClipTier()
    ttffs: list[float] = []
    completes: list[float] = []
    with tempfile.TemporaryDirectory(prefix="nextframe-audit-") as workdir:
        if warmup:
            tier.render(model, width, height, fps, min(frames, WARMUP_FRAMES), sessions, workdir,
                        ClipEvents(min(frames, WARMUP_FRAMES), clock, guard))
        for i in range(sessions):
            events = ClipEvents(frames, clock, guard)
            tier.render(model, width, height, fps, frames, i, workdir, events)
            if events.last_frame_at is None:
                raise AuditError("clip_incomplete", f"the renderer handed over {events.frames_computed} of "
                                                    f"{frames} frames")
            if events.first_playable_at is None:
                raise AuditError("clip_unplayable", f"none of the {events.published} published files plays")
            if events.last_published_frames != frames:
                raise AuditError("clip_incomplete", f"the clip holds {events.last_published_frames} frames, "
                                                    f"{frames} were rendered")
            ttffs.append(round((events.first_playable_at - events.started_at) * 1000.0, 3))
            completes.append(round((events.last_frame_at - events.started_at) * 1000.0, 3))
    ev = Evidence(model=model, kind=spec.kind, transport=tier.name, width=width, height=height, fps=float(fps),
                  sessions=sessions, declared_tier="fast-batch")
    ev.plan = {"kind": "clip", "width": width, "height": height, "fps": float(fps), "frames": frames,
               "sessions": sessions}
    ev.ttff_samples_ms = ttffs
    ev.ttff_ms = p50(ttffs)
    ev.complete_ms = p50(completes)
    ev.server_reported = {"frames_per_clip": frames}
    ev.clip_timings = {"complete_samples_ms": completes,
                       "publish_after_last_frame_ms": p50([t - c for t, c in zip(ttffs, completes)])}
    ev.fps_sustained = round(frames / (ev.complete_ms / 1000.0), 3) if ev.complete_ms else None
    ev.frames_received = frames * sessions
    ev.mid_run_control = False
    return apply_verdict(ev)
