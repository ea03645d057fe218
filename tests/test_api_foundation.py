"""REST foundation: auth, the error envelope on every endpoint, tickets, tenancy isolation."""
import json

import pytest
from django.utils import timezone

from nextframe.tenancy import actions
from nextframe.tenancy.models import ApiKey, Ticket

pytestmark = pytest.mark.django_db


def error_of(response):
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message"} <= set(body["error"]), body
    return body["error"]["code"]


def test_models_lists_installed_engines_with_a_key(client_for, api_key):
    response = client_for(api_key).get("/v1/models")
    assert response.status_code == 200
    ids = {m["id"] for m in response.json()["data"]}
    assert {"identity", "dreamfield", "stylize", "dreamfield-chunked"} <= ids
    model = next(m for m in response.json()["data"] if m["id"] == "identity")
    assert model["kind"] == "video-to-video" and model["tier"] in {"interactive", "streaming", "fast-batch"}
    assert "params" in model and "price_per_gpu_second" in model
    assert model["limits"]["max_width"] == 1280 and model["limits"]["max_frame_bytes"] == 2 * 2**20


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer nf_live_garbage", "Basic dXNlcjpwYXNz", "Token abc"])
def test_missing_or_malformed_key_is_401_in_the_envelope(client, header):
    kwargs = {"HTTP_AUTHORIZATION": header} if header else {}
    response = client.get("/v1/models", **kwargs)
    assert response.status_code == 401
    assert error_of(response) == "unauthenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_unknown_well_formed_key_is_401(client_for, db):
    from nextframe.tenancy import keys

    unknown, _ = keys.generate()
    response = client_for(unknown).get("/v1/models")
    assert response.status_code == 401 and error_of(response) == "unauthenticated"


def test_revoked_key_is_401(client_for, api_key):
    actions.revoke_key(actions.find_key(api_key))
    response = client_for(api_key).get("/v1/models")
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]["message"]


def test_key_use_records_last_used_at(client_for, api_key):
    row = actions.find_key(api_key)
    assert row.last_used_at is None
    client_for(api_key).get("/v1/models")
    row.refresh_from_db()
    assert row.last_used_at is not None


def test_only_the_hash_of_a_key_is_stored(api_key):
    row = actions.find_key(api_key)
    for value in ApiKey.objects.filter(pk=row.pk).values().first().values():
        assert api_key not in str(value)


def test_unknown_endpoint_and_wrong_method_use_the_envelope(client_for, api_key):
    client = client_for(api_key)
    response = client.get("/v1/nope")
    assert response.status_code == 404 and error_of(response) == "not_found"
    response = client.delete("/v1/models")
    assert response.status_code == 405 and error_of(response) == "method_not_allowed"


def test_ticket_is_minted_single_use_and_short_lived(client_for, api_key):
    response = client_for(api_key).post("/v1/tickets", data={}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["ticket"].startswith("nft_")
    ticket = Ticket.objects.get()
    assert (ticket.expires_at - timezone.now()).total_seconds() <= 60
    principal = actions.redeem_ticket(body["ticket"])
    assert principal.organization.name == "acme"
    with pytest.raises(actions.AuthError):
        actions.redeem_ticket(body["ticket"])


def test_expired_ticket_is_refused(client_for, api_key):
    token = client_for(api_key).post("/v1/tickets").json()["ticket"]
    Ticket.objects.update(expires_at=timezone.now())
    with pytest.raises(actions.AuthError):
        actions.redeem_ticket(token)


def test_ticket_of_a_revoked_key_is_refused(client_for, api_key):
    token = client_for(api_key).post("/v1/tickets").json()["ticket"]
    actions.revoke_key(actions.find_key(api_key))
    with pytest.raises(actions.AuthError):
        actions.redeem_ticket(token)


def test_ticket_needs_the_live_scope(client_for, org):
    _, read_only = actions.create_key(org, scopes="read")
    response = client_for(read_only).post("/v1/tickets")
    assert response.status_code == 403 and error_of(response) == "forbidden"


def test_dashboard_user_can_mint_a_ticket_with_csrf(org, django_user_model):
    from django.test import Client

    from nextframe.tenancy.models import Membership

    user = django_user_model.objects.create_user("ada", password="pw-for-tests")
    Membership.objects.create(user=user, organization=org, role="owner")
    client = Client(enforce_csrf_checks=True)
    assert client.login(username="ada", password="pw-for-tests")
    assert client.post("/v1/tickets").status_code == 403  # no CSRF token
    page = client.get("/dashboard/")
    assert page.status_code == 200 and b"acme" in page.content
    token = client.cookies["csrftoken"].value
    response = client.post("/v1/tickets", data="", content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 201


@pytest.mark.parametrize(
    "body, content_type, status, code",
    [
        ("{not json", "application/json", 400, "malformed_json"),
        ('{"a": 1}', "application/json", 400, "invalid_request"),
        ("[1, 2]", "application/json", 400, "invalid_request"),
        ("ticket please", "text/plain", 415, "unsupported_media_type"),
        (json.dumps({"pad": "x" * 70_000}), "application/json", 413, "payload_too_large"),
    ],
)
def test_bad_bodies_get_a_4xx_envelope(client_for, api_key, body, content_type, status, code):
    response = client_for(api_key).post("/v1/tickets", data=body, content_type=content_type)
    assert response.status_code == status, response.content
    assert error_of(response) == code


def test_openapi_document_is_served(client):
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    doc = json.loads(response.content)
    assert doc["openapi"].startswith("3.") and "/v1/models" in doc["paths"] and "/v1/tickets" in doc["paths"]


def test_health_and_readiness(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.json()
    assert all(check["ok"] for check in ready.json()["checks"].values())


def test_readiness_reports_a_broken_dependency(client, monkeypatch):
    from nextframe import health

    def broken():
        raise ConnectionError("broker down")

    monkeypatch.setitem(health.CHECKS, "broker", broken)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == {"ok": False, "error": "ConnectionError: broker down"}


def test_the_documented_browser_snippet_works_for_a_logged_in_dashboard_user(org, django_user_model):
    """docs/protocol.md: the page's JavaScript reads <meta name="csrf-token"> and sends X-CSRFToken."""
    import re

    from django.test import Client

    from nextframe.tenancy.models import Membership

    user = django_user_model.objects.create_user("grace", password="pw-for-tests")
    Membership.objects.create(user=user, organization=org, role="member")
    browser = Client(enforce_csrf_checks=True)
    # Log in through the real form, as a person does (it needs the form's CSRF token too).
    form = browser.get("/accounts/login/")
    form_token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', form.content).group(1).decode()
    assert browser.post("/accounts/login/", {"username": "grace", "password": "pw-for-tests",
                                             "csrfmiddlewaretoken": form_token}).status_code == 302
    page = browser.get("/dashboard/")
    match = re.search(rb'<meta name="csrf-token" content="([^"]+)">', page.content)
    assert match, "the dashboard must expose the CSRF token to its scripts"
    # fetch("/v1/tickets", {method: "POST"}) without the header: 403 in the envelope, saying why.
    # (generic() with no data sends no body and no Content-Type, exactly like that fetch call.)
    refused = browser.generic("POST", "/v1/tickets")
    assert refused.status_code == 403 and error_of(refused) == "forbidden"
    assert "CSRF" in refused.json()["error"]["message"]
    # With the header from the meta tag, as the snippet does (no body, like fetch without one).
    response = browser.generic("POST", "/v1/tickets", HTTP_X_CSRFTOKEN=match.group(1).decode())
    assert response.status_code == 201, response.content
    assert actions.redeem_ticket(response.json()["ticket"]).organization == org


def test_unknown_query_parameters_are_refused_like_unknown_fields(client_for, api_key):
    client = client_for(api_key)
    response = client.get("/v1/sessions?stauts=ended")
    assert response.status_code == 400 and error_of(response) == "invalid_request"
    assert "stauts" in response.json()["error"]["message"]
    assert client.get("/v1/sessions?status=ended&limit=5").status_code == 200
    assert client.get("/v1/models?verbose=1").status_code == 400


def test_a_nul_character_in_any_query_parameter_is_a_400_not_a_500(client_for, api_key):
    """PostgreSQL refuses NUL in a string: found by schemathesis on /v1/sessions?model= and
    /v1/moderation/events?category=; now refused up front for every documented GET parameter."""
    from nextframe.api.middleware import documented_query_params

    client = client_for(api_key)
    checked = 0
    for (path, method), params in sorted(documented_query_params().items()):
        if method != "get" or "{" in path:
            continue
        for name in sorted(params):
            response = client.get(path, {name: "a\x00b"})
            assert response.status_code == 400 and error_of(response) == "invalid_request", (path, name, response.content)
            assert "NUL" in response.json()["error"]["message"]
            checked += 1
    assert checked >= 8
    assert client.get("/v1/sessions", {"model": "stylize"}).status_code == 200


def test_the_document_types_lists_errors_and_bounds(client):
    doc = json.loads(client.get("/v1/openapi.json").content)
    schemas = doc["components"]["schemas"]
    clips = doc["paths"]["/v1/clips"]["get"]
    listed = clips["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(schemas[listed]["required"]) == {"object", "data", "has_more", "next_cursor"}
    limit = next(p for p in clips["parameters"] if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 100)
    for path in ("/v1/models", "/v1/models/{model_id}", "/v1/audits/{audit_id}"):
        body = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert "$ref" in body, (path, body)  # typed, not a free-form object
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            errors = {s: r for s, r in op["responses"].items() if s >= "400"}
            assert {"400", "401", "403", "406", "429"} <= set(errors), (method, path)
            for response in errors.values():
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert "MethodNotAllowed" in doc["components"]["responses"]


def test_one_model_is_the_same_object_as_in_the_list(client_for, api_key):
    client = client_for(api_key)
    listed = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert client.get("/v1/models/stylize").json() == listed["stylize"]
    missing = client.get("/v1/models/no-such-model")
    assert missing.status_code == 404 and error_of(missing) == "unknown_model"
