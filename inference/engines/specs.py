"""Specs of the built-in engines, kept free of torch so the web side can list models cheaply.

Cost calibration (2-core CPU device of capacity 1.0): compute share = a fixed part per frame
(decode/encode, Python, the socket) x fps + a coefficient x Mpixel/s, anchored at what the frame
loop and the benchmark suite sustain within deadline on this machine: identity 512x512@30 ~ 0.125
(8 sessions), dreamfield 256x256@30 ~ 0.3 (3), stylize 256x256@30 ~ 0.25 (4) and 128x128@30 ~ 0.14
(6-7); see docs/engines.md and docs/benchmarks.md.
"""
from __future__ import annotations

from typing import Any

from .base import EngineSpec, ParamSpec

DREAM_LATENT_DIM = 32
DREAM_HIDDEN = 20
PALETTE_NAMES = ("natural", "fire", "ocean", "mono", "neon")

IDENTITY = EngineSpec(
    id="identity", kind="video-to-video", declared_tier="interactive",
    description="Returns each input frame unchanged; the overhead baseline of the frame loop.",
    default_width=512, default_height=512, max_width=1280, max_height=1280,
    default_fps=30.0, max_fps=60.0, chunk_frames=1, params=[],
    persistent_state="none: every frame is independent",
    price_per_gpu_second="0.0001",
    compute_share_per_mpix_per_s=0.05 / 7.864,  # 512*512*30 = 7.864 Mpix/s -> 0.05 of JPEG work
    compute_share_per_fps=0.0025,  # + 0.075 at 30 FPS: 0.125 -> 8 sessions at 512 (frame-loop bench)
    base_memory_bytes=1 << 20, memory_bytes_per_pixel=3 * 4,
)

_DREAM_PARAMS = [
    ParamSpec("speed", "float", 1.0, 0.0, 5.0, description="how fast the picture flows (animation seconds per second)"),
    ParamSpec("zoom", "float", 1.0, 0.1, 8.0, description="scale of the coordinate field; larger shows more pattern"),
    ParamSpec("detail", "float", 1.0, 0.25, 8.0, description="spatial frequency of the pattern"),
    ParamSpec("palette", "enum", "natural", choices=PALETTE_NAMES, description="colour mapping of the output"),
    ParamSpec("morph", "float", 1.0, 0.05, 10.0,
              description="seconds for the latent to move 63% of the way to a new prompt's latent"),
]

_DREAM_COMMON: dict[str, Any] = dict(
    kind="text-to-video", default_width=256, default_height=256, max_width=512, max_height=512,
    default_fps=30.0, max_fps=60.0, params=_DREAM_PARAMS,
    persistent_state="animation time and the latent trajectory (current latent easing toward the prompt's target)",
    # 256*256*30 = 1.966 Mpix/s -> 0.3: a frame takes ~10 ms of the worker's one intra-op thread, so
    # the step stage saturates near 3 sessions at 30 FPS (docs/frame-loop.md); 0.2 would admit 5.
    compute_share_per_mpix_per_s=0.24 / 1.966,
    compute_share_per_fps=0.002,  # the encode and the loop's own work: 0.06 at 30 FPS
    base_memory_bytes=2 << 20, memory_bytes_per_pixel=(3 + 2 * DREAM_HIDDEN) * 4,
)

DREAMFIELD = EngineSpec(
    id="dreamfield", declared_tier="interactive", chunk_frames=1, price_per_gpu_second="0.0004",
    description="CPPN coordinate network over x, y, t and a prompt latent; steerable every frame.",
    **_DREAM_COMMON)

DREAMFIELD_CHUNKED = EngineSpec(
    id="dreamfield-chunked", declared_tier="streaming", chunk_frames=8, price_per_gpu_second="0.0003",
    description="dreamfield rendered in chunks of 8 frames; controls land at the next chunk.",
    **_DREAM_COMMON)

STYLIZE = EngineSpec(
    id="stylize", kind="video-to-video", declared_tier="interactive",
    description="Small fixed conv net restyles webcam frames; features blend over time for stability.",
    default_width=256, default_height=256, max_width=512, max_height=512,
    default_fps=30.0, max_fps=60.0, chunk_frames=1,
    params=[
        ParamSpec("strength", "float", 0.7, 0.0, 1.0, description="mix of stylized output over the input (0 = input)"),
        ParamSpec("smoothing", "float", 0.6, 0.0, 0.95,
                  description="weight of the previous frames' features (temporal EMA); 0 = no memory"),
        ParamSpec("hue", "float", 0.0, -180.0, 180.0, description="hue rotation of the stylized colours, degrees"),
        ParamSpec("contrast", "float", 1.0, 0.25, 4.0, description="gain on the stylized colours"),
    ],
    persistent_state="the EMA of the conv features of previous frames (temporal smoothing)",
    price_per_gpu_second="0.0005",
    # ~5 ms/frame of step at 256x256, plus decode/encode: 0.25 at 256x256@30; at 128x128@30 the
    # fixed part dominates (0.14: the suite holds 6 such sessions within deadline, not 16).
    compute_share_per_mpix_per_s=0.145 / 1.966,
    compute_share_per_fps=0.0035,
    base_memory_bytes=1 << 20, memory_bytes_per_pixel=(3 + 8 + 8) * 4,
)

BACKDROP_MODES = ("generate", "blur", "color")
BACKDROP_COLORS = ("green", "blue", "white", "grey", "black")

BACKDROP = EngineSpec(
    id="backdrop", kind="video-to-video", declared_tier="interactive",
    description="Webcam person segmentation (MediaPipe Selfie Segmentation, pretrained, Apache-2.0) composited "
                "over a prompt-steered dreamfield background, a blur of the room or a plain colour.",
    default_width=256, default_height=256, max_width=640, max_height=640,
    default_fps=30.0, max_fps=60.0, chunk_frames=1,
    params=[
        ParamSpec("mode", "enum", "generate", choices=BACKDROP_MODES,
                  description="background: generate (dreamfield steered by the prompt), blur (the room, "
                              "blurred) or color (a plain colour); switches at the next frame"),
        ParamSpec("smoothing", "float", 0.8, 0.0, 0.95,
                  description="how much an uncertain mask pixel keeps of the previous frames' mask "
                              "(MediaPipe's segmentation smoothing; confident pixels follow at once)"),
        ParamSpec("feather", "float", 3.0, 0.0, 20.0, description="softness of the mask edge, output pixels"),
        ParamSpec("blur", "float", 12.0, 1.0, 40.0, description="blur of the room in mode blur, output pixels"),
        ParamSpec("color", "enum", "green", choices=BACKDROP_COLORS, description="the colour of mode color"),
        ParamSpec("palette", "enum", "natural", choices=PALETTE_NAMES,
                  description="colour mapping of the generated background"),
        ParamSpec("speed", "float", 0.5, 0.0, 5.0, description="how fast the generated background flows"),
        ParamSpec("morph", "float", 1.0, 0.05, 10.0,
                  description="seconds for the background to move 63% of the way to a new prompt"),
    ],
    persistent_state="the smoothed person mask of the previous frames and the generated background's "
                     "dreamfield state (animation time, latent easing toward the prompt)",
    price_per_gpu_second="0.0005",
    # Calibrated with the frame-loop benchmark (docs/engines.md): the segmentation runs at the model's
    # fixed 256x256 whatever the frame size (~3 ms), so most of the cost is per frame; the background
    # (capped at 256 px), feathering and composite grow with pixels. 256x256@30 ~ 0.3 (busy 0.37 measured
    # under load), 512x512@30 ~ 0.6 (busy 0.48), 128x128@30 ~ 0.225.
    compute_share_per_mpix_per_s=0.1 / 1.966,
    compute_share_per_fps=0.2 / 30,
    base_memory_bytes=8 << 20, memory_bytes_per_pixel=(3 + 3 + 1 + 3) * 4,
)

BUILTIN_SPECS = (IDENTITY, DREAMFIELD, DREAMFIELD_CHUNKED, STYLIZE, BACKDROP)

# --- Engines that load real weights from a local folder ($NEXTFRAME_MODEL_DIR/<folder>/) -----------
# Listed only when their folder exists and looks whole (inference/engines/local.py). Costs are the CPU
# device's; at load the engine replaces base_memory_bytes with what its weights take (measured).

_SD_COMMON_PARAMS = [
    ParamSpec("steps", "int", 1, 1, 4, description="denoising steps per frame (StreamDiffusion: 1-4)"),
    ParamSpec("guidance", "float", 1.2, 0.0, 20.0, description="classifier-free guidance scale (used when cfg != none)"),
    ParamSpec("cfg", "enum", "self", choices=("none", "full", "self"),
              description="none; full (a second, unconditional UNet pass); self (residual CFG: the "
                          "stored noise stands in for the unconditional prediction, no extra pass)"),
    ParamSpec("seed", "int", -1, -1, 2**31 - 1, description="noise seed; -1 = the session's seed"),
    ParamSpec("stream_batch", "bool", True,
              description="run the denoising steps of successive frames as one batch (output lags steps-1 frames)"),
]

_SD_COMMON: dict[str, Any] = dict(
    default_width=256, default_height=256, max_width=1024, max_height=1024,
    default_fps=30.0, max_fps=60.0, chunk_frames=1, max_prompt_chars=1000,
    # A tiny model on the CPU; a real SD-Turbo folder is calibrated by the pool's measured step times.
    compute_share_per_mpix_per_s=0.3 / 1.966, compute_share_per_fps=0.003,
    base_memory_bytes=64 << 20, memory_bytes_per_pixel=64,
    extra={"model_folder": "sd-stream"},
)

SD_STREAM = EngineSpec(
    id="sd-stream", kind="video-to-video", declared_tier="interactive", price_per_gpu_second="0.0010",
    description="StreamDiffusion-style img2img on a Stable Diffusion folder (diffusers layout): "
                "stream batch, residual CFG, similarity filter, prompt-embedding cache.",
    params=[
        ParamSpec("strength", "float", 0.5, 0.05, 1.0, description="how far each frame is re-noised (img2img strength)"),
        *_SD_COMMON_PARAMS,
        ParamSpec("similarity_filter", "bool", True,
                  description="skip near-identical inputs (the previous output is sent again; counted)"),
        ParamSpec("similarity_threshold", "float", 0.98, 0.5, 1.0,
                  description="cosine similarity above which an input may be skipped (stochastically)"),
    ],
    persistent_state="the prompt embedding, the stream-batch latents of frames still in flight, the stored "
                     "noise, the previous input and output (similarity filter)",
    **_SD_COMMON)

SD_STREAM_T2V = EngineSpec(
    id="sd-stream-t2v", kind="text-to-video", declared_tier="interactive", price_per_gpu_second="0.0010",
    description="The sd-stream folder as text-to-video: txt2img from a noise that drifts over time.",
    params=[*_SD_COMMON_PARAMS,
            ParamSpec("motion", "float", 0.2, 0.0, 2.0, description="how fast the starting noise drifts (per second)")],
    persistent_state="the prompt embedding, the drifting noise and its time, the stream-batch latents",
    **_SD_COMMON)

_CAUSAL_PARAMS = [
    ParamSpec("steps", "int", 2, 1, 4, description="flow-matching denoising steps per chunk"),
    ParamSpec("window", "int", 8, 1, 64, description="latent frames kept in the rolling KV cache (besides the sinks)"),
    ParamSpec("sink", "int", 1, 0, 8, description="first latent frames kept forever as attention sinks"),
    ParamSpec("shift", "float", 5.0, 1.0, 12.0,
              description="sigma shift of the flow-matching schedule (Wan's flow_shift); higher = more structure change"),
    ParamSpec("recache", "bool", True,
              description="on a prompt switch, rebuild the cache of the kept frames under the new prompt "
                          "(false: clear it, the next frame starts a new shot)"),
    ParamSpec("seed", "int", -1, -1, 2**31 - 1, description="noise seed; -1 = the session's seed"),
]

_CAUSAL_COMMON: dict[str, Any] = dict(
    kind="text-to-video", default_width=64, default_height=64, max_width=1280, max_height=1280,
    default_fps=16.0, max_fps=30.0, params=_CAUSAL_PARAMS, max_prompt_chars=1000,
    persistent_state="a rolling KV cache per transformer block (sink frames + a fixed window, pre-RoPE keys), "
                     "the clean latents of the kept frames (for a re-cache), the frame counter",
    compute_share_per_mpix_per_s=0.3 / 0.065, compute_share_per_fps=0.004,
    base_memory_bytes=64 << 20, memory_bytes_per_pixel=64,
    extra={"model_folder": "causal-video"},
)

CAUSAL_VIDEO = EngineSpec(
    id="causal-video", declared_tier="interactive", chunk_frames=1, price_per_gpu_second="0.0012",
    description="Autoregressive video from a Wan2.1-layout causal transformer (diffusers folder), one frame "
                "per step, rolling KV cache with attention sinks.",
    **_CAUSAL_COMMON)

CAUSAL_VIDEO_CHUNKED = EngineSpec(
    id="causal-video-chunked", declared_tier="streaming", chunk_frames=4, price_per_gpu_second="0.0010",
    description="causal-video generating chunks of 4 frames; controls land at the next chunk.",
    **_CAUSAL_COMMON)

LOCAL_SPECS = (SD_STREAM, SD_STREAM_T2V, CAUSAL_VIDEO, CAUSAL_VIDEO_CHUNKED)
