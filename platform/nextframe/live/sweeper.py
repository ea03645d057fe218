"""The stale-record sweep: a timer in every server process that ends live-session records left
`active` by a process that died without closing them (kill -9, OOM kill, power loss).

A running session checkpoints its record about once a second (`actions.checkpoint`), so a record
whose `last_seen_at` is older than LIVE_STALE_RECORD_S belongs to a dead process. Each server
process looks for such records every LIVE_SWEEP_INTERVAL_S, with or without socket traffic: a
record ends at most LIVE_STALE_RECORD_S + LIVE_SWEEP_INTERVAL_S after its process died, provided
one server is up. Why a timer on each node and not a Celery beat entry: docs/operations.md
("Stale live-session records").

The sweep is one idempotent UPDATE (safe when every node runs it at once); its pool lease needs no
sweep (leases expire by TTL) and neither do clips (the worker's recovery sweep owns them).
"""
from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class Sweeper:
    """A daemon thread that runs `actions.sweep_stale` now and then every `interval_s`."""

    def __init__(self, interval_s: float, stale_after_s: float) -> None:
        self.interval_s = interval_s
        self.stale_after_s = stale_after_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep_once(self) -> int:
        """One round; returns how many records it ended. Never raises (the timer must go on)."""
        from django.db import close_old_connections

        from nextframe.live import actions

        try:
            close_old_connections()
            ended = actions.sweep_stale(self.stale_after_s)
        except Exception:  # noqa: BLE001 - the database may be away for a while; try next round
            log.exception("live-session sweep failed")
            return 0
        finally:
            close_old_connections()
        if ended:
            log.warning("ended %d live-session record(s) left active by a dead process", ended)
        return ended

    def _run(self) -> None:
        # The first round at once: a node restarted after a crash ends what it can straight away.
        while True:
            self.sweep_once()
            if self._stop.wait(self.interval_s):
                return

    def start(self) -> Sweeper:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="nf-live-sweeper", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)


_sweeper: Sweeper | None = None
_lock = threading.Lock()


def start_sweeper() -> Sweeper | None:
    """Start this process's sweeper from settings (once; None when LIVE_SWEEP_INTERVAL_S is 0).

    Called by the server entry point (`nextframe.web`), so every web process of every node runs it.
    """
    global _sweeper
    from django.conf import settings

    interval = float(settings.LIVE_SWEEP_INTERVAL_S)
    if interval <= 0:
        return None
    with _lock:
        if _sweeper is None:
            _sweeper = Sweeper(interval, float(settings.LIVE_STALE_RECORD_S)).start()
        return _sweeper


def stop_sweeper() -> None:
    global _sweeper
    with _lock:
        sweeper, _sweeper = _sweeper, None
    if sweeper is not None:
        sweeper.stop()
