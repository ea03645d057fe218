"""Frame-loop benchmark: overhead and sustained FPS of the live loop against raw costs measured in the same run.

    python -m inference.bench.frame_loop            # full run, about a minute and a half
    python -m inference.bench.frame_loop --quick    # a few seconds per configuration
    python -m inference.bench.frame_loop --json out.json

For `identity` at 512x512 and `dreamfield` at 256x256, with 1, 4 and 8 concurrent sessions at 30 FPS,
and `backdrop` (person segmentation + generated background) with one session at 256x256 and 512x512:
per-frame latency p50/p99 (input received -> output ready; for text-to-video, slot start -> output
ready), sustained FPS per session, deadline misses and drops. Beside them, the baselines measured in
this run: a bare JPEG decode+encode (identity's unavoidable work), a bare dreamfield step+encode and a
bare backdrop decode+step+encode per size; the ratios say what the loop adds on top.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from typing import Any

import numpy as np

from ..codec import decode_jpeg, encode_jpeg
from ..engines import get_engine
from ..engines.base import StepInput
from ..runtime import DeviceRuntime, OutputFrame, SessionConfig
from ..runtime.device import default_torch_threads

SESSION_COUNTS = (1, 4, 8)
FPS = 30.0


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def _picture(size: int) -> np.ndarray:
    """A textured test picture (a dreamfield frame): JPEG costs depend on content, flat frames flatter."""
    e = get_engine("dreamfield")
    p = {**e.spec.default_params(), "detail": 2.0}
    return e.render_clip(e.new_state(size, size, "benchmark", p, 0), 1, "benchmark", p)[0]


def _time_per_call(fn: Any, seconds: float) -> list[float]:
    fn()  # warm-up
    out = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def baseline_codec(size: int, seconds: float) -> dict[str, float]:
    pic = _picture(size)
    data = encode_jpeg(pic)
    times = _time_per_call(lambda: encode_jpeg(decode_jpeg(data, size, size)), seconds)
    return {"decode_encode_ms_p50": _pct(times, 50), "decode_encode_ms_p99": _pct(times, 99),
            "jpeg_bytes": len(data)}


def baseline_backdrop(size: int, seconds: float) -> dict[str, float]:
    """One backdrop frame's whole work outside the loop: JPEG decode, step (mode generate), JPEG encode."""
    e = get_engine("backdrop")
    p = e.spec.default_params()
    st = e.new_state(size, size, "benchmark", p, 0)
    data = encode_jpeg(_picture(size))

    def one() -> None:
        encode_jpeg(e.step([StepInput(st, decode_jpeg(data, size, size), "benchmark", p, 0, 0)])[0].frames[0])

    times = _time_per_call(one, seconds)
    return {"decode_step_encode_ms_p50": _pct(times, 50), "decode_step_encode_ms_p99": _pct(times, 99),
            "bare_fps": 1000.0 / statistics.median(times)}


def baseline_dreamfield(size: int, seconds: float) -> dict[str, float]:
    e = get_engine("dreamfield")
    p = e.spec.default_params()
    st = e.new_state(size, size, "benchmark", p, 0)

    def one() -> None:
        encode_jpeg(e.step([StepInput(st, None, "benchmark", p, 0, 0)])[0].frames[0])

    times = _time_per_call(one, seconds)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    step_only = _time_per_call(lambda: e.step([StepInput(st, None, "benchmark", p, 0, 0)]), seconds / 2)
    # CPU time of the whole process per step: what a frame costs, whoever else shares the cores.
    cpu_ms = (time.process_time() - cpu0) * 1000.0 / (len(step_only) + 1)
    return {"step_encode_ms_p50": _pct(times, 50), "step_encode_ms_p99": _pct(times, 99),
            "bare_step_fps": 1000.0 / statistics.median(step_only), "bare_step_cpu_ms": cpu_ms,
            "bare_step_wall_s": time.perf_counter() - wall0}


class _Counter:
    def __init__(self) -> None:
        self.n = 0
        self.lock = threading.Lock()

    def __call__(self, f: OutputFrame) -> bool:
        with self.lock:
            self.n += 1
        return True


def run_loop(engine_id: str, size: int, sessions: int, seconds: float, warmup: float,
             torch_threads: int) -> dict[str, Any]:
    """Open `sessions` sessions at 30 FPS on one runtime; feed inputs at 30 FPS for video-to-video."""
    counters = [_Counter() for _ in range(sessions)]
    with DeviceRuntime(device_id="bench", torch_threads=torch_threads) as rt:
        hs = [rt.open_session(SessionConfig(engine_id, width=size, height=size, fps=FPS, prompt=f"s{i}", seed=i),
                              counters[i]) for i in range(sessions)]
        stop = threading.Event()
        feeder = None
        if hs[0].spec.kind == "video-to-video":
            data = encode_jpeg(_picture(size))

            def feed() -> None:
                seq, t_next = 0, time.monotonic()
                while not stop.is_set():
                    seq += 1
                    for h in hs:
                        h.submit_frame(seq & 0xFFFFFFFF, int(time.time() * 1e6), data)
                    t_next += 1.0 / FPS
                    stop.wait(max(0.0, t_next - time.monotonic()))

            feeder = threading.Thread(target=feed, name="bench-feeder", daemon=True)
            feeder.start()
        time.sleep(warmup)
        start_counts = [c.n for c in counters]
        base = [h.metrics() for h in hs]
        t0 = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        ms = [h.metrics() for h in hs]
        dev = rt.device_metrics()
        stop.set()
        if feeder is not None:
            feeder.join()
    fps = [(c.n - s0) / elapsed for c, s0 in zip(counters, start_counts)]
    # Latency percentiles come from each session's recent window (last 1024 frames) - the measured period.
    return {
        "engine": engine_id, "size": size, "sessions": sessions, "seconds": round(elapsed, 2),
        "latency_ms_p50": statistics.median(m.latency_ms["p50"] for m in ms),
        "latency_ms_p99": max(m.latency_ms["p99"] for m in ms),
        "fps_per_session": round(statistics.mean(fps), 2), "fps_min_session": round(min(fps), 2),
        "fps_total": round(sum(fps), 1),
        "deadline_misses": sum(m.deadline_misses - b.deadline_misses for m, b in zip(ms, base)),
        "dropped_inputs": sum(m.dropped_inputs - b.dropped_inputs for m, b in zip(ms, base)),
        "busy_fraction": dev["busy_fraction"], "batch_sizes": dev["batch_sizes"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs (smoke check of the numbers)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="torch intra-op threads for baselines and runtime (default: the runtime's default)")
    args = ap.parse_args(argv)
    secs, warm, base_s = (1.5, 0.5, 0.5) if args.quick else (8.0, 1.5, 2.0)
    import torch

    # The baselines run with the same intra-op thread count as the runtime's worker.
    threads = args.torch_threads or default_torch_threads()
    torch.set_num_threads(threads)
    load_before = os.getloadavg()[0]

    print(f"# frame loop benchmark: torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} CPUs, {'quick' if args.quick else 'full'} run, load average {load_before:.2f}",
          flush=True)
    codec512 = baseline_codec(512, base_s)
    dream256 = baseline_dreamfield(256, base_s)
    print(f"baseline: JPEG decode+encode 512x512  p50 {codec512['decode_encode_ms_p50']:.2f} ms  "
          f"p99 {codec512['decode_encode_ms_p99']:.2f} ms  ({codec512['jpeg_bytes']} B/frame)")
    print(f"baseline: dreamfield step+encode 256x256  p50 {dream256['step_encode_ms_p50']:.2f} ms  "
          f"p99 {dream256['step_encode_ms_p99']:.2f} ms  (bare step {dream256['bare_step_fps']:.0f} FPS, "
          f"{dream256['bare_step_cpu_ms']:.1f} CPU-ms/step)")
    backdrop = {size: baseline_backdrop(size, base_s) for size in (256, 512)}
    for size, b in backdrop.items():
        print(f"baseline: backdrop decode+step+encode {size}x{size}  p50 {b['decode_step_encode_ms_p50']:.2f} ms  "
              f"p99 {b['decode_step_encode_ms_p99']:.2f} ms  ({b['bare_fps']:.0f} FPS on one thread)")
    results = []
    hdr = (f"{'engine':<11}{'size':>5}{'sess':>5}{'lat p50':>9}{'lat p99':>9}{'x base':>8}"
           f"{'fps/sess':>9}{'min':>7}{'total':>7}{'miss':>6}{'drop':>6}{'busy':>6}")
    print(hdr)
    for engine_id, size, base, counts in (
            ("identity", 512, codec512["decode_encode_ms_p50"], SESSION_COUNTS),
            ("dreamfield", 256, dream256["step_encode_ms_p50"], SESSION_COUNTS),
            ("backdrop", 256, backdrop[256]["decode_step_encode_ms_p50"], (1,)),
            ("backdrop", 512, backdrop[512]["decode_step_encode_ms_p50"], (1,))):
        for n in counts:
            r = run_loop(engine_id, size, n, secs, warm, threads)
            r["baseline_ms_p50"] = round(base, 3)
            r["ratio_p50"] = round(r["latency_ms_p50"] / base, 2)
            r["ratio_p99"] = round(r["latency_ms_p99"] / base, 2)
            results.append(r)
            print(f"{engine_id:<11}{size:>5}{n:>5}{r['latency_ms_p50']:>9.2f}{r['latency_ms_p99']:>9.2f}"
                  f"{r['ratio_p50']:>8.2f}{r['fps_per_session']:>9.2f}{r['fps_min_session']:>7.2f}"
                  f"{r['fps_total']:>7.1f}{r['deadline_misses']:>6}{r['dropped_inputs']:>6}"
                  f"{r['busy_fraction']:>6.2f}", flush=True)
    print("lat = input received (text-to-video: frame slot start) -> output ready, ms; "
          "x base = lat p50 / baseline p50 of the same engine's bare work")
    load_after = os.getloadavg()[0]
    print(f"load average after: {load_after:.2f} (this run's own load is up to ~2; more means other processes "
          f"shared the CPUs and the numbers are pessimistic)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"baselines": {"codec_512": codec512, "dreamfield_256": dream256,
                                     "backdrop": {str(k): v for k, v in backdrop.items()}}, "runs": results,
                       "load_average": [load_before, load_after]}, fh,
                      indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
