"""Two real nodes on PostgreSQL + Redis: sessions land where the pool places them, through redirects.

Two `python -m nextframe.web` processes (daphne) share one fresh PostgreSQL database and one Redis
(their pool under a key prefix of their own), each a node with its id, its public URL and simulated
devices read from a JSON file (`NEXTFRAME_DEVICES_FILE`: the real drain rule over what NVML would
report, rewritten by the test while the nodes run). Node b's device is the larger one, so the pool's
least-loaded rule places a start that reaches a on b. The nodes are shared by the module's tests, in
order; the last two kill b, then stop a.

Numbers (time for a throttle to drain a device, for a killed node to leave placement) are printed
with `-s`; docs/operations.md ("Nodes and redirects") has them.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from inference.bench.suite_server import clean_env, free_port
from inference.client import LiveClient, LiveClientError, ReceivedFrame
from tests.server import scaled_services

# Its own PostgreSQL database and nodes: once per `make test`, in the scaled-out pass.
pytestmark = [pytest.mark.slow, pytest.mark.profile("scaled")]

TTL_S = 3.0  # NEXTFRAME_POOL_LEASE_TTL_S of both nodes: devices re-registered every second
SETUP = """
import django, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nextframe.settings")
django.setup()
from django.core.management import call_command
call_command("migrate", interactive=False, verbosity=0)
from nextframe.tenancy import actions
print(actions.create_key(actions.create_org("acme", max_live_sessions=8))[1])
"""


@dataclass
class Node:
    name: str
    proc: subprocess.Popen
    port: int
    devices: Path
    log: Path

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/live"

    def set_devices(self, *devices: dict) -> None:
        tmp = self.devices.with_suffix(".tmp")
        tmp.write_text(json.dumps({"devices": list(devices)}))
        tmp.replace(self.devices)  # atomic: the node never reads half a file


@dataclass
class Cluster:
    a: Node
    b: Node
    key: str
    database_url: str
    prefix: str
    redis_url: str

    def pool_view(self):
        """The shared pool as the nodes see it (devices with their URL and drain state, leases)."""
        from inference.pool.redis import RedisBackend

        return RedisBackend(self.redis_url, prefix=self.prefix).snapshot()

    def record(self, session_id: str) -> tuple:
        import psycopg

        with psycopg.connect(self.database_url) as conn:
            return conn.execute("SELECT node, device, status, end_reason, frames FROM live_livesession WHERE id = %s",
                                (session_id,)).fetchone()


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> float:
    """Seconds until `check()` holds (polled every 50 ms); fails the test after `timeout`."""
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - began


def start_node(name: str, capacity: float, env: dict, tmp: Path) -> Node:
    from nextframe.cli import websocket_size_args

    port = free_port()
    devices = tmp / f"{name}-devices.json"
    node = Node(name, None, port, devices, tmp / f"{name}.log")  # type: ignore[arg-type]
    node.set_devices({"id": "cpu", "name": f"simulated {name}", "capacity": capacity})
    node_env = dict(env, NEXTFRAME_NODE_ID=name, NEXTFRAME_PUBLIC_URL=node.ws, NEXTFRAME_DEVICES_FILE=str(devices),
                    NEXTFRAME_DATA_DIR=str(tmp / name))
    with open(node.log, "wb") as log:
        node.proc = subprocess.Popen(
            [sys.executable, "-m", "nextframe.web", "-b", "127.0.0.1", "-p", str(port), *websocket_size_args(),
             "nextframe.asgi:application"], env=node_env, stdout=log, stderr=subprocess.STDOUT)
    return node


def healthy(node: Node) -> bool:
    if node.proc.poll() is not None:
        raise AssertionError(f"node {node.name} exited {node.proc.returncode}:\n{node.log.read_text()[-3000:]}")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.port}/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nodes")
    with scaled_services() as services:
        prefix = f"nftest:{uuid.uuid4().hex}:{{pool}}"
        env = clean_env({**services, "SECRET_KEY": "nodes-test-" + uuid.uuid4().hex * 2,
                         "NEXTFRAME_POOL_LEASE_TTL_S": str(TTL_S), "NEXTFRAME_POOL_KEY_PREFIX": prefix,
                         "NEXTFRAME_DATA_DIR": str(tmp),
                         # The stale-record sweep (tests/test_stale_sweep.py) would run before the
                         # schema exists: the nodes start while it is made.
                         "NEXTFRAME_LIVE_SWEEP_INTERVAL_S": "0"})
        # The schema and the key are made while the nodes start (seconds of imports each, in parallel):
        # nothing reaches the database before the test's first request.
        setup = subprocess.Popen([sys.executable, "-c", SETUP], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        a, b = start_node("a", 1.0, env, tmp), start_node("b", 2.0, env, tmp)
        try:
            out, err = setup.communicate(timeout=120)
            assert setup.returncode == 0, err
            key = out.strip().splitlines()[-1]
            wait_for("both nodes healthy", lambda: healthy(a) and healthy(b), 120)
            made = Cluster(a, b, key, services["DATABASE_URL"], prefix, services["REDIS_URL"])
            yield made
        finally:
            for node in (a, b):
                if node.proc.poll() is None:
                    node.proc.send_signal(signal.SIGTERM)
            for node in (a, b):
                try:
                    node.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait()
            import redis

            client = redis.Redis.from_url(services["REDIS_URL"])
            for name in client.scan_iter(match=f"{prefix}*"):
                client.delete(name)


START_S: dict[str, list[float]] = {"redirected": [], "direct": []}  # session.start -> session.ready, seconds


async def session(url: str, key: str | None = None, ticket: str | None = None, frames: int = 3) -> tuple[dict, list[str], dict]:
    """A session started at `url` (following redirects): (session.ready, redirects followed, session.ended)."""
    async with LiveClient(url, key=key, ticket=ticket) as client:
        began = time.monotonic()
        ready = await client.start("dreamfield", width=64, height=64, fps=10)
        START_S["redirected" if client.redirects else "direct"].append(time.monotonic() - began)
        got = 0
        async for event in client:
            got += isinstance(event, ReceivedFrame)
            if got >= frames:
                break
        return ready, client.redirects, await client.stop()


async def raw_redirect(url: str, key: str) -> dict:
    """session.start at `url` without following: the session.redirect, then the close code."""
    from websockets.asyncio.client import connect

    async with connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        await ws.send(json.dumps({"type": "session.start", "model": "dreamfield", "width": 64, "height": 64, "fps": 10}))
        moved = json.loads(await ws.recv())
        await ws.wait_closed()
        assert ws.close_code == 1000, ws.close_code
    return moved


async def refused(url: str, ticket: str) -> tuple[list[dict], int | None]:
    """What a node says to a socket opened with `ticket` before closing it: messages, close code."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    said = []
    async with connect(f"{url}?ticket={ticket}") as ws:
        try:
            while True:
                said.append(json.loads(await ws.recv()))
        except ConnectionClosed:
            return said, ws.close_code


def test_a_start_at_a_lands_on_b_through_a_redirect(cluster):
    ready, redirects, ended = asyncio.run(session(cluster.a.ws, key=cluster.key))
    assert redirects == [cluster.b.ws] and ready["reservation"]["device"] == "b/cpu"
    assert ended["reason"] == "client" and ended["usage"]["frames"] >= 3
    node, device, status, reason, frames = cluster.record(ready["session_id"])
    assert (node, device, status, reason) == ("b", "b/cpu", "ended", "client") and frames >= 3
    assert cluster.pool_view().leases == []  # released on b; nothing left behind on a
    # A start that reaches b stays there: no redirect.
    ready, redirects, _ = asyncio.run(session(cluster.b.ws, key=cluster.key, frames=1))
    assert redirects == [] and ready["reservation"]["device"] == "b/cpu"
    for _ in range(3):  # warm: the time a redirect adds to a start (printed, not asserted)
        asyncio.run(session(cluster.a.ws, key=cluster.key, frames=1))
        asyncio.run(session(cluster.b.ws, key=cluster.key, frames=1))
    redirected, direct = sorted(START_S["redirected"][1:]), sorted(START_S["direct"][1:])
    print(f"\nsession.start -> session.ready: direct {1000 * direct[len(direct) // 2]:.0f} ms, "
          f"through a redirect {1000 * redirected[len(redirected) // 2]:.0f} ms (medians of {len(direct)})")


def test_nextframe_live_follows_the_redirect_without_the_user_noticing(cluster):
    out = subprocess.run([sys.executable, "-m", "nextframe.cli", "live", "--url", cluster.a.ws, "--key", cluster.key,
                          "--model", "dreamfield", "--width", "64", "--height", "64", "--fps", "10", "--duration", "1.5"],
                         env=clean_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr + out.stdout
    session_id = out.stdout.split()[1].rstrip(":")
    assert cluster.record(session_id)[:4] == ("b", "b/cpu", "ended", "client")


BROWSER_SESSION = """async ([url, ticket]) => {
  const { LiveClient } = await import('/js/live.js');
  const client = new LiveClient({ url, getTicket: async () => ticket });
  const redirected = [];
  client.addEventListener('redirect', (e) => redirected.push(e.detail.url));
  const ready = await client.start({ model: 'dreamfield', width: 64, height: 64, fps: 10 });
  let frames = 0;
  await new Promise((r) => client.addEventListener('frame', () => { if (++frames >= 3) r(); }));
  const ended = await client.stop();
  return { ready, redirected, frames, ended };
}"""


def test_the_browsers_live_js_follows_a_real_redirect(cluster):
    """The playground's protocol client (frontend/static/frontend/js/live.js) in Debian's Chromium,
    started at a with a ticket minted by the key: it lands on b without its caller noticing."""
    from tests.browser.conftest import CHROMIUM, _need_chromium
    from tests.browser.test_live_client import PAGE, STATIC

    _need_chromium()
    import functools
    import http.server
    import threading

    from playwright.sync_api import sync_playwright

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path != "/":
                return super().do_GET()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(PAGE)

        def log_message(self, *args) -> None:
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(STATIC)))
    threading.Thread(target=site.serve_forever, daemon=True).start()
    request = urllib.request.Request(f"http://127.0.0.1:{cluster.a.port}/v1/tickets", method="POST",
                                     headers={"Authorization": f"Bearer {cluster.key}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        ticket = json.loads(response.read())["ticket"]
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{site.server_address[1]}/")
                out = page.evaluate(BROWSER_SESSION, [cluster.a.ws, ticket])
            finally:
                browser.close()
    finally:
        site.shutdown()
    assert out["redirected"] == [cluster.b.ws] and out["ready"]["reservation"]["device"] == "b/cpu"
    assert out["frames"] >= 3 and out["ended"]["reason"] == "client"
    assert cluster.record(out["ready"]["session_id"])[:4] == ("b", "b/cpu", "ended", "client")
    assert cluster.pool_view().leases == []


def test_a_redirect_ticket_is_single_use_and_bound_to_its_node(cluster):
    moved = asyncio.run(raw_redirect(cluster.a.ws, cluster.key))
    assert moved["type"] == "session.redirect" and moved["url"] == cluster.b.ws and moved["retry_after_s"] == 0
    # Presented to a, the node it is not for: refused with its code, and not used up.
    said, code = asyncio.run(refused(cluster.a.ws, moved["ticket"]))
    assert [m["code"] for m in said] == ["wrong_node"] and code == 4403
    ready, _, _ = asyncio.run(session(moved["url"], ticket=moved["ticket"], frames=1))
    assert ready["reservation"]["device"] == "b/cpu"
    # Replayed at b after use: refused like any used ticket, nothing reserved.
    said, code = asyncio.run(refused(cluster.b.ws, moved["ticket"]))
    assert said == [] and code == 4401
    assert cluster.pool_view().leases == []


def test_an_edge_node_without_devices_redirects_every_start(cluster):
    cluster.a.set_devices()  # a becomes an edge node: it registers no device from its next refresh on
    try:
        wait_for("a's devices gone from the pool",
                 lambda: {d.device_id for d in cluster.pool_view().devices} == {"b/cpu"}, 3 * TTL_S)
        cluster.b.set_devices({"id": "cpu", "capacity": 0.5})  # smaller than a used to be: still b, a has none
        wait_for("b re-registered", lambda: [d.capacity for d in cluster.pool_view().devices] == [0.5], 3 * TTL_S)
        ready, redirects, _ = asyncio.run(session(cluster.a.ws, key=cluster.key, frames=1))
        assert redirects == [cluster.b.ws] and ready["reservation"]["device"] == "b/cpu"
    finally:
        cluster.a.set_devices({"id": "cpu", "capacity": 1.0})
        cluster.b.set_devices({"id": "cpu", "capacity": 2.0})
        wait_for("both registered again", lambda: sorted(d.capacity for d in cluster.pool_view().devices) == [1.0, 2.0],
                 3 * TTL_S)


def test_a_throttling_device_is_drained_and_new_sessions_land_elsewhere(cluster):
    """Fault test: b's device reports a thermal slowdown while a session runs on it."""

    async def scenario() -> dict:
        async with LiveClient(cluster.b.ws, key=cluster.key) as running:
            first = await running.start("dreamfield", width=64, height=64, fps=10)
            assert first["reservation"]["device"] == "b/cpu"
            written = time.monotonic()
            cluster.b.set_devices({"id": "cpu", "capacity": 2.0, "temperature_c": 91,
                                   "throttle_reasons": ["hw_thermal_slowdown"]})
            drained_s = await asyncio.to_thread(
                wait_for, "b drained", lambda: [d.draining for d in cluster.pool_view().devices
                                                if d.device_id == "b/cpu"] == [True], 3 * TTL_S)
            moved_ready, moved, _ = await session(cluster.b.ws, key=cluster.key, frames=2)
            frames_after = 0
            async for event in running:  # the session already on b keeps streaming while drained
                frames_after += isinstance(event, ReceivedFrame)
                if frames_after >= 5:
                    break
            ended = await running.stop()
            return {"drained_s": drained_s, "moved": moved, "moved_device": moved_ready["reservation"]["device"],
                    "frames_after": frames_after, "ended": ended["reason"], "since_write_s": time.monotonic() - written}

    try:
        seen = asyncio.run(scenario())
    finally:
        cluster.b.set_devices({"id": "cpu", "capacity": 2.0})
    print(f"\nthrottle -> b/cpu drained in {seen['drained_s']:.2f} s (refresh every {TTL_S / 3:.1f} s); "
          f"a start at b was redirected to {seen['moved']} ({seen['moved_device']}); the running session sent "
          f"{seen['frames_after']} more frames and ended {seen['ended']}")
    assert seen["drained_s"] <= TTL_S / 3 + 1.5
    assert seen["moved"] == [cluster.a.ws] and seen["moved_device"] == "a/cpu"
    assert seen["frames_after"] >= 5 and seen["ended"] == "client"
    # Back in service once the device says so: starts at a land on b again.
    wait_for("b back in service", lambda: not any(d.draining for d in cluster.pool_view().devices), 3 * TTL_S)
    _, redirects, _ = asyncio.run(session(cluster.a.ws, key=cluster.key, frames=1))
    assert redirects == [cluster.b.ws]


def test_a_killed_node_leaves_placement_within_the_lease_ttl(cluster):
    killed: dict[str, float] = {}

    async def hold_then_kill() -> None:
        async with LiveClient(cluster.b.ws, key=cluster.key) as client:
            await client.start("dreamfield", width=64, height=64, fps=10)
            os.kill(cluster.b.proc.pid, signal.SIGKILL)
            killed["at"] = time.monotonic()
            async for _ in client:  # until the client sees the connection drop
                pass

    with pytest.raises(LiveClientError):
        asyncio.run(hold_then_kill())
    def b_gone() -> bool:
        view = cluster.pool_view()
        return {d.node_id for d in view.devices} == {"a"} and not view.leases

    wait_for("b's devices and its session's lease gone from the pool", b_gone, 2 * TTL_S)
    gone_s = time.monotonic() - killed["at"]
    print(f"\nkill -9 b: its device and its session's lease left the pool {gone_s:.2f} s later (TTL {TTL_S:g} s)")
    assert gone_s <= TTL_S + 0.5
    # A start at a stays on a: nobody is redirected to the dead node.
    ready, redirects, _ = asyncio.run(session(cluster.a.ws, key=cluster.key, frames=1))
    assert redirects == [] and ready["reservation"]["device"] == "a/cpu"


def test_sigterm_takes_a_node_out_of_placement_at_once(cluster):
    """The drain's first step re-registers the node's devices as draining: no new session is placed
    (or redirected) there while it ends the ones it runs. Runs last: a is stopped."""
    def a_draining() -> list[bool]:
        return [d.draining for d in cluster.pool_view().devices if d.node_id == "a"]

    assert a_draining() == [False]
    cluster.a.proc.send_signal(signal.SIGTERM)
    drained_s = wait_for("a's device registered draining", lambda: a_draining() == [True], TTL_S / 2)
    assert cluster.a.proc.wait(timeout=30) == 0
    print(f"\nSIGTERM a: a/cpu registered draining {1000 * drained_s:.0f} ms later (TTL {TTL_S:g} s)")
