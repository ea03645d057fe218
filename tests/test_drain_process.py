"""SIGTERM on a real `nextframe up` with a live session open: the graceful drain end to end.

The client gets `session.ended` reason `shutdown` and then a normal close (not 1006), the record is
ended with its usage, the session's lease is gone from the pool, and every process exits by itself
(none killed) with status 0 within the grace period (nextframe.live.drain, docs/operations.md). On the way, /metrics is scraped from loopback.
"""
from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
import urllib.request
from pathlib import Path

import pytest

from inference.client import LiveClient, ReceivedFrame
from tests.server import running_server
from tests.test_stale_sweep import web_child

# The server picks its own profile (embedded): once per `make test`.
pytestmark = [pytest.mark.slow, pytest.mark.profile("embedded")]

GRACE_S = 8.0


def query(path: Path, sql: str, *args) -> tuple:
    with sqlite3.connect(path, timeout=20) as conn:
        return conn.execute(sql, args).fetchone()


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie has exited
    except OSError:
        return False


async def session_then_sigterm(server) -> tuple[dict, dict, int | None, int, float, int]:
    """(session.ready, session.ended, close code, the web process, when SIGTERM was sent, leases)"""
    async with LiveClient(server.ws, key=server.key) as client:
        ready = await client.start("dreamfield", width=64, height=64, fps=10)
        frames = 0
        async for event in client:
            frames += isinstance(event, ReceivedFrame)
            if frames >= 5:
                break
        # A scrape of the real server from loopback (no token set): the session is counted.
        scraped = await asyncio.to_thread(fetch, f"{server.base}/metrics")
        assert 'nextframe_live_sessions{model="dreamfield",tier="interactive"} 1.0' in scraped, scraped[:2000]
        leases = query(Path(server.data_dir) / "pool.sqlite3",
                       "SELECT count(*) FROM pool_leases WHERE session_id = ?", ready["session_id"])[0]
        web = web_child(server.proc.pid)
        server.proc.send_signal(signal.SIGTERM)
        sent_at = time.monotonic()
        ended = None
        async for event in client:  # frames may still arrive before the end
            if isinstance(event, dict) and event.get("type") == "session.ended":
                ended = event
        assert client._ws is not None
        close_code = client._ws.close_code
    return ready, ended or {}, close_code, web, sent_at, leases


def test_sigterm_ends_live_sessions_with_shutdown_and_exits_0_within_the_grace_period(tmp_path):
    with running_server(tmp_path, {"NEXTFRAME_SHUTDOWN_GRACE_S": str(GRACE_S)}) as server:
        ready, ended, close_code, web, sent_at, leases = asyncio.run(session_then_sigterm(server))
        while alive(web) and time.monotonic() - sent_at < GRACE_S + 30:
            time.sleep(0.05)
        web_took = time.monotonic() - sent_at
        code = server.proc.wait(timeout=GRACE_S + 30)
        _, output = server.stop()
    assert leases == 1  # the session held its lease while it ran ...
    assert ended.get("reason") == "shutdown", output
    assert ended["usage"]["frames"] >= 5 and float(ended["usage"]["gpu_seconds"]) > 0
    assert close_code == 1000
    data = Path(server.data_dir)
    status, reason, frames, gpu_seconds = query(
        data / "nextframe.sqlite3",
        "SELECT status, end_reason, frames, gpu_seconds FROM live_livesession WHERE id = ?", ready["session_id"])
    assert (status, reason) == ("ended", "shutdown") and frames >= 5 and float(gpu_seconds) > 0
    assert query(data / "pool.sqlite3", "SELECT count(*) FROM pool_leases WHERE session_id = ?",
                 ready["session_id"])[0] == 0  # ... and released it
    assert code == 0 and "NextFrame stopped." in output, output
    # Every child stopped by itself with status 0 (`up` warns of any other exit) and nothing failed.
    assert "warning:" not in output and "Traceback" not in output, output
    print(f"SIGTERM to the web process's exit: {web_took:.2f} s (grace {GRACE_S} s)")
    assert web_took < GRACE_S, output
