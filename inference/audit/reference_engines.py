"""Reference engines for checking the auditor itself: an engine that lies about its tier.

`LateControlEngine` wraps a per-frame engine, declares itself `interactive`, and applies every
control `delay_frames` steps late - in its pixels and in the control_seq it reports (so the frame
headers and control.applied tell the same late story). A correct audit labels it by what it does
(`streaming`), whatever it declares. Register it with `register()`; a server loads it through
`NEXTFRAME_EXTRA_ENGINES=inference.audit.reference_engines` (docs/audit.md).
"""
from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from inference.engines import Engine, StepInput, StepOutput, get_engine, register_engine

LATE_ENGINE_ID = "dreamfield-late"


@dataclass
class _LateState:
    inner: Any
    history: collections.deque[tuple[str, dict[str, Any], int]]


class LateControlEngine(Engine):
    """`base_id`'s pictures, with controls applied `delay_frames` frames late; declares interactive."""

    def __init__(self, base_id: str = "dreamfield", delay_frames: int = 3, engine_id: str = LATE_ENGINE_ID,
                 late_pixels: bool = True, late_header: bool = True) -> None:
        self.base = get_engine(base_id)
        if self.base.spec.chunk_frames != 1:
            raise ValueError("LateControlEngine wraps a per-frame engine")
        if delay_frames < 1:
            raise ValueError("delay_frames must be >= 1")
        self.delay = delay_frames
        # The auditor's own tests also need half-liars: late pixels under an honest-looking header
        # (only the pixel detector can catch it), or a late header over prompt pixels.
        self.late_pixels, self.late_header = late_pixels, late_header
        self.spec = dataclasses.replace(
            self.base.spec, id=engine_id, declared_tier="interactive",
            description=f"{base_id} with controls applied {delay_frames} frames late (audit reference: "
                        "declares interactive, behaves as streaming)")

    def new_state(self, width: int, height: int, prompt: str, params: dict[str, Any], seed: int,
                  fps: float = 30.0) -> _LateState:
        return _LateState(self.base.new_state(width, height, prompt, params, seed, fps),
                          collections.deque(maxlen=self.delay + 1))

    def step(self, items: Sequence[StepInput]) -> list[StepOutput]:
        inner: list[StepInput] = []
        seqs: list[int] = []
        for it in items:
            st: _LateState = it.state
            st.history.append((it.prompt, dict(it.params), it.control_seq))
            prompt, params, seq = st.history[0]  # what was asked `delay` steps ago
            if not self.late_pixels:
                prompt, params = it.prompt, it.params
            inner.append(StepInput(st.inner, it.frame, prompt, params, seq, it.frame_index))
            seqs.append(seq if self.late_header else it.control_seq)
        outs = self.base.step(inner)
        return [StepOutput(frames=o.frames, control_seq=seq) for o, seq in zip(outs, seqs)]

    def render_clip(self, state: Any, n_frames: int, prompt: str, params: dict[str, Any],
                    input_frames: np.ndarray | None = None) -> np.ndarray:
        return self.base.render_clip(state.inner, n_frames, prompt, params, input_frames)


def register(delay_frames: int = 3) -> LateControlEngine:
    """Register `dreamfield-late` (idempotent: replaces an earlier registration)."""
    engine = LateControlEngine(delay_frames=delay_frames)
    register_engine(engine)
    return engine
