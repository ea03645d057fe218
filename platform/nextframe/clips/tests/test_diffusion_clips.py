"""Clips of sd-stream (video-to-video, from an upload) and causal-video (text) from tiny folders: the clip
tier's state machine end to end, the frames batched over time by the engines' render_clip."""
from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from inference.video import probe_mp4
from nextframe.clips.runner import run_clip

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_models", "one_torch_thread")]


def test_causal_video_text_clip_and_sd_stream_upload_clip_render(client_for, api_key, pool, make_mp4, tmp_path):
    client = client_for(api_key)
    text = client.post("/v1/clips", data={"model": "causal-video", "prompt": "waves", "width": 32, "height": 32,
                                          "fps": 8, "frames": 6, "params": {"steps": 1}}, format="json")
    assert text.status_code == 202, text.content
    upload = client.post("/v1/clips", data={
        "model": "sd-stream", "width": 64, "height": 64, "fps": 12, "frames": 5, "prompt": "oil painting",
        "video": SimpleUploadedFile("in.mp4", make_mp4(6), content_type="video/mp4")}, format="multipart")
    assert upload.status_code == 202, upload.content
    for body, (frames, size) in ((text.json(), (6, 32)), (upload.json(), (5, 64))):
        assert run_clip(body["id"]).status == "succeeded"
        path = tmp_path / f"{body['id']}.mp4"
        path.write_bytes(b"".join(client.get(f"/v1/clips/{body['id']}/video").streaming_content))
        info = probe_mp4(path)
        assert (info["frames"], info["width"], info["height"]) == (frames, size, size)
    assert pool.active_leases() == []
