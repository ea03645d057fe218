"""What the usage API, the billing endpoint and the CLI report, read from the ledger.

Customers see their own customer-paid segments (live and test mode; test mode at price 0); the
platform's own costs (preempted clip attempts, audits) are in the ledger but in no customer report.
Every amount is a decimal string; totals are sums of segments, so they equal what each client was told.
"""
from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count, Max, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from billing import arithmetic, quota
from billing.models import OutboxEvent, Segment
from nextframe.tenancy.models import Organization

GROUPS = ("day", "model", "key")


# A day-by-day report is one response, not a paginated list: its range is bounded.
MAX_DAY_ROWS = 366


class ReportError(ValueError):
    """A bad report request (400 invalid_request on REST, exit 2 in the CLI)."""


def _dec(value: Decimal | None) -> str:
    return str((value or Decimal(0)).quantize(arithmetic.MICRO))


def parse_moment(text: str, name: str) -> datetime:
    """An ISO date (midnight UTC) or an ISO datetime (UTC when naive)."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReportError(f"{name} must be an ISO date (2026-12-01) or datetime, got {text[:40]!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def period_bounds(period: date) -> tuple[datetime, datetime]:
    start = datetime.combine(period, time(), tzinfo=UTC)
    return start, datetime.combine(arithmetic.next_period(period), time(), tzinfo=UTC)


def customer_segments(org: Organization, start: datetime, end: datetime):
    return Segment.objects.filter(organization=org, payer=Segment.Payer.CUSTOMER, ended_at__gte=start,
                                  ended_at__lt=end)


def usage(org: Organization, start: datetime | None = None, end: datetime | None = None,
          group_by: str | None = None) -> dict[str, Any]:
    """GET /v1/usage: the organisation's usage in [start, end) (default: this month so far)."""
    now = timezone.now()
    start = start or period_bounds(arithmetic.period_of(now))[0]
    end = end or now
    if end <= start:
        raise ReportError("end must be after start")
    if group_by is not None and group_by not in GROUPS:
        raise ReportError(f"group_by must be one of {', '.join(GROUPS)}")
    if group_by == "day" and end - start > timedelta(days=MAX_DAY_ROWS):
        raise ReportError(f"group_by=day covers at most {MAX_DAY_ROWS} days: ask for a shorter range")
    rows = customer_segments(org, start, end)
    total = rows.aggregate(gpu=Sum("gpu_seconds"), cost=Sum("amount"))
    data: list[dict[str, Any]] = []
    if group_by == "day":
        for row in rows.annotate(day=TruncDate("ended_at")).values("day").annotate(
                gpu=Sum("gpu_seconds"), cost=Sum("amount"), n=Count("pk")).order_by("day"):
            data.append({"day": row["day"].isoformat(), "gpu_seconds": _dec(row["gpu"]), "cost": _dec(row["cost"]),
                         "segments": row["n"]})
    elif group_by == "model":
        for row in rows.values("model").annotate(gpu=Sum("gpu_seconds"), cost=Sum("amount"),
                                                 n=Count("pk")).order_by("model"):
            data.append({"model": row["model"], "gpu_seconds": _dec(row["gpu"]), "cost": _dec(row["cost"]),
                         "segments": row["n"]})
    elif group_by == "key":
        for row in rows.values("api_key__mode", "api_key__key_id").annotate(
                gpu=Sum("gpu_seconds"), cost=Sum("amount"), n=Count("pk")).order_by("api_key__key_id"):
            key = (f"nf_{row['api_key__mode']}_{row['api_key__key_id']}_" if row["api_key__key_id"] else None)
            data.append({"key": key, "gpu_seconds": _dec(row["gpu"]), "cost": _dec(row["cost"]), "segments": row["n"]})
    return {"object": "usage", "start": start.isoformat(), "end": end.isoformat(), "group_by": group_by,
            "gpu_seconds": _dec(total["gpu"]), "cost": _dec(total["cost"]), "currency": arithmetic.CURRENCY,
            "data": data}


def sync_status(org: Organization | None = None) -> dict[str, Any]:
    """Stripe sync: `on` when a secret key is configured; pending meter events; the last sync."""
    events = OutboxEvent.objects.all()
    if org is not None:
        events = events.filter(segment__organization=org)
    stats = events.aggregate(pending=Count("pk", filter=Q(status=OutboxEvent.Status.PENDING)), last=Max("sent_at"))
    return {"sync": "on" if settings.STRIPE_SECRET_KEY else "off", "pending_meter_events": stats["pending"],
            "last_sync_at": stats["last"].isoformat() if stats["last"] else None}


def billing(org: Organization, period: date | None = None) -> dict[str, Any]:
    """GET /v1/billing: plan, status, the period, usage against limits, an invoice preview, sync."""
    now = timezone.now()
    period = period or arithmetic.period_of(now)
    start, end = period_bounds(period)
    account = quota.account_for(org)
    state = quota.state(org) if period == arithmetic.period_of(now) else None
    billed = customer_segments(org, start, end).filter(test_mode=False)
    lines = [
        {"model": row["model"], "unit_price": str(row["unit_price"].normalize()), "gpu_seconds": _dec(row["gpu"]),
         "amount": _dec(row["amount"])}
        for row in billed.values("model", "unit_price").annotate(gpu=Sum("gpu_seconds"), amount=Sum("amount"))
        .order_by("model", "unit_price")
    ]
    total = sum((Decimal(line["amount"]) for line in lines), Decimal(0))
    used = sum((Decimal(line["gpu_seconds"]) for line in lines), Decimal(0))
    return {
        "object": "billing",
        "organization": org.name,
        "plan": account.plan,
        "status": account.status,
        "status_reason": account.status_reason,
        "current_period": {"start": start.isoformat(), "end": end.isoformat()},
        "gpu_seconds_used": _dec(used),
        "gpu_seconds_limit": None if org.gpu_seconds_limit is None else _dec(org.gpu_seconds_limit),
        "spend": _dec(total),
        "spend_limit": None if account.spend_limit is None else _dec(account.spend_limit),
        "percent_used": state.percent if state is not None else None,
        "currency": arithmetic.CURRENCY,
        "invoice_preview": {"lines": lines, "total": _dec(total), "currency": arithmetic.CURRENCY},
        "stripe": sync_status(org),
    }


def month(text: str) -> date:
    """YYYY-MM as the first day of that month."""
    try:
        return datetime.strptime(text, "%Y-%m").date()
    except ValueError:
        raise ReportError(f"--month must be YYYY-MM, got {text!r}") from None


