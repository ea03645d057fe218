"""GET /v1/sessions and /v1/sessions/{id}: own organisation only, paginated, filterable."""
import pytest

from nextframe.live.models import LiveSession

pytestmark = pytest.mark.django_db


def make_sessions(org, n, **fields):
    return [
        LiveSession.objects.create(organization=org, model=fields.get("model", "dreamfield"), tier="interactive",
                                   width=64, height=64, fps=30, status=fields.get("status", "ended"))
        for _ in range(n)
    ]


def test_list_is_newest_first_and_paginated_with_a_cursor(client_for, api_key, org):
    made = make_sessions(org, 5)
    client = client_for(api_key)
    first = client.get("/v1/sessions?limit=2").json()
    assert first["object"] == "list" and len(first["data"]) == 2 and first["has_more"]
    seen = [s["id"] for s in first["data"]]
    cursor = first["next_cursor"]
    while cursor:
        page = client.get(f"/v1/sessions?limit=2&cursor={cursor}").json()
        seen += [s["id"] for s in page["data"]]
        cursor = page["next_cursor"]
    assert seen == [s.id for s in reversed(made)]


def test_filters_and_bad_query_values(client_for, api_key, org):
    make_sessions(org, 2, status="active")
    make_sessions(org, 1, status="ended", model="identity")
    client = client_for(api_key)
    assert len(client.get("/v1/sessions?status=active").json()["data"]) == 2
    assert len(client.get("/v1/sessions?model=identity").json()["data"]) == 1
    for query in ("status=sleeping", "limit=0", "limit=1000", "limit=ten", "cursor=garbage", "model=a%00b"):
        response = client.get(f"/v1/sessions?{query}")
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"


def test_another_organisations_sessions_are_invisible(client_for, api_key, other_key, org, other_org):
    mine = make_sessions(org, 1)[0]
    theirs = make_sessions(other_org, 1)[0]
    client = client_for(api_key)
    assert [s["id"] for s in client.get("/v1/sessions").json()["data"]] == [mine.id]
    assert client.get(f"/v1/sessions/{mine.id}").status_code == 200
    response = client.get(f"/v1/sessions/{theirs.id}")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert client_for(other_key).get(f"/v1/sessions/{mine.id}").status_code == 404


def test_session_detail_shows_metrics_and_usage(client_for, api_key, org):
    session = make_sessions(org, 1)[0]
    LiveSession.objects.filter(pk=session.pk).update(frames=90, gpu_seconds="1.5", cost="0.000600",
                                                     metrics={"ttff_ms": 40.0}, end_reason="client")
    body = client_for(api_key).get(f"/v1/sessions/{session.id}").json()
    assert body["usage"] == {"gpu_seconds": 1.5, "frames": 90, "cost": "0.000600", "currency": "usd",
                             "gpu_seconds_decimal": "1.500000"}
    assert body["metrics"]["ttff_ms"] == 40.0 and body["end_reason"] == "client"


def test_sessions_need_the_read_scope(client_for, org):
    from nextframe.tenancy import actions

    _, live_only = actions.create_key(org, scopes="live")
    assert client_for(live_only).get("/v1/sessions").status_code == 403


def test_records_of_a_dead_process_are_swept(org):
    from datetime import timedelta

    from django.utils import timezone

    from nextframe.live import actions

    alive, dead = make_sessions(org, 2, status="active")
    LiveSession.objects.filter(pk=dead.pk).update(last_seen_at=timezone.now() - timedelta(minutes=5))
    assert actions.sweep_stale(60) == 1
    dead.refresh_from_db()
    alive.refresh_from_db()
    assert dead.status == "ended" and dead.end_reason == "server_error" and alive.status == "active"
