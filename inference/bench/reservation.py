"""Does a reservation bound compute? Sessions fed faster than their declared fps, beside another tenant.

    python -m inference.bench.reservation            # two scenarios, 12 s each
    python -m inference.bench.reservation --seconds 5 --json out.json

A session's reservation (and its bill) is its engine's cost at the declared size and fps. This runs
the frame loop (`DeviceRuntime`, in process, real clock, real engines) with clients that send
30 frames a second whatever they declared:

0. `victim alone`: the baseline of scenario 1;
1. `noisy neighbours`: one `stylize` 256x256 session declared at 30 fps (the victim, 0.25 of the
   device) beside four `stylize` 512x512 sessions declared at 1 fps (0.023 each, 0.09 in all);
2. `cheap reservation`: one `identity` 1024x1024 session declared at 1 fps (0.009 of the device).

It reports each session's output fps, the steps it took per second, its dropped inputs, and the
device's step-busy fraction and the process's CPU seconds per second. With work bounded by the
reservation, the 1 fps sessions make about one frame a second and the victim keeps its 30 fps.
"""
from __future__ import annotations

import argparse
import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..codec import encode_jpeg
from ..engines import get_spec
from ..runtime import DeviceRuntime, OutputFrame, SessionConfig

FEED_FPS = 30.0


@dataclass
class Tracked:
    name: str
    engine: str
    size: int
    fps: float
    outputs: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_output(self, out: OutputFrame) -> bool:
        with self.lock:
            self.outputs.append(time.monotonic())
        return True


def _picture(size: int, seed: int) -> bytes:
    """A textured frame (smooth gradients plus mild noise): JPEG and the engines cost what they would."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = np.stack([np.sin(9 * xx + 3 * yy), np.cos(7 * yy - 2 * xx), np.sin(5 * (xx + yy))], -1)
    pixels = (base * 90 + 128 + rng.normal(0, 12, (size, size, 3))).clip(0, 255).astype(np.uint8)
    return encode_jpeg(pixels, 85)


def run_scenario(name: str, sessions: list[Tracked], seconds: float) -> dict[str, Any]:
    rt = DeviceRuntime(device_id="cpu:0")
    rt.start()
    handles = [rt.open_session(SessionConfig(s.engine, width=s.size, height=s.size, fps=s.fps), s.on_output)
               for s in sessions]
    frames = {s.size: _picture(s.size, i) for i, s in enumerate(sessions)}
    stop = threading.Event()

    def feed() -> None:
        seq, start = 0, time.monotonic()
        while not stop.is_set():
            seq += 1
            for s, h in zip(sessions, handles):
                h.submit_frame(seq, seq, frames[s.size])
            delay = start + seq / FEED_FPS - time.monotonic()
            if delay > 0:
                stop.wait(delay)

    feeder = threading.Thread(target=feed, name="bench-feeder", daemon=True)
    warmup = 2.0
    feeder.start()
    time.sleep(warmup)
    steps0 = rt.core.metrics.steps
    busy0 = rt.core.metrics.stage_busy_s["step"]
    cpu0, t0 = time.process_time(), time.monotonic()
    time.sleep(seconds)
    t1, cpu1 = time.monotonic(), time.process_time()
    busy = (rt.core.metrics.stage_busy_s["step"] - busy0) / (t1 - t0)
    stop.set()
    feeder.join()
    rows = []
    for s, h in zip(sessions, handles):
        with s.lock:
            n = sum(1 for t in s.outputs if t0 <= t < t1)
        m = h.metrics()
        share = get_spec(s.engine).cost(s.size, s.size, s.fps).compute_share
        rows.append({"session": s.name, "engine": s.engine, "size": s.size, "declared_fps": s.fps,
                     "reserved_share": share, "fps_out": round(n / (t1 - t0), 2),
                     "dropped_inputs": m.dropped_inputs, "deadline_misses": m.deadline_misses})
    rt.stop()
    return {"scenario": name, "seconds": round(t1 - t0, 2), "rows": rows,
            "device_step_busy": round(busy, 3), "cpu_s_per_s": round((cpu1 - cpu0) / (t1 - t0), 3),
            "steps": rt.core.metrics.steps - steps0}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    results = [
        run_scenario("victim alone (the baseline)", [Tracked("victim", "stylize", 256, 30.0)], args.seconds),
        run_scenario("noisy neighbours",
                     [Tracked("victim", "stylize", 256, 30.0)]
                     + [Tracked(f"1fps-{i}", "stylize", 512, 1.0) for i in range(4)], args.seconds),
        run_scenario("cheap reservation", [Tracked("1fps-1024", "identity", 1024, 1.0)], args.seconds),
    ]
    print(f"load average before {load:.2f}, after {os.getloadavg()[0]:.2f}; clients send {FEED_FPS:.0f} frames/s")
    for r in results:
        print(f"\n{r['scenario']}: device step-busy {r['device_step_busy']:.2f}, "
              f"process CPU {r['cpu_s_per_s']:.2f} s/s, {r['steps']} steps in {r['seconds']} s")
        print(f"{'session':10} {'engine':9} {'size':>5} {'decl':>5} {'share':>7} {'fps out':>8} {'dropped in':>11} {'miss':>5}")
        for row in r["rows"]:
            print(f"{row['session']:10} {row['engine']:9} {row['size']:5d} {row['declared_fps']:5.0f} "
                  f"{row['reserved_share']:7.3f} {row['fps_out']:8.2f} {row['dropped_inputs']:11d} "
                  f"{row['deadline_misses']:5d}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"load_before": load, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
