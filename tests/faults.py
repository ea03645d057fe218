"""Instruments of the fault and soak tests (tests/test_faults.py, tests/test_soak.py): a private
redis-server to restart, a TCP proxy to PostgreSQL to cut, live sessions held in the background,
and reads straight from the real servers (never through the cut proxy)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from inference.client import LiveClient, LiveClientError, ReceivedFrame
from nextframe.localcluster import LocalCluster, free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
SIZE = {"width": 64, "height": 64, "fps": 10}


# --- the faults' instruments ----------------------------------------------------------------------

def need_redis_server() -> None:
    """Skip (fail when services are required) without a redis-server binary to run privately."""
    if Path(REDIS_SERVER).exists():
        return
    from nextframe.testing import services_required

    message = f"no redis-server binary at {REDIS_SERVER} (apt-get install redis-server)"
    if services_required():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class PrivateRedis:
    """A redis-server of the test's own on a free port: it may be stopped and restarted at will."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.ping():
            assert self.proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def shutdown(self, save: bool = True) -> None:
        """SHUTDOWN [SAVE]: what a restart (an upgrade, a config change) does to Redis."""
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"SHUTDOWN SAVE\r\n" if save else b"SHUTDOWN NOSAVE\r\n")
            sock.recv(64)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class TcpProxy:
    """A TCP proxy to PostgreSQL that the test can cut: `cut()` resets every open connection and
    refuses new ones (a database that is down or unreachable) until `restore()`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        self.refused = 0
        threading.Thread(target=self._accept, name="pg-proxy", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self._cut:
                self.refused += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                cut_meanwhile = self._cut
                if not cut_meanwhile:
                    self._open |= {client, upstream}
            if cut_meanwhile:  # cut() ran while this one was connecting: it is refused too
                self.refused += 1
                _reset(client)
                _reset(upstream)
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with self._lock:
                    self._open.discard(sock)
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def cut(self) -> int:
        """Reset every open connection and refuse new ones; returns how many were reset."""
        self._cut = True
        with self._lock:
            victims, self._open = list(self._open), set()
        for sock in victims:
            _reset(sock)
        return len(victims)

    def restore(self) -> None:
        self._cut = False

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        self.cut()


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the peer's next read fails at once, as when a server dies.

    shutdown() first: close() alone does not wake a pump thread blocked in recv() on the socket,
    whose reference keeps it open, so the peer would see a silent connection (a blackhole: its
    query waits forever) instead of a reset. Seen in a first version of this proxy: a node's
    database thread hung for the rest of the run."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


# --- a live session held in the background ----------------------------------------------------------

@dataclass
class Held:
    """One live session: its frames' arrival times, how it ended, when its socket closed."""

    client: LiveClient
    ready: dict[str, Any]
    arrivals: list[float] = field(default_factory=list)
    ended: dict[str, Any] | None = None
    error: LiveClientError | None = None
    closed_at: float | None = None
    task: asyncio.Task | None = None
    metrics: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (arrival, `metrics`)

    @property
    def session_id(self) -> str:
        return self.ready["session_id"]

    def frames_between(self, lo: float, hi: float) -> int:
        return sum(lo <= t < hi for t in self.arrivals)

    def longest_gap(self, lo: float, hi: float) -> float:
        times = [lo, *(t for t in self.arrivals if lo <= t < hi), hi]
        return max(b - a for a, b in zip(times, times[1:]))

    async def _pump(self) -> None:
        try:
            async for event in self.client:
                if isinstance(event, ReceivedFrame):
                    self.arrivals.append(time.monotonic())
                elif event.get("type") == "session.ended":
                    self.ended = event
                elif event.get("type") == "metrics":
                    self.metrics.append((time.monotonic(), event))
        except LiveClientError as exc:
            self.error = exc
        self.closed_at = time.monotonic()

    async def stop(self, timeout: float = 20.0) -> dict[str, Any]:
        ended = await self.client.stop(timeout=timeout)
        if self.task is not None:
            await asyncio.wait_for(self.task, timeout)
        await self.client.close()
        return ended

    async def wait_frames(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        have = len(self.arrivals)
        while len(self.arrivals) < have + n:
            assert self.closed_at is None, f"the session ended: {self.ended or self.error}"
            assert time.monotonic() < deadline, f"fewer than {n} frames in {timeout} s"
            await asyncio.sleep(0.05)


async def hold(url: str, key: str, model: str = "dreamfield", timeout: float = 90.0, **start: Any) -> Held:
    """Open a session and keep reading it in the background."""
    client = LiveClient(url, key=key)
    await client.connect()
    try:
        ready = await client.start(model, **{**SIZE, **start}, timeout=timeout)
    except BaseException:
        await client.close()
        raise
    held = Held(client, ready)
    held.task = asyncio.create_task(held._pump())
    return held


# --- database and pool reads (straight to the real servers, never through the cut proxy) ------------

def query(database_url: str, sql: str, *params: Any) -> list[tuple]:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def live_billing(database_url: str, session_id: str) -> tuple[str, str, float, float, int]:
    """(status, end_reason, record GPU-s, ledger GPU-s, ledger segments) of a live session."""
    status, reason, gpu, billed, segments = query(database_url, (
        "SELECT r.status, r.end_reason, r.gpu_seconds, (SELECT COALESCE(SUM(gpu_seconds), 0) FROM billing_segment "
        "WHERE source = 'live' AND source_id = r.id::text), (SELECT COUNT(*) FROM billing_segment "
        "WHERE source = 'live' AND source_id = r.id::text) FROM live_livesession r WHERE r.id = %s"), session_id)[0]
    return status, reason, float(gpu), float(billed), int(segments)


def pool_leases(redis_url: str) -> list:
    from inference.pool.redis import RedisBackend

    backend = RedisBackend(redis_url)
    try:
        return backend.snapshot().leases
    finally:
        backend.client.close()


def http(method: str, url: str, key: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {key}", **({"Content-Type": "application/json"} if data else {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


async def finish(held: Held) -> dict[str, Any]:
    """session.stop and its session.ended, or {"error": ...} when the socket failed instead."""
    try:
        return await held.stop()
    except LiveClientError as exc:
        return {"error": str(exc), "close_code": exc.close_code}


def serving_node(cluster: LocalCluster, held: Held) -> str | None:
    """The GPU node a session runs on: the node of the last URL its client connected to (a
    session.redirect, when the cluster's nodes send one, is followed inside `start()`)."""
    url = (list(getattr(held.client, "redirects", None) or []) or [held.client.url])[-1].split("?", 1)[0]
    for name in cluster.gpu_names:
        if url in (cluster.routed_ws(name), cluster.node_ws(name)):
            return name
    return None
