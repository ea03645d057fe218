"""The playground page and the REST reads it makes with the dashboard session (in process)."""
from __future__ import annotations

import pytest
from django.test import Client

from nextframe.live.models import LiveSession
from nextframe.tenancy.models import Membership

pytestmark = pytest.mark.django_db


@pytest.fixture
def member(org, django_user_model) -> Client:
    user = django_user_model.objects.create_user("lin", password="pw-for-tests")
    Membership.objects.create(user=user, organization=org, role="member")
    browser = Client(enforce_csrf_checks=True)
    assert browser.login(username="lin", password="pw-for-tests")
    return browser


def test_the_page_needs_a_signed_in_user(client):
    response = client.get("/playground/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_the_page_carries_the_csrf_token_and_its_module(member):
    page = member.get("/playground/")
    assert page.status_code == 200
    html = page.content.decode()
    assert '<meta name="csrf-token"' in html
    assert 'type="module" src="/static/frontend/js/playground.js"' in html
    assert 'href="/static/frontend/css/playground.css"' in html
    for static in ("js/playground.js", "js/live.js", "js/sources.js", "js/overlay.js", "css/playground.css"):
        assert member.get(f"/static/frontend/{static}").status_code == 200, static


def test_a_user_without_an_organisation_is_told_so(django_user_model):
    django_user_model.objects.create_user("solo", password="pw-for-tests")
    browser = Client()
    assert browser.login(username="solo", password="pw-for-tests")
    page = browser.get("/playground/").content.decode()
    assert "You belong to no organisation yet" in page and "playground.js" not in page


def test_models_and_own_sessions_are_readable_with_the_dashboard_session(member, org, other_org):
    models = member.get("/v1/models")
    assert models.status_code == 200 and {"stylize", "dreamfield"} <= {m["id"] for m in models.json()["data"]}
    assert member.get("/v1/models/stylize").json()["params"]
    mine = LiveSession.objects.create(organization=org, model="stylize", tier="interactive", width=64, height=64, fps=30)
    theirs = LiveSession.objects.create(organization=other_org, model="stylize", tier="interactive",
                                        width=64, height=64, fps=30)
    assert member.get(f"/v1/sessions/{mine.pk}").json()["id"] == mine.pk
    assert member.get(f"/v1/sessions/{theirs.pk}").status_code == 404      # another tenant's: not found
    assert [s["id"] for s in member.get("/v1/sessions").json()["data"]] == [mine.pk]


def test_without_a_session_the_reads_still_need_a_key(client):
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/sessions").status_code == 401
