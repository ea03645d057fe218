"""Which runs GET /v1/models publishes (the deployment's plan only), the CLI's bad usage, and the
per-organisation limit on on-demand audits."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from nextframe.audits import runs, worker
from nextframe.audits.cli import main
from nextframe.audits.evidence import latest_evidence, needs_audit
from nextframe.audits.models import AuditRun
from nextframe.audits.plan import deployment_plan, is_published

pytestmark = pytest.mark.django_db


def live_evidence(model: str, tier: str, plan: dict | None) -> dict:
    return {"model": model, "tier": tier, "declared_tier": "interactive", "ttff_ms": 5.0,
            "measured_at": timezone.now().isoformat(), "plan": plan}


def test_only_runs_with_the_deployments_plan_are_published_whatever_their_source(settings):
    settings.NEXTFRAME_AUDIT_SIZE, settings.NEXTFRAME_AUDIT_SESSIONS = "64x64", 2
    published = runs.record(live_evidence("stylize", "interactive", deployment_plan()), source="cli")
    other = dict(deployment_plan(), width=16, height=16, fps=60.0)
    adhoc = runs.record(live_evidence("stylize", "streaming", other), source="startup")
    planless = runs.record(live_evidence("stylize", "streaming", None), source="on_demand")
    assert is_published(published) and not is_published(adhoc)
    assert not is_published(planless)
    ev = latest_evidence("stylize")
    assert ev["audit_id"] == published.pk and ev["tier"] == "interactive"
    # A changed plan unpublishes what was measured with the old one (and start-up audits re-measure).
    settings.NEXTFRAME_AUDIT_SIZE = "128x128"
    assert latest_evidence("stylize") is None and needs_audit("stylize")


def test_unusable_audit_settings_publish_nothing_and_do_not_break_the_catalog(settings, api_key, client_for):
    runs.record(live_evidence("stylize", "interactive", deployment_plan()), source="cli")
    settings.NEXTFRAME_AUDIT_SESSIONS = 1  # an audit needs 2
    assert latest_evidence("stylize") is None
    assert client_for(api_key).get("/v1/models").status_code == 200


def test_a_cli_audit_at_another_size_is_recorded_unpublished_and_says_so(settings, capsys, fresh_host):
    settings.NEXTFRAME_AUDIT_SIZE, settings.NEXTFRAME_AUDIT_SESSIONS = "64x64", 2
    deployment = runs.record(live_evidence("dreamfield", "interactive", deployment_plan()),
                                source="startup")
    code = main(["--model", "dreamfield", "--size", "16x16", "--fps", "60", "--sessions", "2", "--controls", "2",
                 "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = json.loads(captured.out)
    assert out["recorded_as"]["published"] is False
    assert "NOT published" in captured.err and "16x16 at 60 fps" in captured.err
    adhoc = AuditRun.objects.get(pk=out["recorded_as"]["audit_id"])
    assert adhoc.status == "succeeded" and adhoc.source == "cli" and adhoc.evidence["width"] == 16
    assert latest_evidence("dreamfield")["audit_id"] == deployment.pk  # still the plan's run


def test_a_cli_clip_audit_with_the_deployments_plan_is_published(settings, capsys, fresh_host):
    from inference.pool import CpuProbe, build_pool
    from nextframe.capacity import set_pool

    settings.NEXTFRAME_AUDIT_SIZE, settings.NEXTFRAME_AUDIT_SESSIONS = "32x32", 2
    pool = build_pool(None, probe=CpuProbe(1.0))
    set_pool(pool)
    try:
        assert main(["--model", "identity", "--clip", "--json"]) == 0  # size and sessions: the deployment's
    finally:
        set_pool(None)
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["width"] == 32 and out["sessions"] == 2 and out["recorded_as"]["published"] is True
    assert "published: GET /v1/models shows it" in captured.err


@pytest.mark.parametrize("argv, message", [
    (["--size", "63x64", "--clip"], "even"),
    (["--probe-param", "nope"], "no param 'nope'"),
    (["--model", "identity", "--probe-param", "palette"], "no param 'palette'"),
    (["--size", "0x0"], "--size must be positive"),
    (["--fps", "0"], "--fps must be a positive number"),
    (["--clip", "--fps", "29.97"], "whole --fps"),
    (["--clip", "--size", "1024x1024"], "outside"),
    (["--size", "1024x1024"], "outside"),
    (["--sessions", "1"], "at least 2"),
])
def test_cli_bad_usage_is_a_clear_message_and_exit_2(argv, message, capsys):
    code = main(["--model", "dreamfield", "--no-record", *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert AuditRun.objects.count() == 0


@pytest.fixture
def no_worker(monkeypatch):
    submitted: list[int] = []
    monkeypatch.setattr(worker.worker, "submit", lambda run_id, with_clip: submitted.append(run_id))
    return submitted


def test_on_demand_audits_are_limited_per_organisation_per_hour(settings, api_key, other_key, client_for, no_worker):
    settings.NEXTFRAME_AUDIT_PER_ORG_PER_HOUR = 2
    client = client_for(api_key)
    first = client.post("/v1/models/stylize/audit")
    assert first.status_code == 202
    assert client.post("/v1/models/stylize/audit").json()["id"] == first.json()["id"]  # pending: free
    AuditRun.objects.filter(pk=first.json()["id"]).update(status="succeeded")
    assert client.post("/v1/models/dreamfield/audit").status_code == 202
    refused = client.post("/v1/models/identity/audit")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert 3500 <= int(refused["Retry-After"]) <= 3600
    assert not AuditRun.objects.filter(model_id="identity").exists() and len(no_worker) == 2
    # Another organisation has its own share.
    assert client_for(other_key).post("/v1/models/identity/audit").status_code == 202
    # An hour later the oldest one no longer counts.
    AuditRun.objects.filter(pk=first.json()["id"]).update(created_at=timezone.now() - timedelta(hours=1, seconds=1))
    AuditRun.objects.filter(model_id="identity").update(status="succeeded")  # no pending audit to return
    assert client.post("/v1/models/identity/audit").status_code == 202


def test_a_refusal_by_a_full_queue_does_not_use_up_the_organisations_share(settings, api_key, client_for,
                                                                             monkeypatch):
    settings.NEXTFRAME_AUDIT_PER_ORG_PER_HOUR = 1

    def full(run_id, with_clip):
        raise worker.AuditUnavailable("16 audits are already queued")

    monkeypatch.setattr(worker.worker, "submit", full)
    client = client_for(api_key)
    assert client.post("/v1/models/stylize/audit").status_code == 429
    monkeypatch.setattr(worker.worker, "submit", lambda run_id, with_clip: None)
    assert client.post("/v1/models/stylize/audit").status_code == 202
