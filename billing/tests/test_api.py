"""GET /v1/usage, GET /v1/billing, `nextframe usage` and the clip tier's up-front quota: what a
customer reads back is the sum of its own ledger segments, and nobody else's."""
from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from billing import prices, quota
from billing.models import Segment
from nextframe import cli, usage
from nextframe.clips.models import Clip
from nextframe.live.models import LiveSession
from nextframe.tenancy import actions as tenancy

pytestmark = pytest.mark.django_db


def live(org, total, api_key=None, model="dreamfield"):
    record = LiveSession.objects.create(organization=org, api_key=api_key, model=model, tier="interactive", width=64,
                                        height=64, fps=30, share=0.5)
    return usage.record_live(record.pk, {"gpu_seconds": total, "frames_out": 1}, usage.price_of(model, api_key),
                             end_reason="client")


@pytest.fixture
def ledger(org, other_org, settings):
    settings.BILLING_SEGMENT_S = 0.0
    key, _ = tenancy.create_key(org, name="main")
    test_key, _ = tenancy.create_key(org, test=True)
    live(org, 10.0, key)
    live(org, 2.5, key, model="identity")
    live(org, 7.0, test_key)  # metered, priced 0
    live(other_org, 100.0)
    return key, test_key


def test_usage_totals_and_groups_are_the_callers_own_segments(ledger, api_key, client_for):
    client = client_for(api_key)
    body = client.get("/v1/usage").json()
    mine = Segment.objects.filter(organization__name="acme")
    assert body["object"] == "usage" and body["currency"] == "usd" and body["data"] == []
    assert Decimal(body["gpu_seconds"]) == sum(s.gpu_seconds for s in mine) == Decimal("19.5")
    assert Decimal(body["cost"]) == sum(s.amount for s in mine) and isinstance(body["cost"], str)
    by_model = {row["model"]: row for row in client.get("/v1/usage?group_by=model").json()["data"]}
    assert set(by_model) == {"dreamfield", "identity"} and by_model["identity"]["gpu_seconds"] == "2.500000"
    by_key = client.get("/v1/usage?group_by=key").json()["data"]
    assert sorted(Decimal(row["gpu_seconds"]) for row in by_key) == [Decimal("7"), Decimal("12.5")]
    assert all(row["key"].startswith(("nf_live_", "nf_test_")) for row in by_key)
    today = timezone.now().date()
    [day] = client.get(f"/v1/usage?group_by=day&start={today.isoformat()}").json()["data"]
    assert day["day"] == today.isoformat() and day["gpu_seconds"] == "19.500000"
    assert client.get("/v1/usage?end=2000-01-02&start=2000-01-01").json()["gpu_seconds"] == "0.000000"


@pytest.mark.parametrize("query", ["group_by=week", "start=yesterday", "start=2026-12-02&end=2026-12-01",
                                   "stat=1", "group_by=day&start=2020-01-01&end=2021-01-02"])
def test_bad_usage_queries_are_400(org, api_key, client_for, query):
    response = client_for(api_key).get(f"/v1/usage?{query}")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"


def test_billing_shows_limits_an_invoice_preview_per_model_and_price_and_sync_status(ledger, org, api_key,
                                                                                  client_for, settings):
    settings.STRIPE_SECRET_KEY = ""
    org.gpu_seconds_limit = Decimal("25")
    org.save()
    prices.set_price("dreamfield", "0.001")
    live(org, 1.0, ledger[0])
    body = client_for(api_key).get("/v1/billing").json()
    assert (body["status"], body["plan"], body["gpu_seconds_limit"]) == ("active", "metered", "25.000000")
    assert body["gpu_seconds_used"] == "13.500000" and body["percent_used"] == 54  # test mode never counts
    lines = {(line["model"], line["unit_price"]): line for line in body["invoice_preview"]["lines"]}
    assert set(lines) == {("dreamfield", "0.0004"), ("dreamfield", "0.001"), ("identity", "0.0001")}
    assert lines[("dreamfield", "0.001")]["amount"] == "0.001000"
    assert Decimal(body["invoice_preview"]["total"]) == Decimal(body["spend"]) == Decimal("0.00525")
    assert body["stripe"] == {"sync": "off", "pending_meter_events": 3, "last_sync_at": None}


def test_the_cli_prints_a_months_usage(ledger, capsys):
    assert cli.main(["usage", "--org", "acme"]) == 0
    out = capsys.readouterr().out
    assert "GPU-seconds 12.500000 of unlimited" in out and "dreamfield" in out and "Stripe sync off" in out
    assert cli.main(["usage", "--org", "acme", "--month", "2001-01"]) == 0
    assert "GPU-seconds 0.000000" in capsys.readouterr().out
    assert cli.main(["usage", "--org", "acme", "--month", "January"]) == 2
    assert cli.main(["usage", "--org", "nobody"]) == 1


def create(client, frames=12):
    return client.post("/v1/clips", {"model": "dreamfield", "prompt": "tide", "width": 64, "height": 64, "fps": 12,
                                     "frames": frames}, format="json")


def test_a_clip_whose_estimate_does_not_fit_is_402_before_any_work(org, api_key, client_for, settings):
    org.gpu_seconds_limit = Decimal("0.5")
    org.save()
    client = client_for(api_key)
    assert create(client, frames=12).status_code == 202  # 1 s at the minimum share: 0.05 GPU-s
    refused = create(client, frames=300)  # 25 s: at least 1.25 GPU-s estimated
    assert refused.status_code == 402 and refused.json()["error"]["code"] == "quota_exceeded"
    assert Clip.objects.count() == 1
    _, test_key = tenancy.create_key(org, test=True)
    assert create(client_for(test_key), frames=300).status_code == 202  # test mode never counts
    account = quota.account_for(org)
    account.spend_limit = Decimal("0")
    account.save()
    assert create(client, frames=12).json()["error"]["code"] == "quota_exceeded"  # the spend limit too
    account.status = "suspended"
    account.save()
    suspended = create(client_for(test_key))
    assert suspended.status_code == 402 and suspended.json()["error"]["code"] == "account_suspended"
