"""Processes for the benchmark suite: a real `nextframe up` server and a raw WebSocket echo server.

Both run as subprocesses so that the comparison is process-to-process on both sides. The platform
is driven only through its command line and its public endpoints (no Django import here).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without NextFrame's own settings, plus `extra`.

    Start-up audits are off unless `extra` turns them on: they would compete for the CPU with
    whatever the caller is about to measure."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NEXTFRAME_", "DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS"))}
    env["NEXTFRAME_AUDIT_ON_STARTUP"] = "0"
    env.update(extra or {}, PYTHONUNBUFFERED="1")
    return env


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    data_dir: str
    key: str
    env: dict[str, str]
    output: list[str] = field(default_factory=list)

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/live"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        """Run `nextframe ARGS --data-dir <this server's>`; returns stdout (raises on failure)."""
        out = subprocess.run([sys.executable, "-m", "nextframe.cli", *args, "--data-dir", self.data_dir],
                             env=self.env, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"nextframe {' '.join(args)} failed: {out.stderr or out.stdout}")
        return out.stdout

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(data_dir: str, extra_env: dict[str, str], verbose: bool = True) -> Server:
    """`nextframe up` on a free port; waits for /healthz; the printed API key is kept.

    `verbose` (the default here) passes --verbose, so the server's logs land in `Server.output`
    with what it printed (diagnostics for a failing test or benchmark)."""
    port = free_port()
    env = clean_env(extra_env)
    argv = [sys.executable, "-m", "nextframe.cli", "up", "--port", str(port), "--data-dir", data_dir]
    proc = subprocess.Popen(argv + (["--verbose"] if verbose else []),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    key = None
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
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
        raise RuntimeError("nextframe up printed no API key:\n" + "".join(lines))
    server = Server(proc, port, data_dir, key, env, lines)
    # Keep draining its output: a full pipe would stall daphne.
    def drain() -> None:
        for more in proc.stdout or []:
            lines.append(more)

    threading.Thread(target=drain, daemon=True).start()
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{server.base}/healthz", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError("the server did not become healthy")


def bench_key(server: Server, max_sessions: int) -> str:
    """An organisation allowed `max_sessions` concurrent sessions, and a key for it."""
    server.cli("createorg", "bench", "--max-live-sessions", str(max_sessions))
    return server.cli("createkey", "--org", "bench").strip().splitlines()[-1].strip()


# --- raw echo ---------------------------------------------------------------------------------------

ECHO_CODE = """
import asyncio, sys
from websockets.asyncio.server import serve

async def echo(ws):
    async for message in ws:
        await ws.send(message)

async def main(port):
    async with serve(echo, "127.0.0.1", port, compression=None, max_size=8 * 1024 * 1024):
        print("ready", flush=True)
        await asyncio.Future()

asyncio.run(main(int(sys.argv[1])))
"""


def start_echo() -> tuple[subprocess.Popen, str]:
    """A raw `websockets` echo server in its own process (the baseline of the round trip)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", ECHO_CODE, str(port)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError("the echo server did not start")
    return proc, f"ws://127.0.0.1:{port}/"


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
