"""Moderation's REST API in process: the policy, the hash list, the audit log; scopes, bad input,
the platform's floor, and one organisation never seeing another's."""
from __future__ import annotations

import io

import numpy as np
import pytest

from moderation import actions, phash
from moderation.models import ModerationEvent
from moderation.tests.test_frames import picture
from nextframe.tenancy import actions as tenancy

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_snapshots():
    actions.forget_snapshots()
    yield
    actions.forget_snapshots()


def error_of(response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]["code"]


def png_of(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_policy_defaults_change_and_refuse_unknown_fields_and_going_below_the_floor(client_for, api_key, settings):
    client = client_for(api_key)
    policy = client.get("/v1/moderation/policy").json()
    assert policy["fail_mode"] == "closed" and policy["keep_flagged_frames"] is False
    assert policy["hash_max_distance"] == 8 and policy["blocked_terms"] == []
    changed = client.patch("/v1/moderation/policy", {"blocked_terms": ["volcano*"], "frame_classifier": "strict",
                                                     "max_violations": 2}, format="json")
    assert changed.status_code == 200, changed.content
    assert client.get("/v1/moderation/policy").json()["blocked_terms"] == ["volcano*"]
    for body in ({"colour": "red"}, {"hash_max_distance": 1}, {"classifier_threshold": 0.99},
                 {"classifier_every_n_frames": 1000}, {"fail_mode": "sometimes"}, {"blocked_terms": "porn"},
                 {"blocked_terms": ["***"]}, {"max_violations": True}, {"keep_flagged_frames": "yes"}):
        response = client.patch("/v1/moderation/policy", body, format="json")
        assert response.status_code == 400 and error_of(response) == "invalid_request", body
    settings.MODERATION_FLOOR = {"classifier_may_be_off": False}
    response = client.patch("/v1/moderation/policy", {"frame_classifier": "off"}, format="json")
    assert response.status_code == 400 and "platform requires" in response.json()["error"]["message"]
    # Nothing of the refused requests was applied.
    assert client.get("/v1/moderation/policy").json()["frame_classifier"] == "strict"


def test_hashes_are_listed_from_a_phash_or_an_image_and_deleted(client_for, api_key):
    client = client_for(api_key)
    created = client.post("/v1/moderation/hashes", {"phash": "00FF00FF00FF00FF", "category": "banned_logo"},
                          format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["phash"] == "00ff00ff00ff00ff" and set(body) == {"id", "phash", "category", "created_at"}
    img = picture(7, 128)
    upload = io.BytesIO(png_of(img))
    upload.name = "x.png"
    uploaded = client.post("/v1/moderation/hashes", {"image": upload, "category": "csam_hash"}, format="multipart")
    assert uploaded.status_code == 201, uploaded.content
    assert uploaded.json()["phash"] == phash.to_hex(phash.phash(img))
    listed = client.get("/v1/moderation/hashes").json()
    assert listed["object"] == "list" and [h["category"] for h in listed["data"]] == ["csam_hash", "banned_logo"]
    assert client.delete(f"/v1/moderation/hashes/{body['id']}").status_code == 204
    assert client.delete(f"/v1/moderation/hashes/{body['id']}").status_code == 404
    bad = io.BytesIO(b"not an image")
    bad.name = "x.png"
    for request in ({"data": {"phash": "xyz", "category": "a"}, "format": "json"},
                    {"data": {"phash": "00ff00ff00ff00ff"}, "format": "json"},
                    {"data": {"phash": "00ff00ff00ff00ff", "category": "a", "extra": 1}, "format": "json"},
                    {"data": {"image": bad, "category": "a"}, "format": "multipart"}):
        response = client.post("/v1/moderation/hashes", **request)
        assert response.status_code == 400, request


def test_the_hash_list_is_bounded_and_a_picture_too_large_to_decode_is_refused(client_for, api_key, settings):
    from PIL import Image

    client = client_for(api_key)
    settings.MODERATION_MAX_HASHES_PER_ORG = 2
    for n in range(2):
        assert client.post("/v1/moderation/hashes", {"phash": f"{n:016x}", "category": "a"},
                           format="json").status_code == 201
    full = client.post("/v1/moderation/hashes", {"phash": "00000000000000ff", "category": "a"}, format="json")
    assert full.status_code == 400 and "maximum of 2" in full.json()["error"]["message"]
    assert client.get("/v1/moderation/hashes").json()["data"].__len__() == 2
    # A few-KB PNG that would decode to 5000x5000x3 bytes: refused from its header.
    bomb = io.BytesIO()
    Image.new("L", (5000, 5000)).save(bomb, format="PNG")
    bomb.seek(0)
    bomb.name = "bomb.png"
    assert bomb.getbuffer().nbytes < 100_000
    refused = client.post("/v1/moderation/hashes", {"image": bomb, "category": "a"}, format="multipart")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "bad_image"


def test_another_organisation_sees_none_of_it(client_for, api_key, other_key, org, other_org):
    mine, theirs = client_for(api_key), client_for(other_key)
    created = mine.post("/v1/moderation/hashes", {"phash": "0123456789abcdef", "category": "x"}, format="json").json()
    mine.patch("/v1/moderation/policy", {"blocked_terms": ["acme secret"]}, format="json")
    actions.record_now(org.pk, {"session_id": "s1", "source": "prompt", "detector": "terms", "category": "sexual",
                                "action": "rejected"})
    assert theirs.get("/v1/moderation/hashes").json()["data"] == []
    assert theirs.delete(f"/v1/moderation/hashes/{created['id']}").status_code == 404
    assert theirs.get("/v1/moderation/events").json()["data"] == []
    assert theirs.get("/v1/moderation/policy").json()["blocked_terms"] == []
    assert [e["session_id"] for e in mine.get("/v1/moderation/events").json()["data"]] == ["s1"]
    # The other organisation's list does not apply to this one's frames, and vice versa.
    assert len(actions.refresh(other_org.pk).hashes) == 0 and len(actions.refresh(org.pk).hashes) == 1


def test_events_are_filtered_paginated_and_need_a_read_scope(client_for, api_key, org):
    for i in range(3):
        actions.record_now(org.pk, {"session_id": f"s{i % 2}", "frame": i, "source": "output", "detector": "hash",
                                    "category": "violence" if i else "sexual", "score": 2.0, "action": "replaced"})
    actions.record_now(org.pk, {"clip_id": "c1", "source": "output", "detector": "classifier", "category": "sexual",
                                "score": 0.97, "action": "blocked"})
    client = client_for(api_key)
    assert len(client.get("/v1/moderation/events?session_id=s0").json()["data"]) == 2
    assert [e["clip_id"] for e in client.get("/v1/moderation/events?clip_id=c1").json()["data"]] == ["c1"]
    assert len(client.get("/v1/moderation/events?category=sexual").json()["data"]) == 2
    page = client.get("/v1/moderation/events?limit=3").json()
    assert page["has_more"] is True and len(page["data"]) == 3
    rest = client.get(f"/v1/moderation/events?limit=3&cursor={page['next_cursor']}").json()
    assert len(rest["data"]) == 1 and rest["has_more"] is False
    assert client.get("/v1/moderation/events?colour=red").status_code == 400
    live_only = client_for(tenancy.create_key(org, scopes="live")[1])
    assert live_only.get("/v1/moderation/events").status_code == 403
    reader = client_for(tenancy.create_key(org, scopes="read")[1])
    assert reader.get("/v1/moderation/events").status_code == 200
    assert reader.patch("/v1/moderation/policy", {"max_violations": 1}, format="json").status_code == 403
    assert client_for(None).get("/v1/moderation/policy").status_code == 401


def test_thumbnails_are_dropped_after_their_retention_by_the_hourly_beat_task(org, settings):
    from datetime import timedelta

    from django.utils import timezone

    from moderation.tasks import purge_thumbnails
    from nextframe.celery import QUEUE_MAINTENANCE, app

    settings.MODERATION_THUMBNAIL_RETENTION_DAYS = 7
    old = actions.record_now(org.pk, {"source": "output", "detector": "hash", "category": "x", "action": "replaced",
                                      "thumbnail": b"jpeg", "at": timezone.now() - timedelta(days=8)})
    new = actions.record_now(org.pk, {"source": "output", "detector": "hash", "category": "x", "action": "replaced",
                                      "thumbnail": b"jpeg"})
    entry = settings.CELERY_BEAT_SCHEDULE["moderation-purge-thumbnails"]
    assert entry["task"] == "moderation.purge_thumbnails" and entry["options"]["queue"] == QUEUE_MAINTENANCE
    assert app.conf.task_routes["moderation.purge_thumbnails"]["queue"] == QUEUE_MAINTENANCE
    assert purge_thumbnails.apply().get() == 1
    assert ModerationEvent.objects.get(pk=old.pk).thumbnail is None
    assert bytes(ModerationEvent.objects.get(pk=new.pk).thumbnail) == b"jpeg"


@pytest.mark.django_db(transaction=True)
def test_the_audit_writer_retries_a_batch_the_database_briefly_refuses(org, monkeypatch):
    """SQLite's "database table is locked" under a concurrent writer (seen in CI) or a PostgreSQL
    restart: the batch is written once the database takes it, not dropped."""
    from django.db import OperationalError

    real = ModerationEvent.objects.bulk_create
    attempts = []

    def refused_twice(objs, *args, **kwargs):
        attempts.append(len(objs))
        if len(attempts) <= 2:
            raise OperationalError("database table is locked")
        return real(objs, *args, **kwargs)

    monkeypatch.setattr(ModerationEvent.objects, "bulk_create", refused_twice)
    writer = actions.AuditWriter()
    writer.record(org.pk, {"session_id": "ls_retry", "frame": 3, "source": "output", "detector": "hash",
                           "category": "listed_output", "action": "replaced"})
    assert writer.flush(timeout_s=10)
    assert attempts == [1, 1, 1]
    assert list(ModerationEvent.objects.filter(session_id="ls_retry").values_list("frame", "action")) == [(3, "replaced")]
