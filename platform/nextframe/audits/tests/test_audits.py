"""Measured tiers on this deployment: recording audits, staleness, and what GET /v1/models shows."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from inference.audit.simulated import SimulatedRuntimeTransport
from nextframe.audits import queueing, runs, server, worker
from nextframe.audits.evidence import latest_evidence, needs_audit
from nextframe.audits.models import AuditRun
from nextframe.audits.plan import deployment_plan

pytestmark = pytest.mark.django_db


class InlineWorker:
    """Runs a queued audit at once, on the real frame loop with a fake clock (deterministic)."""

    def submit(self, run_id: int, with_clip: bool) -> None:
        run = AuditRun.objects.get(pk=run_id)
        runs.run_audit(run.model_id, run.source, run=run, transport=SimulatedRuntimeTransport())


@pytest.fixture
def small_audits(monkeypatch, settings):
    settings.NEXTFRAME_AUDIT_SIZE = "64x64"
    settings.NEXTFRAME_AUDIT_SESSIONS = 2
    monkeypatch.setattr(worker, "worker", InlineWorker())


def evidence(model: str, tier: str, declared: str, plan_kind: str = "live", **kw) -> dict:
    """Evidence as an audit with the deployment's plan stores it (a published run)."""
    ev = {"model": model, "tier": tier, "declared_tier": declared, "ttff_ms": 12.5, "fps_sustained": 29.8,
          "control_lag_frames": 0.0, "measured_at": timezone.now().isoformat(),
          "plan": deployment_plan(plan_kind)}
    ev.update(kw)
    return ev


def models_by_id(client) -> dict:
    response = client.get("/v1/models")
    assert response.status_code == 200
    return {m["id"]: m for m in response.json()["data"]}


def test_no_audit_means_no_evidence_and_the_declared_tier(api_key, client_for):
    assert latest_evidence("dreamfield") is None
    model = models_by_id(client_for(api_key))["dreamfield"]
    assert model["tier"] == "interactive" and model["tier_source"] == "declared" and model["evidence"] is None


def test_latest_successful_audit_is_the_evidence():
    runs.record(evidence("stylize", "streaming", "interactive"), source="cli")
    newer = runs.record(evidence("stylize", "interactive", "interactive", ttff_ms=9.0), source="startup")
    AuditRun.objects.create(model_id="stylize", source="on_demand", status="failed", error="boom")
    ev = latest_evidence("stylize")
    assert ev["tier"] == "interactive" and ev["ttff_ms"] == 9.0 and ev["audit_id"] == newer.pk
    assert ev["stale"] is False and ev["disagrees"] is False and ev["source"] == "startup"


def test_old_evidence_and_evidence_of_other_code_are_marked_stale(settings):
    run = runs.record(evidence("dreamfield", "interactive", "interactive"), source="cli")
    assert latest_evidence("dreamfield")["stale"] is False
    AuditRun.objects.filter(pk=run.pk).update(measured_at=timezone.now() - timedelta(days=2))
    ev = latest_evidence("dreamfield")
    assert ev["stale"] is True and "older than" in ev["stale_reason"]
    settings.NEXTFRAME_AUDIT_STALE_AFTER_S = 3 * 86400
    assert latest_evidence("dreamfield")["stale"] is False
    AuditRun.objects.filter(pk=run.pk).update(code_version="0123456789abcdef")
    ev = latest_evidence("dreamfield")
    assert ev["stale"] is True and ev["stale_reason"] == "measured on other engine code"
    assert needs_audit("dreamfield") is True


def test_models_show_the_measured_tier_and_the_disagreement(api_key, client_for):
    runs.record(evidence("dreamfield", "streaming", "interactive", control_lag_frames=3.0), source="cli")
    runs.record(evidence("dreamfield", "fast-batch", "fast-batch", "clip", transport="clip", complete_ms=80.0),
                   source="cli", kind="clip")
    model = models_by_id(client_for(api_key))["dreamfield"]
    assert model["tier"] == "streaming" and model["declared_tier"] == "interactive"
    assert model["tier_source"] == "measured" and model["tier_disagreement"] is True
    assert model["evidence"]["control_lag_frames"] == 3.0 and model["evidence"]["disagrees"] is True
    assert model["evidence"]["clip"]["tier"] == "fast-batch"


def test_on_demand_audit_of_a_lying_engine_shows_what_it_does(api_key, client_for, liar, small_audits):
    client = client_for(api_key)
    response = client.post(f"/v1/models/{liar.spec.id}/audit")
    assert response.status_code == 202, response.content
    run = response.json()
    detail = client.get(f"/v1/audits/{run['id']}").json()
    assert detail["status"] == "succeeded", detail
    assert detail["published"] is True  # measured with the deployment's plan
    assert detail["evidence"]["control_lag_frames_pixels"] == 3
    model = models_by_id(client)[liar.spec.id]
    assert model["declared_tier"] == "interactive"
    assert model["tier"] == "streaming" and model["tier_disagreement"] is True
    assert model["evidence"]["stale"] is False and model["evidence"]["source"] == "on_demand"


def test_on_demand_audit_of_an_unknown_model_is_404_and_needs_a_key(api_key, client_for):
    assert client_for(api_key).post("/v1/models/nope/audit").status_code == 404
    assert client_for(None).post("/v1/models/dreamfield/audit").status_code == 401
    assert AuditRun.objects.count() == 0


def test_a_full_queue_refuses_with_429(api_key, client_for, monkeypatch):
    def full(run_id, with_clip):
        raise worker.AuditUnavailable("16 audits are already queued")

    monkeypatch.setattr(worker.worker, "submit", full)
    response = client_for(api_key).post("/v1/models/dreamfield/audit")
    assert response.status_code == 429 and response["Retry-After"]
    assert AuditRun.objects.get().status == "failed"


def test_startup_audits_only_what_is_missing_or_stale(small_audits, monkeypatch):
    runs.record(evidence("identity", "interactive", "interactive"), source="startup")
    queued = []
    monkeypatch.setattr(queueing, "request_audit", lambda model_id, source, **kw: queued.append((model_id, source)))
    assert "identity" not in server.queue_startup_audits()
    assert ("identity", "startup") not in queued
    assert {m for m, _ in queued} >= {"dreamfield", "dreamfield-chunked", "stylize"}


def test_cli_audits_in_process_and_records_the_run(capsys, fresh_host):
    from nextframe.audits.cli import main

    code = main(["--model", "dreamfield-chunked", "--json", "--sessions", "2", "--controls", "4",
                 "--expect", "streaming"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert out["tier"] == "streaming" and out["control_lag_frames_pixels"] > 1
    run = AuditRun.objects.get(model_id="dreamfield-chunked")
    assert run.source == "cli" and run.tier == "streaming"


def test_cli_clip_tier_is_fast_batch(capsys):
    from nextframe.audits.cli import main

    assert main(["--model", "stylize", "--clip", "--json", "--sessions", "2", "--no-record"]) == 0
    out = json.loads(capsys.readouterr().out)
    # Two measured moments: the file is published after the last frame was computed.
    assert out["tier"] == "fast-batch" and out["ttff_ms"] > out["complete_ms"] > 0


def test_cli_bad_usage_exits_2(capsys):
    from nextframe.audits.cli import main

    assert main(["--model", "nope", "--no-record"]) == 2
    assert main(["--model", "dreamfield", "--size", "big"]) == 2


def test_an_audit_that_cannot_measure_ends_failed_and_shows_nothing():
    from inference.audit import AuditError

    class NoCapacity(SimulatedRuntimeTransport):
        async def open(self, *args, **kwargs):
            raise AuditError("capacity_unavailable", "no device capacity for an audit session")

    run = runs.run_audit("dreamfield", "on_demand", transport=NoCapacity())
    assert run.status == "failed" and "capacity_unavailable" in run.error
    assert latest_evidence("dreamfield") is None


def test_asking_again_while_an_audit_is_pending_returns_it(api_key, client_for, monkeypatch):
    submitted = []
    monkeypatch.setattr(worker.worker, "submit", lambda run_id, with_clip: submitted.append(run_id))
    client = client_for(api_key)
    first = client.post("/v1/models/stylize/audit").json()
    again = client.post("/v1/models/stylize/audit").json()
    assert first["id"] == again["id"] and again["status"] == "queued" and submitted == [first["id"]]
    AuditRun.objects.filter(pk=first["id"]).update(created_at=timezone.now() - timedelta(hours=1))
    assert client.post("/v1/models/stylize/audit").json()["id"] != first["id"]  # a dead process's row expires


def test_startup_audits_wait_for_devices_without_live_sessions(settings):
    from inference.pool import CpuProbe, build_pool
    from nextframe.capacity import set_pool
    from nextframe.live.host import reset_host

    reset_host()
    pool = build_pool(None, probe=CpuProbe(1.0))
    set_pool(pool)
    try:
        assert worker.wait_for_quiet_devices(0.0) is True
        lease = pool.reserve("acme", "live-1", 0.2)
        assert worker.wait_for_quiet_devices(0.0, poll_s=0.0) is False  # busy, and no time to wait
        pool.release(lease)
        assert worker.wait_for_quiet_devices(0.0) is True
    finally:
        set_pool(None)
        reset_host()
