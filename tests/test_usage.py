"""The usage and quota seam (nextframe.usage), tested directly: the one writer of live and clip
usage, the one quota reader, prices and costs. The billing issue fills it with a ledger; these are
the promises its callers (the live service, the clip runner, the REST representations) rely on."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from nextframe import usage
from nextframe.clips.models import Clip
from nextframe.live.models import LiveSession
from nextframe.tenancy import actions as tenancy

pytestmark = pytest.mark.django_db


def live_record(org, **fields) -> LiveSession:
    return LiveSession.objects.create(organization=org, model="dreamfield", tier="interactive", width=64,
                                      height=64, fps=30, **fields)


def clip(org, **fields) -> Clip:
    return Clip.objects.create(organization=org, model="dreamfield", prompt="tide", width=64, height=64, fps=12,
                               frames=12, created_at=timezone.now(), **fields)


def test_live_usage_is_written_as_the_newest_totals_and_the_final_write_closes_the_record(org):
    record = live_record(org)
    usage.record_live(record.pk, {"gpu_seconds": 1.23456, "frames_out": 10}, "0.0004")
    again = usage.record_live(record.pk, {"gpu_seconds": 1.23456, "frames_out": 10}, "0.0004")
    record.refresh_from_db()
    # Idempotent: writing the same totals twice counts them once.
    assert (record.gpu_seconds, record.frames, record.cost) == (Decimal("1.2346"), 10, Decimal("0.000494"))
    assert again.as_dict() == {"gpu_seconds": 1.2346, "frames": 10, "cost": "0.000494", "currency": "usd"}
    final = usage.record_live(record.pk, {"gpu_seconds": 2.0, "frames_out": 20}, "0.0004", end_reason="client")
    record.refresh_from_db()
    assert record.status == "ended" and record.end_reason == "client" and record.gpu_seconds == Decimal("2")
    assert final.cost == Decimal("0.000800")
    # A late write (a tick racing the end, or a record the sweep ended) changes nothing.
    usage.record_live(record.pk, {"gpu_seconds": 9.0, "frames_out": 90}, "0.0004")
    record.refresh_from_db()
    assert record.gpu_seconds == Decimal("2") and record.frames == 20


def test_the_quota_reader_counts_live_and_clips_of_this_month_of_this_organisation_only(org):
    assert usage.quota_remaining(org) is None and not usage.quota_exhausted(org)  # no limit
    org.gpu_seconds_limit = Decimal("5")
    org.save(update_fields=["gpu_seconds_limit"])
    live_record(org, gpu_seconds=Decimal("1.5"))
    clip(org, gpu_seconds=Decimal("2"))
    old = live_record(org, gpu_seconds=Decimal("100"))
    LiveSession.objects.filter(pk=old.pk).update(created_at=usage.month_start() - timedelta(seconds=1))
    other = tenancy.create_org("other")
    live_record(other, gpu_seconds=Decimal("100"))
    assert usage.gpu_seconds_this_month(org) == Decimal("3.5")
    assert usage.quota_remaining(org) == Decimal("1.5") and not usage.quota_exhausted(org)
    clip(org, gpu_seconds=Decimal("1.5"))
    assert usage.quota_remaining(org) == 0 and usage.quota_exhausted(org)


def test_clip_usage_is_share_times_lease_time_and_costs_the_models_price(org):
    job = clip(org)
    assert usage.record_clip(job.pk, 0.25, 4.0000004) == Decimal("1.000000")
    job.refresh_from_db()
    assert job.gpu_seconds == Decimal("1")
    assert usage.clip_cost("dreamfield", job.gpu_seconds) == Decimal("0.000400")
    assert usage.clip_cost("gone-model", Decimal("3")) == 0  # a removed engine costs nothing, never errors


def test_costs_round_half_up_to_the_micro_unit():
    assert usage.cost_of(1.25, "0.0000010") == Decimal("0.000001")
    assert usage.cost_of(Decimal("0.5"), "0.000001") == Decimal("0.000001")  # 0.0000005 rounds up
    assert usage.price_of("dreamfield") == Decimal("0.0004") and usage.month_start().day == 1
    assert usage.month_start(timezone.now()).hour == 0
