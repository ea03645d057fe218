"""Engine specs, the registry and the four built-in engines (real torch computations, small sizes)."""
from __future__ import annotations

import json
from decimal import Decimal

import numpy as np
import pytest
import torch

from inference.engines import get_engine, get_spec, list_specs, register_engine, unregister_engine
from inference.engines.base import BadFrame, InvalidParams, ModelLoadError, ParamSpec, StepInput, UnknownModel
from inference.engines.dreamfield import prompt_latent
from inference.engines.stylize import StylizeEngine, StylizeNet

BUILTINS = ["identity", "dreamfield", "dreamfield-chunked", "stylize", "backdrop"]


def _step(engine, state, prompt="", params=None, frame=None, index=0):
    p = engine.spec.resolve_params(params)
    return engine.step([StepInput(state, frame, prompt, p, 0, index)])[0]


def _gradient(h=32, w=32, shift=0):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([(xx * 8 + shift) % 256, yy * 8, (xx + yy) * 4], -1).astype(np.uint8)


# -- specs -------------------------------------------------------------------------------------------
def test_builtin_specs_are_complete_and_json_able():
    specs = {s.id: s for s in list_specs()}
    assert set(BUILTINS) <= set(specs)
    for sid in BUILTINS:
        d = json.loads(json.dumps(specs[sid].to_dict()))
        assert d["id"] == sid and d["kind"] in ("video-to-video", "text-to-video")
        assert Decimal(d["price_per_gpu_second"]) > 0
        assert d["declared_tier"] == ("streaming" if d["chunk_frames"] > 1 else "interactive")
        assert d["persistent_state"]
    assert specs["dreamfield-chunked"].chunk_frames == 8
    assert specs["stylize"].kind == specs["identity"].kind == "video-to-video"


def test_cost_follows_the_calibration_and_scales_with_pixels_and_fps():
    ident = get_spec("identity").cost(512, 512, 30)
    dream = get_spec("dreamfield").cost(256, 256, 30)
    assert ident.compute_share == pytest.approx(0.125, rel=0.01)
    assert dream.compute_share == pytest.approx(0.3, rel=0.01)
    # Both parts scale with fps; only the step part scales with pixels.
    assert get_spec("dreamfield").cost(256, 256, 15).compute_share == pytest.approx(0.15, rel=0.01)
    assert get_spec("dreamfield").cost(128, 128, 30).compute_share == pytest.approx(0.06 + 0.24 / 4, rel=0.01)
    assert get_spec("stylize").cost(128, 128, 30).compute_share == pytest.approx(0.105 + 0.145 / 4, rel=0.01)
    assert get_spec("dreamfield").cost(512, 512, 30).compute_share == 1.0  # capped at a whole device
    assert dream.memory_bytes > 0 and isinstance(dream.memory_bytes, int)


def test_validate_params_rejects_unknown_names_wrong_types_and_out_of_range():
    spec = get_spec("dreamfield")
    assert spec.validate_params({"zoom": 2}) == {"zoom": 2.0}
    assert spec.resolve_params({"palette": "fire"})["palette"] == "fire"
    for bad, msg in [({"nope": 1}, "unknown param"), ({"zoom": "big"}, "number"), ({"zoom": True}, "number"),
                     ({"zoom": 100.0}, "maximum"), ({"zoom": -1}, "minimum"), ({"palette": "plaid"}, "not one of"),
                     ({"speed": float("nan")}, "finite"), ({"speed": 10 ** 400}, "out of range"),
                     ([1, 2], "object")]:
        with pytest.raises(InvalidParams, match=msg) as e:
            spec.validate_params(bad)
        assert e.value.code == "invalid_params"
    p = ParamSpec("n", "int", 1, 0, 10)
    assert p.validate(3.0) == 3
    with pytest.raises(InvalidParams, match="integer"):
        p.validate(3.5)
    with pytest.raises(InvalidParams, match="boolean"):
        ParamSpec("b", "bool", False).validate(1)


def test_resolve_size_applies_defaults_and_limits():
    spec = get_spec("dreamfield")
    assert spec.resolve_size(None, None, None) == (256, 256, 30.0)
    for w, h, f in [(1024, 256, 30), (256, 8, 30), (255, 256, 30), (256, 256, 0), (256, 256, 120)]:
        with pytest.raises(InvalidParams):
            spec.resolve_size(w, h, f)


def test_error_codes_match_the_protocol():
    assert UnknownModel("x").code == "unknown_model"
    assert InvalidParams("x").code == "invalid_params"
    assert BadFrame("truncated").code == "bad_frame" and BadFrame("truncated").reason == "truncated"


# -- registry ------------------------------------------------------------------------------------------
def test_registry_raises_unknown_model_and_accepts_extra_engines():
    with pytest.raises(UnknownModel):
        get_engine("no-such-model")
    extra = StylizeEngine()
    extra.spec = type(extra.spec)(**{**vars(extra.spec), "id": "stylize-copy"})
    register_engine(extra)
    try:
        assert get_engine("stylize-copy") is extra
        assert "stylize-copy" in {s.id for s in list_specs()}
    finally:
        unregister_engine("stylize-copy")
    with pytest.raises(UnknownModel):
        get_engine("stylize-copy")
    assert get_engine("identity") is get_engine("identity")


# -- identity --------------------------------------------------------------------------------------------
def test_identity_returns_its_input_exactly():
    e = get_engine("identity")
    frame = _gradient()
    out = _step(e, e.new_state(32, 32, "", {}, 0), frame=frame)
    assert len(out.frames) == 1 and np.array_equal(out.frames[0], frame)
    assert out.frames[0] is not frame  # a copy went through a tensor


# -- dreamfield ------------------------------------------------------------------------------------------
def test_dreamfield_is_deterministic_and_animates():
    e = get_engine("dreamfield")
    p = e.spec.default_params()
    a = [_step(e, s, "a cat").frames[0] for s in [e.new_state(48, 32, "a cat", p, 0)] for _ in range(3)]
    s2 = e.new_state(48, 32, "a cat", p, 0)
    b = [_step(e, s2, "a cat").frames[0] for _ in range(3)]
    assert a[0].shape == (32, 48, 3) and a[0].dtype == np.uint8
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], a[1])   # time carries across frames
    assert a[0].std() > 10                  # a picture, not a flat colour


def test_dreamfield_prompt_maps_to_a_fixed_latent():
    assert torch.equal(prompt_latent("a cat", 0), prompt_latent("a cat", 0))
    assert not torch.equal(prompt_latent("a cat", 0), prompt_latent("a dog", 0))
    # What a prompt means does not depend on the session's seed (the seed varies the wander).
    assert torch.equal(prompt_latent("a cat", 0), prompt_latent("a cat", 1))


@pytest.mark.parametrize("change", [{"zoom": 3.0}, {"detail": 4.0}, {"palette": "ocean"}, {"speed": 4.0}])
def test_dreamfield_params_change_the_very_next_frame(change):
    e = get_engine("dreamfield")
    p = e.spec.default_params()
    s1, s2 = e.new_state(32, 32, "x", p, 0), e.new_state(32, 32, "x", p, 0)
    for _ in range(2):
        assert np.array_equal(_step(e, s1, "x").frames[0], _step(e, s2, "x").frames[0])
    plain = _step(e, s1, "x").frames[0]
    steered = _step(e, s2, "x", change).frames[0]
    assert np.abs(plain.astype(int) - steered).mean() > 2


def test_dreamfield_prompt_change_eases_the_latent_toward_the_new_target():
    e = get_engine("dreamfield")
    p = e.spec.default_params()
    s = e.new_state(16, 16, "a", p, 0)
    start = s.latent.clone()
    target = prompt_latent("b", 0)
    dists = []
    for _ in range(5):
        _step(e, s, "b")
        dists.append(float((s.latent - target).norm()))
    assert float((start - target).norm()) > dists[0] > dists[-1] > 0  # moving, not jumping


def test_dreamfield_chunked_renders_eight_frames_per_step_like_eight_single_steps():
    chunked, single = get_engine("dreamfield-chunked"), get_engine("dreamfield")
    p = single.spec.default_params()
    sc, ss = chunked.new_state(32, 32, "x", p, 3), single.new_state(32, 32, "x", p, 3)
    frames = _step(chunked, sc, "x").frames
    assert len(frames) == 8
    for f in frames:
        assert np.array_equal(f, _step(single, ss, "x").frames[0])


# -- stylize ---------------------------------------------------------------------------------------------
def test_stylize_transforms_and_carries_temporal_state():
    e = get_engine("stylize")
    p = e.spec.default_params()
    a, b = _gradient(), _gradient(shift=128)
    fresh = _step(e, e.new_state(32, 32, "", p, 0), frame=b).frames[0]
    s = e.new_state(32, 32, "", p, 0)
    _step(e, s, frame=a)
    after_a = _step(e, s, frame=b).frames[0]
    assert not np.array_equal(fresh, b)              # it does change the picture
    assert not np.array_equal(after_a, fresh)        # the previous frame still shows: state carried
    s0 = e.new_state(32, 32, "", p, 0)
    _step(e, s0, frame=a, params={"smoothing": 0.0})
    assert np.array_equal(_step(e, s0, frame=b, params={"smoothing": 0.0}).frames[0], fresh)


def test_stylize_params_steer_the_next_frame():
    e = get_engine("stylize")
    frame = _gradient()
    base = _step(e, e.new_state(32, 32, "", {}, 0), frame=frame).frames[0]
    assert np.array_equal(_step(e, e.new_state(32, 32, "", {}, 0), frame=frame,
                                params={"strength": 0.0}).frames[0], frame)
    for change in ({"hue": 90.0}, {"contrast": 3.0}, {"strength": 1.0}):
        out = _step(e, e.new_state(32, 32, "", {}, 0), frame=frame, params=change).frames[0]
        assert np.abs(out.astype(int) - base).mean() > 1, change


def test_stylize_batches_sessions_with_their_own_state():
    e = get_engine("stylize")
    p = e.spec.resolve_params(None)
    a, b = _gradient(), _gradient(shift=64)
    s1, s2 = e.new_state(32, 32, "", p, 0), e.new_state(32, 32, "", p, 0)
    outs = e.step([StepInput(s1, a, "", p, 0, 0), StepInput(s2, b, "", p, 0, 0)])
    alone = _step(e, e.new_state(32, 32, "", p, 0), frame=b).frames[0]
    assert np.abs(outs[1].frames[0].astype(int) - alone).max() <= 1


def test_stylize_loads_local_weights_and_rejects_wrong_shapes(tmp_path, monkeypatch):
    net = StylizeNet()
    with torch.no_grad():
        for prm in net.parameters():
            prm.fill_(0.0)
        net.to_rgb.bias.fill_(5.0)  # sigmoid(5) ~ white, whatever the input
    path = tmp_path / "w.pt"
    torch.save(net.state_dict(), path)
    loaded = StylizeEngine(weights_path=path)
    assert loaded.weights_source == str(path)
    frame = _gradient()
    out = _step(loaded, loaded.new_state(32, 32, "", {}, 0), frame=frame, params={"strength": 1.0}).frames[0]
    assert out.min() >= 250
    default = StylizeEngine()
    assert default.weights_source == "deterministic-init"
    assert _step(default, default.new_state(32, 32, "", {}, 0), frame=frame,
                 params={"strength": 1.0}).frames[0].min() < 250
    # The default location under NEXTFRAME_MODEL_DIR is picked up when present.
    (tmp_path / "models" / "stylize").mkdir(parents=True)
    torch.save(net.state_dict(), tmp_path / "models" / "stylize" / "weights.pt")
    monkeypatch.setenv("NEXTFRAME_MODEL_DIR", str(tmp_path / "models"))
    assert StylizeEngine().weights_source.endswith("stylize/weights.pt")
    # Wrong shapes, wrong keys, wrong content and a missing file are clear errors.
    sd = net.state_dict()
    sd["conv1.weight"] = torch.zeros(4, 3, 3, 3)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(ModelLoadError, match=r"conv1.weight: expected \(8, 3, 3, 3\), got \(4, 3, 3, 3\)"):
        StylizeEngine(weights_path=tmp_path / "bad.pt")
    torch.save({"other": torch.zeros(1)}, tmp_path / "keys.pt")
    with pytest.raises(ModelLoadError, match="missing=.*conv1.weight.*unexpected=.*other"):
        StylizeEngine(weights_path=tmp_path / "keys.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="cannot read"):
        StylizeEngine(weights_path=tmp_path / "junk.pt")
    with pytest.raises(ModelLoadError, match="not found"):
        StylizeEngine(weights_path=tmp_path / "absent.pt")


@pytest.mark.parametrize("engine_id", BUILTINS)
def test_render_clip_matches_single_steps(engine_id):
    e = get_engine(engine_id)
    p = e.spec.default_params()
    inputs = np.stack([_gradient(shift=i * 16) for i in range(4)]) if e.spec.kind == "video-to-video" else None
    s_clip, s_step = e.new_state(32, 32, "x", p, 0), e.new_state(32, 32, "x", p, 0)
    clip = e.render_clip(s_clip, 4, "x", p, inputs)
    assert clip.shape == (4, 32, 32, 3) and clip.dtype == np.uint8
    single = get_engine("dreamfield") if engine_id == "dreamfield-chunked" else e
    for i in range(4):
        f = _step(single, s_step, "x", frame=None if inputs is None else inputs[i]).frames[0]
        assert np.abs(clip[i].astype(int) - f).max() <= 1
