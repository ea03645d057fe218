"""Clips' moderation: the prompt at submission, and every input and rendered frame before release.

A clip is not live: nothing is sent before the whole video exists, so every rendered frame meets
the hash lists and, unless the policy turns it off, the image classifier (always strict here: the
exposure window of sampling has no reason to exist). The first violation stops the render with
`ClipBlocked`; the runner ends the clip `blocked`, serves no video and still bills its usage.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from moderation import actions, text
from moderation.classifier import shared_open_nsfw
from moderation.gate import FrameGate


class ClipBlocked(Exception):
    """A frame of the clip violated the policy: the clip ends `blocked`."""

    def __init__(self, frame: int, source: str, detector: str, category: str) -> None:
        super().__init__(f"{source} frame {frame} was blocked by moderation ({category}, {detector})")
        self.frame, self.source, self.detector, self.category = frame, source, detector, category


def check_prompt(org_id: int | str, prompt: str) -> str | None:
    """None when the clip's prompt may be rendered; else the refusal message (400 `moderation`)."""
    snap = actions.refresh(org_id)
    classifier = text.shared_classifier() if _prompt_classifier_on() else None
    verdict = text.check_prompt(prompt, snap.terms, classifier, snap.policy.text_threshold)
    if verdict is None:
        return None
    actions.record_now(org_id, {"source": "prompt", "detector": verdict.detector, "category": verdict.category,
                                "score": verdict.score, "action": "rejected", "detail": f"clip: {verdict.detail}"})
    return verdict.message()


def _prompt_classifier_on() -> bool:
    from django.conf import settings

    return bool(getattr(settings, "MODERATION_PROMPT_CLASSIFIER", True))


class ClipModeration:
    """The frame checks of one clip render (synchronous: the render waits for them)."""

    def __init__(self, org_id: int | str, clip_id: Any, classifier=None) -> None:
        snap = actions.refresh(org_id)
        policy = snap.policy
        if policy.frame_classifier != "off":
            policy = replace(policy, frame_classifier="strict", max_violations=1)
            classifier = classifier or shared_open_nsfw()
        else:
            policy, classifier = replace(policy, max_violations=1), None
        self.org_id, self.clip_id = org_id, str(clip_id)
        self.gate = FrameGate(policy, snap.hashes, classifier=classifier, record=self._record)

    def _record(self, event: dict[str, Any]) -> None:
        actions.record_now(self.org_id, {**event, "clip_id": self.clip_id,
                                         "action": "blocked" if event.get("action") == "replaced" else event["action"]})

    def _checked(self, frames: Iterable[np.ndarray], source: str) -> Iterator[np.ndarray]:
        for index, frame in enumerate(frames):
            decision = self.gate.check(index, frame, source)
            if decision is not None:
                raise ClipBlocked(index, source, decision.detector, decision.category)
            yield frame

    def inputs(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        return self._checked(frames, "input")

    def outputs(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        return self._checked(frames, "output")
