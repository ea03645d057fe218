"""Audits the platform runs on itself are recorded in the ledger as the platform's cost: never
billed to a customer, never in a quota, never synced to Stripe (docs/billing.md)."""
from __future__ import annotations

import pytest

from billing.models import OutboxEvent, PeriodTotal, Segment
from nextframe.audits import runs
from nextframe.audits.tests.test_clip_audit import pool  # noqa: F401 - the fixture, reused

pytestmark = pytest.mark.django_db


def test_an_on_demand_clip_audit_is_recorded_as_the_platforms_cost(pool, org):  # noqa: F811
    run = runs.run_clip_audit("identity", "on_demand", organization_id=org.pk)
    assert run.status == "succeeded", run.error
    [segment] = Segment.objects.filter(source="audit")
    assert segment.payer == "platform" and segment.organization_id is None and segment.model == "identity"
    assert segment.gpu_seconds > 0 and segment.share > 0
    assert not OutboxEvent.objects.exists() and not PeriodTotal.objects.exists()
