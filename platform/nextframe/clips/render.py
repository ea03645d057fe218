"""Checkpoints between the batches of a clip being rendered (pure glue, no Django).

`inference.batch.render_frames` computes a clip `batch_size` frames at a time, lazily: a batch is
computed when its first frame is asked for. `checkpointed` asks for frames on the encoder's behalf
and calls `before_batch(frames_done)` before each batch is computed - that is where the runner
heartbeats its pool lease and its job row. An exception raised there stops the render at a batch
boundary (preempted, cancelled, taken over) without computing another frame.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np


def batch_size(requested: int, chunk_frames: int) -> int:
    """A whole number of the engine's chunks, at least one chunk."""
    chunk = max(1, int(chunk_frames))
    return max(chunk, (max(1, int(requested)) // chunk) * chunk)


def checkpointed(frames: Iterable[np.ndarray], batch: int,
                 before_batch: Callable[[int], None]) -> Iterator[np.ndarray]:
    """Yield `frames`, calling `before_batch(done)` before frames 0, batch, 2*batch, ... are drawn."""
    it = iter(frames)
    done = 0
    while True:
        if done % batch == 0:
            before_batch(done)
        try:
            frame = next(it)
        except StopIteration:
            return
        yield frame
        done += 1
