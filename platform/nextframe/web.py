"""Serve NextFrame with daphne (`python -m nextframe.web <daphne arguments>`), hardened.

daphne (Twisted + autobahn) is used as it is; these patches, applied by `main()` before it starts,
change what a hostile or careless client can do to a node:

1. WebSocket close codes. Autobahn, under daphne, refuses to send any close code but 1000 and
   3000-4999, so the protocol's 1013 ("try again later", RFC 6455's registry) turned into a crash
   and a 1011; and daphne drops the close reason. Here a close from the application is sent as
   given: registered codes and 3000-4999, with its reason. A message over the size limit is
   closed with 1009 (autobahn's default for a server is to drop the TCP connection, which the
   client sees as 1006).
2. Request bodies. Twisted parses urlencoded and multipart bodies into `request.args` in the
   reactor thread before daphne hands them on (daphne never uses them): a 60 MB form body froze
   every session on the node for seconds. That parsing is off; Django parses what a view asks for.
   daphne also buffers a whole body before the application sees it, so a limit checked in Django
   comes after the memory is spent: here a body is refused with 413 (the JSON envelope) while it
   arrives once it passes its path's limit: MAX_UPLOAD_BYTES for a multipart POST to /v1/clips
   (the one endpoint taking uploads), MAX_JSON_BODY_BYTES for everything else (JSON, the login form).
3. Connections. Twisted waits 12 hours for a request's headers, so half-open (slowloris)
   connections pile up until the process runs out of file descriptors. Here each connection must
   complete its request headers within HTTP_HEADER_TIMEOUT_S (from accept, or from the end of the
   previous response on a keep-alive connection), an HTTP connection idle for HTTP_IDLE_TIMEOUT_S
   mid-body is closed, and connections are capped per client address and in total (the total
   below the file-descriptor limit, so the database, Redis and files always get descriptors).
4. The access log. Query parameters that carry credentials (`?token=` of a signed video link,
   `?ticket=`, ...) are written as `REDACTED`; with NEXTFRAME_LOG_FORMAT=json each entry is a
   record of the `nextframe.access` logger (nextframe.logs) instead of a plain line.
5. Shutdown. On SIGTERM or SIGINT daphne cancelled every application at once: clients got close
   1006 and their sessions `server_error`. Here the process drains first (nextframe.live.drain):
   not ready, nothing new admitted, every live session ended with `shutdown`, for at most
   SHUTDOWN_GRACE_S; daphne then cancels what is left and the process exits 0.
"""
from __future__ import annotations

import json
import os
import re
import resource
import sys
from collections import Counter
from urllib.parse import parse_qsl, quote

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
    from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol

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

    # Autobahn "fails" a connection (message too big: 1009, protocol error: 1002, invalid UTF-8:
    # 1007) by dropping TCP unless failByDrop is off; then it sends the close frame, discards the
    # rest of the offending message as it arrives (nothing is buffered) and drops the connection
    # if the peer has not answered the close within closeHandshakeTimeout (1 s).
    original_init = WebSocketFactory.__init__

    def factory_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.setProtocolOptions(failByDrop=False)

    WebSocketFactory.__init__ = factory_init


# --- request bodies -------------------------------------------------------------------------------

def refusal(limit: int) -> bytes:
    body = json.dumps({"error": {"code": "payload_too_large",
                                 "message": f"request body exceeds the limit of {limit} bytes"}}).encode()
    head = (f"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head + body


# The one endpoint that takes a large body: input-clip uploads (multipart POST /v1/clips).
UPLOAD_PATHS = frozenset({b"/v1/clips", b"/v1/clips/"})


def body_limit(method: bytes, target: bytes, content_type: bytes | None, *, upload_limit: int,
               default_limit: int) -> int:
    """The most body bytes a request may send, from its method, request-target and content type."""
    path = target.split(b"?", 1)[0]
    kind = (content_type or b"").split(b";", 1)[0].strip().lower()
    if method.upper() == b"POST" and path in UPLOAD_PATHS and kind == b"multipart/form-data":
        return upload_limit
    return default_limit


def patch_http_requests(upload_limit: int, default_limit: int) -> None:
    """No form parsing in the reactor; per-path body limits; tell the guard when headers are in."""
    from daphne.http_protocol import WebRequest

    if getattr(WebRequest.handleContentChunk, "_nextframe", False):
        return
    original_init, original_length = WebRequest.__init__, WebRequest.gotLength
    original_chunk, original_finish = WebRequest.handleContentChunk, WebRequest.finish

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        # Twisted would parse form bodies into request.args (unused by daphne) in the reactor.
        self._parsePOSTFormSubmission = False

    def refuse(request) -> None:
        if not getattr(request, "_nextframe_refused", False):
            request._nextframe_refused = True
            request.channel.transport.write(refusal(request._nextframe_limit))
            request.channel.transport.loseConnection()

    def gotLength(self, length):
        guard = getattr(self.channel.transport, "nextframe_headers_received", None)
        if guard is not None:
            guard()
        self._nextframe_limit = body_limit(
            self.channel._command, self.channel._path, self.requestHeaders.getRawHeaders(b"content-type", [None])[0],
            upload_limit=upload_limit, default_limit=default_limit)
        if length is not None and length > self._nextframe_limit:
            # Nothing to store: keep Twisted from creating a temporary file for it.
            original_length(self, 0)
            refuse(self)
            return
        original_length(self, length)

    def handleContentChunk(self, data):
        if getattr(self, "_nextframe_refused", False):
            return
        self._nextframe_received = getattr(self, "_nextframe_received", 0) + len(data)
        if self._nextframe_received > getattr(self, "_nextframe_limit", default_limit):
            refuse(self)
            return
        original_chunk(self, data)

    def finish(self):
        # Armed before finishing: finishing hands a pipelined next request to the parser at once,
        # and its headers (already in) disarm the deadline again.
        guard = getattr(getattr(self.channel, "transport", None), "nextframe_response_finished", None)
        if guard is not None:
            guard()
        original_finish(self)

    handleContentChunk._nextframe = True  # type: ignore[attr-defined]  # the patched-once marker, on the function
    WebRequest.__init__, WebRequest.gotLength = __init__, gotLength
    WebRequest.handleContentChunk, WebRequest.finish = handleContentChunk, finish


# --- connections ----------------------------------------------------------------------------------

def default_max_connections(reserve: int = 256) -> int:
    """Open connections allowed in total: the descriptor limit less a reserve for the rest."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 65536
    return max(16, soft - reserve)


def guarded_factory(http_factory, *, header_timeout_s: float, max_per_client: int, max_total: int):
    """Wrap daphne's HTTP factory: header deadline, per-address and total connection caps.

    A Twisted WrappingFactory: the wrapper stays the transport of whatever protocol runs on the
    connection (daphne swaps HTTP for WebSocket under it, as it does under TLS), so the count is
    released when the TCP connection ends, whichever protocol it carried.
    """
    from twisted.internet import reactor
    from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

    class GuardedConnection(ProtocolWrapper):
        deadline = None

        def connectionMade(self):
            self._arm()

        def _arm(self):
            self._disarm()
            if header_timeout_s > 0:
                self.deadline = reactor.callLater(header_timeout_s, self._headers_too_slow)

        def _disarm(self):
            if self.deadline is not None and self.deadline.active():
                self.deadline.cancel()
            self.deadline = None

        def _headers_too_slow(self):
            self.deadline = None
            self.transport.abortConnection()  # nothing to say to a client that sends no request

        def nextframe_headers_received(self):
            self._disarm()

        def nextframe_response_finished(self):
            if not self.disconnecting:
                self._arm()  # a keep-alive connection must send its next request's headers in time

        def connectionLost(self, reason):
            self._disarm()
            super().connectionLost(reason)

    class GuardedFactory(WrappingFactory):
        protocol = GuardedConnection

        def __init__(self, wrapped):
            super().__init__(wrapped)
            self.per_client: Counter[str] = Counter()

        def buildProtocol(self, addr):
            host = getattr(addr, "host", None)
            if max_total and len(self.protocols) >= max_total:
                return None  # Twisted closes the accepted socket at once
            if host is not None and max_per_client and self.per_client[host] >= max_per_client:
                return None
            protocol = super().buildProtocol(addr)
            if protocol is not None:
                protocol.nextframe_client = host
                if host is not None:
                    self.per_client[host] += 1
            return protocol

        def unregisterProtocol(self, protocol):
            super().unregisterProtocol(protocol)
            host = getattr(protocol, "nextframe_client", None)
            if host is not None:
                self.per_client[host] -= 1
                if self.per_client[host] <= 0:
                    del self.per_client[host]

    return GuardedFactory(http_factory)


def patch_connection_guard(*, header_timeout_s: float, idle_timeout_s: float, max_per_client: int,
                           max_total: int) -> None:
    import daphne.server
    from daphne.http_protocol import HTTPFactory

    if getattr(daphne.server.HTTPFactory, "_nextframe", False):
        return

    def make_factory(server):
        factory = HTTPFactory(server)
        # Twisted's idle timeout (12 h by default): a connection sending nothing for this long while
        # its request arrives is closed. It is off while the application answers and on WebSockets.
        factory.timeOut = idle_timeout_s or None
        return guarded_factory(factory, header_timeout_s=header_timeout_s, max_per_client=max_per_client,
                               max_total=max_total)

    make_factory._nextframe = True  # type: ignore[attr-defined]  # the patched-once marker, on the function
    daphne.server.HTTPFactory = make_factory


# --- access log -----------------------------------------------------------------------------------

# Query parameters whose values are credentials (bearer for as long as they live).
SECRET_QUERY_PARAMETER = re.compile(
    r"^(token|ticket|key|api_key|apikey|access_token|auth|password|secret|sig|signature|x-amz-signature"
    r"|x-amz-credential|x-amz-security-token|.*_token|.*_signature|.*_secret)$", re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL with the values of credential query parameters replaced by REDACTED."""
    if "?" not in url:
        return url
    path, query = url.split("?", 1)
    parts = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        shown = "REDACTED" if SECRET_QUERY_PARAMETER.match(name) else quote(value, safe="")
        parts.append(f"{quote(name, safe='')}={shown}")
    return path + "?" + "&".join(parts)


def patch_access_log() -> None:
    from daphne.access import AccessLogGenerator

    original = AccessLogGenerator.__call__
    if getattr(original, "_nextframe", False):
        return

    def __call__(self, protocol, action, details):
        if isinstance(details.get("path"), str):
            details = {**details, "path": redact_url(details["path"])}
        return original(self, protocol, action, details)

    __call__._nextframe = True  # type: ignore[attr-defined]  # the patched-once marker, on the function
    AccessLogGenerator.__call__ = __call__

    from nextframe import logs

    if logs.json_enabled():  # NEXTFRAME_LOG_FORMAT=json: access entries as records with fields
        import logging

        access = logging.getLogger("nextframe.access")

        def write_entry(self, host, date, request, status=None, length=None, ident=None, user=None):
            access.info("%s %s", request, status or "-",
                        extra={"client": host, "request": request, "status": status, "bytes": length})

        AccessLogGenerator.write_entry = write_entry


# --- graceful drain -------------------------------------------------------------------------------

def patch_graceful_drain(grace_s: float) -> None:
    """Drain (nextframe.live.drain) before daphne's shutdown trigger cancels the applications.

    Twisted calls every "before shutdown" trigger at once and only then waits for the Deferreds they
    return, so a trigger of our own would run beside daphne's `kill_all_applications`, not before
    it: the drain is chained in front of it instead."""
    import asyncio

    import daphne.server
    from twisted.internet import defer

    original = daphne.server.Server.kill_all_applications
    if getattr(original, "_nextframe", False):
        return

    def kill_all_applications(self):
        from nextframe.live import drain

        def pending() -> int:
            return sum(1 for details in self.connections.values()
                       if "application_instance" in details and not details["application_instance"].done())

        waited = defer.Deferred.fromFuture(asyncio.ensure_future(drain.drain(grace_s, pending)))
        waited.addErrback(lambda failure: failure.printTraceback())
        waited.addBoth(lambda _: original(self))
        return waited

    kill_all_applications._nextframe = True  # type: ignore[attr-defined]  # the patched-once marker, on the function
    daphne.server.Server.kill_all_applications = kill_all_applications


def preload_live_modules() -> None:
    """Import the engines and the frame loop (torch) before the server accepts connections.

    The consumer and the device runtime import them lazily (management commands and workers must
    not pay for torch), so without this the first session.start of a server imported torch
    while sockets were open: seconds holding the import lock and most of the GIL, the event loop
    starved (session.ready after 5-17 s on a loaded 2-core machine), long enough for pending Redis
    reads on that loop to time out (channel layer: 1011 for the process's sockets)."""
    import torch  # noqa: F401  (seconds to import; the device runtime's thread needs it)

    import inference.engines  # noqa: F401
    import inference.runtime  # noqa: F401

    # The same for moderation's models (the prompt classifier, the hashes' libraries, open_nsfw when
    # the platform's policy classifies frames: seconds and ~80 MiB): loaded before the first session
    # instead of during it, so the node's memory at rest already holds them.
    from nextframe.live.service import default_prompt_check

    warm = getattr(default_prompt_check(), "warm", None)
    if warm is not None:
        warm()


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nextframe.settings")
    import django

    django.setup()
    from django.conf import settings

    patch_websocket_close()
    from nextframe.live import flow

    flow.install()  # backpressure from each WebSocket's write buffer (nextframe/live/flow.py)
    # Multipart uploads get their limit (plus room for the other parts); every other body the JSON
    # one, which the Django-side middleware also applies with its own 413.
    patch_http_requests(upload_limit=settings.MAX_UPLOAD_BYTES + 64 * 1024, default_limit=settings.MAX_JSON_BODY_BYTES)
    patch_connection_guard(
        header_timeout_s=settings.HTTP_HEADER_TIMEOUT_S, idle_timeout_s=settings.HTTP_IDLE_TIMEOUT_S,
        max_per_client=settings.HTTP_MAX_CONNECTIONS_PER_CLIENT,
        max_total=settings.HTTP_MAX_CONNECTIONS or default_max_connections())
    patch_access_log()
    patch_graceful_drain(settings.SHUTDOWN_GRACE_S)
    from nextframe.live.sweeper import start_sweeper

    start_sweeper()  # every server process ends records its dead peers left active
    from nextframe.live.nodes import serve

    serve()  # this node's devices registered (with its public URL) and heartbeated from now on
    preload_live_modules()
    from daphne.cli import CommandLineInterface

    from nextframe.audits.server import serving
    serving()  # this process is the server: start-up audits run here (not guessed from argv)
    CommandLineInterface().run(sys.argv[1:] if argv is None else argv)
    exit_after_shutdown()


def exit_after_shutdown(code: int = 0) -> None:
    """The reactor stopped after the drain: run the exit handlers, flush, and leave at once.

    What CPython does after the exit handlers (tearing down torch and every module) took 3-6 s on a
    loaded 2-core node, with nothing left for the server to do, pushing the exit past the grace
    period and towards the orchestrator's SIGKILL."""
    import atexit
    import logging

    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
