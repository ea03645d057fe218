"""Helpers for end-to-end tests that run the real platform (`nextframe up`) in a subprocess."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager

from nextframe.testing import POSTGRES_URL, REDIS_URL, need_service


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(method: str, url: str, key: str | None = None, body: dict | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NEXTFRAME_", "DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS"))}
    # Start-up audits would compete for the CPU with what the test measures; tests that want them
    # pass NEXTFRAME_AUDIT_ON_STARTUP=1 in `extra`.
    env["NEXTFRAME_AUDIT_ON_STARTUP"] = "0"
    env.update(extra, PYTHONUNBUFFERED="1")
    return env


@contextmanager
def scaled_services():
    """A fresh PostgreSQL database and a Redis URL for a scaled-out server (skips without them)."""
    need_service("PostgreSQL", POSTGRES_URL)
    need_service("Redis", REDIS_URL)
    import psycopg

    name = f"nextframe_e2e_{uuid.uuid4().hex[:8]}"
    admin = POSTGRES_URL.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {"DATABASE_URL": POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}", "REDIS_URL": REDIS_URL}
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class RunningServer:
    def __init__(self, proc: subprocess.Popen, port: int, key: str, env: dict, data_dir: str, output: list[str]):
        self.proc, self.port, self.key, self.env, self.data_dir, self.output = proc, port, key, env, data_dir, output
        self.base = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}/v1/live"

    def cli(self, *args: str, timeout: float = 120, dry: bool = False):
        """Run `nextframe ARGS` against this server's data dir (dry: just return the argv)."""
        argv = [sys.executable, "-m", "nextframe.cli", *args]
        if args[0] not in {"live", "audit"}:
            argv += ["--data-dir", self.data_dir]
        if dry:
            return argv
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout)

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)
        time.sleep(0.2)
        return self.proc.returncode, "".join(self.output)


@contextmanager
def running_server(tmp_path, extra_env: dict | None = None):
    """`nextframe up` on a free port; yields a RunningServer with the printed API key."""
    port = free_port()
    data_dir = str(tmp_path / "data")
    env = clean_env(**(extra_env or {}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "nextframe.cli", "up", "--port", str(port), "--data-dir", data_dir],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    key = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.strip().startswith(("nf_live_", "nf_test_")):
            key = line.strip()
            break
    if key is None:
        proc.kill()
        raise AssertionError("nextframe up printed no key:\n" + "".join(lines) + (proc.stdout.read() or ""))
    server = RunningServer(proc, port, key, env, data_dir, lines)
    # Keep reading the server's output: a full pipe would block daphne and the worker.
    threading.Thread(target=lambda: [lines.append(line) for line in proc.stdout], daemon=True).start()
    while time.monotonic() < deadline:
        try:
            if http("GET", f"{server.base}/healthz")[0] == 200:
                break
        except OSError:
            time.sleep(0.2)
    try:
        yield server
    finally:
        server.stop()
