"""The in-process clip audit on a deployment renders under a clip-priority pool lease."""
from __future__ import annotations

import pytest

from inference.audit import clip as clip_audit
from nextframe.audits import runs

pytestmark = pytest.mark.django_db


@pytest.fixture
def pool(settings):
    from inference.pool import CpuProbe, build_pool
    from nextframe.capacity import set_pool
    from nextframe.live.host import reset_host

    settings.NEXTFRAME_AUDIT_SIZE = "32x32"
    settings.NEXTFRAME_AUDIT_SESSIONS = 2
    reset_host()
    p = build_pool(None, probe=CpuProbe(1.0))
    set_pool(p)
    yield p
    set_pool(None)
    reset_host()


def test_the_clip_audit_holds_a_clip_lease_while_it_renders_and_releases_it(pool, monkeypatch):
    seen = []
    real = clip_audit.audit_clip

    def spy(*args, **kwargs):
        seen.append(sum(row.get("reserved_clip", 0.0) for row in pool.usage().values()))
        return real(*args, **kwargs)

    monkeypatch.setattr(clip_audit, "audit_clip", spy)
    run = runs.run_clip_audit("identity", "on_demand")
    assert run.status == "succeeded", run.error
    assert seen and seen[0] > 0  # reserved at clip priority during the render
    assert sum(row.get("reserved_clip", 0.0) for row in pool.usage().values()) == 0  # and given back


def test_without_capacity_the_clip_audit_fails_instead_of_running_unreserved(pool):
    live = pool.reserve("acme", "live-1", 1.0)
    try:
        run = runs.run_clip_audit("identity", "on_demand")
    finally:
        pool.release(live)
    assert run.status == "failed" and "capacity_unavailable" in run.error


def test_a_clip_audit_whose_lease_is_lost_stops_preempted(pool, monkeypatch):
    from nextframe.live.host import get_host

    real_keep = get_host().keep

    def keep_then_lose(res, on_lost):
        real_keep(res, on_lost)
        on_lost("preempted by a live session")

    monkeypatch.setattr(get_host(), "keep", keep_then_lose)
    run = runs.run_clip_audit("identity", "on_demand")
    assert run.status == "failed" and "preempted" in run.error
