"""A `backdrop` clip through the real clip tier (REST upload -> render -> MP4), on both profiles.

The upload is scikit-image's public-domain `astronaut` photo, moving 2 px a frame; the clip asks for a
green background, so the person must stay and the wall behind her must turn green in every frame.
"""
from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from inference.video import encode_mp4, iter_video_frames
from nextframe.clips.runner import run_clip

from .test_api import multipart

pytestmark = pytest.mark.django_db


def test_a_backdrop_clip_keeps_the_person_and_replaces_the_background(client_for, api_key, pool, media, tmp_path):
    photo = data.astronaut()[::4, ::4]  # 128x128
    inputs = [np.roll(photo, 2 * i, axis=1) for i in range(8)]
    source = tmp_path / "in.mp4"
    encode_mp4(inputs, source, 12, 128, 128)
    client = client_for(api_key)
    response = client.post("/v1/clips", data=multipart(source.read_bytes(), model="backdrop", width=128, height=128,
                                                        fps=12, frames=8, params={"mode": "color"}),
                           format="multipart")
    assert response.status_code == 202, response.content
    clip_id = response.json()["id"]
    assert run_clip(clip_id).status == "succeeded"
    out = tmp_path / "out.mp4"
    out.write_bytes(b"".join(client.get(f"/v1/clips/{clip_id}/video").streaming_content))
    frames = [f.astype(int) for f in iter_video_frames(out, 128, 128)]
    assert len(frames) == 8
    green = np.array([0, 177, 64])
    for i, (f, src) in enumerate(zip(frames, inputs)):
        wall, face = (slice(0, 20), slice(80, 125)), (slice(15, 40), slice(47 + 2 * i, 60 + 2 * i))
        assert np.abs(f[wall] - green).mean() < 12, i                # H.264 at crf 23: a few levels off
        assert np.abs(f[face] - src[face].astype(int)).mean() < 12, i  # the person, where she is now
