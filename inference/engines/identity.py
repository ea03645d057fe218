"""`identity`: video-to-video engine that returns its input.

It still takes the full path - decoded frame -> torch tensor (a copy) -> encoder - so it measures the
frame loop's own overhead: anything a real engine costs comes on top of this baseline.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .base import Engine, StepInput, StepOutput
from .specs import IDENTITY

SPEC = IDENTITY


def _roundtrip(frames: torch.Tensor) -> torch.Tensor:
    # A copy into a torch-owned tensor: the hand-off every engine makes (decoder buffer -> model input)
    # without any arithmetic, so the measured cost is the loop's, not a model's.
    return frames.clone(memory_format=torch.contiguous_format)


class IdentityEngine(Engine):
    spec = SPEC

    def new_state(self, width: int, height: int, prompt: str, params: dict[str, Any], seed: int,
                  fps: float = 30.0) -> None:
        return None

    def step(self, items: Sequence[StepInput]) -> list[StepOutput]:
        outs = []
        for it in items:
            if it.frame is None:
                raise ValueError("identity is video-to-video: a step needs an input frame")
            out = _roundtrip(torch.from_numpy(it.frame)).numpy()
            outs.append(StepOutput(frames=[out]))
        return outs

    def render_clip(self, state: Any, n_frames: int, prompt: str, params: dict[str, Any],
                    input_frames: np.ndarray | None = None) -> np.ndarray:
        if input_frames is None or len(input_frames) != n_frames:
            raise ValueError("identity needs exactly n_frames input frames")
        return _roundtrip(torch.from_numpy(np.ascontiguousarray(input_frames))).numpy()
