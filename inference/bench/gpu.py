"""The diffusion engines' benchmark: sd-stream and causal-video FPS, per-frame latency, TTFF, clip vs live.

    python -m inference.bench.gpu               # full size on a GPU; tiny models on a CPU (it says so)
    python -m inference.bench.gpu --tiny        # force the tiny models (a quick check anywhere)
    python -m inference.bench.gpu --json out.json

Weights are random (the compute does not depend on their values): the folders are written with
`save_pretrained` to a temporary directory and loaded through the engines' own loading code.
- full size (CUDA): sd-stream with an SD-Turbo-sized UNet (SD 2.1 layout, 866 M parameters) and a
  TAESD-sized AutoencoderTiny at 512x512; the text encoder has CLIP-H's width but one layer (a
  prompt is encoded once and cached, it is not in the per-frame path). causal-video at Wan2.1-1.3B
  size (30 blocks, dim 1536, ffn 8960) with Wan's VAE at 480x832.
- tiny (CPU, or --tiny): the test suite's models at 64x64 (sd) and 32x32 (causal). Those numbers
  measure the Python and plumbing overhead, not a GPU; they are printed as such.
Rows: sd-stream 1 step batch 1 (one session, one frame per step); stream batch (4 sessions in one
UNet call, per-row timesteps); causal-video chunk 1 and chunk 4; each engine's clip tier vs its live
step loop at the same size. Published anchors are printed beside the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ANCHORS = [
    ("StreamDiffusion img2img, SD-Turbo 512x512 1 step, RTX 4090", "93.9 FPS"),
    ("Self-Forcing (Wan2.1-1.3B causal), chunked, one H100", "17 FPS"),
    ("StreamDiffusionV2, 4x H100", "58-65 FPS"),
    ("Goal on one H200", "sd-stream >= 200 FPS (512, 1 step); causal >= 2x Self-Forcing; TTFF <= 100 ms"),
]


def _machine() -> dict[str, Any]:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "gpu": gpu, "platform": platform.platform()}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _sd_full(folder: Path) -> None:
    from diffusers import AutoencoderTiny, LCMScheduler, UNet2DConditionModel

    from ..engines.diffusion.tiny import _index, clip_text_encoder, clip_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    UNet2DConditionModel(  # SD 2.1 / SD-Turbo layout
        sample_size=64, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
        block_out_channels=(320, 640, 1280, 1280)).save_pretrained(folder / "unet")
    AutoencoderTiny().save_pretrained(folder / "vae_tiny")  # TAESD's default config
    clip_text_encoder(hidden=1024, max_length=77).save_pretrained(folder / "text_encoder")
    clip_tokenizer(max_length=77).save_pretrained(folder / "tokenizer")
    LCMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(
        folder / "scheduler")
    _index(folder, {"unet": ("diffusers", "UNet2DConditionModel"), "vae_tiny": ("diffusers", "AutoencoderTiny"),
                    "text_encoder": ("transformers", "CLIPTextModel"), "tokenizer": ("transformers", "CLIPTokenizer"),
                    "scheduler": ("diffusers", "LCMScheduler")}, "StableDiffusionPipeline")


def _wan_full(folder: Path) -> None:
    from ..engines.diffusion.tiny import write_tiny_wan

    cfg = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
               out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
               qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
    write_tiny_wan(folder, transformer_config=cfg, vae_full=True)


def _time_steps(fn, n: int, frames_per_call: int, warmup: int = 3) -> dict[str, Any]:
    for _ in range(warmup):  # untimed: the first calls of a new shape pay allocation (and compile on CUDA)
        fn()
    _sync()
    lat = []
    t0 = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        fn()
        _sync()
        lat.append((time.perf_counter() - t) * 1000)
    total = time.perf_counter() - t0
    return {"fps": round(n * frames_per_call / total, 2), "step_ms_p50": round(statistics.median(lat), 2),
            "step_ms_p99": round(float(np.percentile(lat, 99)), 2), "calls": n}


def bench_sd(folder: Path, size: int, n: int) -> list[dict[str, Any]]:
    from ..engines.base import StepInput
    from ..engines.diffusion.sd_stream import SDStreamEngine

    e = SDStreamEngine(folder)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(8)]
    base = e.spec.resolve_params({"steps": 1, "cfg": "none", "similarity_filter": False})
    rows = []
    st = e.new_state(size, size, "a photo", base, 0)
    t = time.perf_counter()
    e.step([StepInput(st, frames[0], "a photo", base, 0, 0)])
    _sync()
    ttff = (time.perf_counter() - t) * 1000
    i = [0]

    def one() -> None:
        i[0] += 1
        e.step([StepInput(st, frames[i[0] % 8], "a photo", base, 0, i[0])])

    rows.append({"engine": "sd-stream", "case": f"{size}x{size} 1 step, batch 1", "ttff_ms": round(ttff, 2),
                 **_time_steps(one, n, 1)})
    states = [e.new_state(size, size, "a photo", base, s) for s in range(4)]

    def four() -> None:
        i[0] += 1
        e.step([StepInput(s, frames[(i[0] + k) % 8], "a photo", base, 0, i[0]) for k, s in enumerate(states)])

    rows.append({"engine": "sd-stream", "case": f"{size}x{size} 1 step, stream batch of 4 sessions",
                 **_time_steps(four, max(1, n // 2), 4)})
    p2 = {**base, "steps": 2, "strength": 0.6}
    st2 = e.new_state(size, size, "a photo", p2, 0)

    def two_steps() -> None:
        i[0] += 1
        e.step([StepInput(st2, frames[i[0] % 8], "a photo", p2, 0, i[0])])

    rows.append({"engine": "sd-stream", "case": f"{size}x{size} 2 steps, stream batch (2 stages per call)",
                 **_time_steps(two_steps, n, 1)})
    clip_frames = np.stack([frames[k % 8] for k in range(n)])
    t = time.perf_counter()
    e.render_clip(e.new_state(size, size, "a photo", base, 0), n, "a photo", base, clip_frames)
    _sync()
    clip_fps = n / (time.perf_counter() - t)
    live_fps = rows[0]["fps"]
    rows.append({"engine": "sd-stream", "case": f"{size}x{size} clip tier (8 frames per UNet call)",
                 "fps": round(clip_fps, 2), "vs_live": round(clip_fps / live_fps, 2)})
    return rows


def bench_causal(folder: Path, width: int, height: int, n: int) -> list[dict[str, Any]]:
    from ..engines.base import StepInput
    from ..engines.diffusion.causal_video import CausalVideoChunkedEngine, CausalVideoEngine

    rows = []
    live_fps = 1.0
    for cls in (CausalVideoEngine, CausalVideoChunkedEngine):
        e = cls(folder)
        k = e.spec.chunk_frames
        p = e.spec.resolve_params({"steps": 4 if torch.cuda.is_available() else 2})
        st = e.new_state(width, height, "a beach", p, 0)
        t = time.perf_counter()
        e.step([StepInput(st, None, "a beach", p, 0, 0)])
        _sync()
        ttff = (time.perf_counter() - t) * 1000
        row = {"engine": e.spec.id, "case": f"{width}x{height} chunk {k}, {p['steps']} steps", "ttff_ms": round(ttff, 2),
               **_time_steps(lambda e=e, st=st, p=p: e.step([StepInput(st, None, "a beach", p, 0, 1)]), n, k)}
        rows.append(row)
        if k == 1:
            live_fps = row["fps"]
    e = CausalVideoEngine(folder)
    p = e.spec.resolve_params({"steps": 4 if torch.cuda.is_available() else 2})
    t = time.perf_counter()
    e.render_clip(e.new_state(width, height, "a beach", p, 0), 4 * n, "a beach", p)
    _sync()
    fps = 4 * n / (time.perf_counter() - t)
    rows.append({"engine": "causal-video", "case": f"{width}x{height} clip tier (chunks of 4)", "fps": round(fps, 2),
                 "vs_live": round(fps / live_fps, 2)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny models even on a GPU")
    ap.add_argument("--steps", type=int, default=None, help="timed calls per row")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    gpu = torch.cuda.is_available() and not args.tiny
    n = args.steps or (50 if gpu else 10)
    if not gpu:
        torch.set_num_threads(1)
    machine = _machine()
    print(f"machine: {machine}")
    if not gpu:
        print("NO GPU: tiny models on the CPU (sd 64x64, causal 32x32, one torch thread). These numbers measure "
              "the engines' plumbing, not a GPU; the GPU rows need CUDA.")
    from ..engines.diffusion.tiny import write_tiny_sd, write_tiny_wan

    with tempfile.TemporaryDirectory() as tmp:
        sd, wan = Path(tmp) / "sd-stream", Path(tmp) / "causal-video"
        if gpu:
            _sd_full(sd)
            _wan_full(wan)
        else:
            write_tiny_sd(sd, vae="tiny", scheduler="lcm")
            write_tiny_wan(wan)
        rows = bench_sd(sd, 512 if gpu else 64, n)
        rows += bench_causal(wan, 832 if gpu else 32, 480 if gpu else 32, n if gpu else max(3, n // 2))
    print(f"\n{'engine':22} {'case':48} {'FPS':>8} {'p50 ms':>8} {'p99 ms':>8} {'TTFF ms':>8} {'vs live':>8}")
    for r in rows:
        def col(key: str, r: dict[str, Any] = r) -> str:
            return f"{r[key]:8}" if key in r else f"{'':8}"
        print(f"{r['engine']:22} {r['case']:48} {col('fps')} {col('step_ms_p50')} {col('step_ms_p99')} "
              f"{col('ttff_ms')} {col('vs_live')}")
    print("\npublished anchors (not measured here):")
    for name, value in ANCHORS:
        print(f"  {name}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "gpu": gpu, "rows": rows, "anchors": ANCHORS},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
