"""End to end: `nextframe up` starts daphne and a Celery worker; the printed key works; Ctrl-C stops all.

Runs on the embedded defaults and, when PostgreSQL and Redis listen on loopback, scaled out.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from nextframe.testing import POSTGRES_URL, REDIS_URL, need_service

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, key: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEXTFRAME_", "DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS"))}
    env.update(extra, PYTHONUNBUFFERED="1")
    return env


@pytest.fixture
def scaled_env():
    need_service("PostgreSQL", POSTGRES_URL)
    need_service("Redis", REDIS_URL)
    import psycopg

    name = f"nextframe_up_{uuid.uuid4().hex[:8]}"
    admin = POSTGRES_URL.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield {"DATABASE_URL": POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}", "REDIS_URL": REDIS_URL}
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_up(tmp_path, extra_env: dict):
    port = free_port()
    env = clean_env(**extra_env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "nextframe.cli", "up", "--port", str(port), "--data-dir", str(tmp_path / "data")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines, key = [], None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.strip().startswith(("nf_live_", "nf_test_")):
            key = line.strip()
            break
    assert key, "".join(lines)
    base = f"http://127.0.0.1:{port}"
    while time.monotonic() < deadline:
        try:
            status, body = get(f"{base}/healthz")
            if status == 200:
                break
        except OSError:
            time.sleep(0.2)
    return proc, base, key


@pytest.mark.parametrize("profile", ["embedded", "scaled"])
def test_up_serves_models_with_the_printed_key_and_stops_on_ctrl_c(tmp_path, profile, request):
    extra = request.getfixturevalue("scaled_env") if profile == "scaled" else {}
    proc, base, key = run_up(tmp_path, extra)
    try:
        status, health = get(f"{base}/healthz")
        # The stdlib platform module works inside the running server.
        assert status == 200 and health["python"] == ".".join(map(str, sys.version_info[:3]))
        status, body = get(f"{base}/v1/models", key)
        assert status == 200 and {m["id"] for m in body["data"]} >= {"identity", "dreamfield"}
        status, body = get(f"{base}/v1/models")
        assert status == 401 and body["error"]["code"] == "unauthenticated"
        deadline = time.monotonic() + 60
        while True:
            status, ready = get(f"{base}/readyz")
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert status == 200, ready
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=40)
    assert proc.returncode == 0, out
    assert "NextFrame stopped." in out
