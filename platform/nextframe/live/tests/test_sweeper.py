"""The stale-record timer in-process: it ends dead processes' records with no socket in sight,
keeps going when a round fails, and can be turned off. (The kill -9 test with real servers is
tests/test_stale_sweep.py.)"""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

from nextframe.live import actions
from nextframe.live.models import LiveSession
from nextframe.live.sweeper import Sweeper, start_sweeper, stop_sweeper

# The timer runs on its own thread with its own connection: it must see committed rows.
pytestmark = pytest.mark.django_db(transaction=True)


def _record(org, seen_ago_s: float) -> LiveSession:
    row = LiveSession.objects.create(organization=org, model="dreamfield", tier="interactive", width=64,
                                     height=64, fps=30)
    LiveSession.objects.filter(pk=row.pk).update(last_seen_at=timezone.now() - timedelta(seconds=seen_ago_s))
    return LiveSession.objects.get(pk=row.pk)


def _wait_ended(pk: str, within_s: float = 10.0) -> LiveSession:
    deadline = time.monotonic() + within_s
    row = LiveSession.objects.get(pk=pk)
    while row.status == "active" and time.monotonic() < deadline:
        time.sleep(0.05)
        row = LiveSession.objects.get(pk=pk)
    return row


def test_the_timer_ends_stale_records_without_any_traffic(org):
    alive, dead = _record(org, 1), _record(org, 300)
    sweeper = Sweeper(interval_s=0.2, stale_after_s=60).start()
    try:
        swept = _wait_ended(dead.pk)
    finally:
        sweeper.stop()
    assert swept.status == "ended" and swept.end_reason == "server_error"
    # Ended when last seen alive, with the usage of its last checkpoint.
    assert swept.ended_at == dead.last_seen_at
    assert LiveSession.objects.get(pk=alive.pk).status == "active"


def test_a_failed_round_does_not_stop_the_timer(org, monkeypatch):
    real, calls = actions.sweep_stale, []

    def flaky(stale_after_s: float) -> int:
        calls.append(stale_after_s)
        if len(calls) == 1:
            raise OperationalError("the database went away")
        return real(stale_after_s)

    monkeypatch.setattr(actions, "sweep_stale", flaky)
    dead = _record(org, 300)
    sweeper = Sweeper(interval_s=0.1, stale_after_s=60).start()
    try:
        assert _wait_ended(dead.pk).status == "ended"
    finally:
        sweeper.stop()
    assert len(calls) >= 2


def test_the_process_sweeper_follows_settings(settings):
    settings.LIVE_SWEEP_INTERVAL_S = 0
    assert start_sweeper() is None
    settings.LIVE_SWEEP_INTERVAL_S, settings.LIVE_STALE_RECORD_S = 30, 45
    try:
        first = start_sweeper()
        assert first is not None and start_sweeper() is first  # one per process
        assert (first.interval_s, first.stale_after_s) == (30, 45)
    finally:
        stop_sweeper()
