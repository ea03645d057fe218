"""The live WebSocket endpoint, protocol v1 (docs/protocol.md): socket plumbing over the session
service (nextframe.live.service), which decides everything and knows no socket.

A frame's path: `receive` -> `LiveSessionService.submit_frame` -> the session's latest-wins slot in
its DeviceRuntime -> the runtime's threads -> `SocketBridge.on_output` (nextframe.live.bridge) ->
its bounded outbox -> `_sender` -> `_send_frame`. The channel layer carries only key revocations.
While the socket's write buffer is backed up (nextframe.live.flow) frames are dropped and
non-closing errors skipped; a socket that does not drain for LIVE_SLOW_READER_TIMEOUT_S ends its
session with `slow_reader`. A started session ends exactly once: `_end`, or `service.abandon`
when the event loop is going away (a server shutdown cancels the consumer). A draining server
(nextframe.live.drain) calls `drain_shutdown` first: the session ends with `shutdown`. A start the
pool places on another node is answered with `session.redirect` and a normal close
(nextframe.live.redirect); a socket opened with such a redirect's ticket adopts its reservation.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from inference import protocol
from inference.error_codes import EndReason, ErrorCode, close_code_for
from nextframe import logs
from nextframe.live import drain, edge, redirect
from nextframe.live.bridge import SocketBridge
from nextframe.live.flow import flow_of
from nextframe.live.service import ControlRejected, KeyRevoked, LiveSessionService, Redirected, Rejected
from nextframe.tenancy import actions as tenancy

if TYPE_CHECKING:
    from inference.pool.types import Reservation
    from inference.runtime import OutputFrame

log = logging.getLogger(__name__)
# What a socket refused for an unreachable channel layer is told to wait (the pool says the same).
CHANNEL_LAYER_RETRY_S = 5.0


class LiveConsumer(AsyncWebsocketConsumer):
    """One WebSocket = at most one live session."""

    service: LiveSessionService | None = None
    bridge: SocketBridge
    admitting = False  # a session.start is being admitted (drain: it ends right after session.ready)

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Cancelled by a server shutdown, or died of a bug: no disconnect handler will run.
            drain.unregister(self)
            if self.service is not None:
                self.service.abandon(EndReason.SHUTDOWN if drain.draining() else EndReason.SERVER_ERROR)

    async def connect(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.tasks: list[asyncio.Task[None]] = []
        self.group: str | None = None
        self.text_rate = edge.TextRateLimit(settings.LIVE_TEXT_RATE_PER_S)
        self.flow = flow_of(self.scope)
        principal: tenancy.Principal | None = None
        adopted: Reservation | None = None  # handed over by a session.redirect (nextframe.live.redirect)
        refusal: tuple[int, str] | None
        wrong_node: redirect.WrongNode | None = None
        try:
            principal, adopted = await database_sync_to_async(edge.authenticate)(self.scope)
            refusal = None if principal.has_scope("live") else edge.CLOSE_WITHOUT_LIVE_SCOPE
        except redirect.WrongNode as exc:
            refusal, wrong_node = edge.close_for_auth_error(exc), exc
        except tenancy.AuthError as exc:
            refusal = edge.close_for_auth_error(exc)
        await self.accept()
        logs.bind(request_id=logs.new_id())  # this socket's logs (NEXTFRAME_LOG_FORMAT=json)
        drain.register(self)  # at once: a drain that starts from here on reaches this socket
        if drain.draining() or refusal is not None or principal is None:
            if adopted is not None and principal is not None:  # not taken over: freed now, not at its expiry
                await asyncio.to_thread(LiveSessionService(principal).refuse_adoption, adopted)
            if drain.draining():
                await self.close(code=drain.CLOSE_GOING_AWAY, reason=drain.CLOSE_REASON)
            elif wrong_node is not None:
                await self._reject(ErrorCode.WRONG_NODE, str(wrong_node), close_reason="wrong node")
            else:
                code, reason = refusal or edge.CLOSE_WITHOUT_LIVE_SCOPE
                await self.close(code=code, reason=reason)
            return
        self.service = LiveSessionService(principal)
        if adopted is not None:
            await asyncio.to_thread(self.service.adopt, adopted)
        self.bridge = SocketBridge(self.loop, self.flow, self.service, error=self._reject, end=self._end)
        if principal.api_key is not None:
            group = tenancy.key_group(principal.api_key.key_id)
            try:
                await self.channel_layer.group_add(group, self.channel_name)
            except Exception:
                # The channel layer (Redis, scaled out) is unreachable: the key's revocation could
                # not reach this socket, and the pool lives there too. Refuse like a full pool, with
                # a retry time, instead of a 1011 (the Redis-restart fault test).
                log.exception("live socket refused: the channel layer is unreachable")
                if adopted is not None:
                    await asyncio.to_thread(self.service.drop_adopted)
                await self._reject(ErrorCode.CAPACITY_UNAVAILABLE, "the platform is briefly unreachable; retry",
                                   retry_after_s=CHANNEL_LAYER_RETRY_S, close_reason="no capacity")
                return
            self.group = group

    async def disconnect(self, code: int) -> None:
        drain.unregister(self)
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        # A client that vanishes without session.stop still frees its reservation and is recorded.
        await self._end(EndReason.CLIENT, send=False)
        if self.service is not None and self.service.adopted is not None:
            await asyncio.to_thread(self.service.drop_adopted)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        service = self.service
        if service is None or service.ended:
            return
        try:
            if bytes_data is not None:
                service.submit_frame(bytes_data)
            else:
                await self._on_text(service, text_data)
        except (Rejected, protocol.ProtocolError) as exc:
            await self._reject(exc.code, exc.message, getattr(exc, "retry_after_s", None),
                               getattr(exc, "close_reason", ""))
        except ControlRejected as exc:
            await self._send_text(protocol.ControlRejected(exc.seq, exc.code, exc.message).to_json())
        except KeyRevoked:  # revoked after this socket opened, unheard by this process's layer
            self.service = None
            await self.close(code=protocol.CLOSE_UNAUTHENTICATED, reason="API key has been revoked")
        except Exception:
            # A bug must not leave a session running unseen (holding capacity, accruing usage).
            log.exception("live consumer failed on a client message")
            if service.running:
                await self._end(EndReason.SERVER_ERROR)
            else:
                await self._reject(ErrorCode.BAD_MESSAGE, "the server could not process this message")

    async def _on_text(self, service: LiveSessionService, text: str | None) -> None:
        if not self.text_rate.take():
            # session.stop is never rate-limited away (PROTOCOL.md): a client that flooded must
            # still be able to end its session, and its usage with it.
            if edge.is_stop(text):
                await self._stop(service)
            elif self.text_rate.should_notice():
                await self._reject(ErrorCode.RATE_LIMITED,
                                   f"more than {settings.LIVE_TEXT_RATE_PER_S} text messages per second; "
                                   "messages over the limit are ignored (session.stop never is)", 1)
            return
        message = protocol.parse_client_message(text or "")
        if isinstance(message, protocol.SessionStart):
            # The engine's first use in a process builds it (seconds; 12-13 s seen on a busy node):
            # off the event loop and off the shared database thread, before anything is reserved.
            self.admitting = True
            try:
                await asyncio.to_thread(service.warm_engine, message.model)
                if drain.draining():
                    raise Rejected(ErrorCode.CAPACITY_UNAVAILABLE, drain.REFUSAL_MESSAGE,
                                   retry_after_s=drain.RETRY_AFTER_S, close_reason=drain.CLOSE_REASON)
                ready = await database_sync_to_async(service.start)(message, self.bridge)
            except Redirected as moved:  # placed on another node: the client reconnects there
                await self._send_text(moved.message.to_json())
                await self.close(code=protocol.CLOSE_NORMAL)
                return
            finally:
                self.admitting = False
            logs.bind(session_id=ready.session_id, org=str(service.principal.organization.pk))
            await self._send_text(ready.to_json())
            self.tasks = [asyncio.create_task(self._sender(service)), asyncio.create_task(self._ticker(service))]
            if drain.draining():  # the drain began while this session was being admitted
                await self._end(EndReason.SHUTDOWN)
        elif isinstance(message, protocol.Control):
            service.control(message.seq, message.prompt, message.params)
        elif isinstance(message, protocol.SessionStop):
            await self._stop(service)

    async def _stop(self, service: LiveSessionService) -> None:
        if not service.running:
            raise Rejected(ErrorCode.NOT_STARTED, "no session is running; send session.start first")
        await self._end(EndReason.CLIENT)

    async def _sender(self, service: LiveSessionService) -> None:
        try:
            await self.bridge.drain(self._send_frame, self._send_text, self._reject)
        except Exception:
            log.exception("live session %s could not send; ending it", service.record_id)
            await self._end(EndReason.SERVER_ERROR, send=False)

    async def _ticker(self, service: LiveSessionService) -> None:
        """About once a second: the service's tick (usage, limits), then metrics to the client."""
        while not service.ended:
            await asyncio.sleep(settings.LIVE_METRICS_INTERVAL_S)
            if service.ended:
                return
            try:
                reason = await self._tick(service)
            except Exception:  # a bug, or the socket gone: the session must not run on unchecked
                log.exception("live session %s: tick failed", service.record_id)
                reason = EndReason.SERVER_ERROR
            if reason:
                await self._end(reason)
                return

    async def _tick(self, service: LiveSessionService) -> EndReason | None:
        if self.flow is not None and self.flow.stalled_for() >= settings.LIVE_SLOW_READER_TIMEOUT_S:
            return EndReason.SLOW_READER
        tick = await database_sync_to_async(service.tick)()
        if tick.warning is not None:  # once per session: sent even while backed up
            await self._send_text(tick.warning.to_json())
        if not self._backed_up():  # nobody reads them while it is
            await self._send_text(tick.metrics.as_message().to_json())
        return tick.end

    async def drain_shutdown(self) -> None:
        """The server is shutting down (nextframe.live.drain): end the session with `shutdown`, or
        close a socket without one with 1001; a session being admitted ends after its session.ready."""
        if self.service is not None and self.service.running:
            await self._end(EndReason.SHUTDOWN)
        elif not self.admitting and not (self.service is not None and self.service.ended):
            self.service = None
            await self.close(code=drain.CLOSE_GOING_AWAY, reason=drain.CLOSE_REASON)

    async def key_revoked(self, event: dict[str, Any]) -> None:
        """Channel-layer event: the key this socket authenticated with was revoked (in any process)."""
        if self.service is not None and self.service.admitted:
            await self._end(EndReason.REVOKED)
        else:
            self.service = None
            await self.close(code=protocol.CLOSE_UNAUTHENTICATED, reason="API key revoked")

    async def _end(self, reason: EndReason, send: bool = True) -> None:
        service = self.service
        if service is None or not service.claim_end():
            return
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        used = await database_sync_to_async(service.finish_end)(reason)
        if send:
            try:
                await self._send_text(protocol.SessionEnded(reason, protocol.Usage(**used.as_dict())).to_json())
                await self.close(code=protocol.CLOSE_NORMAL)
            except Exception:  # the socket may already be gone; the record is what matters
                pass

    # --- the ways out: every message the socket sends passes one of these two -------------------------

    def _backed_up(self) -> bool:
        return self.flow is not None and self.flow.backed_up

    async def _reject(self, code: ErrorCode | str, message: str, retry_after_s: float | None = None,
                      close_reason: str = "") -> None:
        """Send an `error`; when the registry gives its code a close code, close the socket with it.
        A non-closing error is skipped while the socket is backed up (nobody reads it then)."""
        close_code = close_code_for(code)
        if close_code is None and self._backed_up():
            return
        await self._send_text(protocol.Error(code, message, retry_after_s=retry_after_s).to_json())
        if close_code is not None:
            await self.close(code=close_code, reason=close_reason)

    async def _send_text(self, text: str) -> None:
        await self.send(text_data=text)

    async def _send_frame(self, out: OutputFrame) -> None:
        await self.send(bytes_data=protocol.pack_output_frame(
            out.frame_index, out.input_seq, out.input_capture_ts_us, out.control_seq, out.jpeg))


class UnknownPathConsumer(AsyncWebsocketConsumer):
    """Any other WebSocket path: the handshake is refused (HTTP 403) instead of a server error."""

    async def connect(self):
        await self.close()
