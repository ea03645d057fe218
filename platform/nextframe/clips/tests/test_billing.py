"""Clip billing through the real runner: every attempt that held capacity writes one ledger segment,
failed and preempted ones included; who pays follows docs/billing.md; what GET /v1/clips/{id} says
a clip used and cost is exactly the sum of its customer-paid segments."""
from __future__ import annotations

from decimal import Decimal

import pytest

from billing.models import Segment
from nextframe.clips import actions, runner
from nextframe.clips.models import Clip
from nextframe.clips.tests.test_runner import hooked, new_clip  # noqa: F401 - the fixture, reused

pytestmark = pytest.mark.django_db


def told_and_ledger(clip: Clip) -> tuple[dict, list[Segment]]:
    clip.refresh_from_db()
    return actions.describe(clip)["usage"], list(Segment.objects.filter(source="clip", source_id=str(clip.pk)).order_by("seq"))


def customer_sums(rows: list[Segment]) -> tuple[Decimal, Decimal]:
    paid = [s for s in rows if s.payer == "customer"]
    return sum((s.gpu_seconds for s in paid), Decimal(0)), sum((s.amount for s in paid), Decimal(0))


def test_a_preempted_attempt_is_the_platforms_and_the_successful_one_the_customers(org, pool, hooked):  # noqa: F811
    live = {}

    def live_session_arrives(rendered: int) -> None:
        if rendered == 4 and not live:
            live["res"] = pool.reserve("live-org", "live-session", 1.0, priority="live")

    hooked(live_session_arrives)
    clip = new_clip(org, model="hooked-test", frames=12)
    assert runner.run_clip(clip.pk).status == "queued"
    pool.release(live["res"])
    Clip.objects.filter(pk=clip.pk).update(not_before=None)
    assert runner.run_clip(clip.pk).status == "succeeded"
    usage, rows = told_and_ledger(clip)
    assert [(s.seq, s.payer) for s in rows] == [(1, "platform"), (2, "customer")]
    assert all(s.gpu_seconds > 0 and s.share == clip.share for s in rows)
    assert (Decimal(usage["gpu_seconds"]), Decimal(usage["cost"])) == customer_sums(rows) == (clip.gpu_seconds, clip.cost)
    # The successful attempt's segment is share x the run time the client is told (its pool lease).
    assert rows[1].gpu_seconds == (Decimal(str(clip.share)) * Decimal(str(clip.render_s))).quantize(Decimal("0.000001"))


def test_a_failed_clip_is_billed_for_the_capacity_it_held_and_says_so(org, pool, hooked):  # noqa: F811
    def engine_refuses(rendered: int) -> None:
        raise ValueError("the engine refused these params")

    hooked(engine_refuses)
    clip = new_clip(org, model="hooked-test", frames=12)
    assert runner.run_clip(clip.pk).status == "failed"
    usage, rows = told_and_ledger(clip)
    assert clip.status == "failed" and [(s.seq, s.payer) for s in rows] == [(1, "customer")]
    assert rows[0].gpu_seconds > 0 and (Decimal(usage["gpu_seconds"]), Decimal(usage["cost"])) == customer_sums(rows)


def test_a_crashing_attempt_that_is_retried_is_the_platforms(org, pool, hooked):  # noqa: F811
    def crashes(rendered: int) -> None:
        raise RuntimeError("transient")

    hooked(crashes)
    clip = new_clip(org, model="hooked-test", frames=12)
    assert runner.run_clip(clip.pk).status == "queued"
    usage, rows = told_and_ledger(clip)
    assert [(s.seq, s.payer) for s in rows] == [(1, "platform")]
    assert usage["gpu_seconds"] == "0.000000" and usage["cost"] == "0.000000"
