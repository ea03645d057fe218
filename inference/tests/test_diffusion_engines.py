"""sd-stream and causal-video on tiny models built in code, anchored to diffusers' own implementations.

Tolerances (stated here and in docs/engines.md):
- sd-stream vs StableDiffusionImg2ImgPipeline / StableDiffusionPipeline on the same folder, seed
  and settings: max |difference| <= 1 of 255 on the uint8 frame (measured: 0 on this CPU in fp32).
- causal-video's forward (full window, full attention) vs WanTransformer3DModel.forward: max abs
  difference <= 1e-5 (measured: 0.0); the cached chunk-by-chunk forward vs one block-causal pass:
  <= 1e-5 (measured ~4e-7).
Each equivalence also checks that the compared outputs are not trivially flat and that a different
seed or input moves them, so a constant picture cannot pass.
Pure computation, no database: run in the embedded pass only.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import torch

from inference.engines import get_engine, get_spec, list_specs
from inference.engines.base import ModelLoadError, StepInput, UnknownModel

pytestmark = [pytest.mark.profile("embedded"), pytest.mark.usefixtures("one_torch_thread")]

TOL_U8 = 1
TOL_WAN = 1e-5


def _frame(h=64, w=64, shift=0):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([(xx * 4 + shift) % 256, yy * 4, ((xx + yy) * 2 + 3 * shift) % 256], -1).astype(np.uint8)


def _params(engine, **over):
    return engine.spec.resolve_params({"similarity_filter": False, **over} if "strength" in
                                      engine.spec.default_params() else over)


def _step(engine, state, params, frame=None, prompt="a red car", index=0):
    return engine.step([StepInput(state, frame, prompt, params, 0, index)])[0].frames


def _pipe(engine, cls):
    m = engine.model
    pipe = cls(unet=m.unet, vae=m.vae, text_encoder=m.text_encoder, tokenizer=m.tokenizer, scheduler=m.scheduler,
               safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _img2img(engine, frame, prompt, seed, steps, strength, guidance):
    from diffusers import StableDiffusionImg2ImgPipeline

    n = max(steps, int(np.ceil(steps / strength - 1e-9)))
    image = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    out = _pipe(engine, StableDiffusionImg2ImgPipeline)(
        prompt=prompt, image=image, strength=strength, num_inference_steps=n, guidance_scale=guidance,
        generator=torch.Generator().manual_seed(seed), output_type="pt").images
    return (out[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def _assert_close_u8(a, b):
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert d.max() <= TOL_U8, (d.max(), d.mean())


# -- sd-stream: equivalence with diffusers' pipelines ---------------------------------------------------
@pytest.mark.parametrize("stream_batch, steps, strength, cfg, guidance", [
    (True, 1, 0.5, "none", 1.0),     # the live path (stream batch), 1 step
    (True, 1, 0.7, "full", 2.0),     # with a full CFG pass
    (False, 2, 0.6, "full", 2.0),    # sequential: the whole schedule with scheduler.step
])
def test_sd_stream_frame_equals_diffusers_img2img(tiny_models, stream_batch, steps, strength, cfg, guidance):
    e = get_engine("sd-stream")
    frame = _frame()
    p = _params(e, steps=steps, strength=strength, cfg=cfg, guidance=guidance, stream_batch=stream_batch)
    out = _step(e, e.new_state(64, 64, "a red car", p, 7), p, frame)[0]
    ref = _img2img(e, frame, "a red car", 7, steps, strength, guidance if cfg == "full" else 1.0)
    _assert_close_u8(out, ref)
    assert out.std() > 5  # a picture, not a flat field
    other = _step(e, e.new_state(64, 64, "a red car", p, 8), p, frame)[0]
    assert np.abs(other.astype(int) - out.astype(int)).mean() > 1  # the seed matters


def test_sd_stream_batch_of_two_steps_finishes_each_frame_as_the_pipeline_does(tiny_models):
    """Stream batch pipelines frames: with a still input, frame 1's output is frame 0's second step, which
    (LCM, the stored noise in the pipeline's draw order) equals the 2-step img2img pipeline."""
    e = get_engine("sd-stream")
    frame = _frame()
    p = _params(e, steps=2, strength=0.6, cfg="none", stream_batch=True)
    st = e.new_state(64, 64, "", p, 3)
    first = _step(e, st, p, frame)[0]
    assert len(st.inflight) == 1  # one frame parked at the second timestep
    second = _step(e, st, p, frame, index=1)[0]
    ref = _img2img(e, frame, "a red car", 3, 2, 0.6, 1.0)
    _assert_close_u8(second, ref)
    assert np.abs(first.astype(int) - ref.astype(int)).mean() > 0.5  # frame 0 was only the 1-step preview


def test_sd_stream_t2v_first_frame_equals_diffusers_txt2img(tiny_models):
    from diffusers import StableDiffusionPipeline

    e = get_engine("sd-stream-t2v")
    p = _params(e, steps=1, cfg="none")
    st = e.new_state(64, 64, "a red car", p, 5)
    out = _step(e, st, p)[0]
    ref = _pipe(e, StableDiffusionPipeline)(prompt="a red car", height=64, width=64, num_inference_steps=1,
                                            guidance_scale=1.0, generator=torch.Generator().manual_seed(5),
                                            output_type="pt").images
    _assert_close_u8(out, (ref[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())
    later = [_step(e, st, p, index=i)[0] for i in range(1, 4)]
    assert np.abs(later[-1].astype(int) - out.astype(int)).mean() > 0.5  # the noise drifts: it moves


def test_sd_stream_tiny_vae_and_euler_ancestral_folder_equals_diffusers(tmp_path, monkeypatch):
    from inference.engines.diffusion.sd_stream import SDStreamEngine
    from inference.engines.diffusion.tiny import write_tiny_sd

    e = SDStreamEngine(write_tiny_sd(tmp_path / "sd-stream", vae="tiny", scheduler="euler-a", seed=1))
    assert type(e.model.vae).__name__ == "AutoencoderTiny"
    frame = _frame()
    for stream_batch, steps in ((True, 1), (False, 2)):
        p = _params(e, steps=steps, strength=0.8, cfg="none", stream_batch=stream_batch)
        out = _step(e, e.new_state(64, 64, "", p, 11), p, frame)[0]
        _assert_close_u8(out, _img2img(e, frame, "a red car", 11, steps, 0.8, 1.0))


# -- sd-stream: the stream features ----------------------------------------------------------------------
def test_similarity_filter_skips_still_inputs_counts_them_and_resends_the_last_output(tiny_models):
    e = get_engine("sd-stream")
    p = e.spec.resolve_params({"similarity_threshold": 0.9})
    st = e.new_state(64, 64, "", p, 1)
    still = _frame()
    outs = [_step(e, st, p, still, index=i)[0] for i in range(12)]
    assert st.skipped >= 8  # identical inputs: similarity 1.0, skipped with probability 1
    assert all(np.array_equal(o, outs[0]) for o in outs[1:])
    moving = [_frame(shift=40 * i) for i in range(1, 7)]
    before = st.skipped
    for i, f in enumerate(moving):
        _step(e, st, p, f, index=20 + i)
    assert st.skipped == before  # far-apart inputs are never skipped
    off = e.spec.resolve_params({"similarity_filter": False})
    st2 = e.new_state(64, 64, "", off, 1)
    for i in range(4):
        _step(e, st2, off, still, index=i)
    assert st2.skipped == 0


def test_a_new_prompt_is_encoded_once_and_shows_in_the_same_frame(tiny_models):
    e = get_engine("sd-stream")
    p = _params(e, cfg="none")
    st = e.new_state(64, 64, "", p, 1)
    frame = _frame()
    a = _step(e, st, p, frame, prompt="a red car")[0]
    cached = e.model.cached_prompts()
    b = _step(e, st, p, frame, prompt="zebra stripes", index=1)[0]
    assert e.model.cached_prompts() == cached + 1
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 0.5  # control lag 0: this very frame
    _step(e, st, p, frame, prompt="zebra stripes", index=2)
    assert e.model.cached_prompts() == cached + 1  # encoded once


def test_sd_stream_clip_batches_over_time_and_matches_live_frames(tiny_models):
    e = get_engine("sd-stream")
    p = _params(e, steps=1)
    frames = np.stack([_frame(shift=3 * i) for i in range(5)])
    live_state = e.new_state(64, 64, "", p, 2)
    live = [_step(e, live_state, p, f, prompt="x", index=i)[0] for i, f in enumerate(frames)]
    clip_state = e.new_state(64, 64, "", p, 2)
    clip = e.render_clip(clip_state, 5, "x", p, frames)
    assert clip.shape == (5, 64, 64, 3) and clip_state.frames == 5
    for a, b in zip(clip, live):
        _assert_close_u8(a, b)


# -- causal-video: equivalence with WanTransformer3DModel ------------------------------------------------
def test_causal_forward_with_full_window_and_attention_equals_wan_forward(tiny_models):
    e = get_engine("causal-video")
    m = e.model.transformer
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 5, 4, 6, generator=g)
    t = torch.tensor([700.0, 250.0])
    enc = torch.randn(2, 7, 16, generator=g)
    with torch.inference_mode():
        ref = m(x, t, enc, return_dict=False)[0]
        out, _ = e.model.net.forward(x, t, e.model.net.embed_text(enc))
    assert (out - ref).abs().max().item() <= TOL_WAN
    assert ref.std().item() > 0.1


def test_causal_chunks_through_the_kv_cache_equal_one_block_causal_pass(tiny_models):
    from inference.engines.diffusion.causal_video import RollingKVCache

    e = get_engine("causal-video")
    net = e.model.net
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 6, 4, 4, generator=g)
    t = torch.tensor([500.0])
    with torch.inference_mode():
        ctx = net.embed_text(torch.randn(1, 5, 16, generator=g))
        full, _ = net.forward(x, t, ctx, block_frames=2)
        cache = RollingKVCache(len(e.model.transformer.blocks), 4, sink=0, window=6)
        outs = []
        for f in range(0, 6, 2):
            o, kvs = net.forward(x[:, :, f:f + 2], t, ctx, cache=cache, collect=True)
            cache.commit(kvs, 2)
            outs.append(o)
        nocache, _ = net.forward(x, t, ctx)
    assert (torch.cat(outs, 2) - full).abs().max().item() <= TOL_WAN
    assert (nocache[:, :, :2] - full[:, :, :2]).abs().max().item() > 1e-3  # causality is real


# -- causal-video: bounded memory, prompt switch ------------------------------------------------------------
def test_rolling_cache_memory_is_bounded_over_10000_steps_and_keeps_sinks_and_the_latest_window():
    from inference.engines.diffusion.causal_video import RollingKVCache

    tpf, sink, window = 3, 2, 5
    cache = RollingKVCache(n_blocks=2, tokens_per_frame=tpf, sink=sink, window=window)
    sizes = set()
    for i in range(10_000):
        kv = torch.full((1, tpf, 1, 2), float(i))
        cache.commit([(kv, kv.clone()), (kv, kv.clone())], 1)
        if i >= sink + window:
            sizes.add(cache.nbytes())
    assert sizes == {2 * 2 * (sink + window) * tpf * 2 * 4}  # blocks x (k, v) x tokens x dim x fp32
    assert cache.frames == sink + window and cache.committed == 10_000
    held = cache.k[0][0, ::tpf, 0, 0].tolist()
    assert held == [0, 1] + [float(i) for i in range(10_000 - window, 10_000)]


def test_causal_engine_state_stays_bounded_and_a_prompt_switch_recaches_or_resets(tiny_models):
    e = get_engine("causal-video")
    p = e.spec.resolve_params({"window": 3, "sink": 1, "steps": 1})
    st = e.new_state(32, 32, "a", p, 4)
    sizes = []
    for i in range(12):
        f = _step(e, st, p, prompt="a", index=i)
        assert len(f) == 1 and f[0].shape == (32, 32, 3)
        sizes.append(st.cache.nbytes())
    assert st.cache.frames == 4 and len(st.clean) == 4 and len(set(sizes[4:])) == 1
    k_before = st.cache.k[1].clone()
    _step(e, st, p, prompt="b", index=12)
    assert st.recaches == 1 and st.cache.frames == 4
    assert not torch.equal(k_before[:, :4], st.cache.k[1][:, :4])  # deeper blocks re-keyed under the new prompt
    reset = {**p, "recache": False}
    _step(e, st, reset, prompt="c", index=13)
    assert st.resets == 1 and st.cache.frames == 1  # cleared, then this frame committed


def test_causal_chunked_engine_makes_four_frames_per_step_and_clips_batch_over_time(tiny_models):
    e = get_engine("causal-video-chunked")
    assert e.spec.chunk_frames == 4 and e.spec.declared_tier == "streaming"
    p = e.spec.resolve_params({})
    st = e.new_state(48, 32, "a", p, 1)
    frames = _step(e, st, p, prompt="a")
    assert len(frames) == 4 and all(f.shape == (32, 48, 3) for f in frames)
    clip = e.render_clip(e.new_state(48, 32, "a", p, 1), 6, "a", p)
    assert clip.shape == (6, 32, 48, 3)
    assert np.array_equal(clip[:4], np.stack(frames))  # same seed, same chunk: the same frames


# -- the registry: folders ---------------------------------------------------------------------------------
def test_local_engines_are_listed_only_when_their_folder_is_there(tmp_path, monkeypatch, tiny_models):
    ids = {s.id for s in list_specs()}
    assert {"sd-stream", "sd-stream-t2v", "causal-video", "causal-video-chunked"} <= ids
    monkeypatch.setenv("NEXTFRAME_MODEL_DIR", str(tmp_path))
    assert not {"sd-stream", "causal-video"} & {s.id for s in list_specs()}
    with pytest.raises(UnknownModel):
        get_spec("sd-stream")


def test_a_broken_folder_is_logged_and_not_listed(tmp_path, monkeypatch, tiny_model_root, caplog):
    import shutil

    from inference.engines import unregister_engine
    from inference.engines.local import forget_broken

    root = tmp_path / "models"
    shutil.copytree(tiny_model_root / "sd-stream", root / "sd-stream")
    shutil.copytree(tiny_model_root / "causal-video", root / "causal-video")
    index = json.loads((root / "causal-video" / "model_index.json").read_text())
    del index["vae"]
    (root / "causal-video" / "model_index.json").write_text(json.dumps(index))
    weights = next((root / "sd-stream" / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-64] + bytes(64))  # a damaged weight file: the pinned hash fails
    monkeypatch.setenv("NEXTFRAME_MODEL_DIR", str(root))
    forget_broken()
    try:
        with caplog.at_level(logging.ERROR, logger="inference.engines.local"):
            ids = {s.id for s in list_specs()}
            assert "causal-video" not in ids and "sd-stream" in ids  # structure only, until it is loaded
            assert any("has no 'vae'" in r.getMessage() for r in caplog.records)
            with pytest.raises(ModelLoadError, match="sha256"):
                get_engine("sd-stream")
            assert "sd-stream" not in {s.id for s in list_specs()}
            assert any("failed to load" in r.getMessage() and "sha256" in r.getMessage() for r in caplog.records)
    finally:
        for sid in ("sd-stream", "sd-stream-t2v"):
            unregister_engine(sid)
        forget_broken()


def test_measured_cost_replaces_the_static_guess_after_load(tiny_models):
    static = get_spec("causal-video")
    e = get_engine("causal-video")
    assert get_spec("causal-video") is e.spec
    assert e.spec.base_memory_bytes == e.model.weights_bytes + (16 << 20) != static.base_memory_bytes


def test_listing_models_does_not_import_diffusers_or_transformers(tiny_model_root):
    code = ("import sys, inference.engines as e; ids = [s.id for s in e.list_specs()]; "
            "assert 'sd-stream' in ids, ids; "
            "bad = [m for m in ('diffusers', 'transformers') if m in sys.modules]; assert not bad, bad")
    env = {"NEXTFRAME_MODEL_DIR": str(tiny_model_root), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


# -- the audit labels them by what they do ----------------------------------------------------------------
def _audit(model: str, **plan):
    import asyncio

    from inference.audit import AuditPlan, audit_live
    from inference.audit.simulated import SimulatedRuntimeTransport

    async def go():
        transport = SimulatedRuntimeTransport()
        try:
            return await audit_live(transport, model, AuditPlan(**{
                **dict(sessions=2, width=32, height=32, fps=16.0, warmup_frames=2, idle_frames=8, controls=4,
                       control_every=5), **plan}))
        finally:
            await transport.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("model, tier", [("causal-video", "interactive"), ("causal-video-chunked", "streaming"),
                                         ("sd-stream", "interactive")])
def test_audit_labels_the_diffusion_engines_by_their_chunk_size(tiny_models, model, tier):
    ev = _audit(model)
    assert ev.tier == tier, ev.reasons
    assert ev.declared_tier == tier
    print(model, ev.control_lag_source, ev.control_lag_frames_pixels, ev.control_lag_frames_header, ev.reasons)


def test_a_window_beyond_the_models_rope_table_is_invalid_params_not_a_failed_step(tiny_models):
    from inference.engines.base import InvalidParams

    e = get_engine("causal-video-chunked")
    assert get_spec("causal-video-chunked").param("window").max == 64 - 8 - 4  # tiny rope_max_seq_len is 64
    with pytest.raises(InvalidParams, match="window"):
        get_spec("causal-video-chunked").validate_params({"window": 60})
    p = e.spec.resolve_params({"window": 52, "sink": 8, "steps": 1})
    st = e.new_state(16, 16, "", p, 0)
    for i in range(16):  # the cache fills past sinks + window and keeps going
        assert len(_step(e, st, p, prompt="", index=i)) == 4
    assert st.cache.frames == 60


def test_the_reduced_precision_path_runs_without_dtype_mismatches(tiny_model_root):
    """The GPU path runs in fp16/bf16; bf16 on the CPU exercises the same casts (no GPU is lent here)."""
    from inference.engines.diffusion.causal_video import CausalVideoChunkedEngine
    from inference.engines.diffusion.common import Device
    from inference.engines.diffusion.sd_stream import SDStreamEngine

    dev = Device(torch.device("cpu"), torch.bfloat16)
    sd = SDStreamEngine(tiny_model_root / "sd-stream", dev)
    assert sd.model.unet.dtype == torch.bfloat16
    p = _params(sd, steps=2, cfg="full", guidance=2.0)
    st = sd.new_state(48, 40, "", p, 0)
    for i in range(3):
        assert _step(sd, st, p, _frame(40, 48), index=i)[0].shape == (40, 48, 3)
    cv = CausalVideoChunkedEngine(tiny_model_root / "causal-video", dev)
    q = cv.spec.resolve_params({"steps": 1})
    st2 = cv.new_state(40, 24, "", q, 0)
    for i, prompt in enumerate(["a", "a", "b"]):
        assert [f.shape for f in _step(cv, st2, q, prompt=prompt, index=i)] == [(24, 40, 3)] * 4
    assert st2.recaches == 1
