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

DREAM_LATENT_DIM = 8
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

BUILTIN_SPECS = (IDENTITY, DREAMFIELD, DREAMFIELD_CHUNKED, STYLIZE)
