"""Clip tier vs live session: frames per second through each path, same engine, same resolution.

    python -m inference.bench.clip_vs_live                  # dreamfield, stylize and backdrop at 256x256
    python -m inference.bench.clip_vs_live --quick          # shorter runs
    python -m inference.bench.clip_vs_live --engine dreamfield --size 128 --json out.json

Clip tier (fast-batch): `inference.batch.render_frames` in batches streamed into
`inference.video.encode_mp4` (H.264 MP4 on the encoder's own thread: what a clip job does between
claiming its lease and storing the file), as fast as the device allows. Live: a `DeviceRuntime` session of the same engine at the same size, asking for the
engine's maximum fps, output frames counted after a warm-up (each is JPEG-encoded for the socket).
A live session is paced: it never produces more than its fps, so the ratio shows what batching
without a deadline buys. Both run in this process, one after the other, on the same device.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from typing import Any

import numpy as np

from ..batch import render_frames
from ..codec import encode_jpeg
from ..engines import get_engine
from ..runtime import DeviceRuntime, OutputFrame, SessionConfig
from ..video import encode_mp4


def _inputs(n: int, size: int) -> list[np.ndarray]:
    """A moving test picture for video-to-video engines (content matters for codec costs)."""
    y, x = np.mgrid[0:size, 0:size]
    return [np.stack([(x + 3 * i) % 256, (y * 2 + i) % 256, (x ^ y) % 256], -1).astype(np.uint8) for i in range(n)]


def clip_tier(engine_id: str, size: int, fps: int, frames: int, batch: int) -> dict[str, Any]:
    """Render and encode one clip the way a clip job does (batches streamed into the encoder, which runs
    on its own thread); returns fps end to end, and render-only fps from a second, unencoded render."""
    spec = get_engine(engine_id).spec
    inputs = _inputs(frames, size) if spec.kind == "video-to-video" else None
    list(render_frames(engine_id, size, size, fps, min(frames, batch), "warm up", batch_size=batch,
                       input_frames=inputs))  # warm-up: weights, caches
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = encode_mp4(render_frames(engine_id, size, size, fps, frames, "benchmark", batch_size=batch,
                                          input_frames=inputs), os.path.join(tmp, "clip.mp4"), fps, size, size)
        total = time.perf_counter() - t0
    t1 = time.perf_counter()
    n = sum(1 for _ in render_frames(engine_id, size, size, fps, frames, "benchmark", batch_size=batch,
                                     input_frames=inputs))
    render_s = time.perf_counter() - t1
    return {"frames": result.frames, "batch": batch, "total_s": round(total, 3), "render_s": round(render_s, 3),
            "fps": round(result.frames / total, 2), "render_only_fps": round(n / render_s, 2), "codec": result.codec}


def live_session(engine_id: str, size: int, seconds: float, warmup: float) -> dict[str, Any]:
    """One live session at the engine's maximum fps; output frames per second after a warm-up."""
    spec = get_engine(engine_id).spec
    fps = spec.max_fps
    count = [0]
    lock = threading.Lock()

    def on_output(frame: OutputFrame) -> bool:
        with lock:
            count[0] += 1
        return True

    stop = threading.Event()
    with DeviceRuntime(device_id="bench") as rt:
        handle = rt.open_session(SessionConfig(engine_id, width=size, height=size, fps=fps, prompt="benchmark"),
                                 on_output)
        feeder = None
        if spec.kind == "video-to-video":
            jpegs = [encode_jpeg(f) for f in _inputs(30, size)]

            def feed() -> None:
                seq, t_next = 0, time.monotonic()
                while not stop.is_set():
                    handle.submit_frame(seq + 1, int(time.time() * 1e6), jpegs[seq % len(jpegs)])
                    seq += 1
                    t_next += 1.0 / fps
                    stop.wait(max(0.0, t_next - time.monotonic()))

            feeder = threading.Thread(target=feed, daemon=True)
            feeder.start()
        time.sleep(warmup)
        with lock:
            start = count[0]
        t0 = time.monotonic()
        time.sleep(seconds)
        with lock:
            produced = count[0] - start
        elapsed = time.monotonic() - t0
        stop.set()
        if feeder is not None:
            feeder.join()
    return {"requested_fps": fps, "frames": produced, "fps": round(produced / elapsed, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", action="append", help="engine id (repeatable; default dreamfield, stylize, backdrop)")
    ap.add_argument("--size", type=int, default=256, help="square frame side (default 256)")
    ap.add_argument("--frames", type=int, default=240, help="clip length in frames (default 240)")
    ap.add_argument("--batch", type=int, default=16, help="clip batch size in frames (default 16)")
    ap.add_argument("--quick", action="store_true", help="short runs")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args(argv)
    import torch

    engines = args.engine or ["dreamfield", "stylize", "backdrop"]
    frames = min(args.frames, 60) if args.quick else args.frames
    seconds, warmup = (1.5, 0.5) if args.quick else (5.0, 1.0)
    print(f"# clip tier vs live: torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, {args.size}x{args.size}", flush=True)
    print(f"{'engine':<12}{'clip fps':>10}{'render-only':>13}{'live fps':>10}{'live asked':>12}{'clip/live':>11}")
    results = []
    for engine_id in engines:
        clip = clip_tier(engine_id, args.size, 30, frames, args.batch)
        live = live_session(engine_id, args.size, seconds, warmup)
        ratio = clip["fps"] / live["fps"] if live["fps"] else float("inf")
        results.append({"engine": engine_id, "size": args.size, "clip": clip, "live": live, "ratio": round(ratio, 2)})
        print(f"{engine_id:<12}{clip['fps']:>10.1f}{clip['render_only_fps']:>13.1f}{live['fps']:>10.1f}"
              f"{live['requested_fps']:>12.0f}{ratio:>11.2f}", flush=True)
    print("clip fps = frames / (batched render streamed into the H.264 encoder); live fps = frames delivered per second by a session "
          "asking for the engine's max fps (paced; JPEG per frame)")
    print(f"load average after: {os.getloadavg()[0]:.2f} (other processes on the CPUs make both numbers pessimistic)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
