"""The per-session frame gate: every input and output frame passes `FrameGate.check` (no Django).

On every frame, synchronously: the perceptual hash against the platform's and the organisation's
lists; a listed image is replaced in the very frame it appears. Output frames also meet the image
classifier, as the policy says:
- `sampled` (default): every `classifier_every_n_frames`-th output frame is copied to the
  ClassifierWorker and the frame goes on at once. When a sample scores at or above the threshold,
  the session is *flagged*: its outputs are replaced from the next frame on, until a later sample
  scores below it. The frames sent between a violating frame and its first replacement are the
  exposure window (docs/moderation.md measures it).
- `strict`: every output frame is scored before it is sent (the latency cost is in the bench).
- `off`: hashes only.
A classifier that fails applies `fail_mode`: `closed` (the default) replaces the frame (strict) or
flags the session until a later sample succeeds (sampled), with category `unverified`; `open`
passes the frame and logs the failure. Each violation (a listed frame, a flagging sample) counts;
at `max_violations` the decision says `end` and the session ends with reason `moderation`.
Every decision goes to `record` (the audit log), off the frame path's critical work.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from moderation import phash
from moderation.classifier import ClassifierWorker, ImageClassifier, Sample
from moderation.policy import Policy

log = logging.getLogger(__name__)

UNVERIFIED = "unverified"
PLACEHOLDER_GREY = 128


def placeholder(like: np.ndarray) -> np.ndarray:
    """The neutral frame a violating one is replaced with: flat mid-grey of the same shape."""
    return np.full_like(like, PLACEHOLDER_GREY)


SAMPLE_SIZE = 256


def sample_of(pixels: np.ndarray) -> np.ndarray:
    """A copy for the classifier, decimated to about SAMPLE_SIZE px (open_nsfw resizes to 256 anyway):
    a 1024 px frame hands over 200 KB instead of 3 MB, and nothing large crosses threads."""
    step = max(1, min(pixels.shape[0], pixels.shape[1]) // SAMPLE_SIZE)
    return np.ascontiguousarray(pixels[::step, ::step])


def thumbnail(pixels: np.ndarray, size: int = 64) -> bytes:
    """A small JPEG of a flagged frame (kept only when the organisation opted in)."""
    from PIL import Image

    image = Image.fromarray(pixels)
    image.thumbnail((size, size))
    import io

    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=70)
    return buf.getvalue()


@dataclass(frozen=True)
class FrameDecision:
    """A frame that must not go out as it is: what replaces it, why, and whether the session ends."""

    category: str
    source: str  # "input" | "output"
    detector: str  # "hash" | "classifier"
    replacement: np.ndarray
    end: bool = False


Record = Callable[[dict[str, Any]], None]


class FrameGate:
    """One session's frame checks and state. `check` is called from the runtime's threads."""

    def __init__(self, policy: Policy, hashes: phash.HashList, *, classifier: ImageClassifier | None = None,
                 worker: ClassifierWorker | None = None, record: Record | None = None) -> None:
        self.policy, self.hashes = policy, hashes
        self.classifier, self.worker = classifier, worker
        self.record = record or (lambda event: None)
        self._lock = threading.Lock()
        self.violations = 0
        self.ended = False
        self.flagged: str | None = None  # category while the session's outputs are being replaced
        self._flag_sample = -1  # the sample that set (or last confirmed) the flag
        self._last_sample = -1
        self.samples_skipped = 0
        self.exposure: list[int] = []  # per flag: frames sent after the violating sample before replacement
        self._flag_pending_exposure: int | None = None
        self._last_output = -1

    @property
    def mode(self) -> str:
        return self.policy.frame_classifier if self.classifier is not None else "off"

    # -- the frame path --------------------------------------------------------------------------
    def check(self, frame_index: int, pixels: np.ndarray, source: str = "output") -> FrameDecision | None:
        """None to pass the frame; a decision to replace it (and maybe end the session)."""
        listed = self.hashes.match(phash.phash(pixels), self.policy.hash_max_distance) if len(self.hashes) else None
        if listed is not None:
            return self._violation(frame_index, pixels, source, "hash", listed.category,
                                   score=float(listed.distance), action="replaced")
        if source != "output":
            return None
        self._last_output = max(self._last_output, frame_index)
        mode = self.mode
        if mode == "strict":
            return self._strict(frame_index, pixels)
        if mode == "sampled":
            return self._sampled(frame_index, pixels)
        return None

    def _strict(self, frame_index: int, pixels: np.ndarray) -> FrameDecision | None:
        assert self.classifier is not None
        try:
            score = self.classifier.score(pixels)
        except Exception as exc:  # noqa: BLE001 - fail_mode decides
            log.exception("strict classifier failed on frame %d", frame_index)
            return self._failed(frame_index, pixels, exc)
        if score >= self.policy.classifier_threshold:
            return self._violation(frame_index, pixels, "output", "classifier", self.classifier.category,
                                   score=score, action="replaced")
        return None

    def _sampled(self, frame_index: int, pixels: np.ndarray) -> FrameDecision | None:
        assert self.classifier is not None
        if frame_index % self.policy.classifier_every_n_frames == 0 and self.worker is not None:
            sample = Sample(sample_of(pixels), frame_index, self._on_score)
            if not self.worker.submit(sample, self.classifier):
                self.samples_skipped += 1
        with self._lock:
            flagged = self.flagged
            if flagged is not None and self._flag_pending_exposure is not None:
                # Frames after the violating sample that went out before this first replacement.
                self.exposure.append(max(0, frame_index - self._flag_pending_exposure - 1))
                self._flag_pending_exposure = None
            end = self._end_now()
        if flagged is None:
            return None
        return FrameDecision(flagged, "output", "classifier", placeholder(pixels), end)

    # -- the classifier worker's results ---------------------------------------------------------
    def _on_score(self, frame_index: int, score: float | None, error: BaseException | None, seconds: float) -> None:
        assert self.classifier is not None
        with self._lock:
            if frame_index < self._last_sample:
                return  # an older sample finished after a newer one: the newer one decides
            self._last_sample = frame_index
            if error is not None:
                if self.policy.fail_mode == "closed":
                    self._flag(frame_index, UNVERIFIED)
                action, category = ("flagged" if self.policy.fail_mode == "closed" else "passed"), UNVERIFIED
                self.record({"frame": frame_index, "source": "output", "detector": "classifier",
                             "category": category, "score": None, "action": action,
                             "detail": f"classifier failed: {error}"[:200]})
                return
            assert score is not None
            if score >= self.policy.classifier_threshold:
                first = self.flagged is None
                self._flag(frame_index, self.classifier.category)
                if first:
                    self.violations += 1
                    self.record({"frame": frame_index, "source": "output", "detector": "classifier",
                                 "category": self.classifier.category, "score": round(score, 4),
                                 "action": "flagged", "detail": f"scored in {seconds * 1000:.1f} ms"})
            elif self.flagged is not None:
                self.flagged, self._flag_pending_exposure = None, None
                self.record({"frame": frame_index, "source": "output", "detector": "classifier",
                             "category": self.classifier.category, "score": round(score, 4), "action": "cleared",
                             "detail": ""})

    def _flag(self, frame_index: int, category: str) -> None:
        if self.flagged is None:
            self._flag_pending_exposure = frame_index
        self.flagged, self._flag_sample = category, frame_index

    # -- shared ---------------------------------------------------------------------------------
    def _failed(self, frame_index: int, pixels: np.ndarray, exc: BaseException) -> FrameDecision | None:
        if self.policy.fail_mode == "open":
            self.record({"frame": frame_index, "source": "output", "detector": "classifier", "category": UNVERIFIED,
                         "score": None, "action": "passed", "detail": f"classifier failed: {exc}"[:200]})
            return None
        self.record({"frame": frame_index, "source": "output", "detector": "classifier", "category": UNVERIFIED,
                     "score": None, "action": "replaced", "detail": f"classifier failed: {exc}"[:200]})
        with self._lock:
            end = self._end_now()
        return FrameDecision(UNVERIFIED, "output", "classifier", placeholder(pixels), end)

    def _violation(self, frame_index: int, pixels: np.ndarray, source: str, detector: str, category: str, *,
                   score: float | None, action: str) -> FrameDecision:
        with self._lock:
            self.violations += 1
            end = self._end_now()
        event: dict[str, Any] = {"frame": frame_index, "source": source, "detector": detector, "category": category,
                                 "score": score, "action": action, "detail": ""}
        if self.policy.keep_flagged_frames:
            event["thumbnail"] = thumbnail(pixels)
        self.record(event)
        return FrameDecision(category, source, detector, placeholder(pixels), end)

    def _end_now(self) -> bool:
        """True once, when the violations reach max_violations (the caller holds the lock)."""
        if not self.ended and self.violations >= self.policy.max_violations:
            self.ended = True
            return True
        return False
