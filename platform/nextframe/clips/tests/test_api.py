"""REST surface of the clip tier, in process: create -> render (state machine run directly) -> read ->
download -> cancel/delete; isolation between organisations, scopes, limits and bad input."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from inference.video import probe_mp4
from nextframe.clips.models import Clip, ClipLimits
from nextframe.clips.runner import run_clip
from nextframe.tenancy import actions as tenancy

pytestmark = pytest.mark.django_db

TEXT_CLIP = {"model": "dreamfield", "prompt": "a slow red tide", "width": 64, "height": 48, "fps": 12, "frames": 10}


def error_of(response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]["code"]


def create(client, body=None, **kw):
    return client.post("/v1/clips", data=body or TEXT_CLIP, format="json", **kw)


def test_text_clip_is_accepted_rendered_and_downloaded_as_an_mp4(client_for, api_key, pool, enqueued,
                                                                  django_capture_on_commit_callbacks, tmp_path):
    client = client_for(api_key)
    with django_capture_on_commit_callbacks(execute=True):
        response = create(client)
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued" and body["tier"] == "fast-batch"
    assert enqueued == [(body["id"], 0.0)]
    assert client.get(f"/v1/clips/{body['id']}/video").status_code == 409

    assert run_clip(body["id"]).status == "succeeded"

    clip = client.get(f"/v1/clips/{body['id']}").json()
    assert clip["status"] == "succeeded" and clip["tier"] == "fast-batch"
    assert clip["progress"] == {"frames_done": 10, "frames": 10, "fraction": 1.0}
    timings = clip["timings"]
    assert timings["queued_s"] >= 0 and timings["run_s"] > 0 and timings["fps_throughput"] > 0
    # Fast-batch: the first frame exists when the whole file does, after queueing and rendering.
    assert timings["time_to_first_frame_s"] >= timings["queued_s"]
    usage = clip["usage"]
    assert usage["currency"] == "usd" and Decimal(usage["gpu_seconds"]) > 0
    assert Decimal(usage["cost"]) == (Decimal(usage["gpu_seconds"]) * Decimal("0.0004")).quantize(Decimal("0.000001"))
    assert pool.active_leases() == []  # the clip's capacity was given back

    video = client.get(f"/v1/clips/{body['id']}/video")
    assert video.status_code == 200 and video["Content-Type"] == "video/mp4"
    path = tmp_path / "download.mp4"
    path.write_bytes(b"".join(video.streaming_content))
    info = probe_mp4(path)
    assert (info["frames"], info["width"], info["height"]) == (10, 64, 48)
    assert info["duration_s"] == pytest.approx(10 / 12, abs=1e-3) and info["fps"] == pytest.approx(12)
    assert info["codec"] == "h264"


def test_duration_is_turned_into_frames(client_for, api_key):
    body = dict(TEXT_CLIP, frames=None, duration_s=0.5)
    del body["frames"]
    response = create(client_for(api_key), body)
    assert response.status_code == 202 and response.json()["frames"] == 6 and response.json()["duration_s"] == 0.5


def test_another_organisation_sees_nothing(client_for, api_key, other_key):
    mine = create(client_for(api_key)).json()["id"]
    theirs = client_for(other_key)
    for method, url in (("get", f"/v1/clips/{mine}"), ("get", f"/v1/clips/{mine}/video"),
                        ("delete", f"/v1/clips/{mine}")):
        response = getattr(theirs, method)(url)
        assert response.status_code == 404 and error_of(response) == "not_found", (method, url)
    assert theirs.get("/v1/clips").json()["data"] == []
    assert Clip.objects.get(pk=mine).status == "queued"  # their DELETE cancelled nothing


def test_scopes_read_may_read_only_clips_may_write(client_for, api_key, org):
    clip_id = create(client_for(api_key)).json()["id"]
    _, read_key = tenancy.create_key(org, scopes="read")
    _, live_key = tenancy.create_key(org, scopes="live")
    reader = client_for(read_key)
    assert reader.get(f"/v1/clips/{clip_id}").status_code == 200
    assert reader.get("/v1/clips").status_code == 200
    assert error_of(create(reader)) == "forbidden"
    assert reader.delete(f"/v1/clips/{clip_id}").status_code == 403
    assert client_for(live_key).get(f"/v1/clips/{clip_id}").status_code == 403
    assert client_for(None).get("/v1/clips").status_code == 401


@pytest.mark.parametrize("change, status, code", [
    ({"model": "no-such-model"}, 400, "unknown_model"),
    ({"params": {"zoom": 99}}, 400, "invalid_params"),
    ({"params": {"nope": 1}}, 400, "invalid_params"),
    ({"width": 63}, 400, "invalid_params"),
    ({"fps": 0}, 400, "invalid_request"),
    ({"colour": "red"}, 400, "invalid_request"),
    ({"duration_s": 1.0}, 400, "invalid_params"),
    ({"frames": 601}, 413, "clip_too_large"),
    ({"frames": 12 * 31}, 413, "clip_too_large"),
])
def test_bad_requests_get_the_envelope(client_for, api_key, change, status, code):
    response = create(client_for(api_key), dict(TEXT_CLIP, **change))
    assert response.status_code == status, response.content
    assert error_of(response) == code
    assert not Clip.objects.exists()


def test_organisation_limits_apply(client_for, api_key, org):
    ClipLimits.objects.create(organization=org, max_frames=8, max_width=32, max_height=32, max_active_jobs=2)
    client = client_for(api_key)
    assert error_of(create(client, dict(TEXT_CLIP, frames=9, width=32, height=32))) == "clip_too_large"
    assert error_of(create(client, dict(TEXT_CLIP, frames=8))) == "clip_too_large"  # 64x48 > 32x32
    small = dict(TEXT_CLIP, frames=8, width=32, height=32)
    assert create(client, small).status_code == 202
    assert create(client, small).status_code == 202
    refused = create(client, small)
    assert refused.status_code == 429 and error_of(refused) == "concurrency_limit" and refused["Retry-After"]
    Clip.objects.filter(status="queued").update(status="succeeded")
    assert create(client, small).status_code == 202


def test_list_is_paginated_newest_first(client_for, api_key):
    client = client_for(api_key)
    ids = [create(client).json()["id"] for _ in range(3)]
    first = client.get("/v1/clips?limit=2").json()
    assert [c["id"] for c in first["data"]] == ids[::-1][:2] and first["has_more"]
    assert all(c["tier"] == "fast-batch" for c in first["data"])
    rest = client.get(f"/v1/clips?limit=2&cursor={first['next_cursor']}").json()
    assert [c["id"] for c in rest["data"]] == ids[:1] and not rest["has_more"]


def test_delete_cancels_a_queued_clip_then_deletes_it(client_for, api_key, pool):
    client = client_for(api_key)
    clip_id = create(client).json()["id"]
    response = client.delete(f"/v1/clips/{clip_id}")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert run_clip(clip_id).action == "noop"  # a late message does nothing
    assert client.delete(f"/v1/clips/{clip_id}").status_code == 204
    assert client.get(f"/v1/clips/{clip_id}").status_code == 404


def test_deleting_a_finished_clip_removes_its_file(client_for, api_key, pool, media):
    client = client_for(api_key)
    clip_id = create(client).json()["id"]
    run_clip(clip_id)
    stored = list(media.rglob("*.mp4"))
    assert len(stored) == 1
    assert client.delete(f"/v1/clips/{clip_id}").status_code == 204
    assert list(media.rglob("*.mp4")) == []


def multipart(video: bytes | None, **fields):
    data = {k: (json.dumps(v) if isinstance(v, dict) else str(v)) for k, v in fields.items()}
    if video is not None:
        data["video"] = SimpleUploadedFile("in.mp4", video, content_type="video/mp4")
    return data


def test_video_to_video_clip_from_an_upload(client_for, api_key, pool, make_mp4, tmp_path, media):
    client = client_for(api_key)
    response = client.post("/v1/clips", data=multipart(make_mp4(8), model="identity", width=64, height=64,
                                                        fps=12, frames=6), format="multipart")
    assert response.status_code == 202, response.content
    clip_id = response.json()["id"]
    assert len(list(media.rglob("input*"))) == 1
    assert run_clip(clip_id).status == "succeeded"
    assert list(media.rglob("input*")) == []  # the upload is removed once the job has finished
    path = tmp_path / "out.mp4"
    path.write_bytes(b"".join(client.get(f"/v1/clips/{clip_id}/video").streaming_content))
    assert probe_mp4(path)["frames"] == 6
    # The same request as one JSON `request` part.
    request_part = json.dumps({"model": "identity", "width": 64, "height": 64, "fps": 12, "frames": 4})
    response = client.post("/v1/clips", data={"request": request_part, "video": SimpleUploadedFile(
        "in.mp4", make_mp4(4), content_type="video/mp4")}, format="multipart")
    assert response.status_code == 202, response.content
    assert len(list(media.rglob("input*"))) == 1
    client.delete(f"/v1/clips/{response.json()['id']}")  # cancelling removes its stored input
    assert list(media.rglob("input*")) == []


@pytest.mark.parametrize("video, fields, code", [
    (b"\x00\x00\x00\x18ftypmp42 this is not a video" * 20, {}, "bad_video"),
    (b"", {}, "bad_video"),
    (None, {}, "missing_video"),
    ("short", {}, "bad_video"),                      # 3 frames uploaded, 6 asked for
    ("ok", {"model": "dreamfield"}, "invalid_params"),  # text-to-video takes no input
    ("ok", {"params": "{not json"}, "malformed_json"),
])
def test_bad_uploads_are_400(client_for, api_key, make_mp4, video, fields, code):
    if video == "short":
        video = make_mp4(3)
    elif video == "ok":
        video = make_mp4(6)
    data = multipart(video, **{"model": "identity", "width": 64, "height": 64, "fps": 12, "frames": 6, **fields})
    if "params" in fields:
        data["params"] = fields["params"]
    response = client_for(api_key).post("/v1/clips", data=data, format="multipart")
    assert response.status_code == 400, response.content
    assert error_of(response) == code
    assert not Clip.objects.exists()


def test_v2v_without_upload_in_json_is_400(client_for, api_key):
    response = create(client_for(api_key), {"model": "identity", "width": 64, "height": 64, "fps": 12, "frames": 6})
    assert response.status_code == 400 and error_of(response) == "missing_video"


def test_openapi_documents_the_clip_endpoints(client):
    paths = json.loads(client.get("/v1/openapi.json").content)["paths"]
    assert {"/v1/clips", "/v1/clips/{clip_id}", "/v1/clips/{clip_id}/video"} <= set(paths)
    assert "post" in paths["/v1/clips"] and "delete" in paths["/v1/clips/{clip_id}"]


def test_signed_expiring_link_serves_the_video_without_a_key(client_for, api_key, pool, settings):
    client = client_for(api_key)
    first, second = create(client).json()["id"], create(client).json()["id"]
    run_clip(first)
    run_clip(second)
    video = client.get(f"/v1/clips/{first}").json()["video"]
    anonymous = client_for(None)
    response = anonymous.get(video["signed_url"])
    assert response.status_code == 200 and response["Content-Type"] == "video/mp4"
    assert b"".join(response.streaming_content)[4:8] == b"ftyp"
    token = video["signed_url"].split("token=", 1)[1]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for url in (f"/v1/clips/{first}/video?token={tampered}",   # forged
                f"/v1/clips/{second}/video?token={token}"):    # another clip's link
        refused = anonymous.get(url)
        assert refused.status_code == 403 and error_of(refused) == "forbidden", url
    settings.CLIP_VIDEO_URL_TTL_S = -1  # every link issued so far has expired
    assert anonymous.get(video["signed_url"]).status_code == 403
    assert anonymous.get(f"/v1/clips/{first}/video").status_code == 401  # and no token, no key: 401


def test_the_logged_in_dashboard_can_play_its_organisations_clips(client, org, pool, django_user_model, api_key,
                                                                 client_for):
    from nextframe.tenancy.models import Membership

    clip_id = create(client_for(api_key)).json()["id"]
    run_clip(clip_id)
    user = django_user_model.objects.create_user("ada", password="pw-for-tests")
    Membership.objects.create(user=user, organization=org, role="owner")
    assert client.login(username="ada", password="pw-for-tests")
    assert client.get(f"/v1/clips/{clip_id}").json()["status"] == "succeeded"
    assert client.get(f"/v1/clips/{clip_id}/video").status_code == 200


# --- quota, soft delete, bad lengths, cursors ------------------------------------------------------

def test_a_clip_is_refused_when_the_monthly_gpu_quota_is_used_up(client_for, api_key, org):
    client = client_for(api_key)
    assert create(client).status_code == 202  # no limit (None): unlimited
    org.gpu_seconds_limit = Decimal("2")
    org.save(update_fields=["gpu_seconds_limit"])
    assert create(client).status_code == 202  # 2 s left
    from nextframe import usage

    for job in Clip.objects.filter(organization=org):  # 1 GPU-second each, through the one writer
        Clip.objects.filter(pk=job.pk).update(status="succeeded", attempts=1)
        usage.record_clip(job.pk, 1.0, 1.0)
    refused = create(client)
    assert refused.status_code == 402 and error_of(refused) == "quota_exceeded"
    assert Clip.objects.filter(organization=org).count() == 2


def test_deleting_a_finished_clip_keeps_its_usage_and_hides_it_everywhere(client_for, api_key, org, pool, media):
    from nextframe.usage import gpu_seconds_this_month

    client = client_for(api_key)
    clip_id = create(client).json()["id"]
    assert run_clip(clip_id).status == "succeeded"
    signed_url = client.get(f"/v1/clips/{clip_id}").json()["video"]["signed_url"]
    used = gpu_seconds_this_month(org)
    assert used > 0
    assert client.delete(f"/v1/clips/{clip_id}").status_code == 204
    assert gpu_seconds_this_month(org) == used  # the usage stays: quota and billing still count it
    for method, url in (("get", f"/v1/clips/{clip_id}"), ("get", f"/v1/clips/{clip_id}/video"),
                        ("delete", f"/v1/clips/{clip_id}")):
        response = getattr(client, method)(url)
        assert response.status_code == 404 and error_of(response) == "not_found", (method, url)
    assert client.get("/v1/clips").json()["data"] == []
    assert client_for(None).get(signed_url).status_code == 403
    assert list(media.rglob("*.mp4")) == []
    assert not (media / "clips" / str(org.pk) / clip_id).exists()  # no empty folder left behind


@pytest.mark.parametrize("change, status, code", [
    ({"frames": None, "duration_s": 1e308}, 413, "clip_too_large"),
    ({"frames": None, "duration_s": 1e300}, 413, "clip_too_large"),
    ({"frames": 10 ** 400}, 413, "clip_too_large"),
])
def test_absurd_lengths_are_refused_not_a_500(client_for, api_key, change, status, code):
    body = {k: v for k, v in dict(TEXT_CLIP, **change).items() if v is not None}
    response = create(client_for(api_key), body)
    assert response.status_code == status, response.content
    assert error_of(response) == code


@pytest.mark.parametrize("duration_s", [float("nan"), float("inf"), -float("inf"), 1e308, 0.0])
def test_non_finite_or_overflowing_durations_are_clip_errors(org, duration_s):
    from nextframe.clips import actions

    req = actions.ClipRequest(model="dreamfield", width=64, height=48, fps=12, duration_s=duration_s)
    with pytest.raises(actions.ClipError) as info:
        actions.create_clip(org, req)
    assert (info.value.status, info.value.code) in {(400, "invalid_params"), (413, "clip_too_large")}


def test_a_garbage_cursor_is_a_bad_request(client_for, api_key):
    response = client_for(api_key).get("/v1/clips?cursor=garbage")
    assert response.status_code == 400 and error_of(response) == "invalid_request"


# --- video-to-video input --------------------------------------------------------------------------

def wide_three_band_mp4(tmp_path) -> bytes:
    """128x64: left quarter red, middle half green, right quarter blue."""
    import numpy as np

    from inference.video import encode_mp4

    frame = np.zeros((64, 128, 3), np.uint8)
    frame[:, :32, 0] = 255
    frame[:, 32:96, 1] = 255
    frame[:, 96:, 2] = 255
    path = tmp_path / "wide.mp4"
    encode_mp4([frame] * 4, path, 12, 128, 64)
    return path.read_bytes()


def test_video_input_is_centre_cropped_not_squashed(client_for, api_key, pool, tmp_path):
    import av
    import numpy as np

    client = client_for(api_key)
    response = client.post("/v1/clips", data=multipart(wide_three_band_mp4(tmp_path), model="identity", width=64,
                                                        height=64, fps=12, frames=4), format="multipart")
    assert response.status_code == 202, response.content
    clip_id = response.json()["id"]
    assert run_clip(clip_id).status == "succeeded"
    path = tmp_path / "out.mp4"
    path.write_bytes(b"".join(client.get(f"/v1/clips/{clip_id}/video").streaming_content))
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 4
    for frame in frames:
        row = frame[32].astype(int)  # one row across the whole width: the green half, cropped
        assert (row[:, 1] > 150).all() and (row[:, 0] < 100).all() and (row[:, 2] < 100).all(), row[:4]
        assert np.argmax(frame.reshape(-1, 3).mean(0)) == 1


def test_upload_check_decodes_one_frame_and_later_corruption_fails_the_job_cleanly(
        client_for, api_key, pool, make_mp4, tmp_path, media):
    import av

    good = tmp_path / "good.mp4"
    good.write_bytes(make_mp4(6))
    with av.open(str(good)) as container:
        packets = [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]
    data = bytearray(good.read_bytes())
    for pos, size in packets[1:]:
        data[pos:pos + size] = bytes(size)  # every frame after the first is undecodable
    client = client_for(api_key)
    response = client.post("/v1/clips", data=multipart(bytes(data), model="identity", width=64, height=64, fps=12,
                                                        frames=6), format="multipart")
    assert response.status_code == 202, response.content  # the web process only decoded frame 0
    clip_id = response.json()["id"]
    outcome = run_clip(clip_id)
    assert (outcome.action, outcome.status) == ("done", "failed")  # a clean failure, no retry
    body = client.get(f"/v1/clips/{clip_id}").json()
    assert body["status"] == "failed" and body["error"]["code"] == "bad_video" and body["attempts"] == 1
    assert Clip.objects.get(pk=clip_id).failures == 0
    assert list(media.rglob("*.mp4")) == []  # the upload is deleted, no video stored
    assert pool.active_leases() == []


def test_upload_over_the_source_pixels_x_frames_limit_is_refused(client_for, api_key, make_mp4, monkeypatch):
    from inference import video

    monkeypatch.setattr(video, "MAX_SOURCE_PIXEL_FRAMES", 64 * 64 * 6 - 1)
    data = multipart(make_mp4(6), model="identity", width=64, height=64, fps=12, frames=6)
    response = client_for(api_key).post("/v1/clips", data=data, format="multipart")
    assert response.status_code == 400 and error_of(response) == "bad_video"
    assert "source pixels x frames" in response.json()["error"]["message"]
    data = multipart(make_mp4(6), model="identity", width=64, height=64, fps=12, frames=5)
    assert client_for(api_key).post("/v1/clips", data=data, format="multipart").status_code == 202


# -- moderation (issue 11) -----------------------------------------------------------------------------

def test_a_clip_with_a_blocked_prompt_is_refused_400_moderation(client_for, api_key, pool, enqueued):
    client = client_for(api_key)
    response = create(client, {**TEXT_CLIP, "prompt": "a s-e-x-y girl"})
    assert response.status_code == 400 and error_of(response) == "moderation"
    assert enqueued == [] and not Clip.objects.exists()


def test_a_clip_with_a_listed_frame_ends_blocked_its_video_is_never_served_and_its_usage_is_billed(
        client_for, api_key, org, pool, enqueued, django_capture_on_commit_callbacks):
    from inference.batch import render_frames
    from moderation.models import BlockedHash, ModerationEvent
    from moderation.phash import phash, to_hex

    third = list(render_frames("dreamfield", 64, 48, 12, 3, TEXT_CLIP["prompt"]))[2]
    BlockedHash.objects.create(organization=org, phash=to_hex(phash(third)), category="listed")
    client = client_for(api_key)
    with django_capture_on_commit_callbacks(execute=True):
        body = create(client).json()
    assert run_clip(body["id"]).status == "blocked"
    clip = client.get(f"/v1/clips/{body['id']}").json()
    assert clip["status"] == "blocked" and Decimal(clip["usage"]["gpu_seconds"]) > 0
    video = client.get(f"/v1/clips/{body['id']}/video")
    assert video.status_code == 409 and error_of(video) == "not_ready"
    assert not Clip.objects.get(pk=body["id"]).video_name
    event = ModerationEvent.objects.get(clip_id=body["id"])
    assert (event.source, event.detector, event.action, event.category) == ("output", "hash", "blocked", "listed")
    assert event.frame <= 2  # dreamfield's first frames are alike: the first one within the distance is caught
    assert pool.active_leases() == []
