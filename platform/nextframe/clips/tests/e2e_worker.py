"""Celery entry point of the worker tests: the project's app, with `dreamfield` held at a gate.

`-A nextframe.clips.tests.e2e_worker` loads the one app of nextframe.celery and, in this worker
only, wraps the real dreamfield engine so that its second batch waits until the file named by
NEXTFRAME_TEST_CLIP_GATE exists. The test can so kill the worker while a job is provably mid-job
(frames_done > 0), with no timing guesswork. Every batch is appended to NEXTFRAME_TEST_RENDER_LOG.
"""
from __future__ import annotations

import os
import time

from inference.engines import get_engine, register_engine
from nextframe.celery import app  # noqa: F401 - the app celery -A looks for

GATE = os.environ.get("NEXTFRAME_TEST_CLIP_GATE", "")
LOG = os.environ.get("NEXTFRAME_TEST_RENDER_LOG", "")


class GatedEngine:
    def __init__(self, inner) -> None:
        self.inner = inner
        self.spec = inner.spec

    def new_state(self, *args, **kwargs):
        state = self.inner.new_state(*args, **kwargs)
        self.batches = 0
        return state

    def step(self, items):
        return self.inner.step(items)

    def render_clip(self, state, n_frames, prompt, params, input_frames=None):
        self.batches += 1
        if self.batches == 2 and GATE:
            deadline = time.monotonic() + 120
            while not os.path.exists(GATE) and time.monotonic() < deadline:
                time.sleep(0.02)
        out = self.inner.render_clip(state, n_frames, prompt, params, input_frames)
        if LOG:
            with open(LOG, "a") as fh:
                fh.write(f"{os.getpid()} {n_frames}\n")
        return out


register_engine(GatedEngine(get_engine("dreamfield")))  # type: ignore[arg-type]  # duck-typed wrapper
