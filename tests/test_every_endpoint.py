"""Every endpoint of the OpenAPI document: credentials, bad bodies and tenancy, checked uniformly.

New endpoints are picked up from the document itself, so an endpoint added later is covered
without anyone remembering to add it here.
"""
from __future__ import annotations

import json

import pytest
from django.test import Client

from nextframe.live.models import LiveSession

pytestmark = pytest.mark.django_db

# Objects that belong to the deployment rather than to a tenant: the installed models. (Audits are
# tenant objects: an organisation reads its own on-demand audits and the platform's start-up/CLI
# ones, never another organisation's; test_audits_are_tenant_scoped below.)
DEPLOYMENT_WIDE = {"/v1/models/{model_id}", "/v1/models/{model_id}/audit"}


def operations() -> list[tuple[str, str]]:
    doc = json.loads(Client().get("/v1/openapi.json").content)
    return [(path, method) for path, ops in doc["paths"].items() for method in ops]


def objects_of(org) -> dict[str, str]:
    """One object of each kind owned by `org`, by path parameter name."""
    from django.utils import timezone

    from nextframe.audits.models import AuditRun
    from nextframe.clips.models import Clip

    session = LiveSession.objects.create(organization=org, model="dreamfield", tier="interactive", width=64,
                                         height=64, fps=30)
    clip = Clip.objects.create(organization=org, model="dreamfield", width=64, height=64, fps=24, frames=8,
                               created_at=timezone.now(), status="succeeded")
    audit = AuditRun.objects.create(model_id="identity", source="on_demand", status="succeeded", tier="interactive",
                                    organization=org)
    from moderation.models import BlockedHash

    listed = BlockedHash.objects.create(organization=org, phash="0123456789abcdef", category="test")
    return {"session_id": session.id, "clip_id": str(clip.id), "model_id": "identity", "audit_id": str(audit.pk),
            "hash_id": str(listed.pk)}


def fill(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path


def error_code(response) -> str:
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    return body["error"]["code"]


def test_the_document_lists_the_known_endpoints():
    paths = {path for path, _ in operations()}
    assert {"/v1/models", "/v1/models/{model_id}", "/v1/audits/{audit_id}", "/v1/tickets", "/v1/sessions", "/v1/sessions/{session_id}", "/v1/clips",
            "/v1/clips/{clip_id}", "/v1/clips/{clip_id}/video"} <= paths


def test_every_endpoint_refuses_a_missing_or_wrong_key_with_401(org):
    values = objects_of(org)
    client = Client()
    for path, method in operations():
        url = fill(path, values)
        for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer nf_live_nonsense"}):
            response = getattr(client, method)(url, **headers)
            assert response.status_code == 401, (method, url, response.content)
            assert error_code(response) == "unauthenticated"


def test_every_body_endpoint_answers_bad_bodies_with_a_4xx_envelope(client_for, api_key, org):
    values = objects_of(org)
    client = client_for(api_key)
    cases = [
        ("{broken", "application/json", 400, {"malformed_json"}),
        ("just text", "text/plain", 415, {"unsupported_media_type"}),
        (json.dumps({"pad": "x" * 100_000}), "application/json", 413, {"payload_too_large"}),
        (json.dumps({"surely_not_a_field": 1}), "application/json", 400, {"invalid_request", "invalid_params"}),
        ("[]", "application/json", 400, {"invalid_request", "invalid_params"}),
    ]
    checked = 0
    for path, method in operations():
        if method not in {"post", "put", "patch"}:
            continue
        url = fill(path, values)
        for body, content_type, status, codes in cases:
            response = getattr(client, method)(url, data=body, content_type=content_type)
            assert response.status_code == status, (method, url, body[:30], response.content)
            assert error_code(response) in codes, (method, url, response.content)
        checked += 1
    assert checked >= 3


def test_every_object_of_another_organisation_is_404(client_for, api_key, org, other_org):
    theirs = objects_of(other_org)
    objects_of(org)
    client = client_for(api_key)
    checked = 0
    for path, method in operations():
        if "{" not in path or path in DEPLOYMENT_WIDE:
            continue
        response = getattr(client, method)(fill(path, theirs))
        assert response.status_code == 404, (method, path, response.content)
        assert error_code(response) == "not_found"
        checked += 1
    assert checked >= 5


def test_unknown_ids_are_404_in_the_envelope(client_for, api_key):
    client = client_for(api_key)
    unknown = {"session_id": "ls_missing", "clip_id": "00000000-0000-0000-0000-000000000000", "audit_id": "999999",
               "model_id": "no-such-model", "hash_id": "999999"}
    for path, method in operations():
        if "{" not in path or method != "get":
            continue
        response = client.get(fill(path, unknown))
        assert response.status_code == 404, (path, response.content)
        assert error_code(response) == ("unknown_model" if path == "/v1/models/{model_id}" else "not_found")


def test_audits_are_tenant_scoped(client_for, api_key, other_key, org, other_org):
    """Own on-demand audits and the platform's are readable; another organisation's never are."""
    from nextframe.audits.models import AuditRun

    mine = AuditRun.objects.create(model_id="identity", source="on_demand", status="queued", organization=org)
    theirs = AuditRun.objects.create(model_id="identity", source="on_demand", status="queued", organization=other_org)
    platform_run = AuditRun.objects.create(model_id="identity", source="startup", status="queued")
    client, other = client_for(api_key), client_for(other_key)
    assert client.get(f"/v1/audits/{mine.pk}").status_code == 200
    assert client.get(f"/v1/audits/{platform_run.pk}").status_code == 200
    assert other.get(f"/v1/audits/{platform_run.pk}").status_code == 200
    for response in (client.get(f"/v1/audits/{theirs.pk}"), other.get(f"/v1/audits/{mine.pk}")):
        assert response.status_code == 404 and error_code(response) == "not_found"


def test_another_organisations_audit_is_not_linked_from_the_models(client_for, api_key, other_org):
    """GET /v1/models shows the published evidence to all, but not the id of another tenant's run."""
    from nextframe.audits.models import AuditRun
    from nextframe.audits.plan import deployment_plan
    from nextframe.audits.runs import record

    run = AuditRun.objects.create(model_id="identity", source="on_demand", status="queued", organization=other_org)
    evidence = {"model": "identity", "tier": "interactive", "declared_tier": "interactive",
                "plan": deployment_plan()}
    record(evidence, source="on_demand", run=run)
    client = client_for(api_key)
    model = client.get("/v1/models/identity").json()
    assert model["tier_source"] == "measured"  # published: the evidence itself is deployment-wide
    assert model["evidence"]["audit_id"] is None
    assert client_for(api_key).get(f"/v1/audits/{run.pk}").status_code == 404
    listed = next(m for m in client.get("/v1/models").json()["data"] if m["id"] == "identity")
    assert listed == model


def test_a_pending_audit_of_another_organisation_is_not_handed_out(client_for, api_key, other_key, monkeypatch):
    """Asking while another tenant's audit of the model is pending queues the caller's own run."""
    from nextframe.audits import worker

    monkeypatch.setattr(worker.worker, "submit", lambda run_id, with_clip: None)
    theirs = client_for(other_key).post("/v1/models/identity/audit")
    assert theirs.status_code == 202, theirs.content
    mine = client_for(api_key).post("/v1/models/identity/audit")
    assert mine.status_code == 202, mine.content
    assert mine.json()["id"] != theirs.json()["id"]
    assert client_for(api_key).get(f"/v1/audits/{mine.json()['id']}").status_code == 200
    again = client_for(api_key).post("/v1/models/identity/audit")
    assert again.json()["id"] == mine.json()["id"]  # the caller's own pending run is still reused



@pytest.mark.django_db(transaction=True)
def test_the_clip_run_of_an_on_demand_audit_belongs_to_the_organisation(client_for, api_key, other_key, org,
                                                                         monkeypatch):
    """The worker's clip-tier run is the asking organisation's too, not a platform run all can read."""
    import time

    from inference.audit import AuditError
    from nextframe.audits import runs
    from nextframe.audits.models import AuditRun

    def unmeasured_live(model_id, source, run=None):
        return runs.mark_failed(run, "not measured in this test")

    def unmeasured_clip(*args, **kwargs):
        raise AuditError("not measured in this test")

    # The real background worker runs the job; only the measurements themselves are cut short.
    monkeypatch.setattr(runs, "run_audit", unmeasured_live)
    monkeypatch.setattr("inference.audit.clip.audit_clip", unmeasured_clip)
    assert client_for(api_key).post("/v1/models/identity/audit").status_code == 202
    deadline = time.monotonic() + 30
    while not AuditRun.objects.filter(kind="clip", status="failed").exists():
        assert time.monotonic() < deadline, "the worker never recorded the clip run"
        time.sleep(0.05)
    clip_run = AuditRun.objects.get(kind="clip")
    assert clip_run.organization_id == org.pk
    assert client_for(api_key).get(f"/v1/audits/{clip_run.pk}").status_code == 200
    assert client_for(other_key).get(f"/v1/audits/{clip_run.pk}").status_code == 404
