"""A server killed with SIGKILL leaves its live-session records `active`; the sweeper timer of the
servers still (or again) up ends them within LIVE_STALE_RECORD_S + LIVE_SWEEP_INTERVAL_S, with no
client traffic at all (nextframe.live.sweeper, docs/operations.md "Stale live-session records").

The record is read straight from the database: the test sends the surviving server nothing.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from inference.bench.suite_server import free_port
from inference.client import LiveClient, ReceivedFrame
from tests.server import running_server, scaled_services

pytestmark = pytest.mark.slow

STALE_S = 4.0
INTERVAL_S = 1.0
SLACK_S = 4.0  # a loaded CI machine: thread wake-up, database round trips
SWEEP_ENV = {"NEXTFRAME_LIVE_STALE_RECORD_S": str(STALE_S), "NEXTFRAME_LIVE_SWEEP_INTERVAL_S": str(INTERVAL_S)}


@contextlib.contextmanager
def another_server(data_dir: Path, env: dict[str, str]):
    """One more `nextframe up` on the same database (no key is printed: the org exists)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nextframe.cli", "up", "--port", str(port),
                             "--data-dir", str(data_dir)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "the second server did not start"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                time.sleep(0.3)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def web_child(up_pid: int) -> int:
    """The daphne process (`python -m nextframe.web`) that `nextframe up` supervises."""
    for pid in Path(f"/proc/{up_pid}/task/{up_pid}/children").read_text().split():
        if b"nextframe.web" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return int(pid)
    raise AssertionError("no web child")


def record(env: dict[str, str], data_dir: Path, session_id: str,
           query: str = "SELECT status, end_reason, ended_at, last_seen_at FROM live_livesession WHERE id = %s") -> tuple:
    """(status, end_reason, ended_at, last_seen_at) of a session, from the database itself."""
    if env.get("DATABASE_URL"):
        import psycopg

        with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
            return conn.execute(query, (session_id,)).fetchone()
    with sqlite3.connect(data_dir / "nextframe.sqlite3", timeout=20) as conn:
        return conn.execute(query.replace("%s", "?"), (session_id,)).fetchone()


async def session_then_kill(server) -> tuple[str, float]:
    """Start a session, see frames, then SIGKILL the web process that serves it."""
    client = LiveClient(server.ws, key=server.key)
    await client.connect()
    ready = await client.start("dreamfield", width=64, height=64, fps=10)
    frames = 0
    async for event in client:
        frames += isinstance(event, ReceivedFrame)
        if frames >= 5:
            break
    await asyncio.sleep(1.5)  # a checkpoint or two
    os.kill(web_child(server.proc.pid), signal.SIGKILL)
    killed_at = time.monotonic()
    with contextlib.suppress(Exception):
        await client.close()
    return ready["session_id"], killed_at


def test_a_killed_servers_session_record_ends_without_any_traffic(tmp_path):
    # The profile under test: scaled out, a second node on PostgreSQL + Redis is up when the first
    # dies; embedded, the one server is restarted on its data dir.
    profile = os.environ.get("NEXTFRAME_TEST_PROFILE", "embedded")
    services = scaled_services() if profile == "scaled" else contextlib.nullcontext({})
    with services as extra, running_server(tmp_path, {**extra, **SWEEP_ENV}) as server:
        data_dir = Path(server.data_dir)
        if profile == "scaled":
            # Several nodes on one database: a second one is up before the first dies.
            survivor = another_server(tmp_path / "node-b", server.env)
        else:
            survivor = contextlib.nullcontext()
        with survivor:
            session_id, killed_at = asyncio.run(session_then_kill(server))
            assert record(server.env, data_dir, session_id)[0] == "active"
            if profile == "embedded":
                # The one server is started again on the same data dir, once the old one is gone
                # (`nextframe up` stops its worker when its web process dies).
                server.proc.wait(timeout=30)
                restarted = another_server(data_dir, server.env)
            else:
                restarted = contextlib.nullcontext()
            with restarted:
                ready_at = time.monotonic()
                deadline = max(killed_at + STALE_S + INTERVAL_S, ready_at) + SLACK_S
                row = record(server.env, data_dir, session_id)
                while row[0] == "active" and time.monotonic() < deadline + 30:
                    time.sleep(0.25)
                    row = record(server.env, data_dir, session_id)
                ended_after = time.monotonic()
        status, reason, ended_at, last_seen_at = row
        print(f"{profile}: record {status} {ended_after - killed_at:.1f} s after the kill "
              f"(bound {deadline - killed_at:.1f} s with slack)")
        assert status == "ended", f"still active {ended_after - killed_at:.1f} s after the kill"
        assert ended_after <= deadline, f"ended {ended_after - killed_at:.1f} s after the kill"
        assert reason == "server_error"
        # It ended when it was last seen alive, not when the sweep noticed.
        assert ended_at == last_seen_at
        # Billed up to its last checkpoint: the ledger's segments of the session add up to what its
        # record says, and that is more than nothing (it ran ~2 s before the kill).
        gpu, billed, segments = record(server.env, data_dir, session_id, query=(
            "SELECT r.gpu_seconds, (SELECT SUM(gpu_seconds) FROM billing_segment WHERE source = 'live' "
            "AND source_id = r.id), (SELECT COUNT(*) FROM billing_segment WHERE source = 'live' "
            "AND source_id = r.id) FROM live_livesession r WHERE r.id = %s"))
        print(f"{profile}: billed {billed} GPU-s in {segments} segment(s); record {gpu}")
        assert segments >= 1 and float(gpu) > 0 and abs(float(billed) - float(gpu)) < 1e-6
