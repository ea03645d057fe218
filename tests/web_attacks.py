"""Hostile HTTP clients against a real server, shared by tests/test_web_server.py and measurements.

    python -m tests.web_attacks [--form-mb 60] [--slowloris 3000] [--sources 1] [--server-nofile 1024]
                                [--total-cap N]

starts `nextframe up` and, with a live session running, reports for a 60 MB unauthenticated form
body (to the login form) and a 60 MB unauthenticated upload (to /v1/clips) the longest gap between
the session's frames and the web process's RSS; then, with the web process's descriptor limit
lowered to --server-nofile (so that one client process can reach it), how many slowloris
connections from --sources addresses it holds, whether /healthz and /readyz are still answered and
the session's frame rate meanwhile. The numbers in docs/operations.md come from this script.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from inference.client import LiveClient, ReceivedFrame


def web_pid(server) -> int:
    """The pid of the daphne child (`python -m nextframe.web`) of a `nextframe up` process."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for task in os.listdir(f"/proc/{server.proc.pid}/task"):
            with open(f"/proc/{server.proc.pid}/task/{task}/children") as f:
                for pid in f.read().split():
                    with open(f"/proc/{pid}/cmdline", "rb") as cmd:
                        if b"nextframe.web" in cmd.read():
                            return int(pid)
        time.sleep(0.1)
    raise RuntimeError("no nextframe.web child found")


def memory_mb(pid: int) -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of a process, in MiB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, kb = line.split()[:2]
                values[name[:-1].lower()] = int(kb) / 1024
    return {"rss": values["vmrss"], "peak": values["vmhwm"]}


@dataclass
class Response:
    status: int | None
    headers: dict[str, str]
    body: bytes
    seconds: float
    sent: int


def raw_request(port: int, method: str, path: str, headers: dict[str, str], body: bytes = b"",
                chunk: int = 1 << 20, timeout: float = 60.0, source: str | None = None) -> Response:
    """Send a request over a plain socket and read the answer, even if the server cuts the upload."""
    started = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(source, 0) if source else None)
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
            f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    sent = 0
    received = b""
    try:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        view = memoryview(body)
        while sent < len(body):
            sock.sendall(view[sent:sent + chunk])
            sent += len(view[sent:sent + chunk])
    except OSError:
        pass  # the server refused the rest: its answer is still in our receive buffer
    try:
        while True:
            data = sock.recv(1 << 16)
            if not data:
                break
            received += data
    except OSError:
        pass
    finally:
        sock.close()
    status, parsed, payload = None, {}, b""
    if b"\r\n\r\n" in received:
        head_raw, payload = received.split(b"\r\n\r\n", 1)
        lines = head_raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        parsed = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
    return Response(status, parsed, payload, time.monotonic() - started, sent)


def urlencoded_body(megabytes: int, field_bytes: int = 16) -> bytes:
    """A form body of many short fields: what Twisted's parse_qs spends its time on."""
    field = b"f=" + b"x" * (field_bytes - 3) + b"&"
    return field * (megabytes * (1 << 20) // len(field))


BOUNDARY = "nextframe-attack"


def multipart_body(megabytes: int) -> bytes:
    """A well-formed multipart body with one `video` file part of about `megabytes` MiB."""
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"in.mp4\"\r\n"
            f"Content-Type: video/mp4\r\n\r\n").encode() + b"\0" * (megabytes * 2**20 - 1024) + \
        f"\r\n--{BOUNDARY}--\r\n".encode()


@dataclass
class FrameClock:
    """A live session in a background thread, recording when each output frame arrives."""

    server: object
    arrivals: list[float] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)  # the JSON messages other than metrics, and the end
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self):
        try:
            async with LiveClient(self.server.ws, key=self.server.key) as client:
                await client.start("dreamfield", width=64, height=64, fps=20, prompt="a steady clock")
                self._ready.set()
                async for event in client:
                    if isinstance(event, ReceivedFrame):
                        self.arrivals.append(time.monotonic())
                    elif event.get("type") != "metrics":
                        self.events.append(event)
                    if self._stop.is_set():
                        break
                else:
                    self.events.append({"closed": getattr(client._ws, "close_code", None)})
                    return
                await client.stop()
        except BaseException as exc:  # reported to the caller
            self.error = exc
            self._ready.set()

    def __enter__(self) -> FrameClock:
        self._thread.start()
        if not self._ready.wait(60) or self.error:
            raise RuntimeError(f"the live session did not start: {self.error!r}")
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time without a frame between `start` and `end` (monotonic seconds)."""
        times = [start, *(t for t in self.arrivals if start < t < end), end]
        return max(b - a for a, b in zip(times, times[1:]))


@contextmanager
def slowloris(port: int, count: int, source: str = "127.0.0.2"):
    """`count` connections that each send part of a request line and then nothing; yields them."""
    socks = []
    try:
        for _ in range(count):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-a: ")
                socks.append(sock)
            except OSError:
                break
        yield socks
    finally:
        for sock in socks:
            sock.close()


def still_open(socks: list[socket.socket], wait_s: float = 0.5) -> int:
    """How many of these connections the server has not closed (nothing to read, no EOF/RST)."""
    time.sleep(wait_s)
    alive = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            if sock.recv(1) == b"":
                continue
        except BlockingIOError:
            alive += 1
        except OSError:
            continue
    return alive


def healthy(port: int, source: str = "127.0.0.1", timeout: float = 10.0, path: str = "/healthz") -> bool:
    """Whether a normal client from `source` is served (`/readyz` also needs the database and files)."""
    try:
        return raw_request(port, "GET", path, {}, timeout=timeout, source=source).status == 200
    except OSError:
        return False


def measure(args) -> dict:
    from tests.server import running_server

    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        from pathlib import Path
        env = {"NEXTFRAME_HTTP_MAX_CONNECTIONS": str(args.total_cap)} if args.total_cap else {}
        with running_server(Path(tmp), env) as server:
            pid = web_pid(server)
            form = urlencoded_body(args.form_mb, args.field_bytes)
            upload = multipart_body(args.form_mb)
            with FrameClock(server) as clock:
                time.sleep(3)
                for name, path, ctype, body in [
                        ("form", "/accounts/login/", "application/x-www-form-urlencoded", form),
                        ("upload_unauthenticated", "/v1/clips", f"multipart/form-data; boundary={BOUNDARY}", upload)]:
                    base = memory_mb(pid)
                    quiet_gap = clock.longest_gap(time.monotonic() - 2.5, time.monotonic())
                    start = time.monotonic()
                    response = raw_request(server.port, "POST", path, {"Content-Type": ctype}, body)
                    time.sleep(1.0)
                    end = time.monotonic()
                    after = memory_mb(pid)
                    results[name] = {
                        "path": path, "mb": args.form_mb, "status": response.status,
                        "answer_s": round(response.seconds, 2), "sent_mb": round(response.sent / 2**20, 1),
                        "longest_frame_gap_s": round(clock.longest_gap(start, end), 2),
                        "quiet_frame_gap_s": round(quiet_gap, 2),
                        "rss_mb_before": round(base["rss"]), "rss_mb_after": round(after["rss"]),
                        "peak_rss_growth_mb": round(after["peak"] - base["peak"]),
                    }
                    time.sleep(2)
            results["form"]["field_bytes"] = args.field_bytes
            if args.server_nofile:
                import resource
                resource.prlimit(pid, resource.RLIMIT_NOFILE, (args.server_nofile, args.server_nofile))
            with FrameClock(server) as clock, ExitStack() as stack:
                socks = [sock for i in range(args.sources) for sock in stack.enter_context(
                    slowloris(server.port, args.slowloris // args.sources, source=f"127.0.1.{i + 1}"))]
                time.sleep(1)
                attacked = time.monotonic()
                results["slowloris"] = {
                    "attempted": args.slowloris, "sources": args.sources, "server_nofile": args.server_nofile,
                    "held_open": still_open(socks), "descriptors_in_use": len(os.listdir(f"/proc/{pid}/fd")),
                    "healthz_served": healthy(server.port), "readyz_served": healthy(server.port, path="/readyz")}
                time.sleep(3)
                results["slowloris"]["session_fps_meanwhile"] = round(
                    sum(1 for t in clock.arrivals if t > attacked) / (time.monotonic() - attacked), 1)
            results["slowloris"]["readyz_served_after"] = healthy(server.port, path="/readyz")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--form-mb", type=int, default=60)
    parser.add_argument("--field-bytes", type=int, default=16, help="bytes per form field (name=value&)")
    parser.add_argument("--slowloris", type=int, default=3000)
    parser.add_argument("--sources", type=int, default=1, help="client addresses 127.0.1.N the slowloris come from")
    parser.add_argument("--total-cap", type=int, default=0, help="NEXTFRAME_HTTP_MAX_CONNECTIONS for the server")
    parser.add_argument("--server-nofile", type=int, default=1024,
                        help="lower the web process's descriptor limit first (0: leave it), so that one "
                             "client process can exhaust it")
    print(json.dumps(measure(parser.parse_args()), indent=2))


if __name__ == "__main__":
    main()
