"""Live sessions' moderation: the checks plugged into the session service's and the host's seams.

- `check_prompt` is the service's `prompt_check`, at session.start and at every control. At start it
  runs on a database thread: the organisation's snapshot (policy, terms, hash lists) is reloaded and
  the models are warmed there. A control runs on the event loop: it reads the cached snapshot only.
- `check_input` / `check_output` are the host's checks, on the runtime's decode and post threads.
- `open` (the host's `on_open`, in the service's start, on a database thread) loads the
  organisation's snapshot and makes the session's FrameGate; `release` drops it when the host lets
  the session go. A frame of a session without a gate is withheld (fail closed).
Nothing here is imported by `inference/`: the frame loop only ever sees the host's hook.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any

from django.conf import settings

from moderation import actions, text
from moderation.classifier import ClassifierWorker, ImageClassifier, shared_open_nsfw
from moderation.gate import FrameGate

if TYPE_CHECKING:
    import numpy as np

    from nextframe.live.host import FrameVerdict, SessionContext

log = logging.getLogger(__name__)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


class LiveModeration:
    def __init__(self, image_classifier: ImageClassifier | None = None,
                 prompt_classifier: text.PromptClassifier | None = None) -> None:
        self._image_classifier = image_classifier
        self._prompt_classifier = prompt_classifier
        self._worker: ClassifierWorker | None = None
        self._gates: dict[str, FrameGate] = {}
        self._lock = threading.Lock()
        self._image_warm = False

    # -- models, loaded lazily and once --------------------------------------------------------------
    def image_classifier(self) -> ImageClassifier:
        if self._image_classifier is None:
            self._image_classifier = shared_open_nsfw()
        return self._image_classifier

    def prompt_classifier(self) -> text.PromptClassifier | None:
        if self._prompt_classifier is None and getattr(settings, "MODERATION_PROMPT_CLASSIFIER", True):
            self._prompt_classifier = text.shared_classifier()
        return self._prompt_classifier

    def worker(self) -> ClassifierWorker:
        with self._lock:
            if self._worker is None:
                self._worker = ClassifierWorker(self.image_classifier(), queue_size=1,
                                                max_duty=float(getattr(settings, "MODERATION_CLASSIFIER_DUTY", 0.25)))
            return self._worker

    # -- prompts -------------------------------------------------------------------------------------
    def check_prompt(self, context: SessionContext, prompt: str) -> str | None:
        """None to let the prompt reach the model; else the refusal message (code `moderation`)."""
        on_loop = _on_event_loop()
        snap = actions.cached_snapshot(context.organization_id)
        if not on_loop or snap is None:
            snap = actions.refresh(context.organization_id) if not on_loop else None
            if snap is None:  # cannot happen after a start; refuse rather than pass unchecked
                return "the prompt could not be checked; try again"
        verdict = text.check_prompt(prompt, snap.terms, self.prompt_classifier(), snap.policy.text_threshold)
        if verdict is None:
            return None
        event = {"session_id": context.session_id, "source": "prompt", "detector": verdict.detector,
                 "category": verdict.category, "score": verdict.score, "action": "rejected", "detail": verdict.detail}
        if on_loop:
            actions.audit.record(context.organization_id, event)
        else:
            actions.record_now(context.organization_id, event)
        return verdict.message()

    def warm(self) -> None:
        """Load what the checks need before the session starts, once per process: the prompt
        classifier (scikit-learn: seconds), PIL and scipy for the hashes, and open_nsfw with one
        inference (its arena allocated) when the platform's default policy classifies frames. The
        session service calls this with the engine warm-up, off the event loop and off the database
        thread; nothing of it lands on the frame path or grows memory once frames flow."""
        import numpy as np

        from moderation import phash

        classifier = self.prompt_classifier()
        if classifier is not None:
            classifier.warm()
        phash.phash(np.zeros((64, 64, 3), np.uint8))
        if actions.platform_default().frame_classifier != "off":
            self._warm_image_classifier()

    def _warm_image_classifier(self) -> None:
        import numpy as np

        with self._lock:
            if self._image_warm:
                return
            self._image_warm = True
        self.image_classifier().score(np.zeros((224, 224, 3), np.uint8))

    # -- frames --------------------------------------------------------------------------------------
    def gate(self, context: SessionContext) -> FrameGate:
        with self._lock:
            gate = self._gates.get(context.session_id)
        if gate is None:
            # Fail closed: the runtime withholds the frame and reports server_error.
            raise LookupError(f"no moderation gate for session {context.session_id}")
        return gate

    def open(self, context: SessionContext) -> FrameGate:
        """Make the session's gate from its organisation's snapshot, read from the database now."""
        snap = actions.refresh(context.organization_id)
        policy = snap.policy
        if policy.frame_classifier != "off":
            self._warm_image_classifier()  # once per process: an organisation that opted in to a classifier
        classifier = self.image_classifier() if policy.frame_classifier != "off" else None
        worker = self.worker() if policy.frame_classifier == "sampled" else None
        org, sid = context.organization_id, context.session_id

        def record(event: dict[str, Any]) -> None:
            actions.audit.record(org, {**event, "session_id": sid})

        gate = FrameGate(policy, snap.hashes, classifier=classifier, worker=worker, record=record)
        with self._lock:
            return self._gates.setdefault(context.session_id, gate)

    def check_output(self, context: SessionContext, frame_index: int, pixels: np.ndarray) -> FrameVerdict | None:
        return self._check(context, frame_index, pixels, "output")

    def check_input(self, context: SessionContext, seq: int, pixels: np.ndarray) -> FrameVerdict | None:
        return self._check(context, seq, pixels, "input")

    def _check(self, context: SessionContext, index: int, pixels: np.ndarray, source: str) -> FrameVerdict | None:
        from nextframe.live.host import FrameVerdict

        gate = self.gate(context)
        decision = gate.check(index, pixels, source)
        if decision is None:
            return None
        if decision.end:
            actions.audit.record(context.organization_id, {
                "session_id": context.session_id, "frame": index, "source": source, "detector": decision.detector,
                "category": decision.category, "action": "ended",
                "detail": f"{gate.violations} violations (max_violations {gate.policy.max_violations})"})
        return FrameVerdict(decision.category, decision.replacement, source=decision.source,
                            detector=decision.detector, end=decision.end)

    def release(self, context: SessionContext) -> None:
        with self._lock:
            self._gates.pop(context.session_id, None)


_live = LiveModeration()


def get_live() -> LiveModeration:
    return _live


class _PromptCheck:
    """The service's prompt check (settings.LIVE_PROMPT_CHECK), with `warm` for its warm-up step."""

    def __call__(self, context: SessionContext, prompt: str) -> str | None:
        return _live.check_prompt(context, prompt)

    def warm(self) -> None:
        _live.warm()


prompt_check = _PromptCheck()


def host_checks() -> dict[str, Any]:
    """The keyword arguments of the LiveHost this process serves with (settings.LIVE_MODERATION)."""
    return {"frame_check": _live.check_output, "input_check": _live.check_input, "on_open": _live.open,
            "on_release": _live.release}
