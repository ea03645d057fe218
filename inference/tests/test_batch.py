"""render_frames: whole clips in batches over time, the same pictures as single steps."""
from __future__ import annotations

import numpy as np
import pytest

from inference.batch import render_frames
from inference.engines.base import BadFrame, InvalidParams, UnknownModel


def _clip(**kw):
    return np.stack(list(render_frames(**kw)))


@pytest.mark.parametrize("engine_id", ["dreamfield", "dreamfield-chunked"])
def test_text_to_video_clip_is_independent_of_batch_size(engine_id):
    kw = dict(engine_id=engine_id, width=32, height=32, fps=24, frames=11, prompt="sea", seed=4)
    a, b = _clip(**kw, batch_size=8), _clip(**kw, batch_size=1)
    assert a.shape == (11, 32, 32, 3) and np.array_equal(a, b)
    assert not np.array_equal(a[0], a[-1])
    assert not np.array_equal(a, _clip(**{**kw, "seed": 5}))


@pytest.mark.parametrize("engine_id", ["identity", "stylize"])
def test_video_to_video_clip_needs_and_uses_input_frames(engine_id):
    rng = np.random.default_rng(1)
    inputs = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(7)]  # other size: fitted
    out = _clip(engine_id=engine_id, width=32, height=32, fps=30, frames=10, input_frames=iter(inputs),
                batch_size=3)
    assert out.shape == (7, 32, 32, 3)  # the clip ends with its input
    with pytest.raises(InvalidParams, match="input_frames"):
        render_frames(engine_id, 32, 32, 30, 5)
    with pytest.raises(BadFrame):
        list(render_frames(engine_id, 32, 32, 30, 2, input_frames=[np.zeros((32, 32), np.uint8)]))


def test_bad_requests_fail_before_any_frame():
    with pytest.raises(UnknownModel):
        render_frames("nope", 32, 32, 30, 5)
    with pytest.raises(InvalidParams):
        render_frames("dreamfield", 32, 32, 30, 0)
    with pytest.raises(InvalidParams):
        render_frames("dreamfield", 32, 32, 30, 5, params={"zoom": 99})
    with pytest.raises(InvalidParams):
        render_frames("dreamfield", 4000, 32, 30, 5)
