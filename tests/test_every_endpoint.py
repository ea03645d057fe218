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

# Objects that belong to the deployment rather than to a tenant (model audits are evidence about a
# model on this deployment, the same for every organisation).
DEPLOYMENT_WIDE = {"/v1/audits/{audit_id}", "/v1/models/{model_id}/audit"}


def operations() -> list[tuple[str, str]]:
    doc = json.loads(Client().get("/v1/openapi.json").content)
    return [(path, method) for path, ops in doc["paths"].items() for method in ops]


def objects_of(org) -> dict[str, str]:
    """One object of each kind owned by `org`, by path parameter name."""
    from nextframe.clips.models import Clip
    from django.utils import timezone

    session = LiveSession.objects.create(organization=org, model="dreamfield", tier="interactive", width=64,
                                         height=64, fps=30)
    clip = Clip.objects.create(organization=org, model="dreamfield", width=64, height=64, fps=24, frames=8,
                               created_at=timezone.now(), status="succeeded")
    return {"session_id": session.id, "clip_id": str(clip.id), "model_id": "identity", "audit_id": "999999"}


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
    assert {"/v1/models", "/v1/tickets", "/v1/sessions", "/v1/sessions/{session_id}", "/v1/clips",
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
    assert checked >= 4


def test_unknown_ids_are_404_in_the_envelope(client_for, api_key):
    client = client_for(api_key)
    unknown = {"session_id": "ls_missing", "clip_id": "00000000-0000-0000-0000-000000000000", "audit_id": "999999",
               "model_id": "no-such-model"}
    for path, method in operations():
        if "{" not in path or method != "get":
            continue
        response = client.get(fill(path, unknown))
        assert response.status_code == 404, (path, response.content)
        assert error_code(response) == "not_found"
