"""Moderation benchmark: what the checks cost the frame loop, measured against baselines in the same run.

    python -m moderation.bench            # about two minutes on the 2-core dev machine
    python -m moderation.bench --quick    # a few seconds per measurement
    python -m moderation.bench --json out.json

1. The synchronous gate per output frame (pHash + a 1,000-entry hash list + the sampled
   classifier's hand-off), p50/p99 at 256 and 512 px, beside a JPEG encode of the same frame (the
   post stage's unavoidable work) -> ratio; and the `strict` gate (every frame classified).
2. The classifier (open_nsfw on onnxruntime, one thread) per frame, p50/p99, and the prompt check.
3. The exposure window at the default sampling (every 5th frame, 30 FPS): frames sent after the
   first violating frame before the first replaced one, over every sampling phase. The verdicts come
   from a marker in the frame, the latency from running the real open_nsfw on it.
4. Live capacity: dreamfield at 128 px (--capacity-size), 30 FPS, N sessions on one DeviceRuntime with moderation off
   and on (hashes + sampled classifier), side by side: sessions that keep their deadlines.
No Django, no database: the pure core only.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import numpy as np

from inference.bench import frame_loop
from inference.bench.frame_loop import _time_per_call
from inference.codec import encode_jpeg
from inference.engines import get_engine
from inference.runtime import DeviceRuntime, SessionConfig
from moderation import phash, text
from moderation.classifier import ClassifierWorker, ImageClassifier, open_nsfw
from moderation.gate import FrameGate
from moderation.policy import Policy

FPS = 30.0


def _pct(xs: list[float], q: float) -> float:
    return round(frame_loop._pct(xs, q), 3)


def _picture(size: int, seed: int = 0) -> np.ndarray:
    e = get_engine("dreamfield")
    p = {**e.spec.default_params(), "detail": 2.0}
    return e.render_clip(e.new_state(size, size, f"bench{seed}", p, seed), 1, "bench", p)[0]


def _hash_list(n: int = 1000) -> phash.HashList:
    rng = np.random.default_rng(1)
    return phash.HashList([(int(h), "bench") for h in rng.integers(0, 2**63, n, dtype=np.int64)])


def gate_cost(size: int, seconds: float, classifier: ImageClassifier) -> dict[str, Any]:
    frames = [_picture(size, s) for s in range(4)]
    worker = ClassifierWorker(classifier)
    gate = FrameGate(Policy(), _hash_list(), classifier=classifier, worker=worker)
    i = [0]

    def check() -> None:
        gate.check(i[0], frames[i[0] % 4])
        i[0] += 1

    gate_ms = _time_per_call(check, seconds)
    worker.stop()
    strict = FrameGate(Policy(frame_classifier="strict", classifier_threshold=0.9), _hash_list(), classifier=classifier)
    strict_ms = _time_per_call(lambda: strict.check(0, frames[1]), seconds)
    hash_ms = _time_per_call(lambda: phash.phash(frames[0]), seconds / 2)
    encode_ms = _time_per_call(lambda: encode_jpeg(frames[0], 85), seconds / 2)
    return {"size": size, "gate_ms_p50": _pct(gate_ms, 50), "gate_ms_p99": _pct(gate_ms, 99),
            "phash_ms_p50": _pct(hash_ms, 50), "phash_ms_p99": _pct(hash_ms, 99),
            "jpeg_encode_ms_p50": _pct(encode_ms, 50),
            "gate_over_encode_p50": round(_pct(gate_ms, 50) / _pct(encode_ms, 50), 3),
            "strict_gate_ms_p50": _pct(strict_ms, 50), "strict_gate_ms_p99": _pct(strict_ms, 99),
            "samples_skipped": gate.samples_skipped}


def classifier_cost(size: int, seconds: float, classifier: ImageClassifier) -> dict[str, Any]:
    frame = _picture(size)
    ms = _time_per_call(lambda: classifier.score(frame), seconds)
    return {"size": size, "classifier_ms_p50": _pct(ms, 50), "classifier_ms_p99": _pct(ms, 99)}


def prompt_cost(seconds: float) -> dict[str, Any]:
    classifier = text.shared_classifier()
    t0 = time.perf_counter()
    classifier.warm()
    load_s = time.perf_counter() - t0
    prompts = ["a slow red tide over the ocean at dusk", "a p.o.r.n video", "Scunthorpe United at home"]
    i = [0]

    def check() -> None:
        text.check_prompt(prompts[i[0] % 3], classifier=classifier)
        i[0] += 1

    ms = _time_per_call(check, seconds)
    terms_ms = _time_per_call(lambda: text.check_prompt(prompts[0]), seconds / 2)
    return {"prompt_check_ms_p50": _pct(ms, 50), "prompt_check_ms_p99": _pct(ms, 99),
            "terms_only_ms_p50": _pct(terms_ms, 50), "classifier_load_s": round(load_s, 2)}


class MarkerClassifier:
    """The real classifier's cost, a known verdict: a frame whose corner pixel is 255 violates."""

    category = "bench"

    def __init__(self, real: ImageClassifier) -> None:
        self.real = real

    def score(self, pixels: np.ndarray) -> float:
        self.real.score(pixels)
        return 1.0 if pixels[0, 0, 0] == 255 else 0.0


def exposure_window(size: int, classifier: ImageClassifier, every_n: int = 5, phases: int = 10,
                    duty: float = 0.25) -> dict[str, Any]:
    """Frames at 30 FPS; from frame V on every frame violates; count the frames sent before a replacement."""
    clean = _picture(size)
    clean[0, 0, 0] = 0
    bad = clean.copy()
    bad[0, 0, 0] = 255
    marker = MarkerClassifier(classifier)
    windows: list[int] = []
    worker = ClassifierWorker(marker, queue_size=1, max_duty=duty)
    for phase in range(phases):
        gate = FrameGate(Policy(classifier_every_n_frames=every_n, max_violations=1000), phash.HashList(),
                         classifier=marker, worker=worker)
        start_bad = 3 * every_n + phase
        first_replaced = None
        t_next = time.perf_counter()
        for i in range(start_bad + 60):
            decision = gate.check(i, bad if i >= start_bad else clean)
            if decision is not None and i >= start_bad:
                first_replaced = i
                break
            t_next += 1.0 / FPS
            time.sleep(max(0.0, t_next - time.perf_counter()))
        worker.join_idle()
        windows.append(-1 if first_replaced is None else first_replaced - start_bad)
    worker.stop()
    return {"size": size, "every_n_frames": every_n, "fps": FPS, "exposure_frames": windows,
            "exposure_frames_mean": round(statistics.mean(windows), 2), "exposure_frames_max": max(windows),
            "exposure_ms_max": round(max(windows) * 1000 / FPS, 1)}


def live_capacity(size: int, counts: tuple[int, ...], seconds: float, moderated: bool,
                  classifier: ImageClassifier, duty: float = 0.25) -> list[dict[str, Any]]:
    rows = []
    for sessions in counts:
        gates: dict[str, FrameGate] = {}
        worker = ClassifierWorker(classifier, queue_size=1, max_duty=duty)  # as the live glue builds it
        hashes = _hash_list()

        def hook(session_id: str, frame_index: int, pixels: np.ndarray, gates: dict[str, FrameGate] = gates,
                 hashes: phash.HashList = hashes, worker: ClassifierWorker = worker) -> np.ndarray | None:
            gate = gates.get(session_id)
            if gate is None:
                gate = gates[session_id] = FrameGate(Policy(), hashes, classifier=classifier, worker=worker)
            decision = gate.check(frame_index, pixels)
            return None if decision is None else decision.replacement

        counters = [frame_loop._Counter() for _ in range(sessions)]
        with DeviceRuntime(device_id="bench", moderation_hook=hook if moderated else None) as rt:
            hs = [rt.open_session(SessionConfig("dreamfield", width=size, height=size, fps=FPS, prompt=f"s{i}",
                                                seed=i), counters[i]) for i in range(sessions)]
            time.sleep(1.0)
            base = [h.metrics() for h in hs]
            c0 = [c.n for c in counters]
            t0 = time.monotonic()
            time.sleep(seconds)
            elapsed = time.monotonic() - t0
            ms = [h.metrics() for h in hs]
        worker.stop()
        fps = [(c.n - s) / elapsed for c, s in zip(counters, c0)]
        misses = sum(m.deadline_misses - b.deadline_misses for m, b in zip(ms, base))
        frames = sum(c.n - s for c, s in zip(counters, c0))
        rows.append({"moderation": "on" if moderated else "off", "sessions": sessions,
                     "fps_min_session": round(min(fps), 2), "deadline_miss_rate": round(misses / max(1, frames), 3),
                     "within_deadline": min(fps) >= 0.95 * FPS and misses <= 0.02 * frames,
                     "samples_skipped": sum(g.samples_skipped for g in gates.values())})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--capacity-size", type=int, default=128,
                        help="frame size of the capacity comparison (default 128: on the 2-core dev machine one "
                             "dreamfield session at 256 px already misses its deadlines)")
    parser.add_argument("--duty", type=float, default=0.25, help="the classifier worker's max_duty (settings."
                        "MODERATION_CLASSIFIER_DUTY)")
    parser.add_argument("--only-capacity", action="store_true")
    args = parser.parse_args(argv)
    seconds = 1.5 if args.quick else 4.0
    classifier = open_nsfw()
    t0 = time.perf_counter()
    classifier.warm()
    import os

    result: dict[str, Any] = {"cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                              "open_nsfw_load_s": round(time.perf_counter() - t0, 2)}
    if not args.only_capacity:
        result["gate"] = [gate_cost(s, seconds, classifier) for s in (256, 512)]
        result["classifier"] = [classifier_cost(s, seconds, classifier) for s in (256, 512)]
        result["prompt"] = prompt_cost(seconds)
        result["exposure"] = exposure_window(256, classifier, phases=5 if args.quick else 10, duty=args.duty)
    counts = (1, 2, 4) if args.quick else (1, 2, 3, 4, 6)
    off = live_capacity(args.capacity_size, counts, seconds, False, classifier)
    on = live_capacity(args.capacity_size, counts, seconds, True, classifier, args.duty)
    result["capacity"] = off + on
    cap_off = max([r["sessions"] for r in off if r["within_deadline"]], default=0)
    cap_on = max([r["sessions"] for r in on if r["within_deadline"]], default=0)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["capacity_sessions"] = {"size": args.capacity_size, "off": cap_off, "on": cap_on,
                                   "lost_fraction": round(1 - cap_on / cap_off, 3) if cap_off else None}
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
