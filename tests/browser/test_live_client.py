"""live.js, the browser's protocol client, against a scripted protocol v1 endpoint in a real browser.

What a live `nextframe up` cannot show cheaply: a `session.redirect` to another node (followed with
the redirect's ticket and the same session.start), refusals that arrive only as close codes, a
redirect loop, and message types or fields from a newer server (ignored). The endpoint below is a
plain `websockets` server speaking the documented messages byte for byte (docs/protocol.md); the
page imports live.js from frontend/static, served as files (no build step, no server of ours), so
the module runs exactly as the playground loads it. The real server is the playground tests' part.
"""
from __future__ import annotations

import asyncio
import functools
import http.server
import json
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.profile("embedded")]

STATIC = Path(__file__).resolve().parents[2] / "frontend" / "static" / "frontend"
PAGE = b'<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>live.js</title></head><body></body></html>'
JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffd9")  # SOI .. EOI: the endpoint only echoes it


class Endpoint:
    """A scripted /v1/live: each path plays one scenario; everything it receives is recorded."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str | None, object]] = []  # (path, ticket, message)
        self.loop = asyncio.new_event_loop()
        self.stopped: asyncio.Future | None = None
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10)

    @property
    def base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _run(self, ready: threading.Event) -> None:
        from websockets.asyncio.server import serve

        async def main() -> None:
            self.stopped = asyncio.get_running_loop().create_future()
            async with serve(self.handle, "127.0.0.1", 0, compression=None) as server:
                self.port = server.sockets[0].getsockname()[1]
                ready.set()
                await self.stopped

        self.loop.run_until_complete(main())

    async def recv(self, ws, path: str, ticket: str | None):
        message = await ws.recv()
        self.received.append((path, ticket, json.loads(message) if isinstance(message, str) else message))
        return self.received[-1][2]

    async def handle(self, ws) -> None:
        url = urlparse(ws.request.path)
        path, ticket = url.path, parse_qs(url.query).get("ticket", [None])[0]
        start = await self.recv(ws, path, ticket)
        assert isinstance(start, dict) and start["type"] == "session.start"
        if path == "/node-a":
            await ws.send(json.dumps({"type": "session.redirect", "url": f"{self.base}/node-b",
                                      "ticket": "ticket-b", "retry_after_s": 0.2}))
            await ws.close(1000)
        elif path == "/loop":
            await ws.send(json.dumps({"type": "session.redirect", "url": f"{self.base}/loop", "ticket": "again"}))
            await ws.close(1000)
        elif path == "/busy":
            await ws.send(json.dumps({"type": "error", "code": "capacity_unavailable",
                                      "message": "no GPU capacity for this model", "retry_after_s": 7}))
            await ws.close(1013)
        elif path == "/full":
            await ws.close(4429, "concurrency limit")
        elif path == "/blocked":
            await ws.send(json.dumps({"type": "error", "code": "moderation", "message": "the prompt was refused"}))
            await ws.wait_closed()  # the socket stays open: the client closes it
        elif path == "/node-b":
            await self.session(ws, path, ticket)

    async def session(self, ws, path: str, ticket: str | None) -> None:
        await ws.send(json.dumps({"type": "session.ready", "session_id": "ls_fake", "model": "stylize",
                                  "tier": "interactive", "width": 64, "height": 48, "fps": 30,
                                  "frame_budget_ms": 33.3, "reservation": {"device": "cpu", "share": 0.1},
                                  "price_per_gpu_second": "0.0005", "currency": "usd", "from_the_future": 1}))
        frame = await self.recv(ws, path, ticket)
        assert isinstance(frame, bytes)
        seq, ts = struct.unpack(">IQ", frame[:12])
        await ws.send(json.dumps({"type": "future.message", "x": 1}))  # unknown: ignored by clients
        await ws.send(struct.pack(">IIQI", 0, seq, ts, 0) + frame[12:])
        control = await self.recv(ws, path, ticket)
        assert isinstance(control, dict)
        await ws.send(json.dumps({"type": "control.applied", "seq": control["seq"], "frame": 1}))
        await ws.send(struct.pack(">IIQI", 1, 0xFFFFFFFF, 0, control["seq"]) + JPEG)
        await ws.send(json.dumps({"type": "metrics", "frames_out": 2, "fps": 30.0, "ttff_ms": None,
                                  "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0}, "jitter_ms": 0.1,
                                  "deadline_misses": 0, "dropped_inputs": 0, "gpu_seconds": 0.01}))
        stop = await self.recv(ws, path, ticket)
        assert stop == {"type": "session.stop"}
        await ws.send(json.dumps({"type": "session.ended", "reason": "client",
                                  "usage": {"gpu_seconds": 0.01, "frames": 2, "cost": "0.000005", "currency": "usd"}}))
        await ws.close(1000)

    def close(self) -> None:
        assert self.stopped is not None
        self.loop.call_soon_threadsafe(self.stopped.set_result, None)
        self.thread.join(10)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    ep = Endpoint()
    yield ep
    ep.close()


@pytest.fixture(scope="module")
def static_site() -> Iterator[str]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/":
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(PAGE)
            else:
                super().do_GET()

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(STATIC)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


SCENARIOS = """async (base) => {
  const live = await import('/js/live.js');
  const ticket = async () => 'ticket-a';
  const out = {};
  // 1. A redirect, then a whole session on the node it names.
  const client = new live.LiveClient({ url: base + '/node-a', getTicket: ticket });
  const events = [];
  for (const t of ['redirect', 'frame', 'metrics', 'control.applied', 'ended', 'close', 'error'])
    client.addEventListener(t, (e) => events.push([t, t === 'frame'
      ? { ...e.detail, jpeg: Array.from(e.detail.jpeg.slice(0, 2)) } : e.detail]));
  const started = performance.now();
  out.ready = await client.start({ model: 'stylize', width: 64, height: 48, fps: 30, prompt: 'a city', params: { strength: 0.5 } });
  out.redirectWaitMs = performance.now() - started;
  out.redirects = client.redirects;
  const jpeg = new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 0, 16, 74, 70, 73, 70, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 0xff, 0xd9]);
  out.sent = client.sendFrame(5, 1000000, jpeg);
  await new Promise((r) => client.addEventListener('frame', r, { once: true }));
  out.controlSeq = client.control({ params: { strength: 0.9 } });
  await new Promise((r) => client.addEventListener('metrics', r, { once: true }));
  out.ended = await client.stop();
  out.events = events;
  // 2. Refusals.
  const refusal = async (path) => {
    try { await new live.LiveClient({ url: base + path, getTicket: ticket }).start({ model: 'stylize' }); return null; }
    catch (e) { return { code: e.code, retryAfterS: e.retryAfterS, closeCode: e.closeCode, message: e.message }; }
  };
  out.busy = await refusal('/busy');
  out.full = await refusal('/full');
  out.blocked = await refusal('/blocked');
  out.loop = await refusal('/loop');
  // 3. The codec on its own.
  const buf = live.encodeInputFrame(0xfffffffe, 2 ** 40 + 3, new Uint8Array([0xff, 0xd8]));
  out.header = Array.from(new Uint8Array(buf));
  try { live.encodeInputFrame(0xffffffff, 0, jpeg); out.reservedSeq = 'accepted'; } catch (e) { out.reservedSeq = e.name; }
  return out;
}"""


def test_live_js_follows_redirects_and_speaks_protocol_v1(endpoint, static_site, new_page):
    page = new_page()
    page.goto(static_site + "/")
    out = page.evaluate(SCENARIOS, endpoint.base)

    # The redirect: node-a got the first ticket; node-b the redirect's ticket and the same start.
    starts = [(path, ticket, msg) for path, ticket, msg in endpoint.received
              if isinstance(msg, dict) and msg["type"] == "session.start" and path in {"/node-a", "/node-b"}]
    assert [(path, ticket) for path, ticket, _ in starts] == [("/node-a", "ticket-a"), ("/node-b", "ticket-b")]
    assert starts[0][2] == starts[1][2] == {"type": "session.start", "model": "stylize", "width": 64, "height": 48,
                                            "fps": 30, "prompt": "a city", "params": {"strength": 0.5}}
    assert out["redirects"] == 1 and out["redirectWaitMs"] >= 200  # retry_after_s honoured
    assert out["ready"]["session_id"] == "ls_fake"

    # The input frame: 12-byte big-endian header, then the JPEG as given.
    frames = [msg for path, _, msg in endpoint.received if path == "/node-b" and isinstance(msg, bytes)]
    assert len(frames) == 1 and out["sent"] is True
    assert struct.unpack(">IQ", frames[0][:12]) == (5, 1_000_000) and frames[0][12:14] == b"\xff\xd8"

    events = out["events"]
    kinds = [kind for kind, _ in events]
    assert kinds.count("frame") == 2 and "error" not in kinds  # the unknown message type was ignored
    first, second = (detail for kind, detail in events if kind == "frame")
    assert (first["frameIndex"], first["inputSeq"], first["inputCaptureTsUs"], first["controlSeq"]) == (0, 5, 1_000_000, 0)
    assert first["jpeg"] == [0xFF, 0xD8]
    assert (second["inputSeq"], second["controlSeq"]) == (0xFFFFFFFF, out["controlSeq"])
    assert out["controlSeq"] == 1
    control = next(msg for path, _, msg in endpoint.received if isinstance(msg, dict) and msg["type"] == "control")
    assert control == {"type": "control", "seq": 1, "params": {"strength": 0.9}}
    assert ["control.applied", {"type": "control.applied", "seq": 1, "frame": 1}] in events
    assert out["ended"]["reason"] == "client" and out["ended"]["usage"]["cost"] == "0.000005"
    assert kinds[0] == "redirect" and kinds[-2:] == ["ended", "close"]

    # Refusals carry the protocol's code, the retry hint and the close code.
    assert out["busy"] == {"code": "capacity_unavailable", "retryAfterS": 7, "closeCode": 1013,
                           "message": "no GPU capacity for this model"}
    assert out["full"]["code"] == "concurrency_limit" and out["full"]["closeCode"] == 4429
    assert out["blocked"]["code"] == "moderation"  # socket left open by the server: the client closed it
    assert out["loop"]["code"] == "too_many_redirects"
    assert sum(1 for path, *_ in endpoint.received if path == "/loop") == 4  # first try + 3 redirects

    assert out["header"] == [0xFF, 0xFF, 0xFF, 0xFE, 0, 0, 1, 0, 0, 0, 0, 3, 0xFF, 0xD8]
    assert out["reservedSeq"] == "RangeError"
