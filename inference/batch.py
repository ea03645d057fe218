"""Whole-clip rendering for the fast-batch tier: frames computed in batches over time, state carried.

`render_frames` runs an engine outside the live loop: no deadlines, no controls mid-clip; each engine's
`render_clip` computes `batch_size` consecutive frames at once and leaves its state where n single
steps would have, so a clip is the same picture sequence the live loop would produce for the same
prompt, params and seed.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from .codec import fit_to_size
from .engines import get_engine
from .engines.base import BadFrame, InvalidParams

MAX_CLIP_FRAMES = 100_000


def _input_batch(it: Iterator[np.ndarray], width: int, height: int, n: int) -> np.ndarray | None:
    """Up to n next input frames fitted to the clip size (codec.fit_to_size); None when exhausted."""
    out = []
    for _ in range(n):
        try:
            f = next(it)
        except StopIteration:
            break
        f = np.asarray(f)
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
            raise BadFrame(f"input frame {f.shape} {f.dtype} is not (H, W, 3) uint8")
        out.append(fit_to_size(f, width, height))
    return np.stack(out) if out else None


def render_frames(engine_id: str, width: int | None, height: int | None, fps: float | None, frames: int,
                  prompt: str = "", params: dict[str, Any] | None = None, seed: int = 0, batch_size: int = 8,
                  input_frames: Iterable[np.ndarray] | None = None) -> Iterator[np.ndarray]:
    """Yield `frames` HxWx3 uint8 frames of a clip (fewer if `input_frames` runs out first).

    Validation happens before the first frame: UnknownModel, InvalidParams (sizes, params, prompt,
    frame count, a video-to-video engine without input frames).
    """
    engine = get_engine(engine_id)
    spec = engine.spec
    w, h, f = spec.resolve_size(width, height, fps)
    full_params = spec.resolve_params(params)
    prompt = spec.validate_prompt(prompt)
    if isinstance(frames, bool) or not isinstance(frames, int) or not (1 <= frames <= MAX_CLIP_FRAMES):
        raise InvalidParams(f"frames must be an integer in 1..{MAX_CLIP_FRAMES}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidParams("batch_size must be a positive integer")
    needs_input = spec.kind == "video-to-video"
    if needs_input and input_frames is None:
        raise InvalidParams(f"model {engine_id!r} is video-to-video: input_frames are required")
    return _render(engine, w, h, f, frames, prompt, full_params, seed, batch_size,
                   iter(input_frames) if needs_input and input_frames is not None else None)


def _render(engine: Any, w: int, h: int, fps: float, frames: int, prompt: str, params: dict[str, Any],
            seed: int, batch_size: int, inputs: Iterator[np.ndarray] | None) -> Iterator[np.ndarray]:
    state = engine.new_state(w, h, prompt, params, seed, fps)
    done = 0
    while done < frames:
        n = min(batch_size, frames - done)
        batch_in = None
        if inputs is not None:
            batch_in = _input_batch(inputs, w, h, n)
            if batch_in is None:
                return
            n = len(batch_in)
        out = engine.render_clip(state, n, prompt, params, batch_in)
        yield from out
        done += n
