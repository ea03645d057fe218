"""Engines that fail on purpose, to test what the platform does when a model breaks mid-session.

`FailingEngine` (`failing`, text-to-video) renders flat frames and raises from `step` once a
session reaches frame `fail_at_frame` (a param, default 3): the way a real model fails on a bad
tensor or a device fault. A session of it must end with `session.ended` reason `server_error`
and free its reservation. A server loads it through `NEXTFRAME_EXTRA_ENGINES=inference.engines.faulty`
(its `register()` is called at start); it is never registered otherwise.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import register_engine
from .base import Engine, EngineSpec, ParamSpec, StepInput, StepOutput

FAILING_ENGINE_ID = "failing"

SPEC = EngineSpec(
    id=FAILING_ENGINE_ID, kind="text-to-video", declared_tier="interactive",
    description="Test engine: flat frames, then an exception from step at frame fail_at_frame.",
    default_width=64, default_height=64, max_width=256, max_height=256,
    default_fps=30.0, max_fps=60.0, chunk_frames=1,
    params=[ParamSpec("fail_at_frame", "int", 3, 0, 1_000_000, description="frame index whose step raises")],
    persistent_state="none", price_per_gpu_second="0.0001",
    compute_share_per_fps=0.001,
)


class FailingEngine(Engine):
    spec = SPEC

    def new_state(self, width: int, height: int, prompt: str, params: dict[str, Any], seed: int,
                  fps: float = 30.0) -> dict[str, int]:
        return {"w": width, "h": height}

    def step(self, items: Sequence[StepInput]) -> list[StepOutput]:
        for it in items:
            if it.frame_index >= int(it.params["fail_at_frame"]):
                raise RuntimeError(f"failing engine: deliberate failure at frame {it.frame_index}")
        return [StepOutput([np.full((it.state["h"], it.state["w"], 3), 90, np.uint8)]) for it in items]

    def render_clip(self, state: Any, n_frames: int, prompt: str, params: dict[str, Any],
                    input_frames: np.ndarray | None = None) -> np.ndarray:
        raise RuntimeError("failing engine: deliberate failure")


def register() -> FailingEngine:
    engine = FailingEngine()
    register_engine(engine)
    return engine
