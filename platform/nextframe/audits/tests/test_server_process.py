"""Which process runs the start-up audits: the one whose entry point called `serving()`, once.

The real path (nextframe up -> python -m nextframe.web -> serving()) is tests/test_up.py; here the
bookkeeping: nothing without the call, at most one start, and NEXTFRAME_AUDIT_ON_STARTUP honoured."""
from __future__ import annotations

import pytest

from nextframe.audits import server


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(server, "_serving", False)
    monkeypatch.setattr(server, "_started", None)
    started = []
    monkeypatch.setattr(server, "start_startup_audits", lambda: started.append(1) or f"thread {len(started)}")
    return started


def test_no_audits_unless_the_entry_point_says_it_is_the_server(fresh, settings):
    settings.NEXTFRAME_AUDIT_ON_STARTUP = True
    assert server.start_if_serving() is None  # what AuditsConfig.ready() does in any process
    assert fresh == [] and server.is_server_process() is False


def test_serving_after_setup_starts_them_once(fresh, settings):
    settings.NEXTFRAME_AUDIT_ON_STARTUP = True
    server.serving()  # nextframe.web calls it after django.setup(): it starts them itself
    server.serving()
    assert server.start_if_serving() is None  # a later ready() does not start a second round
    assert fresh == [1] and server.is_server_process() is True


def test_serving_respects_the_setting(fresh, settings):
    settings.NEXTFRAME_AUDIT_ON_STARTUP = False
    server.serving()
    assert fresh == [] and server.is_server_process() is True
