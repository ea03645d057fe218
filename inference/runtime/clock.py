"""Injectable clocks: the frame loop reads time only through a Clock, so tests can script it.

`wait(event, until)` is how the device worker sleeps: until `until` on this clock or until `event`
is set. With FakeClock that sleep ends when a test advances time past `until` - no real sleeping
decides anything a test asserts.
"""
from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic timeline."""
        ...

    def wait(self, event: threading.Event, until: float | None) -> bool:
        """Block until `event` is set (True) or the clock reaches `until` (False); None waits for the event."""
        ...


class MonotonicClock:
    """The real clock: time.monotonic()."""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, until: float | None) -> bool:
        if until is None:
            return event.wait()
        return event.wait(max(0.0, until - time.monotonic()))


class FakeClock:
    """A clock that moves only when told to (`advance`, `set`). Thread-safe."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._cond = threading.Condition()

    def now(self) -> float:
        with self._cond:
            return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        with self._cond:
            self._now += seconds
            self._cond.notify_all()
            return self._now

    def set(self, t: float) -> None:
        self.advance(t - self.now())

    def wait(self, event: threading.Event, until: float | None) -> bool:
        # Poll the event at a short real interval: Event has no way to wake a Condition. The poll only
        # bounds how fast a threaded test reacts; which frame is due is decided by fake time alone.
        with self._cond:
            while not event.is_set():
                if until is not None and self._now >= until:
                    return False
                self._cond.wait(0.005)
        return True
