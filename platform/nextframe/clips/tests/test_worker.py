"""End to end with real processes: a daphne web process and a Celery worker on a real broker (kombu's
filesystem transport, or Redis) and an on-disk database shared by both (SQLite file, or a fresh
PostgreSQL database in the scaled profile). Everything goes over HTTP, as with curl.

The kill-a-worker test SIGKILLs the whole worker (main process and pool child) while the job is
provably mid-job, starts a new worker, and checks the job ends `succeeded` exactly once, with a
playable MP4 of the requested length and size, visible to nobody else.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from inference.video import probe_mp4
from nextframe.testing import POSTGRES_URL, need_service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]
ROOT = Path(__file__).resolve().parents[4]
# The server's maintenance database: where a fresh database for the subprocesses is created.
ADMIN_DB = POSTGRES_URL.rsplit("/", 1)[0] + "/postgres"

SETUP = """
import json, django
django.setup()
from django.core.management import call_command
from nextframe.celery import ensure_broker_dirs
ensure_broker_dirs()
call_command("migrate", interactive=False, verbosity=0)
from nextframe.tenancy import actions
keys = {}
for name in ("acme", "globex"):
    keys[name] = actions.create_key(actions.create_org(name), scopes="clips")[1]
print(json.dumps(keys))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout_s: float, what: str, procs=()):
    """Poll until `predicate()` returns something truthy (a bounded wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"{what}: process {proc.args[:4]} exited with {proc.returncode}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Platform:
    """The processes of one test and the HTTP client talking to them."""

    database: str  # set by the fixture: the DATABASE_URL, or the SQLite file's path

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = env
        self.port = free_port()
        self.procs: list[subprocess.Popen] = []

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}-{len(self.procs)}.log", "wb")  # noqa: SIM115 - the child writes it as long as it runs
        proc = subprocess.Popen([sys.executable, *args], env=self.env, cwd=ROOT / "platform", stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def start_web(self) -> None:
        web = self.spawn("web", ["-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "nextframe.asgi:application"])
        wait_for(lambda: self._up(), 60, "the web process", [web])

    def _up(self) -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2).read()
            return True
        except (OSError, urllib.error.URLError):
            return False

    def start_worker(self) -> subprocess.Popen:
        return self.spawn("worker", ["-m", "celery", "-A", "nextframe.clips.tests.e2e_worker", "worker", "-Q", "clips",
                                     "--concurrency", "1", "--without-mingle", "--without-gossip",
                                     "--loglevel", "INFO", "--hostname", f"e2e-{uuid.uuid4().hex[:6]}@%h"])

    def http(self, method: str, path: str, key: str, body: dict | None = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def clip(self, clip_id: str, key: str) -> dict:
        status, body = self.http("GET", f"/v1/clips/{clip_id}", key)
        assert status == 200, body
        return json.loads(body)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                # Workers get a cold shutdown (SIGQUIT): a warm one idles ~8 s on the filesystem
                # transport, and the test is over by now.
                celery = isinstance(proc.args, list) and "celery" in proc.args
                os.killpg(proc.pid, signal.SIGQUIT if celery else signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# The broker of each profile, in that profile's pass: the filesystem broker with SQLite (embedded),
# Redis with PostgreSQL (scaled), as deployments run them.
BROKERS = [pytest.param("filesystem", marks=pytest.mark.profile("embedded")),
           pytest.param("redis", marks=pytest.mark.profile("scaled"))]


@pytest.fixture(params=BROKERS)
def platform(request, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "NEXTFRAME_DATA_DIR"}}
    env.update(DJANGO_SETTINGS_MODULE="nextframe.clips.tests.e2e_settings", NEXTFRAME_DATA_DIR=str(tmp_path / "data"),
               PYTHONPATH=f"{ROOT / 'platform'}{os.pathsep}{ROOT}", NEXTFRAME_TEST_CLIP_GATE=str(tmp_path / "gate"),
               NEXTFRAME_TEST_RENDER_LOG=str(tmp_path / "renders.log"), PYTHONUNBUFFERED="1",
               NEXTFRAME_CPU_CAPACITY="1.0")
    if request.param == "redis":
        # The suite's Redis (TEST_REDIS_URL) and a per-run key prefix: nothing shared with other runs.
        env["REDIS_URL"] = request.getfixturevalue("redis_url")
        env["NEXTFRAME_TEST_KEYPREFIX"] = f"nf-e2e-{uuid.uuid4().hex[:8]}:"
    database = None
    if os.environ.get("NEXTFRAME_TEST_PROFILE") == "scaled":
        need_service("PostgreSQL", POSTGRES_URL)
        import psycopg

        database = f"nf_clips_e2e_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(ADMIN_DB, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        env["DATABASE_URL"] = POSTGRES_URL.rsplit("/", 1)[0] + f"/{database}"
    setup = subprocess.run([sys.executable, "-c", SETUP], env=env, cwd=ROOT / "platform", capture_output=True,
                           text=True, timeout=120)
    assert setup.returncode == 0, setup.stderr
    plat = Platform(tmp_path, env)
    plat.keys = json.loads(setup.stdout.strip().splitlines()[-1])
    plat.database = env.get("DATABASE_URL") or str(tmp_path / "data" / "nextframe.sqlite3")
    try:
        yield plat
    finally:
        plat.stop()
        if "NEXTFRAME_TEST_KEYPREFIX" in env:
            import redis

            client = redis.Redis.from_url(env["REDIS_URL"])
            keys = list(client.scan_iter(f"{env['NEXTFRAME_TEST_KEYPREFIX']}*"))
            if keys:
                client.delete(*keys)
        if database:
            import psycopg

            with psycopg.connect(ADMIN_DB, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def query(plat: Platform, sql: str, args: tuple) -> list[tuple]:
    if plat.database.startswith("postgres"):
        import psycopg

        with psycopg.connect(plat.database) as conn:
            return conn.execute(sql.replace("?", "%s"), args).fetchall()
    with sqlite3.connect(plat.database) as conn:
        return conn.execute(sql, args).fetchall()


def kill_mid_job_then_check(platform, tmp_path, whole_worker: bool) -> None:
    acme, globex = platform.keys["acme"], platform.keys["globex"]
    platform.start_web()
    worker = platform.start_worker()
    request = {"model": "dreamfield", "prompt": "tide", "width": 64, "height": 48, "fps": 12, "frames": 24}
    status, body = platform.http("POST", "/v1/clips", acme, request)
    assert status == 202, body
    clip_id = json.loads(body)["id"]

    # Mid-job: the first batch is rendered and recorded, the second is held at the gate.
    wait_for(lambda: platform.clip(clip_id, acme)["progress"]["frames_done"] == 4, 60, "the first batch", [worker])
    assert platform.clip(clip_id, acme)["status"] == "running"
    work = tmp_path / "data" / "work" / "clips"  # the attempts' scratch space, under the data dir
    assert [p.name.split(".")[0] for p in work.iterdir()] == [clip_id]
    if whole_worker:
        # Main process and pool child: with the filesystem broker the message dies with them.
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        (tmp_path / "gate").touch()  # whoever renders next is not held
        platform.start_worker()
    else:
        # Only the pool child: the parent rejects the message (reject_on_worker_lost), it is
        # requeued and a fresh child takes the job over from the dead one.
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
        assert len(children) == 1, children
        os.kill(int(children[0]), signal.SIGKILL)
        (tmp_path / "gate").touch()
    done = wait_for(lambda: (c := platform.clip(clip_id, acme))["status"] not in {"queued", "running"} and c,
                    90, "the job to finish after the restart")
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2 and done["tier"] == "fast-batch"
    assert done["timings"]["time_to_first_frame_s"] > 0 and done["timings"]["fps_throughput"] > 0

    events = query(platform, "SELECT from_status, to_status FROM clips_clipevent e JOIN clips_clip c "
                             "ON c.id = e.clip_id ORDER BY e.at, e.id", ())
    assert events == [("", "queued"), ("queued", "running"), ("running", "running"), ("running", "succeeded")]

    status, video = platform.http("GET", f"/v1/clips/{clip_id}/video", acme)
    assert status == 200
    (tmp_path / "out.mp4").write_bytes(video)
    info = probe_mp4(tmp_path / "out.mp4")
    assert (info["frames"], info["width"], info["height"], info["codec"]) == (24, 64, 48, "h264")
    assert info["duration_s"] == pytest.approx(2.0, abs=1e-3)

    for path in (f"/v1/clips/{clip_id}", f"/v1/clips/{clip_id}/video"):
        assert platform.http("GET", path, globex)[0] == 404
    # Renders counted per process: the killed worker got one batch done, the new one the whole clip.
    per_pid: dict[str, int] = {}
    for line in (tmp_path / "renders.log").read_text().split("\n"):
        if line:
            pid, frames = line.split()
            per_pid[pid] = per_pid.get(pid, 0) + int(frames)
    assert sorted(per_pid.values()) == [4, 24], per_pid
    # One stored video: the killed attempt published nothing.
    assert len(list((tmp_path / "data" / "media").rglob("*.mp4"))) == 1
    # The killed attempt never cleaned up after itself: the recovery sweep removes its work folder.
    wait_for(lambda: not any(work.iterdir()), 30, "the dead attempt's work folder to be swept")


def test_killed_worker_the_job_finishes_exactly_once(platform, tmp_path):
    kill_mid_job_then_check(platform, tmp_path, whole_worker=True)


@pytest.mark.parametrize("platform", BROKERS[:1], indirect=True)
def test_killed_pool_child_the_job_finishes_exactly_once(platform, tmp_path):
    kill_mid_job_then_check(platform, tmp_path, whole_worker=False)
