"""A client that sends frames and never reads: what happens to the server's memory (issue 9, item 3).

    python -m inference.bench.slow_reader                    # 40 s, identity 1024x1024 at 20 frames/s
    python -m inference.bench.slow_reader --seconds 60 --timeout 10 --json out.json

It starts `nextframe up` (as the benchmark suite does), opens a raw WebSocket with a 4 KiB receive
buffer, starts an `identity` 1024x1024 session, and from then on only sends: noise frames of about
1 MB, never reading a byte. Every second it samples the RSS of the server's web process. A server
without backpressure buffers every output frame for the socket (~20 MiB/s at 20 frames/s); with it,
outputs are dropped while the socket is backed up, and the session ends (`slow_reader`) after
NEXTFRAME_LIVE_SLOW_READER_TIMEOUT_S, the connection dropped soon after.

The raw client here is also what the end-to-end test (tests/test_live_e2e.py) attacks with.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import struct
import time
from typing import Any

import numpy as np

from .. import protocol
from ..codec import encode_jpeg
from .suite_server import start_server


class RawWebSocket:
    """The smallest WebSocket client that can misbehave: blocking socket, a tiny receive buffer, and
    reads only when told to (the handshake and the first messages)."""

    def __init__(self, port: int, key: str, path: str = "/v1/live", rcvbuf: int = 4096) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Set before connect, so the advertised TCP window stays small too.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        nonce = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n"
                           f"Authorization: Bearer {key}\r\n\r\n").encode())
        self._buf = b""
        while b"\r\n\r\n" not in self._buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            self._buf += chunk
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"handshake refused: {head[:200]!r}")

    def send(self, payload: bytes, binary: bool) -> None:
        # Client frames must be masked; the all-zero key leaves the payload as it is (no copy).
        size = len(payload)
        first = 0x80 | (0x2 if binary else 0x1)
        if size < 126:
            head = struct.pack(">BB", first, 0x80 | size)
        elif size < 1 << 16:
            head = struct.pack(">BBH", first, 0x80 | 126, size)
        else:
            head = struct.pack(">BBQ", first, 0x80 | 127, size)
        self.sock.sendall(head + b"\0\0\0\0" + payload)

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def recv(self) -> tuple[int, bytes]:
        """One server message (opcode, payload); server frames are unmasked and, here, unfragmented."""
        b0, b1 = self._read(2)
        size = b1 & 0x7F
        if size == 126:
            size = struct.unpack(">H", self._read(2))[0]
        elif size == 127:
            size = struct.unpack(">Q", self._read(8))[0]
        return b0 & 0x0F, self._read(size)

    def recv_json(self) -> dict[str, Any]:
        while True:
            opcode, payload = self.recv()
            if opcode == 0x1:
                return json.loads(payload)
            if opcode == 0x8:
                raise ConnectionError(f"closed by the server: {payload[:2].hex()} {payload[2:]!r}")

    def close(self) -> None:
        self.sock.close()


def web_pid(server_pid: int) -> int:
    """The pid of the `python -m nextframe.web` child of `nextframe up` (the daphne process)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if ppid == server_pid and b"nextframe.web" in cmd:
            return int(entry)
    raise RuntimeError("no nextframe.web child process found")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS")


def session_record(port: int, key: str, session_id: str) -> dict[str, Any]:
    """GET /v1/sessions/{id}: the record as the API shows it."""
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/sessions/{session_id}",
                                     headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def noise_frame(size: int) -> bytes:
    """A JPEG that stays big after the identity engine re-encodes it (~1 MB at 1024x1024)."""
    return encode_jpeg(np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8), 85)


def attack(port: int, key: str, pid: int, seconds: float, fps: float, size: int = 1024,
           model: str = "identity") -> dict[str, Any]:
    """Start a session, then send frames at `fps` and never read, for `seconds` or until the server
    drops the connection. Samples the web process's RSS about every second."""
    frame = noise_frame(size)
    ws = RawWebSocket(port, key)
    ws.send(json.dumps({"type": "session.start", "model": model, "width": size, "height": size,
                        "fps": int(fps)}).encode(), binary=False)
    ready = ws.recv_json()
    if ready.get("type") != "session.ready":
        raise RuntimeError(f"no session: {ready}")
    ws.sock.settimeout(5.0)  # a send blocked this long means the server stopped reading us
    base = rss_mib(pid)
    samples: list[tuple[float, float]] = [(0.0, base)]
    start = time.monotonic()
    next_sample, seq, sent, ended_by = start + 1.0, 0, 0, "time"
    while time.monotonic() - start < seconds:
        seq += 1
        try:
            ws.send(protocol.pack_input_frame(seq, seq, frame), binary=True)
            sent += len(frame)
        except (BrokenPipeError, ConnectionResetError):
            ended_by = "server dropped the connection"
            break
        except TimeoutError:
            ended_by = "server stopped reading"
            break
        now = time.monotonic()
        if now >= next_sample:
            samples.append((round(now - start, 1), round(rss_mib(pid), 1)))
            next_sample += 1.0
        delay = start + seq / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    dropped_at = time.monotonic() - start
    ws.close()
    # A few seconds after the client is gone: is the memory given back?
    time.sleep(3.0)
    after = rss_mib(pid)
    record = session_record(port, key, ready["session_id"])
    return {"session_id": ready["session_id"], "end_reason": record.get("end_reason"),
            "record_status": record.get("status"), "frame_bytes": len(frame), "fps": fps,
            "ended_by": ended_by, "connection_lasted_s": round(dropped_at, 1), "sent_mib": round(sent / 2**20, 1),
            "rss_start_mib": round(base, 1), "rss_peak_mib": max(r for _, r in samples),
            "rss_after_close_mib": round(after, 1), "samples": samples}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--fps", type=float, default=20.0)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--timeout", type=float, default=10.0, help="NEXTFRAME_LIVE_SLOW_READER_TIMEOUT_S")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    import tempfile

    data_dir = args.data_dir or tempfile.mkdtemp(prefix="nf-slow-reader-")
    server = start_server(data_dir, {"NEXTFRAME_LIVE_SLOW_READER_TIMEOUT_S": str(args.timeout),
                                     "NEXTFRAME_LIVE_IDLE_TIMEOUT_S": "600"})
    try:
        pid = web_pid(server.proc.pid)
        result = attack(server.port, server.key, pid, args.seconds, args.fps, args.size)
    finally:
        server.stop()
    print(f"frames of {result['frame_bytes']} B at {args.fps:.0f}/s, never read; ended by: {result['ended_by']} "
          f"after {result['connection_lasted_s']} s ({result['sent_mib']} MiB sent); "
          f"session record: {result['record_status']} / {result['end_reason']}")
    print(f"server RSS: start {result['rss_start_mib']} MiB, peak {result['rss_peak_mib']} MiB, "
          f"3 s after the client closed {result['rss_after_close_mib']} MiB")
    print("t(s)  RSS(MiB): " + "  ".join(f"{t:g}:{r:g}" for t, r in result["samples"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
