"""Brute-force throttles of the tenancy layer, counted in Django's cache framework.

Two counters, both fixed windows keyed by what they limit:
- failed authentications (API key or ticket, REST or WebSocket) per client address: once an address
  has failed NEXTFRAME_AUTH_FAILURE_LIMIT times in a window of NEXTFRAME_AUTH_FAILURE_WINDOW_S, every
  authentication from it is refused with `rate_limited` until the window ends, before the database
  is asked (a flood of bad keys costs one cache read each);
- tickets minted per API key (or per dashboard user): NEXTFRAME_TICKETS_PER_MINUTE.

The cache is the `default` one (settings: Redis when REDIS_URL is set, so every node of a
scaled-out deployment shares the counts; the process-local memory cache in the embedded profile,
which runs one web process). `cache.add` + `cache.incr` are atomic on both backends.

When the cache cannot be reached (Redis restarting), the throttles fail open: they count nothing and
block nothing, with a warning in the log, rather than turn every authentication of every node into
a 500 for the outage (found by the Redis-restart fault test: new WebSocket handshakes got HTTP 500).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

_PREFIX = "nf:throttle"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """The current fixed window of one counter: its cache key and how long until it ends."""

    key: str
    retry_after_s: float


def _window(kind: str, ident: str, window_s: int) -> Window:
    now = time.time()
    index = int(now // window_s)
    return Window(f"{_PREFIX}:{kind}:{ident}:{index}", (index + 1) * window_s - now)


def _count(window: Window) -> int:
    try:
        return int(cache.get(window.key) or 0)
    except Exception as exc:  # the cache is unreachable: fail open (module docstring)
        log.warning("throttle: cache unreachable, %s not checked: %s", window.key.rsplit(":", 1)[0], exc)
        return 0


def _hit(window: Window, window_s: int) -> int:
    """Count one event in `window` and return the new total (atomic on Redis and the memory cache);
    0 when the cache is unreachable (fail open)."""
    try:
        # The entry outlives its window by a little so a count read near the boundary is still there.
        cache.add(window.key, 0, timeout=window_s + 5)
        try:
            return cache.incr(window.key)
        except ValueError:  # evicted between add and incr
            cache.add(window.key, 1, timeout=window_s + 5)
            return 1
    except Exception as exc:
        log.warning("throttle: cache unreachable, %s not counted: %s", window.key.rsplit(":", 1)[0], exc)
        return 0


def _address(address: str | None) -> str:
    # An unknown address (a test transport, a unix socket) shares one bucket rather than none.
    return (address or "unknown").strip()[:64] or "unknown"


def auth_failures_retry_after(address: str | None) -> float | None:
    """Seconds until `address` may authenticate again, or None if it is not blocked."""
    limit = settings.NEXTFRAME_AUTH_FAILURE_LIMIT
    if limit <= 0:
        return None
    window = _window("authfail", _address(address), settings.NEXTFRAME_AUTH_FAILURE_WINDOW_S)
    return window.retry_after_s if _count(window) >= limit else None


def record_auth_failure(address: str | None) -> None:
    if settings.NEXTFRAME_AUTH_FAILURE_LIMIT <= 0:
        return
    window_s = settings.NEXTFRAME_AUTH_FAILURE_WINDOW_S
    _hit(_window("authfail", _address(address), window_s), window_s)


def take_ticket_slot(ident: str) -> float | None:
    """Count one ticket for `ident`; returns seconds to wait if it is over the limit (None: allowed)."""
    limit = settings.NEXTFRAME_TICKETS_PER_MINUTE
    if limit <= 0:
        return None
    window = _window("tickets", ident, 60)
    if _hit(window, 60) > limit:
        return window.retry_after_s
    return None
