"""End to end: `nextframe up` starts daphne and a Celery worker; the printed key works; Ctrl-C stops all.

Runs on the embedded defaults and, with PostgreSQL and Redis on loopback, scaled out.
"""
from __future__ import annotations

import contextlib
import sys
import time

import pytest

from tests.server import http, running_server, scaled_services

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("profile", ["embedded", "scaled"])
def test_up_serves_models_with_the_printed_key_and_stops_on_ctrl_c(tmp_path, profile):
    services = scaled_services() if profile == "scaled" else contextlib.nullcontext({})
    with services as extra, running_server(tmp_path, extra) as server:
        status, health = http("GET", f"{server.base}/healthz")
        # The stdlib platform module works inside the running server.
        assert status == 200 and health["python"] == ".".join(map(str, sys.version_info[:3]))
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


def test_up_runs_the_start_up_audits_so_models_show_measured_tiers(tmp_path):
    """A fresh `nextframe up` audits its models by itself: GET /v1/models turns from `declared` to
    `measured`. (The server process used to be recognised from argv, which `python -m nextframe.web`
    never matched, so a fresh install showed declared tiers forever.)"""
    env = {"NEXTFRAME_AUDIT_ON_STARTUP": "1", "NEXTFRAME_AUDIT_STARTUP_DELAY_S": "0.5",
           "NEXTFRAME_AUDIT_SIZE": "32x32", "NEXTFRAME_AUDIT_SESSIONS": "2", "OMP_NUM_THREADS": "1"}
    with running_server(tmp_path, env) as server:
        status, body = http("GET", f"{server.base}/v1/models", server.key)
        assert status == 200
        first = body["data"][0]["id"]
        # Audits run one at a time, the first registered model first; each takes a few seconds.
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            status, body = http("GET", f"{server.base}/v1/models", server.key)
            model = next(m for m in body["data"] if m["id"] == first)
            if model["tier_source"] == "measured":
                break
            time.sleep(1)
        assert model["tier_source"] == "measured", model
        evidence = model["evidence"]
        assert evidence["width"] == 32 and evidence["sessions"] == 2 and evidence["stale"] is False
        assert evidence["fps_sustained"] > 0 and evidence["ttff_ms"] > 0
        server.stop()


def test_a_cli_command_is_not_the_server_and_starts_no_audits(tmp_path):
    """Only the entry point that serves says so: `nextframe manage shell` with start-up audits on
    imports every app and must not queue an audit."""
    from tests.server import clean_env

    env = clean_env({"NEXTFRAME_AUDIT_ON_STARTUP": "1", "NEXTFRAME_AUDIT_STARTUP_DELAY_S": "0"})
    code = ("import time; from nextframe.audits import server; time.sleep(1.0); "
            "from nextframe.audits.models import AuditRun; "
            "print('serving', server.is_server_process(), 'runs', AuditRun.objects.count())")
    data = str(tmp_path / "data")
    import subprocess

    migrate = subprocess.run([sys.executable, "-m", "nextframe.cli", "manage", "migrate", "-v", "0", "--data-dir", data],
                             env=env, capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr
    out = subprocess.run([sys.executable, "-m", "nextframe.cli", "manage", "shell", "-c", code, "--data-dir", data],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].split() == ["serving", "False", "runs", "0"]
