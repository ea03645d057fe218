"""`backdrop`: the real pretrained selfie-segmentation model on a real photo, the mask's temporal state,
the three backgrounds, the model file's install and verification, and the engine contract.

The photo is scikit-image's `astronaut` (Eileen Collins, NASA: public domain), shipped in its wheel.
Regions are in the 512x512 photo's pixels: her face and her suit are the subject; the grey wall at the
top right and the flag at the left are background.
"""
from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
from skimage import data

from inference.engines import get_engine
from inference.engines.backdrop import COLORS, BackdropEngine, smooth_mask
from inference.engines.backdrop_model import (
    GENERAL,
    LANDSCAPE,
    MODELS,
    SelfieSegmenter,
    default_model_dir,
    extract_models,
    read_verified,
)
from inference.engines.base import ModelLoadError, StepInput

FACE = (slice(60, 160), slice(180, 250))
SUIT = (slice(280, 480), slice(60, 260))
WALL = (slice(0, 80), slice(300, 500))
FLAG = (slice(0, 200), slice(0, 50))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def engine() -> BackdropEngine:
    e = get_engine("backdrop")
    assert isinstance(e, BackdropEngine)
    return e


def _mask(engine: BackdropEngine, frame: np.ndarray) -> np.ndarray:
    """The model's person probability scaled up to the frame (no smoothing, no feathering)."""
    probs = engine.segment(engine._to_tensor(frame[None]))
    return engine.alpha(probs, 0.0, frame.shape[0], frame.shape[1])[0, 0].numpy()


def _step(engine, state, frame, params=None, prompt="a calm sea"):
    p = engine.spec.resolve_params(params)
    return engine.step([StepInput(state, frame, prompt, p, 0, 0)])[0].frames[0]


# -- the model really segments a person ----------------------------------------------------------------
def test_the_pretrained_model_covers_the_person_and_not_the_background(engine, photo):
    m = _mask(engine, photo)
    assert m[FACE].mean() > 0.9 and m[SUIT].mean() > 0.9
    assert m[WALL].mean() < 0.05 and m[FLAG].mean() < 0.05
    # Not a fixed blob: the mask follows the person when the photo is mirrored ...
    mirrored = _mask(engine, np.ascontiguousarray(photo[:, ::-1]))
    a, b = m[:, ::-1] > 0.5, mirrored > 0.5
    assert (a & b).sum() / (a | b).sum() > 0.9
    # ... and there is no person in a flat frame or in a photo of a rocket.
    assert _mask(engine, np.full((256, 256, 3), 120, np.uint8)).mean() < 0.01
    assert _mask(engine, data.rocket()).mean() < 0.01


def test_wide_frames_use_the_landscape_model(engine, photo):
    assert SelfieSegmenter.model_for(512, 288) is LANDSCAPE and SelfieSegmenter.model_for(256, 256) is GENERAL
    wide = np.zeros((256, 448, 3), np.uint8)
    wide[:, 96:352] = photo[::2, ::2]  # the person in the middle, black on both sides
    probs = engine.segment(engine._to_tensor(wide[None]))
    assert probs.shape == (1, 1, *LANDSCAPE.input_hw)
    m = engine.alpha(probs, 0.0, 256, 448)[0, 0].numpy()
    assert m[30:80, 186:221].mean() > 0.8 and m[:, :80].mean() < 0.05


# -- temporal state -----------------------------------------------------------------------------------------
def test_mask_smoothing_keeps_uncertain_pixels_and_follows_confident_ones():
    prev = torch.ones(1, 4, 4)
    assert torch.allclose(smooth_mask(prev, torch.zeros(1, 4, 4), 0.9), torch.zeros(1, 4, 4), atol=1e-4)
    half = smooth_mask(prev, torch.full((1, 4, 4), 0.5), 0.9)  # the model is unsure: 90% of the past stays
    assert torch.allclose(half, torch.full((1, 4, 4), 0.95), atol=1e-4)
    assert torch.equal(smooth_mask(prev, torch.full((1, 4, 4), 0.5), 0.0), torch.full((1, 4, 4), 0.5))
    assert torch.equal(smooth_mask(None, torch.full((1, 4, 4), 0.3), 0.9), torch.full((1, 4, 4), 0.3))


def test_the_mask_carries_across_frames(engine, photo):
    small = np.ascontiguousarray(photo[::2, ::2])
    shifted = np.roll(small, 24, axis=1)
    p = {"mode": "color", "smoothing": 0.9}
    fresh = _step(engine, engine.new_state(256, 256, "", engine.spec.resolve_params(p), 0), shifted, p)
    s = engine.new_state(256, 256, "", engine.spec.resolve_params(p), 0)
    _step(engine, s, small, p)
    after = _step(engine, s, shifted, p)
    assert s.frames == 2 and s.mask is not None
    assert np.abs(after.astype(int) - fresh).mean() > 0.05  # the edge still remembers the previous frame
    s0 = engine.new_state(256, 256, "", engine.spec.resolve_params(p), 0)
    _step(engine, s0, small, {**p, "smoothing": 0.0})
    assert np.array_equal(_step(engine, s0, shifted, {**p, "smoothing": 0.0}), fresh_no_memory :=
                          _step(engine, engine.new_state(256, 256, "", engine.spec.resolve_params(p), 0), shifted,
                                {**p, "smoothing": 0.0}))
    assert fresh_no_memory.shape == (256, 256, 3)


# -- the three backgrounds ------------------------------------------------------------------------------------
def test_modes_replace_the_background_and_keep_the_person(engine, photo):
    outs = {}
    for mode in ("generate", "blur", "color"):
        s = engine.new_state(512, 512, "a calm sea", engine.spec.resolve_params({"mode": mode}), 0)
        outs[mode] = _step(engine, s, photo, {"mode": mode}).astype(int)
    src = photo.astype(int)
    for mode, out in outs.items():
        assert np.abs(out[FACE] - src[FACE]).mean() < 6, mode   # the person is the input
    green = np.array(COLORS["green"]) * 255
    assert np.abs(outs["color"][WALL] - green).mean() < 3
    assert np.abs(outs["generate"][WALL] - src[WALL]).mean() > 20
    blur_diff = np.abs(outs["blur"][FLAG] - src[FLAG]).mean()  # the flag's stripes are smeared ...
    assert blur_diff > 10
    assert np.abs(outs["blur"][FLAG].mean((0, 1)) - src[FLAG].mean((0, 1))).max() < 40  # ... not replaced


@pytest.mark.parametrize("before, after", [
    ({}, {"mode": "blur"}), ({}, {"mode": "color"}), ({}, {"palette": "fire"}), ({"mode": "blur"}, {"mode": "generate"}),
    ({"mode": "color"}, {"mode": "color", "color": "blue"}), ({"mode": "blur"}, {"mode": "blur", "blur": 30.0}),
    ({}, {"feather": 20.0}),
])
def test_params_change_the_very_next_frame(engine, photo, before, after):
    frame = np.ascontiguousarray(photo[::2, ::2])
    s1 = engine.new_state(256, 256, "x", engine.spec.resolve_params(before), 0)
    s2 = engine.new_state(256, 256, "x", engine.spec.resolve_params(before), 0)
    for s in (s1, s2):
        _step(engine, s, frame, before, "x")
    plain = _step(engine, s1, frame, before, "x")
    steered = _step(engine, s2, frame, after, "x")
    assert np.abs(plain.astype(int) - steered).mean() > (0.3 if "feather" in after else 2)


def test_sessions_batched_together_keep_their_own_state(engine, photo):
    a = np.ascontiguousarray(photo[::2, ::2])
    b = np.ascontiguousarray(photo[::2, ::-2])
    pa, pb = engine.spec.resolve_params({"mode": "blur"}), engine.spec.resolve_params({"mode": "color"})
    sa, sb = engine.new_state(256, 256, "", pa, 0), engine.new_state(256, 256, "", pb, 1)
    outs = engine.step([StepInput(sa, a, "", pa, 0, 0), StepInput(sb, b, "", pb, 0, 0)])
    alone = _step(engine, engine.new_state(256, 256, "", pb, 1), b, {"mode": "color"}, "")
    assert np.abs(outs[1].frames[0].astype(int) - alone).max() <= 1


def test_render_clip_is_the_same_as_single_steps(engine, photo):
    frames = np.stack([np.roll(photo[::4, ::4], 4 * i, axis=1) for i in range(6)])
    for mode in ("generate", "blur"):
        p = engine.spec.resolve_params({"mode": mode})
        clip_state, step_state = engine.new_state(128, 128, "x", p, 0), engine.new_state(128, 128, "x", p, 0)
        clip = engine.render_clip(clip_state, 6, "x", {"mode": mode}, frames)
        assert clip.shape == (6, 128, 128, 3) and clip.dtype == np.uint8
        for i in range(6):
            single = _step(engine, step_state, frames[i], {"mode": mode}, "x")
            assert np.abs(clip[i].astype(int) - single).max() <= 2, (mode, i)
    with pytest.raises(ValueError, match="n_frames input frames"):
        engine.render_clip(engine.new_state(128, 128, "", p, 0), 2, "", {}, frames[:1])


# -- the model file: installed from the pinned wheel, checked at load ------------------------------------------
def test_model_files_are_installed_with_their_pinned_hashes():
    for model in MODELS:
        assert len(read_verified(default_model_dir(), model)) > 100_000


def test_a_missing_or_altered_model_file_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match="missing; run `make install`"):
        SelfieSegmenter(tmp_path)
    for model in MODELS:
        (tmp_path / model.name).write_bytes(read_verified(default_model_dir(), model))
    assert SelfieSegmenter(tmp_path).folder == tmp_path  # a copy elsewhere loads (NEXTFRAME_BACKDROP_MODEL_DIR)
    monkeypatch.setenv("NEXTFRAME_BACKDROP_MODEL_DIR", str(tmp_path))
    assert default_model_dir() == tmp_path
    data_ = bytearray((tmp_path / GENERAL.name).read_bytes())
    data_[5000] ^= 0xFF
    (tmp_path / GENERAL.name).write_bytes(bytes(data_))
    with pytest.raises(ModelLoadError, match="has sha256 .* expected 9ee168ec"):
        SelfieSegmenter(tmp_path)


def test_extraction_refuses_a_wheel_that_is_not_the_pinned_one(tmp_path):
    fake = tmp_path / "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr(GENERAL.member, b"not a model")
    with pytest.raises(ModelLoadError, match="not the pinned"):
        extract_models(fake, tmp_path / "out")
    assert not (tmp_path / "out").exists()
