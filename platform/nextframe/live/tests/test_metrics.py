"""GET /metrics scraped while a live session runs, and who may scrape it (nextframe.metrics)."""
from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from nextframe.live import drain
from nextframe.live.tests.test_consumer import connect, next_frame, start, stop
from nextframe.tenancy import actions

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "metrics-token-for-tests-0123456789"


def scrape(**headers) -> dict[tuple[str, tuple], float]:
    response = Client().get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.content.decode()) for sample in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def key(live_pool, db):
    live_pool(1.0)
    drain.reset()
    org = actions.create_org("acme", max_live_sessions=2)
    return actions.create_key(org)[1]


@pytest.mark.asyncio
async def test_a_scrape_shows_the_running_session_its_frames_latency_and_the_pools_reservation(key, settings):
    settings.METRICS_TOKEN = TOKEN
    auth = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
    before = await database_sync_to_async(scrape)(**auth)
    comm = await connect(key)
    ready = await start(comm, "dreamfield", width=64, height=64, fps=30)
    for _ in range(3):
        await next_frame(comm)
    during = await database_sync_to_async(scrape)(**auth)
    device, node = ready["reservation"]["device"], ready["reservation"]["device"].split("/", 1)[0]
    await stop(comm)
    after = await database_sync_to_async(scrape)(**auth)

    assert value(during, "nextframe_live_sessions", model="dreamfield", tier=ready["tier"]) == 1
    assert value(after, "nextframe_live_sessions", model="dreamfield", tier=ready["tier"]) == 0
    frames = [value(s, "nextframe_frames_out_total", engine="dreamfield") for s in (before, during, after)]
    assert frames[1] - frames[0] >= 3 and frames[2] >= frames[1]  # monotonic across the session's end
    latency_count = value(during, "nextframe_frame_latency_seconds_count", engine="dreamfield")
    latency_inf = value(during, "nextframe_frame_latency_seconds_bucket", engine="dreamfield", le="+Inf")
    assert latency_count >= 3 and latency_inf == latency_count
    assert ("nextframe_deadline_misses_total", (("engine", "dreamfield"),)) in during
    share = ready["reservation"]["share"]
    assert value(during, "nextframe_pool_reserved", device=device, node=node, priority="live") == pytest.approx(share)
    assert value(during, "nextframe_pool_free", device=device, node=node) == pytest.approx(1.0 - share)
    assert value(after, "nextframe_pool_free", device=device, node=node) == pytest.approx(1.0)
    assert value(during, "nextframe_pool_leases", device=device, node=node) == 1
    assert value(during, "nextframe_clip_jobs", status="queued") == 0
    assert value(during, "nextframe_draining") == 0
    assert any(name == "nextframe_device_sessions" for name, _ in during)


@pytest.mark.profile("embedded")
def test_metrics_need_the_token_or_a_direct_loopback_request(settings, db):
    settings.METRICS_TOKEN = None
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="::1").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 403
    # Through a proxy the address is what the proxy was told (daphne --proxy-headers): not local.
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics", HTTP_X_FORWARDED_FOR="127.0.0.1").status_code == 403
    settings.METRICS_TOKEN = TOKEN
    for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer wrong"}, {"HTTP_AUTHORIZATION": TOKEN}):
        response = Client(REMOTE_ADDR="127.0.0.1").get("/metrics", **headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthenticated"
    ok = Client(REMOTE_ADDR="10.1.2.3").get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert ok.status_code == 200 and b"nextframe_draining" in ok.content
