"""The outbox drain against the fake Stripe on loopback (the official client, STRIPE_API_BASE):
each customer-paid segment reaches Stripe exactly once across errors, rate limits and crashes."""
from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from billing import ledger, stripe_sync
from billing.models import Account, OutboxEvent, Segment
from nextframe import usage
from nextframe.live.models import LiveSession
from nextframe.tenancy import actions as tenancy

pytestmark = pytest.mark.django_db


class Crash(BaseException):
    """A process dying at an injected point (a BaseException: no `except Exception` catches it)."""


def session(org, api_key=None) -> LiveSession:
    return LiveSession.objects.create(organization=org, api_key=api_key, model="dreamfield", tier="interactive",
                                      width=64, height=64, fps=30, share=0.5)


def make_due() -> None:
    """Time passes: every backed-off event is due again."""
    OutboxEvent.objects.update(next_attempt_at=timezone.now())


def test_sync_off_without_keys_and_the_ledger_still_works(org, settings):
    settings.STRIPE_SECRET_KEY = ""
    settings.BILLING_SEGMENT_S = 0.0
    usage.record_live(session(org).pk, {"gpu_seconds": 3.0}, "0.0004", end_reason="client")
    assert stripe_sync.drain().off
    assert OutboxEvent.objects.filter(status="pending").count() == 1  # kept for when sync is turned on


def test_each_segment_is_sent_once_with_a_lazily_created_customer(org, other_org, fake_stripe, settings):
    settings.BILLING_SEGMENT_S = 0.0
    for who, total in ((org, 1.5), (org, 2.25), (other_org, 4.0)):
        usage.record_live(session(who).pk, {"gpu_seconds": total}, "0.0004", end_reason="client")
    test_key, _ = tenancy.create_key(org, test=True)
    usage.record_live(session(org, test_key).pk, {"gpu_seconds": 9.0}, "0", end_reason="client")  # never synced
    result = stripe_sync.drain()
    assert (result.sent, result.failed) == (3, 0)
    assert stripe_sync.drain().sent == 0  # nothing twice
    assert len(fake_stripe.customers) == 2
    account = Account.objects.get(organization=org)
    by_id = {e["identifier"]: e for e in fake_stripe.accepted}
    for segment in Segment.objects.filter(test_mode=False):
        event = by_id[f"nf_{segment.key}"]
        assert Decimal(event["payload"]["value"]) == segment.gpu_seconds
        assert event["event_name"] == settings.NEXTFRAME_STRIPE_METER_EVENT
        assert event["timestamp"] == int(segment.ended_at.timestamp())
        if segment.organization_id == org.pk:
            assert event["payload"]["stripe_customer_id"] == account.stripe_customer_id


def test_rate_limits_stop_the_round_and_errors_back_off_one_event(org, fake_stripe, settings):
    settings.BILLING_SEGMENT_S = 0.0
    for total in (1.0, 2.0, 3.0):
        usage.record_live(session(org).pk, {"gpu_seconds": total}, "0.0004", end_reason="client")
    fake_stripe.fail_next(1, status=429, retry_after_s=30)
    result = stripe_sync.drain()
    assert result.rate_limited and result.sent == 0
    delayed = OutboxEvent.objects.order_by("pk").first()
    assert (delayed.next_attempt_at - timezone.now()).total_seconds() > 25 and "rate limited" in delayed.last_error
    make_due()
    fake_stripe.fail_next(1, status=500)  # the customer creation of the first event fails
    result = stripe_sync.drain()
    assert (result.sent, result.failed) == (2, 1)
    assert stripe_sync.drain().sent == 0  # the failed one is backing off
    make_due()
    assert stripe_sync.drain().sent == 1 and len(fake_stripe.accepted) == 3


def test_a_crash_after_stripe_accepted_resends_and_stripe_dedupes_it(org, fake_stripe, settings):
    settings.BILLING_SEGMENT_S = 0.0
    usage.record_live(session(org).pk, {"gpu_seconds": 1.0}, "0.0004", end_reason="client")

    def die(event):
        raise Crash()

    with pytest.raises(Crash):
        stripe_sync.drain(on_sent=die)
    assert OutboxEvent.objects.get().status == "pending" and len(fake_stripe.accepted) == 1
    result = stripe_sync.drain()
    assert (result.sent, result.already_there) == (0, 1)
    assert OutboxEvent.objects.get().status == "sent" and len(fake_stripe.accepted) == 1


OPS = st.lists(st.one_of(
    st.tuples(st.just("tick"), st.sampled_from(["ok", "crash_in_ledger", "crash_before_commit"]),
              st.integers(min_value=1, max_value=4000)),
    st.tuples(st.just("drain"), st.sampled_from(["ok", "crash_after_send", "429", "500"]), st.just(0)),
), min_size=1, max_size=12)


@hsettings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_crashes_between_ledger_outbox_and_sync_lose_nothing_and_duplicate_nothing(ops, org, fake_stripe,
                                                                                     settings, monkeypatch):
    settings.BILLING_SEGMENT_S = 0.0
    real_add = ledger._add_to_period
    crash_in_ledger = {"on": False}

    def add_to_period(segment):  # between the segment row and its period total and outbox row
        if crash_in_ledger["on"]:
            raise Crash()
        real_add(segment)

    monkeypatch.setattr(ledger, "_add_to_period", add_to_period)
    fake_stripe.clear_failures()  # one example's unserved failures are not the next one's
    record = session(org)
    total = 0  # the runtime's cumulative GPU-seconds, in milli-units: it only grows
    for kind, mode, amount in ops:
        if kind == "tick":
            total += amount
            crash_in_ledger["on"] = mode == "crash_in_ledger"
            try:
                with transaction.atomic():
                    usage.record_live(record.pk, {"gpu_seconds": total / 1000}, "0.0004")
                    if mode == "crash_before_commit":
                        raise Crash()
            except Crash:
                pass
            crash_in_ledger["on"] = False
        else:
            if mode in ("429", "500"):
                fake_stripe.fail_next(1, status=int(mode))
            try:
                stripe_sync.drain(on_sent=(lambda e: (_ for _ in ()).throw(Crash())) if mode == "crash_after_send" else None)
            except Crash:
                pass
            make_due()
    usage.record_live(record.pk, {"gpu_seconds": total / 1000}, "0.0004", end_reason="client")
    fake_stripe.clear_failures()  # a failure asked for when nothing was due was never served
    for _ in range(3):
        make_due()
        stripe_sync.drain()
    rows = list(Segment.objects.filter(source_id=record.pk))
    assert sum(s.gpu_seconds for s in rows) == Decimal(total) / 1000  # the ledger lost and doubled nothing
    assert not OutboxEvent.objects.filter(segment__in=rows, status="pending").exists()
    sent = [e for e in fake_stripe.accepted if e["identifier"].startswith(f"nf_live:{record.pk}:")]
    assert sorted(e["identifier"] for e in sent) == sorted(f"nf_{s.key}" for s in rows)  # once each
    assert sum(Decimal(e["payload"]["value"]) for e in sent) == Decimal(total) / 1000
