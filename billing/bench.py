"""Billing benchmark: what metering costs a live tick, and what the quota read saves over a scan.

Run: python -m billing.bench [--n 300] [--segments 20000]

A throw-away SQLite database in a temporary data dir (migrated here). Baselines in the same run:
- a live tick: the seam before the ledger wrote one UPDATE of the session record per tick; now a
  tick is a checkpoint under row locks (`record_live`, no segment due) and, every
  BILLING_SEGMENT_S, a tick that also writes a segment (+ period total + outbox row);
- the quota read: one `PeriodTotal` row (+ the running sessions' unwritten usage) vs summing the
  organisation's month of segments (`--segments` rows), which is what a scan would cost;
- the outbox drain against the fake Stripe on loopback (the official client, one HTTP request per
  event): events per second, for scale only (Stripe's own latency is not on loopback).
"""
from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable


def _per_op(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="operations per measurement")
    ap.add_argument("--segments", type=int, default=20000, help="ledger rows of the month for the scan baseline")
    args = ap.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nextframe.settings.test")
    os.environ["NEXTFRAME_TEST_PROFILE"] = "embedded"
    import django

    django.setup()
    from datetime import timedelta
    from decimal import Decimal

    from django.conf import settings
    from django.core.management import call_command
    from django.db.models import Sum
    from django.utils import timezone

    from billing import quota, stripe_sync
    from billing.fake_stripe import running
    from billing.models import OutboxEvent, Segment
    from nextframe import usage
    from nextframe.live.models import LiveSession
    from nextframe.tenancy import actions

    call_command("migrate", verbosity=0)
    org = actions.create_org(f"bench-{int(time.time())}")

    def record() -> LiveSession:
        return LiveSession.objects.create(organization=org, model="dreamfield", tier="interactive", width=64,
                                          height=64, fps=30, share=0.5)

    rows: dict[str, float] = {}
    base = record()
    total = {"gpu": 0.0}

    def old_tick() -> None:
        total["gpu"] += 0.05
        LiveSession.objects.filter(pk=base.pk, status="active").update(
            last_seen_at=timezone.now(), frames=1, gpu_seconds=Decimal(str(round(total["gpu"], 4))),
            cost=Decimal("0"), metrics={"gpu_seconds": total["gpu"]})

    rows["tick: one UPDATE (before the ledger)"] = _per_op(old_tick, args.n)
    settings.BILLING_SEGMENT_S = 3600.0
    checkpoint = record()
    rows["tick: record_live, checkpoint only"] = _per_op(
        lambda: usage.record_live(checkpoint.pk, {"gpu_seconds": (total.__setitem__("gpu", total["gpu"] + 0.05)
                                                                  or total["gpu"])}, "0.0004"), args.n)
    settings.BILLING_SEGMENT_S = 0.0
    segmenting = record()
    rows["tick: record_live + a segment"] = _per_op(
        lambda: usage.record_live(segmenting.pk, {"gpu_seconds": (total.__setitem__("gpu", total["gpu"] + 0.05)
                                                                  or total["gpu"])}, "0.0004"), args.n)

    now = timezone.now()
    Segment.objects.bulk_create([
        Segment(key=f"bench:{org.pk}:{i}", organization=org, source="clip", source_id=f"bench{i}", seq=1,
                model="dreamfield", share=0.5, started_at=now - timedelta(seconds=1), ended_at=now,
                gpu_seconds=Decimal("0.5"), unit_price=Decimal("0.0004"), amount=Decimal("0.0002"))
        for i in range(args.segments)], batch_size=2000)
    start = usage.month_start()
    rows["quota: running total + pending"] = _per_op(lambda: quota.state(org, *usage.live_pending(org)), args.n)
    rows[f"quota: scan of {args.segments} segments"] = _per_op(
        lambda: Segment.objects.filter(organization=org, payer="customer", ended_at__gte=start).aggregate(
            s=Sum("gpu_seconds"), a=Sum("amount")), max(10, args.n // 10))

    OutboxEvent.objects.update(status="sent")
    settings.BILLING_SEGMENT_S = 0.0
    for _ in range(args.n):
        usage.record_live(record().pk, {"gpu_seconds": 1.0}, "0.0004", end_reason="client")
    with running() as fake:
        settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE = "sk_test_bench", fake.url
        began = time.perf_counter()
        sent = stripe_sync.drain(batch=args.n).sent
        drain_s = time.perf_counter() - began
    assert sent == args.n, sent

    print(f"{'measurement':<44} {'per op':>12}")
    for name, seconds in rows.items():
        print(f"{name:<44} {seconds * 1e3:>9.3f} ms")
    old = rows["tick: one UPDATE (before the ledger)"]
    print(f"\ntick overhead vs before: checkpoint x{rows['tick: record_live, checkpoint only'] / old:.1f}, "
          f"segment tick x{rows['tick: record_live + a segment'] / old:.1f}")
    scan = rows[f"quota: scan of {args.segments} segments"]
    print(f"quota read: running total is x{scan / rows['quota: running total + pending']:.0f} faster than a scan")
    print(f"outbox drain to the fake Stripe: {args.n / drain_s:.0f} events/s ({args.n} events, {drain_s:.2f} s)")



if __name__ == "__main__":
    main()
