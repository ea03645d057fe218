"""`once`: a process-wide value built on first use, under a lock, and kept.

For what is slow to build and safe to share: a model read from disk and checked by hash, an encoder.
The lock means two threads asking at the same time build it once (functools.cache would let both
build it); a factory that raises leaves nothing behind, so the next call tries again.
"""
from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def once(factory: Callable[[], T]) -> Callable[[], T]:
    """Wrap a zero-argument factory: the first call builds the value, every later call returns it."""
    lock = threading.Lock()
    built: list[T] = []

    @functools.wraps(factory)
    def get() -> T:
        with lock:
            if not built:
                built.append(factory())
            return built[0]

    return get
