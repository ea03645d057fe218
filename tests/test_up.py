"""End to end: `nextframe up` starts daphne and a Celery worker; the printed key works; Ctrl-C stops all.

Runs on the embedded defaults and, with PostgreSQL and Redis on loopback, scaled out.
"""
from __future__ import annotations

import contextlib
import time

import pytest

from tests.server import http, running_server, scaled_services

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("profile", ["embedded", "scaled"])
def test_up_serves_models_with_the_printed_key_and_stops_on_ctrl_c(tmp_path, profile):
    services = scaled_services() if profile == "scaled" else contextlib.nullcontext({})
    with services as extra, running_server(tmp_path, extra) as server:
        status, health = http("GET", f"{server.base}/healthz")
        assert status == 200 and health == {"status": "ok"}  # no versions for anyone to fingerprint
        status, body = http("GET", f"{server.base}/v1/models", server.key)
        assert status == 200 and {m["id"] for m in body["data"]} >= {"identity", "dreamfield"}
        status, body = http("GET", f"{server.base}/v1/models")
        assert status == 401 and body["error"]["code"] == "unauthenticated"
        deadline = time.monotonic() + 60
        while True:
            status, ready = http("GET", f"{server.base}/readyz")
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert status == 200, ready
        code, output = server.stop()
    assert code == 0, output
    assert "NextFrame stopped." in output
