"""Batched generation of one clip: frames rendered `batch_frames` at a time, state carried across.

Pure inference glue (no Django): the runner passes a `before_batch` callback, which is where it
heartbeats its pool lease and its job row; an exception raised there stops rendering at a batch
boundary (preempted, cancelled, taken over).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np


def batch_size(requested: int, chunk_frames: int) -> int:
    """A whole number of the engine's chunks, at least one chunk."""
    chunk = max(1, int(chunk_frames))
    return max(chunk, (max(1, int(requested)) // chunk) * chunk)


def iter_clip_frames(
    engine: Any,
    state: Any,
    n_frames: int,
    prompt: str,
    params: dict[str, Any],
    batch_frames: int,
    input_frames: np.ndarray | None = None,
    before_batch: Callable[[int], None] | None = None,
) -> Iterator[np.ndarray]:
    """Yield the clip's frames in order, rendering `batch_frames` per `engine.render_clip` call.

    `before_batch(frames_done)` runs before every batch. `render_clip` advances `state` exactly as
    that many single steps would, so the clip is the same whatever the batch size.
    """
    if n_frames < 1:
        raise ValueError("a clip needs at least one frame")
    if input_frames is not None and len(input_frames) < n_frames:
        raise ValueError(f"{len(input_frames)} input frames for a clip of {n_frames}")
    done = 0
    while done < n_frames:
        n = min(batch_frames, n_frames - done)
        if before_batch is not None:
            before_batch(done)
        chunk = engine.render_clip(
            state, n, prompt, params, None if input_frames is None else input_frames[done:done + n]
        )
        if len(chunk) != n:
            raise RuntimeError(f"engine returned {len(chunk)} frames for a batch of {n}")
        yield from chunk
        done += n
