"""The deployment's audit of the local-weights engines (tiny folders): on-demand through the API, the
measured tier shown by GET /v1/models follows the chunk size."""
from __future__ import annotations

import pytest

from nextframe.audits import worker
from nextframe.audits.tests.test_audits import InlineWorker

# Embedded pass only: storing and showing evidence is covered on both profiles by test_audits.py; this
# test is about the engines' labels, and the scaled pass's time budget is spent by the live and clip tests.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_models", "one_torch_thread"),
              pytest.mark.profile("embedded")]


def test_on_demand_audits_label_causal_video_by_its_chunk_size(api_key, client_for, monkeypatch, settings):
    settings.NEXTFRAME_AUDIT_SIZE = "32x32"
    settings.NEXTFRAME_AUDIT_SESSIONS = 2
    monkeypatch.setattr(worker, "worker", InlineWorker())
    client = client_for(api_key)
    for model in ("causal-video", "causal-video-chunked"):
        response = client.post(f"/v1/models/{model}/audit")
        assert response.status_code == 202, response.content
        detail = client.get(f"/v1/audits/{response.json()['id']}").json()
        assert detail["status"] == "succeeded", detail
    models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    for model, tier in (("causal-video", "interactive"), ("causal-video-chunked", "streaming")):
        assert models[model]["tier_source"] == "measured"
        assert models[model]["tier"] == tier and models[model]["tier_disagreement"] is False
