"""Reference Python client for the live protocol v1 (the `nextframe live` command is in live_cli.py).

    async with LiveClient("ws://host:8000/v1/live", key="nf_test_...") as client:
        ready = await client.start("identity", width=512, height=512, fps=30)
        await client.send_frame(0, capture_ts_us, jpeg)       # video-to-video models
        await client.control(1, prompt="a watercolour cat")
        async for event in client:                             # dicts, and ReceivedFrame for frames
            ...
        usage = (await client.stop())["usage"]

One background task reads the socket, so `start()` and `stop()` get their answers even when nobody
iterates. A `session.redirect` answering `session.start` (the session was placed on another node) is
followed inside `start()`: the client reconnects to the given URL with its ticket and sends the same
`session.start` again, at most MAX_REDIRECTS times; `redirects` lists the URLs it followed. Received events wait in a bounded buffer: when the application does not keep up, the
oldest *frames* are dropped first (counted in `dropped_events`); JSON messages are kept.

Wire format and codes come from `inference.protocol` only. No torch here.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from inference import protocol as p

# Output frames carry up to inference.codec.MAX_FRAME_BYTES (2 MiB) of JPEG; leave room for the header.
MAX_RECEIVE_BYTES = 4 * 1024 * 1024
# How long start() waits, after an `error` answered session.start, for the close code to follow.
ERROR_CLOSE_GRACE_S = 1.0
# session.redirect hops one start() follows (one is the norm: the server places on a node that can host).
MAX_REDIRECTS = 3

_CODE_FOR_CLOSE: dict[int, str] = {
    p.CLOSE_UNAUTHENTICATED: "unauthenticated",
    p.CLOSE_FORBIDDEN: "forbidden",
    p.CLOSE_CONCURRENCY: "concurrency_limit",
    p.CLOSE_TRY_AGAIN: "capacity_unavailable",
}
_CLOSE_MEANING: dict[int, str] = {
    p.CLOSE_UNAUTHENTICATED: "authentication failed: the key or ticket is wrong, expired or revoked",
    p.CLOSE_FORBIDDEN: "forbidden: this key may not open live sessions (or the quota is used up)",
    p.CLOSE_CONCURRENCY: "the organisation already runs its maximum of live sessions",
    p.CLOSE_TRY_AGAIN: "no capacity right now, try again later",
}
_CODE_FOR_HTTP = {
    401: "unauthenticated",
    402: "quota_exceeded",
    403: "forbidden",
    429: "concurrency_limit",
    503: "capacity_unavailable",
}
_AUTH_CODES = frozenset({"unauthenticated", "forbidden"})


class LiveClientError(Exception):
    """A session could not be opened or went wrong.

    `code` is a protocol error code (`capacity_unavailable`, ...), `unauthenticated`/`forbidden`
    for refused credentials, or `connection_failed`, `connection_closed`, `timeout`, `bad_message`.
    `close_code` is the WebSocket close code when the server closed the socket.
    """

    def __init__(
        self,
        code: str,
        message: str,
        close_code: int | None = None,
        *,
        http_status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        detail = f" (close code {close_code})" if close_code else ""
        detail += f" (HTTP {http_status})" if http_status else ""
        super().__init__(f"{code}: {message}{detail}")
        self.code = code
        self.message = message
        self.close_code = close_code
        self.http_status = http_status
        self.retry_after_s = retry_after_s

    @property
    def is_auth(self) -> bool:
        """True when the credentials were refused (exit code 2 in the CLI)."""
        return (
            self.code in _AUTH_CODES
            or self.close_code in (p.CLOSE_UNAUTHENTICATED, p.CLOSE_FORBIDDEN)
            or self.http_status in (401, 403)
        )


@dataclass(frozen=True)
class ReceivedFrame:
    """An output frame as received: its decoded header, the JPEG, and `clock()` at arrival."""

    header: p.OutputFrameHeader
    jpeg: bytes
    received_at: float


Event = dict[str, Any] | ReceivedFrame


def _with_ticket(url: str, ticket: str | None) -> str:
    if ticket is None:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "ticket"] + [("ticket", ticket)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _handshake_error(exc: InvalidStatus) -> LiveClientError:
    response = exc.response
    status = response.status_code
    code = _CODE_FOR_HTTP.get(status, "connection_failed")
    message = f"the server refused the WebSocket handshake with HTTP {status}"
    # The REST error shape {"error": {"code", "message"}} may come in the body: prefer its words.
    try:
        body = json.loads(response.body or b"")
        code = body["error"]["code"] or code
        message = body["error"]["message"] or message
    except (ValueError, KeyError, TypeError):
        pass
    retry_after = response.headers.get("Retry-After")
    retry = float(retry_after) if retry_after and retry_after.isdigit() else None
    return LiveClientError(code, message, None, http_status=status, retry_after_s=retry)


class LiveClient:
    """One live session over one WebSocket; an async context manager and an async iterator."""

    def __init__(
        self,
        url: str,
        key: str | None = None,
        ticket: str | None = None,
        *,
        max_pending_events: int = 256,
        open_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_pending_events < 1:
            raise ValueError("max_pending_events must be at least 1")
        self.url = _with_ticket(url, ticket)
        self._key = key
        self._open_timeout = open_timeout
        self._clock = clock
        self._max_pending = max_pending_events
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._events: collections.deque[Event] = collections.deque()
        self._wakeup = asyncio.Event()
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._ended: asyncio.Future[dict[str, Any]] | None = None
        self._start_error: dict[str, Any] | None = None
        self._failure: LiveClientError | None = None
        self._failure_raised = False
        self._done = False
        self.dropped_events = 0
        self.ready: dict[str, Any] | None = None
        self.ended: dict[str, Any] | None = None
        self.redirects: list[str] = []  # URLs of the session.redirect messages followed (without tickets)

    # --- connection -------------------------------------------------------------------------

    async def __aenter__(self) -> LiveClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the WebSocket; raise LiveClientError when the handshake is refused or fails."""
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else None
        try:
            # compression=None: JPEG does not deflate, and compressing it would only burn CPU.
            self._ws = await connect(
                self.url,
                additional_headers=headers,
                open_timeout=self._open_timeout,
                max_size=MAX_RECEIVE_BYTES,
                compression=None,
            )
        except InvalidStatus as exc:
            raise _handshake_error(exc) from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise LiveClientError("connection_failed", f"cannot connect to {self.url}: {exc}") from None
        loop = asyncio.get_running_loop()
        self._ready, self._ended = loop.create_future(), loop.create_future()
        self._start_error, self._failure, self._failure_raised, self._done = None, None, False, False
        self._reader = asyncio.create_task(self._read_loop())

    async def close(self) -> None:
        """Close the socket (without ending the session politely: use stop() for that)."""
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await self._reader

    # --- requests ---------------------------------------------------------------------------

    async def start(
        self,
        model: str,
        width: int | None = None,
        height: int | None = None,
        fps: int | None = None,
        prompt: str | None = None,
        params: dict[str, Any] | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Send session.start and return the session.ready message (following redirects)."""
        message = p.SessionStart(model, width, height, fps, prompt, params).to_json()
        deadline = asyncio.get_running_loop().time() + timeout
        for hop in range(MAX_REDIRECTS + 1):
            await self._send(message)
            assert self._ready is not None
            answer = await self._wait(self._ready, deadline - asyncio.get_running_loop().time(), "session.ready")
            if answer.get("type") != "session.redirect":
                return answer
            if hop == MAX_REDIRECTS:
                break
            await self._follow(answer)
        raise LiveClientError("too_many_redirects", f"session.start was redirected more than {MAX_REDIRECTS} times")

    async def _follow(self, redirect: dict[str, Any]) -> None:
        """Leave this node (it closes with 1000 after the redirect) and connect to the one named."""
        url, ticket = redirect.get("url"), redirect.get("ticket")
        if not isinstance(url, str) or not url.startswith(("ws://", "wss://")) or not isinstance(ticket, str):
            raise LiveClientError("bad_message", f"session.redirect without a ws(s) url and a ticket: {redirect}")
        await self.close()
        await asyncio.sleep(max(0.0, float(redirect.get("retry_after_s") or 0)))
        self.redirects.append(url)
        self.url, self._key = _with_ticket(url, ticket), None  # the ticket is the credential there
        await self.connect()

    async def send_frame(self, seq: int, capture_ts_us: int, jpeg: bytes) -> None:
        """Send one input frame (12-byte header + JPEG)."""
        await self._send(p.pack_input_frame(seq, capture_ts_us, jpeg))

    async def control(
        self, seq: int, prompt: str | None = None, params: dict[str, Any] | None = None
    ) -> None:
        """Send a control; its fate arrives as a control.applied or control.rejected event."""
        if prompt is None and params is None:
            raise ValueError("a control needs a prompt and/or params")
        await self._send(p.Control(seq, prompt, params).to_json())

    async def stop(self, timeout: float = 10.0) -> dict[str, Any]:
        """End the session and return session.ended (at once if the server already ended it)."""
        assert self._ended is not None, "connect() first"
        if not self._ended.done():
            await self._send(p.SessionStop().to_json())
        return await self._wait(self._ended, timeout, "session.ended")

    async def _send(self, message: str | bytes) -> None:
        if self._ws is None:
            raise LiveClientError("connection_failed", "not connected: use `async with` or connect()")
        try:
            await self._ws.send(message)
        except ConnectionClosed:
            # The reader records why the socket closed; give it the chance before reporting.
            if self._reader is not None:
                await self._reader
            raise self._failure or LiveClientError(
                "connection_closed", "the connection is closed", self._ws.close_code
            ) from None

    async def _wait(self, future: asyncio.Future[dict[str, Any]], timeout: float, what: str) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise LiveClientError("timeout", f"no {what} within {timeout} s") from None

    # --- receiving --------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._events:
                return self._events.popleft()
            if self._done:
                if self._failure is not None and not self._failure_raised:
                    self._failure_raised = True
                    raise self._failure
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()

    def _push(self, event: Event) -> None:
        if len(self._events) >= self._max_pending:
            # Bounded: a slow consumer loses its oldest frame (a newer one is on its way), and only
            # when no frame is left, the oldest message.
            for i, queued in enumerate(self._events):
                if isinstance(queued, ReceivedFrame):
                    del self._events[i]
                    break
            else:
                self._events.popleft()
            self.dropped_events += 1
        self._events.append(event)
        self._wakeup.set()

    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            header, jpeg = p.unpack_output_frame(message)
            self._push(ReceivedFrame(header, jpeg, self._clock()))
            return
        event = p.parse_server_message(message)
        kind = event["type"]
        assert self._ready is not None and self._ended is not None
        if kind == "session.ready" and not self._ready.done():
            self.ready = event
            self._ready.set_result(event)
        elif kind == "session.redirect" and not self._ready.done():
            self._ready.set_result(event)  # start() follows it; not an event for the application
            return
        elif kind == "session.ended" and not self._ended.done():
            self.ended = event
            self._ended.set_result(event)
        elif kind == "error" and not self._ready.done() and self._start_error is None:
            # session.start was answered with an error: fail start(), with the close code if the
            # server closes right after (as it does for capacity and concurrency refusals).
            self._start_error = event
            asyncio.get_running_loop().call_later(ERROR_CLOSE_GRACE_S, self._fail_start, None)
        self._push(event)

    def _fail_start(self, close_code: int | None) -> None:
        assert self._ready is not None
        if self._ready.done() or self._start_error is None:
            return
        err = self._start_error
        self._ready.set_exception(
            LiveClientError(str(err.get("code")), str(err.get("message")), close_code,
                            retry_after_s=err.get("retry_after_s"))
        )

    async def _read_loop(self) -> None:
        assert self._ws is not None and self._ready is not None and self._ended is not None
        try:
            async for message in self._ws:
                self._on_message(message)
        except ConnectionClosed:
            pass  # an abnormal close: handled below from the close code
        except p.ProtocolError as exc:
            self._failure = LiveClientError("bad_message", f"the server broke the protocol: {exc.message}")
            await self._ws.close()
        finally:
            close_code = self._ws.close_code
            if self._failure is None and not self._ended.done():
                self._failure = self._close_failure(close_code, self._ws.close_reason or "")
            if self._start_error is not None:
                self._fail_start(close_code)
            for future in (self._ready, self._ended):
                if not future.done():
                    future.set_exception(self._failure or LiveClientError("connection_closed", "closed"))
                    future.exception()  # mark retrieved: nobody may be waiting on it
            self._done = True
            self._wakeup.set()

    def _close_failure(self, close_code: int | None, reason: str) -> LiveClientError:
        code = _CODE_FOR_CLOSE.get(close_code or 0, "connection_closed")
        message = reason or _CLOSE_MEANING.get(close_code or 0, "the server closed the connection before session.ended")
        return LiveClientError(code, message, close_code)


# --- input sources ----------------------------------------------------------------------------


def pattern_source(width: int, height: int, quality: int = 85) -> Iterator[bytes]:
    """An endless moving test pattern as JPEG: diagonal colour bands drifting, plus a sweeping bar."""
    import numpy as np
    import simplejpeg

    y, x = np.mgrid[0:height, 0:width]
    diagonal = (x + y).astype(np.int32)
    frame = np.empty((height, width, 3), np.uint8)
    t = 0
    while True:
        frame[..., 0] = ((diagonal + 4 * t) % 256).astype(np.uint8)
        frame[..., 1] = ((x * 255) // max(width - 1, 1)).astype(np.uint8)
        frame[..., 2] = ((y * 255) // max(height - 1, 1)).astype(np.uint8)
        bar = (t * 8) % width
        frame[:, bar : bar + max(width // 32, 2)] = 255  # a moving edge makes latency visible
        yield simplejpeg.encode_jpeg(frame, quality=quality, colorspace="RGB")
        t += 1


def file_source(path: str, width: int, height: int, loop: bool = True, quality: int = 85) -> Iterator[bytes]:
    """Frames of a video file (looped) or a single image (repeated), as JPEG at width x height.

    Raises FileNotFoundError, or ValueError when the file cannot be decoded.
    """
    import av
    import numpy as np
    import simplejpeg

    from inference.codec import fit_to_size
    from inference.video import BadVideo, iter_video_frames

    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    while True:
        count = 0
        jpeg = b""
        try:
            # Centre-cropped to the session's aspect ratio, as the platform treats inputs, never squashed.
            for array in iter_video_frames(path, width, height, cover=True):
                array = np.ascontiguousarray(fit_to_size(array, width, height))
                jpeg = simplejpeg.encode_jpeg(array, quality=quality, colorspace="RGB")
                count += 1
                yield jpeg
        except (av.FFmpegError, BadVideo) as exc:
            raise ValueError(f"{path}: cannot decode: {exc}") from None
        if count == 0:
            raise ValueError(f"{path}: no video frames")
        if count == 1:  # a still image: keep sending it without decoding it again
            while True:
                yield jpeg
        if not loop:
            return


# --- keeping what a session made ----------------------------------------------------------------


class SessionRecorder:
    """Keep a session's output frames: an H.264 MP4 (`output`) and/or numbered JPEGs (`frames_dir`).

        recorder = SessionRecorder(output="out.mp4", frames_dir="frames/")
        recorder.open(ready["width"], ready["height"], ready["fps"])   # the session's size and rate
        async for event in client:
            if isinstance(event, ReceivedFrame):
                await recorder.add(event)
        summary = await recorder.close()        # {"frames", "output", "frames_dir", ...}

    The MP4 is encoded while the session runs, in a thread (`inference.video.encode_mp4`: libx264,
    or NVENC when the GPU has one; moov first; the file appears whole at close). It holds one frame
    per received frame at the session's fps, so frames the client never received are simply absent.
    H.264 needs even sides: an odd width or height loses its last column or row in the MP4 (the
    JPEGs keep every pixel). JPEGs are the received bytes as they are: frame_000000.jpg, ... in the
    order received. At most `max_queued` frames wait for the writer; beyond that `add()` waits,
    so memory stays bounded when the disk or the encoder is slower than the session.
    """

    def __init__(self, output: str | None = None, frames_dir: str | None = None, *, max_queued: int = 64) -> None:
        if output is None and frames_dir is None:
            raise ValueError("nothing to record: give an output file and/or a frames directory")
        self.output, self.frames_dir = output, frames_dir
        self.frames = 0
        self.width = self.height = self.fps = 0
        self._queue: Any = None
        self._thread: Any = None
        self._error: BaseException | None = None
        self._max_queued = max_queued
        self._encoded: Any = None

    def open(self, width: int, height: int, fps: float) -> None:
        """Start the writer for frames of `width` x `height` at `fps` (the session's, from session.ready)."""
        import queue
        import threading

        if width < 1 or height < 1:
            raise ValueError(f"frame size must be positive, got {width}x{height}")
        self.width, self.height, self.fps = int(width), int(height), max(1, round(float(fps)))
        if self.frames_dir is not None:
            os.makedirs(self.frames_dir, exist_ok=True)
        if self.output is not None and (self.width < 2 or self.height < 2):
            raise ValueError(f"an MP4 needs at least 2x2 pixels, the session is {width}x{height}")
        self._queue = queue.Queue(maxsize=self._max_queued)
        self._thread = threading.Thread(target=self._write, name="nf-recorder", daemon=True)
        self._thread.start()

    async def add(self, frame: ReceivedFrame) -> None:
        """Queue one received frame (waits while `max_queued` frames are already waiting)."""
        import queue

        if self._queue is None:
            raise RuntimeError("open() first")
        if self._error is not None:
            raise self._error
        try:
            self._queue.put_nowait(frame.jpeg)
        except queue.Full:
            await asyncio.to_thread(self._queue.put, frame.jpeg)

    async def close(self) -> dict[str, Any]:
        """Finish the files (the MP4 is complete when this returns); a summary of what was written.

        Raises the writer's error (a frame that is not a JPEG of the session size, a full disk...)."""
        if self._queue is None:
            raise RuntimeError("open() first")
        await asyncio.to_thread(self._queue.put, None)
        await asyncio.to_thread(self._thread.join)
        if self._error is not None:
            raise self._error
        mp4 = self._encoded
        return {"frames": self.frames, "width": self.width, "height": self.height, "fps": self.fps,
                "output": self.output, "output_frames": mp4.frames if mp4 is not None else None,
                "output_bytes": mp4.bytes if mp4 is not None else None, "frames_dir": self.frames_dir}

    # --- the writer thread ------------------------------------------------------------------

    def _jpegs(self) -> Iterator[bytes]:
        while True:
            jpeg = self._queue.get()
            if jpeg is None:
                return
            if self.frames_dir is not None:
                with open(os.path.join(self.frames_dir, f"frame_{self.frames:06d}.jpg"), "wb") as f:
                    f.write(jpeg)
            self.frames += 1
            yield jpeg

    def _rgb(self, jpegs: Iterator[bytes], width: int, height: int) -> Iterator[Any]:
        from inference.codec import decode_jpeg

        for jpeg in jpegs:
            # The session's size exactly (the size policy would refuse anything else); cropped to even sides.
            yield decode_jpeg(jpeg, self.width, self.height)[:height, :width]

    def _write(self) -> None:
        try:
            if self.output is None:
                for _ in self._jpegs():
                    pass
                return
            from inference.video import encode_mp4

            width, height = self.width - self.width % 2, self.height - self.height % 2
            try:
                self._encoded = encode_mp4(self._rgb(self._jpegs(), width, height), self.output, self.fps, width, height)
            except ValueError as exc:
                if self.frames == 0 and "no frames" in str(exc):
                    return  # nothing was received: no file (the summary says 0 frames)
                raise
        except BaseException as exc:  # reported by add()/close(), in the caller's task
            self._error = exc
            while True:  # keep draining so that a waiting add() or close() never blocks forever
                if self._queue.get() is None:
                    return
