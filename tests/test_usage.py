"""The usage and quota seam (nextframe.usage) over the billing ledger, tested directly: the one
writer of live, clip and audit usage, the one quota reader, prices and costs. These are the promises
its callers (the live service, the clip runner, audits, the REST representations) rely on."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing import prices
from billing.models import OutboxEvent, PeriodTotal, Segment
from nextframe import usage
from nextframe.clips.models import Clip
from nextframe.live import actions as live_actions
from nextframe.live.models import LiveSession
from nextframe.tenancy import actions as tenancy

pytestmark = pytest.mark.django_db


def live_record(org, api_key=None, **fields) -> LiveSession:
    return LiveSession.objects.create(organization=org, api_key=api_key, model="dreamfield", tier="interactive",
                                      width=64, height=64, fps=30, share=0.5, **fields)


def clip(org, api_key=None, **fields) -> Clip:
    return Clip.objects.create(organization=org, api_key=api_key, model="dreamfield", prompt="tide", width=64,
                               height=64, fps=12, frames=12, created_at=timezone.now(), attempts=1, **fields)


def segments(source_id) -> list[Segment]:
    return list(Segment.objects.filter(source_id=str(source_id)).order_by("seq"))


def test_live_usage_checkpoints_every_tick_and_writes_idempotent_segments(org, settings):
    settings.BILLING_SEGMENT_S = 3600.0  # no segment is due between ticks: only the end writes one
    record = live_record(org)
    usage.record_live(record.pk, {"gpu_seconds": 1.23456, "frames_out": 10}, "0.0004")
    again = usage.record_live(record.pk, {"gpu_seconds": 1.23456, "frames_out": 10}, "0.0004")
    record.refresh_from_db()
    assert (record.gpu_seconds, record.frames, record.cost) == (Decimal("1.23456"), 10, Decimal("0.000494"))
    assert segments(record.pk) == [] and again.pending_gpu_seconds == Decimal("1.23456")
    final = usage.record_live(record.pk, {"gpu_seconds": 2.0, "frames_out": 20}, "0.0004", end_reason="client")
    record.refresh_from_db()
    assert record.status == "ended" and record.end_reason == "client" and record.gpu_seconds == Decimal("2")
    [seg] = segments(record.pk)
    assert (seg.key, seg.gpu_seconds, seg.amount, seg.unit_price) == (
        f"live:{record.pk}:1", Decimal("2"), Decimal("0.000800"), Decimal("0.0004"))
    assert final.cost == record.cost == seg.amount and final.as_dict()["gpu_seconds_decimal"] == "2.000000"
    # A late write (a tick racing the end, or a record the sweep ended) changes nothing.
    late = usage.record_live(record.pk, {"gpu_seconds": 9.0, "frames_out": 90}, "0.0004")
    record.refresh_from_db()
    assert record.gpu_seconds == Decimal("2") and record.frames == 20 and len(segments(record.pk)) == 1
    assert late.gpu_seconds == Decimal("2")


def test_a_segment_is_written_whenever_one_is_due_and_they_sum_to_the_final_totals(org, settings):
    settings.BILLING_SEGMENT_S = 0.0  # every tick is due
    record = live_record(org)
    for total in (0.1, 0.1, 0.35, 1.000001, 1.000001):
        usage.record_live(record.pk, {"gpu_seconds": total, "frames_out": 3}, "0.0004")
    final = usage.record_live(record.pk, {"gpu_seconds": 2.5, "frames_out": 9}, "0.0004", end_reason="quota")
    rows = segments(record.pk)
    assert [s.seq for s in rows] == [1, 2, 3, 4]  # the repeated totals wrote nothing
    assert sum(s.gpu_seconds for s in rows) == Decimal("2.5") == final.gpu_seconds
    assert sum(s.amount for s in rows) == final.cost
    assert all(a.ended_at == b.started_at for a, b in zip(rows, rows[1:], strict=False))  # contiguous
    assert PeriodTotal.objects.get(organization=org).gpu_seconds == Decimal("2.5")
    assert OutboxEvent.objects.filter(segment__in=rows).count() == 4


def test_the_sweep_closes_a_dead_sessions_meter_at_its_last_checkpoint(org, settings):
    settings.BILLING_SEGMENT_S = 3600.0
    record = live_record(org)
    usage.record_live(record.pk, {"gpu_seconds": 4.25, "frames_out": 100}, "0.0004")
    LiveSession.objects.filter(pk=record.pk).update(last_seen_at=timezone.now() - timedelta(seconds=120))
    assert live_actions.sweep_stale(60) == 1 and live_actions.sweep_stale(60) == 0
    record.refresh_from_db()
    [seg] = segments(record.pk)
    assert record.status == "ended" and record.end_reason == "server_error"
    assert seg.gpu_seconds == record.gpu_seconds == Decimal("4.25") and record.cost == seg.amount
    assert seg.ended_at == record.ended_at == record.last_seen_at


def test_the_quota_reader_counts_this_months_live_mode_customer_usage_of_this_organisation_only(org, settings):
    settings.BILLING_SEGMENT_S = 0.0
    assert usage.quota_remaining(org) is None and not usage.quota_exhausted(org)  # no limit
    org.gpu_seconds_limit = Decimal("5")
    org.save(update_fields=["gpu_seconds_limit"])
    usage.record_live(live_record(org).pk, {"gpu_seconds": 1.5}, "0.0004", end_reason="client")
    usage.record_clip(clip(org).pk, 0.5, 4.0)  # 2 GPU-seconds
    usage.record_clip(clip(org).pk, 0.5, 50.0, usage.PLATFORM)  # preempted: the platform's
    test_key, _ = tenancy.create_key(org, test=True)
    usage.record_live(live_record(org, test_key).pk, {"gpu_seconds": 100}, "0", end_reason="client")
    other = tenancy.create_org("other")
    usage.record_live(live_record(other).pk, {"gpu_seconds": 100}, "0.0004", end_reason="client")
    assert usage.gpu_seconds_this_month(org) == Decimal("3.5")
    assert usage.quota_remaining(org) == Decimal("1.5") and not usage.quota_exhausted(org)
    assert usage.quota_fits(org, Decimal("1.5"), Decimal(0)) and not usage.quota_fits(org, Decimal("1.6"), Decimal(0))
    usage.record_clip(clip(org).pk, 0.5, 3.0)
    assert usage.quota_remaining(org) == 0 and usage.quota_exhausted(org)


def test_a_spend_limit_is_a_quota_too(org, settings):
    from billing import quota

    settings.BILLING_SEGMENT_S = 0.0
    account = quota.account_for(org)
    account.spend_limit = Decimal("0.001")
    account.save()
    usage.record_live(live_record(org).pk, {"gpu_seconds": 2.0}, "0.0004", end_reason="client")  # 0.0008
    state = usage.quota_state(org)
    assert state.percent == 80 and not state.exhausted
    assert usage.quota_state(org, Decimal("0.5"), Decimal("0.0002")).exhausted  # pending usage counts


def test_clip_attempts_each_write_one_segment_and_the_clip_sums_its_customer_paid_ones(org):
    job = clip(org)
    assert usage.record_clip(job.pk, 0.25, 4.0000004) == Decimal("1.000000")
    assert usage.record_clip(job.pk, 0.25, 4.0000004) == Decimal("1.000000")  # the same attempt again
    Clip.objects.filter(pk=job.pk).update(attempts=2)
    usage.record_clip(job.pk, 0.5, 3.0, usage.PLATFORM)  # preempted attempt 2: the platform pays
    usage.record_clip(job.pk, 0.5, 1.0, usage.CUSTOMER, 3)
    job.refresh_from_db()
    rows = segments(job.pk)
    assert [(s.seq, s.payer) for s in rows] == [(1, "customer"), (2, "platform"), (3, "customer")]
    assert job.gpu_seconds == Decimal("1.5") and job.cost == Decimal("0.000600")
    assert not OutboxEvent.objects.filter(segment__payer="platform").exists()


def test_prices_live_in_the_database_with_history_and_test_keys_are_priced_zero(org, settings):
    settings.BILLING_SEGMENT_S = 0.0
    assert usage.price_of("dreamfield") == Decimal("0.0004")  # seeded from the engine's declared price
    assert usage.price_of("gone-model") == 0  # a removed engine costs nothing, never errors
    first = clip(org)
    usage.record_clip(first.pk, 1.0, 1.0)
    prices.set_price("dreamfield", "0.001", note="new price")
    second = clip(org)
    usage.record_clip(second.pk, 1.0, 1.0)
    assert [s.unit_price for s in segments(first.pk) + segments(second.pk)] == [Decimal("0.0004"), Decimal("0.001")]
    assert prices.price_of("dreamfield", at=timezone.now() - timedelta(days=1)) == Decimal("0.0004")
    test_key, _ = tenancy.create_key(org, test=True)
    assert usage.price_of("dreamfield", test_key) == 0
    test_clip = clip(org, test_key)
    usage.record_clip(test_clip.pk, 1.0, 1.0)
    [seg] = segments(test_clip.pk)
    assert seg.test_mode and seg.amount == 0 and not OutboxEvent.objects.filter(segment=seg).exists()


def test_audits_are_recorded_as_the_platforms_cost(db):
    usage.record_audit("audit-abc", "dreamfield", 0.5, 2.0)
    usage.record_audit("audit-abc", "dreamfield", 0.5, 2.0)
    [seg] = segments("audit-abc")
    assert seg.payer == "platform" and seg.organization_id is None and seg.gpu_seconds == Decimal("1")
    assert not OutboxEvent.objects.exists() and not PeriodTotal.objects.exists()


def test_costs_round_half_up_to_the_micro_unit():
    assert usage.cost_of(1.25, "0.0000010") == Decimal("0.000001")
    assert usage.cost_of(Decimal("0.5"), "0.000001") == Decimal("0.000001")  # 0.0000005 rounds up
    assert usage.month_start().day == 1 and usage.month_start(timezone.now()).hour == 0
