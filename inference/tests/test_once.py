"""inference.once: built once per process even when threads ask together; a failure is not kept."""
from __future__ import annotations

import threading
import time

import pytest

from inference.once import once


def test_threads_asking_together_build_the_value_once() -> None:
    calls = []

    @once
    def slow() -> object:
        calls.append(1)
        time.sleep(0.05)  # long enough for every thread below to be waiting on it
        return object()

    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(slow())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(got) == 8 and all(v is got[0] for v in got)


def test_a_failed_build_is_tried_again() -> None:
    attempts = []

    @once
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("model file missing")
        return "loaded"

    with pytest.raises(OSError):
        flaky()
    assert flaky() == "loaded" and flaky() == "loaded" and len(attempts) == 2
