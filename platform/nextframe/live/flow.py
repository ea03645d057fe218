"""Backpressure from the socket: a live WebSocket's consumer learns when the client stops reading.

daphne hands every message the application sends straight to its Twisted transport, which buffers
without bound: a client that sent frames but never read grew the server by ~20 MiB/s, and since
its incoming frames kept resetting daphne's ping timeout, nothing ever ended it. The consumer's own
output bound did not help, as it was released when a frame reached daphne, not the socket.

Twisted's flow control is the IPushProducer: a producer registered on a transport is paused when
the transport's write buffer passes its `bufferSize` (64 KiB) and resumed once the buffer has
drained completely. `install()` (called once by `nextframe.web.main`) registers a `SocketFlow` as
that producer on every WebSocket connection and hands it to the application as the ASGI scope
extension `scope["extensions"]["nextframe.flow"]`. The live consumer then
- drops output frames while the socket is `backed_up` (counted in `dropped_outputs`), and
- ends the session with reason `slow_reader` when the socket has not drained for
  LIVE_SLOW_READER_TIMEOUT_S (`stalled_for()`).
Backstop, for a socket without a session or whatever else keeps it full: a connection that stays
backed up ABORT_GRACE_S beyond that timeout is aborted, dropping its buffer.

In-process tests (channels' WebsocketCommunicator) have no transport and no extension: the
consumer then behaves as before.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer  # type: ignore[import-untyped]  # zope ships no stubs

log = logging.getLogger(__name__)

EXTENSION = "nextframe.flow"
# How much longer than the session's slow-reader timeout a backed-up connection may live: time
# for the consumer's next tick to end the session and for the close handshake (1 s) to time out.
ABORT_GRACE_S = 5.0


@implementer(IPushProducer)
class SocketFlow:
    """The write side of one WebSocket's transport, as Twisted reports it to its push producer.

    Twisted calls `pauseProducing` / `resumeProducing` / `stopProducing` in the reactor thread; the
    consumer (same event loop) and the frame loop's post thread only read `backed_up`, a plain
    attribute read.
    """

    def __init__(self, abort: Callable[[], None] | None = None, abort_after_s: float | None = None,
                 call_later: Callable[[float, Callable[[], None]], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._abort = abort
        self._abort_after_s = abort_after_s
        self._call_later = call_later
        self._clock = clock
        self._timer: Any = None
        self.paused_since: float | None = None
        self.pauses = 0
        self.aborted = False

    @property
    def backed_up(self) -> bool:
        """True while the transport holds more unsent bytes than its buffer size."""
        return self.paused_since is not None

    def stalled_for(self) -> float:
        """Seconds the socket has been backed up without draining (0 when it is not)."""
        since = self.paused_since
        return 0.0 if since is None else max(0.0, self._clock() - since)

    # -- IPushProducer -------------------------------------------------------------------------------
    def pauseProducing(self) -> None:
        if self.paused_since is not None:
            return
        self.paused_since = self._clock()
        self.pauses += 1
        if self._abort is not None and self._abort_after_s is not None and self._call_later is not None:
            self._timer = self._call_later(self._abort_after_s, self._abort_now)

    def resumeProducing(self) -> None:
        self.paused_since = None
        self._cancel()

    def stopProducing(self) -> None:
        self._cancel()

    # -- backstop ------------------------------------------------------------------------------------
    def _cancel(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _abort_now(self) -> None:
        self._timer = None
        if self.paused_since is None or self._abort is None:
            return
        log.warning("aborting a WebSocket connection backed up for %.1f s (the client reads nothing)",
                    self.stalled_for())
        self.aborted = True
        self._abort()


def attach(protocol: Any, scope: dict, abort_after_s: float | None,
           call_later: Callable[[float, Callable[[], None]], Any] | None = None) -> SocketFlow | None:
    """Register a SocketFlow on a WebSocket protocol's transport and put it in the ASGI scope."""
    transport = getattr(protocol, "transport", None)
    if transport is None or not hasattr(transport, "registerProducer"):
        return None
    if call_later is None:
        from twisted.internet import reactor  # daphne's (asyncio) reactor, already installed

        call_later = reactor.callLater  # type: ignore[assignment]  # IReactorTime's untyped signature
    flow = SocketFlow(abort=getattr(transport, "abortConnection", None), abort_after_s=abort_after_s,
                      call_later=call_later)
    # daphne upgrades an HTTP connection to a WebSocket and leaves twisted.web's HTTPChannel
    # registered as the transport's producer; it has nothing left to produce on this connection.
    try:
        transport.unregisterProducer()
        transport.registerProducer(flow, True)
    except Exception:  # an unusual transport: serve without backpressure rather than not at all
        log.exception("could not register flow control on %r", transport)
        return None
    scope.setdefault("extensions", {})[EXTENSION] = flow
    return flow


def install(slow_reader_timeout_s: float | None = None) -> None:
    """Patch daphne (in the server process) so every WebSocket application gets its SocketFlow."""
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol

    if getattr(Server.create_application, "_nextframe_flow", False):
        return
    if slow_reader_timeout_s is None:
        from django.conf import settings

        slow_reader_timeout_s = settings.LIVE_SLOW_READER_TIMEOUT_S
    abort_after_s = slow_reader_timeout_s + ABORT_GRACE_S
    original = Server.create_application

    def create_application(self, protocol, scope):
        if isinstance(protocol, WebSocketProtocol):
            attach(protocol, scope, abort_after_s)
        return original(self, protocol, scope)

    create_application._nextframe_flow = True  # type: ignore[attr-defined]  # the patched-once marker
    Server.create_application = create_application


def flow_of(scope: dict) -> SocketFlow | None:
    """The SocketFlow of a connection's scope, or None (in-process tests, other servers)."""
    return (scope.get("extensions") or {}).get(EXTENSION)
