"""End to end: `nextframe up` starts daphne and a Celery worker; the printed key works; Ctrl-C stops all.

Runs on the embedded defaults and, with PostgreSQL and Redis on loopback, scaled out.
"""
from __future__ import annotations

import contextlib
import sys
import time

import pytest

from nextframe.testing import PROFILES
from tests.server import http, running_server, scaled_services

# The server picks its own profile (embedded unless a case says otherwise): once per `make test`.
pytestmark = [pytest.mark.slow, pytest.mark.profile("embedded")]


@pytest.mark.parametrize("profile", PROFILES)
def test_up_serves_models_with_the_printed_key_and_stops_on_ctrl_c(tmp_path, profile):
    services = scaled_services() if profile == "scaled" else contextlib.nullcontext({})
    with services as extra, running_server(tmp_path, extra) as server:
        status, health = http("GET", f"{server.base}/healthz")
        assert status == 200 and health == {"status": "ok"}  # no versions for anyone to fingerprint
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


def _up(data_dir, port: int, *extra: str):
    """`nextframe up` as a person runs it (no --verbose), its output on a pipe."""
    import subprocess

    from tests.server import clean_env

    return subprocess.Popen([sys.executable, "-m", "nextframe.cli", "up", "--port", str(port), "--data-dir",
                             str(data_dir), *extra], env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _read_until(proc, marker: str, timeout_s: float = 90) -> list[str]:
    """stdout lines up to and including the first containing `marker` (fails on exit or timeout)."""
    import queue
    import threading

    lines: list[str] = []
    arrived: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: arrived.put(proc.stdout.readline()), daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = arrived.get(timeout=1)
        except queue.Empty:
            continue
        assert line, f"nextframe up exited ({proc.wait()}): {''.join(lines)}{proc.stderr.read()}"
        lines.append(line)
        if marker in line:
            return lines
        threading.Thread(target=lambda: arrived.put(proc.stdout.readline()), daemon=True).start()
    raise AssertionError(f"no {marker!r} within {timeout_s} s: {''.join(lines)}")


def _stop(proc) -> tuple[int, str, str]:
    import signal

    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


@pytest.mark.timeout(300)  # three starts of the platform on a loaded machine
def test_up_prints_what_a_person_needs_quietly_and_keeps_the_logs(tmp_path):
    """The URLs, the key on the first run and how to stop; daphne's and Celery's output (the banner,
    the root warning, the hostname and HTTP/2 notes, request logs) goes to DATA_DIR/logs."""
    from inference.bench.suite_server import free_port

    port, data = free_port(), tmp_path / "data"
    proc = _up(data, port)
    try:
        printed = "".join(_read_until(proc, "Ctrl-C"))
        status, health = http("GET", f"http://127.0.0.1:{port}/healthz")
        assert status == 200
        key = next(line.strip() for line in printed.splitlines() if line.strip().startswith("nf_live_"))
        assert http("GET", f"http://127.0.0.1:{port}/v1/models", key)[0] == 200

        # A second `nextframe up` on the same port says so and creates nothing (it used to announce
        # itself: its wait for the port was answered by the first server).
        other = _up(tmp_path / "other", port)
        code, out, err = other.wait(timeout=120), other.stdout.read(), other.stderr.read()
        assert code == 1 and out == "" and f"cannot listen on 127.0.0.1:{port}" in err and "already in use" in err, err
        assert not (tmp_path / "other").exists()
        deadline = time.monotonic() + 60  # the worker says "ready" in its log, not here
        while "ready." not in (data / "logs" / "worker.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        code, rest, err = _stop(proc)
    assert code == 0, err
    terminal = printed + rest + err
    assert f"http://127.0.0.1:{port}/v1/models" in terminal and f"ws://127.0.0.1:{port}/v1/live" in terminal
    assert "Created organisation 'default'" in terminal and "NextFrame stopped." in terminal
    for noise in ("celery", "SecurityWarning", "superuser", "hostname", "HTTP/2", "Listening on", "[tasks]", "GET /"):
        assert noise not in terminal, noise
    assert len(terminal.splitlines()) <= 10, terminal
    web, worker = (data / "logs" / "web.log").read_text(), (data / "logs" / "worker.log").read_text()
    assert "Listening on TCP address" in web and "GET /v1/models" in web
    assert "ready." in worker and "[tasks]" in worker

    # Not the first run: no key, the same short greeting.
    proc = _up(data, port)
    try:
        printed = "".join(_read_until(proc, "Ctrl-C"))
    finally:
        code, rest, err = _stop(proc)
    assert code == 0 and "nf_live_" not in printed + rest + err and "NextFrame is up" in printed
    assert (data / "logs" / "web.log").read_text().count("--- nextframe up, ") == 2


def test_up_verbose_shows_the_logs(tmp_path):
    from tests.server import running_server

    with running_server(tmp_path, verbose=True) as server:
        http("GET", f"{server.base}/v1/models", server.key)
        code, output = server.stop()
    assert code == 0 and "Listening on TCP address" in output and "GET /v1/models" in output
    assert not (tmp_path / "data" / "logs").exists()
