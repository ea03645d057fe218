"""Quotas and account status, read from the per-organisation running total (`PeriodTotal`).

Two monthly limits: GPU-seconds (`Organization.gpu_seconds_limit`) and spend (`Account.spend_limit`);
either reached means the quota is exhausted. Only customer-paid, live-mode usage counts (test-mode
keys and the platform's own costs never do). `pending_*` lets a running live session add what it has
measured but not yet written as a segment, so the check is live, not one segment late.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from django.utils import timezone

from billing import arithmetic
from billing.models import Account, PeriodTotal
from nextframe.tenancy.models import Organization

WARN_PERCENT = 90


@dataclass(frozen=True)
class QuotaState:
    period: date
    used_gpu_seconds: Decimal
    limit_gpu_seconds: Decimal | None
    spend: Decimal
    spend_limit: Decimal | None

    @property
    def percent(self) -> int:
        """The larger of the two limits' percentages used (0 without limits)."""
        parts = [arithmetic.percent(self.used_gpu_seconds, self.limit_gpu_seconds)
                 if self.limit_gpu_seconds is not None else 0,
                 arithmetic.percent(self.spend, self.spend_limit) if self.spend_limit is not None else 0]
        return max(parts)

    @property
    def exhausted(self) -> bool:
        return self.percent >= 100

    def fits(self, gpu_seconds: Decimal, amount: Decimal) -> bool:
        """Whether `gpu_seconds` costing `amount` more stay within both limits."""
        if self.limit_gpu_seconds is not None and self.used_gpu_seconds + gpu_seconds > self.limit_gpu_seconds:
            return False
        return self.spend_limit is None or self.spend + amount <= self.spend_limit


def account_for(org: Organization | int) -> Account:
    org_id = org if isinstance(org, int) else org.pk
    account, _ = Account.objects.get_or_create(organization_id=org_id)
    return account


def is_suspended(org: Organization | int) -> bool:
    org_id = org if isinstance(org, int) else org.pk
    return Account.objects.filter(organization_id=org_id, status=Account.Status.SUSPENDED).exists()


def state(org: Organization, pending_gpu: Decimal = Decimal(0), pending_amount: Decimal = Decimal(0)) -> QuotaState:
    period = arithmetic.period_of(timezone.now())
    total = PeriodTotal.objects.filter(organization=org, period=period).values_list("gpu_seconds", "amount").first()
    used, spend = total or (Decimal(0), Decimal(0))
    spend_limit = Account.objects.filter(organization=org).values_list("spend_limit", flat=True).first()
    return QuotaState(period, used + pending_gpu, org.gpu_seconds_limit, spend + pending_amount, spend_limit)
