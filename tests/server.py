"""Helpers for end-to-end tests that run the real platform (`nextframe up`) in a subprocess.

Starting the server is shared with the benchmark suite (`inference.bench.suite_server`), which
drives the platform the same way: through its command line and public endpoints only.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager

from inference.bench.suite_server import Server, clean_env, start_server
from nextframe.testing import POSTGRES_URL, REDIS_URL, need_service

__all__ = ["RunningServer", "clean_env", "http", "running_server", "scaled_services"]


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
    """A started `nextframe up` with what the tests need: its key, URLs, CLI and exit status."""

    def __init__(self, server: Server):
        self.server = server
        self.proc, self.port, self.key, self.env = server.proc, server.port, server.key, server.env
        self.data_dir, self.output = server.data_dir, server.output
        self.base, self.ws = server.base, server.ws

    def cli(self, *args: str, timeout: float = 120, dry: bool = False):
        """Run `nextframe ARGS` against this server's data dir (dry: just return the argv)."""
        argv = [sys.executable, "-m", "nextframe.cli", *args]
        if args[0] not in {"live", "audit"}:
            argv += ["--data-dir", self.data_dir]
        if dry:
            return argv
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout)

    def stop(self) -> tuple[int, str]:
        self.server.stop()
        time.sleep(0.2)  # let the reader thread take the last lines
        return self.proc.returncode, "".join(self.output)


@contextmanager
def running_server(tmp_path, extra_env: dict | None = None, verbose: bool = True):
    """`nextframe up` on a free port (--verbose: its logs in `output`); yields a RunningServer with
    the printed API key."""
    server = RunningServer(start_server(str(tmp_path / "data"), extra_env or {}, verbose=verbose))
    try:
        yield server
    finally:
        server.stop()
