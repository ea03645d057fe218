"""Serve NextFrame with daphne (`python -m nextframe.web <daphne arguments>`), with two fixes:

1. WebSocket close codes. Autobahn, under daphne, refuses to send any close code but 1000 and
   3000-4999, so the protocol's 1013 ("try again later", RFC 6455's registry) turned into a crash
   and a 1011; and daphne drops the close reason. Here a close from the application is sent as
   given: registered codes and 3000-4999, with its reason.
2. Request bodies. daphne buffers a whole HTTP body (chunked ones too) before the application sees
   it, so a limit checked in Django comes after the memory is spent. Here a body larger than the
   largest upload is refused with 413 while it arrives, and the connection closed.
"""
from __future__ import annotations

import json
import os
import sys

# Close codes an endpoint may send (RFC 6455 section 7.4 and the IANA registry); 1004-1006 and
# 1015 are reserved and never sent on the wire.
SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)}) | frozenset(range(3000, 5000))
MAX_CLOSE_REASON_BYTES = 123


def close_frame_payload(code: int | None, reason: str | None) -> tuple[int, bytes | None]:
    """The code and UTF-8 reason to put in a close frame (unsendable codes become 1011)."""
    code = 1000 if code is None else int(code)
    if code not in SENDABLE_CLOSE_CODES:
        code = 1011
    raw = (reason or "").encode("utf-8")[:MAX_CLOSE_REASON_BYTES]
    # Cutting may split a character; drop the partial tail so the reason stays valid UTF-8.
    raw = raw.decode("utf-8", errors="ignore").encode("utf-8")
    return code, raw or None


def patch_websocket_close() -> None:
    from daphne.ws_protocol import WebSocketProtocol

    original = WebSocketProtocol.handle_reply
    if getattr(original, "_nextframe", False):
        return

    def handle_reply(self, message):
        if message.get("type") == "websocket.close" and self.state not in (self.STATE_CONNECTING,):
            code, reason = close_frame_payload(message.get("code"), message.get("reason"))
            self.sendCloseFrame(code=code, reasonUtf8=reason)
            return None
        return original(self, message)

    handle_reply._nextframe = True  # type: ignore[attr-defined]  # the patched-once marker, on the function
    WebSocketProtocol.handle_reply = handle_reply


def refusal(limit: int) -> bytes:
    body = json.dumps({"error": {"code": "payload_too_large",
                                 "message": f"request body exceeds the limit of {limit} bytes"}}).encode()
    head = (f"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head + body


def patch_http_body_limit(limit: int) -> None:
    from daphne.http_protocol import WebRequest

    if getattr(WebRequest.handleContentChunk, "_nextframe", False):
        return
    original_length, original_chunk = WebRequest.gotLength, WebRequest.handleContentChunk

    def refuse(request) -> None:
        if not getattr(request, "_nextframe_refused", False):
            request._nextframe_refused = True
            request.channel.transport.write(refusal(limit))
            request.channel.transport.loseConnection()

    def gotLength(self, length):
        original_length(self, length)
        if length is not None and length > limit:
            refuse(self)

    def handleContentChunk(self, data):
        self._nextframe_received = getattr(self, "_nextframe_received", 0) + len(data)
        if self._nextframe_received > limit:
            refuse(self)
            return
        if not getattr(self, "_nextframe_refused", False):
            original_chunk(self, data)

    handleContentChunk._nextframe = True  # type: ignore[attr-defined]  # the patched-once marker
    WebRequest.gotLength = gotLength
    WebRequest.handleContentChunk = handleContentChunk


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nextframe.settings")
    import django

    django.setup()
    from django.conf import settings

    patch_websocket_close()
    from nextframe.live import flow
    flow.install()  # backpressure from each WebSocket's write buffer (nextframe/live/flow.py)
    # The largest body any endpoint takes is a multipart upload; the Django-side middleware still
    # applies the tighter JSON limit with its own 413.
    patch_http_body_limit(settings.MAX_UPLOAD_BYTES + 64 * 1024)
    from nextframe.live.sweeper import start_sweeper

    start_sweeper()  # every server process ends records its dead peers left active
    from daphne.cli import CommandLineInterface

    from nextframe.audits.server import serving
    serving()  # this process is the server: start-up audits run here (not guessed from argv)
    CommandLineInterface().run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
