"""The live WebSocket endpoint, protocol v1 (docs/protocol.md): thin glue between a socket and the
frame loop in `inference.runtime`.

Frames never travel through the channel layer: binary input goes straight into the session's
latest-wins slot, output frames come back from the runtime's worker threads into a small bounded
buffer and out of the socket. The channel layer carries only control-plane events (key revoked).

Backpressure comes from the socket itself (nextframe.live.flow): while the transport's write
buffer is backed up, output frames are dropped (counted in dropped_outputs) and per-message errors
are not sent; a socket that has not drained for LIVE_SLOW_READER_TIMEOUT_S ends its session with
`slow_reader`. Codes and reasons come from the one registry, inference.error_codes.

Whatever happens - a client error, a bug, a server shutdown cancelling the consumer - a session
that was started is ended exactly once: its runtime session closed, its reservation released and
its record written (`_end`, or `_abandon` when the event loop can no longer be relied on).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from inference import protocol
from inference.error_codes import EndReason, ErrorCode, close_code_for
from nextframe.live import actions
from nextframe.live.flow import flow_of
from nextframe.live.host import get_host
from nextframe.live.models import new_session_id
from nextframe.tenancy import actions as tenancy

log = logging.getLogger(__name__)

# Output frames waiting for the socket. Small on purpose: a slow reader loses frames (counted by
# the runtime as dropped outputs) instead of growing a backlog of stale video.
OUTPUT_BUFFER = 2
# How often a running session re-reads its key's revocation from the database.
KEY_RECHECK_S = 2.0
# Consecutive failed ticks (database unreachable, say) before a session ends with server_error:
# without its ticks, quota, idle, duration and revocation would go unenforced.
MAX_FAILED_TICKS = 5
# A text message over the rate limit is still parsed when it is this short: it may be the
# session.stop that must always be honoured (a stop is ~23 characters).
STOP_PARSE_MAX_CHARS = 256
# At most one `rate_limited` error per this many seconds: a flood must not make the server write
# one error per flooded message to a client that may not read them.
RATE_NOTICE_EVERY_S = 1.0


class LiveConsumer(AsyncWebsocketConsumer):
    """One WebSocket = at most one live session at a time."""

    principal = None
    handle = None
    reservation = None
    record_id = None
    ended = False

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Cancelled by a server shutdown, or died of a bug: no disconnect handler will run.
            if self.handle is not None and not self.ended:
                self._abandon(EndReason.SERVER_ERROR)

    async def connect(self):
        self.tasks: list[asyncio.Task] = []
        self.loop = asyncio.get_running_loop()
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.pending = 0
        self.pending_lock = threading.Lock()
        self.group = None
        self.last_control_seq = 0
        self.text_tokens = float(settings.LIVE_TEXT_RATE_PER_S)
        self.text_refill_at = time.monotonic()
        self.rate_noticed_at = float("-inf")
        self.flow = flow_of(self.scope)
        try:
            self.principal = await self._authenticate()
        except tenancy.AuthError as exc:
            await self.accept()
            # Too many failed authentications from this address: 4429, like the other "too many".
            throttled = isinstance(exc, tenancy.Throttled)
            await self.close(code=protocol.CLOSE_CONCURRENCY if throttled else protocol.CLOSE_UNAUTHENTICATED,
                             reason=str(exc)[:120])
            return
        await self.accept()
        if not self.principal.has_scope("live"):
            self.principal = None
            await self.close(code=protocol.CLOSE_FORBIDDEN, reason="this API key lacks the 'live' scope")
            return
        if self.principal.api_key is not None:
            self.group = tenancy.key_group(self.principal.api_key.key_id)
            await self.channel_layer.group_add(self.group, self.channel_name)

    @database_sync_to_async
    def _authenticate(self) -> tenancy.Principal:
        headers = dict(self.scope.get("headers") or [])
        address = (self.scope.get("client") or [None])[0]  # failures count per address (tenancy.throttle)
        auth = headers.get(b"authorization", b"").decode("latin-1").strip()
        if auth:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise tenancy.AuthError("Authorization header must be 'Bearer <api key>'")
            return tenancy.authenticate_key(token.strip(), address=address)
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        ticket = (query.get("ticket") or [""])[0]
        if ticket:
            return tenancy.redeem_ticket(ticket, address=address)
        raise tenancy.AuthError("missing credentials: 'Authorization: Bearer <api key>' or ?ticket=")

    # --- socket events --------------------------------------------------------------------------

    async def disconnect(self, code):
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        # A client that vanishes without session.stop still frees its reservation and is recorded.
        await self._end(EndReason.CLIENT, send=False)

    async def receive(self, text_data=None, bytes_data=None):
        if self.principal is None or self.ended:
            return
        try:
            await self._dispatch(text_data, bytes_data)
        except Exception:
            # A bug must not leave a session running unseen (holding capacity, accruing usage).
            log.exception("live consumer failed on a client message")
            if self.handle is not None:
                await self._end(EndReason.SERVER_ERROR)
            else:
                await self._error(ErrorCode.BAD_MESSAGE, "the server could not process this message")

    async def _dispatch(self, text_data, bytes_data) -> None:
        if bytes_data is not None:
            await self._on_frame(bytes_data)
            return
        if not self._take_text_token():
            # session.stop is never rate-limited away (PROTOCOL.md): a client that flooded must
            # still be able to end its session, and its usage with it.
            if _is_stop(text_data):
                await self._on_stop()
            else:
                await self._rate_limited()
            return
        try:
            message = protocol.parse_client_message(text_data or "")
        except protocol.ProtocolError as exc:
            await self._error(exc.code, exc.message)
            return
        if isinstance(message, protocol.SessionStart):
            await self._on_start(message)
        elif isinstance(message, protocol.Control):
            await self._on_control(message)
        elif isinstance(message, protocol.SessionStop):
            await self._on_stop()

    async def _on_stop(self) -> None:
        if self.handle is None:
            await self._error(ErrorCode.NOT_STARTED, "no session is running; send session.start first")
        else:
            await self._end(EndReason.CLIENT)

    async def _rate_limited(self) -> None:
        now = time.monotonic()
        if now - self.rate_noticed_at < RATE_NOTICE_EVERY_S:
            return
        self.rate_noticed_at = now
        await self._error(ErrorCode.RATE_LIMITED,
                          f"more than {settings.LIVE_TEXT_RATE_PER_S} text messages per second; "
                          "messages over the limit are ignored (session.stop never is)", retry_after_s=1)

    def _take_text_token(self) -> bool:
        now = time.monotonic()
        rate = settings.LIVE_TEXT_RATE_PER_S
        self.text_tokens = min(rate, self.text_tokens + (now - self.text_refill_at) * rate)
        self.text_refill_at = now
        if self.text_tokens < 1:
            return False
        self.text_tokens -= 1
        return True

    # --- session.start ----------------------------------------------------------------------------

    async def _on_start(self, msg) -> None:
        from inference.engines import InvalidParams, UnknownModel, get_engine, get_spec
        from inference.pool import CapacityUnavailable, ConcurrencyLimit
        from inference.runtime import SessionConfig

        if self.handle is not None:
            await self._error("bad_message", "a session is already running on this socket")
            return
        try:
            spec = get_spec(msg.model)
            width, height, fps = spec.resolve_size(msg.width, msg.height, msg.fps)
            spec.validate_params(msg.params or {})
            spec.validate_prompt(msg.prompt or "")
        except UnknownModel as exc:
            await self._error(ErrorCode.UNKNOWN_MODEL, str(exc))
            return
        except InvalidParams as exc:
            await self._error(ErrorCode.INVALID_PARAMS, str(exc))
            return
        # Revoked after this socket opened (and the revocation did not reach this process's layer).
        if await database_sync_to_async(_key_revoked)(self.principal):
            await self.close(code=protocol.CLOSE_UNAUTHENTICATED, reason="API key has been revoked")
            self.principal = None
            return
        org = self.principal.organization
        remaining = await database_sync_to_async(actions.quota_remaining)(org)
        if remaining is not None and remaining <= 0:
            await self._refuse(ErrorCode.QUOTA_EXCEEDED, "the organisation's monthly GPU-seconds are used up",
                               reason="quota exceeded")
            return
        # The engine's first use builds it (torch import, model build: 12-13 s measured on a busy
        # 2-core node): done here, off the event loop and before reserving, so that no lease goes
        # unheartbeated meanwhile (it expired at its first heartbeat) and no session stalls.
        await asyncio.to_thread(get_engine, spec.id)
        cost = spec.cost(width, height, fps)
        session_id = new_session_id()
        host = get_host()
        try:
            self.reservation = await asyncio.to_thread(
                host.pool.reserve, str(org.pk), session_id, cost.compute_share, cost.memory_bytes, "live",
                org.max_live_sessions,
            )
        except ConcurrencyLimit:
            await self._refuse(ErrorCode.CONCURRENCY_LIMIT,
                               f"the organisation already runs its maximum of {org.max_live_sessions} live sessions",
                               reason="concurrency limit")
            return
        except CapacityUnavailable as exc:
            await self._refuse(ErrorCode.CAPACITY_UNAVAILABLE, "no device has room for this session right now",
                               retry_after_s=exc.retry_after_s, reason="no capacity")
            return
        try:
            tier = await database_sync_to_async(_catalog_tier)(spec)
            runtime = host.runtime_for(self.reservation.device_id)
            config = SessionConfig(engine_id=spec.id, width=width, height=height, fps=fps,
                                   prompt=msg.prompt or "", params=msg.params or {})
            self.handle = runtime.open_session(
                config, on_output=self._on_output_threadsafe,
                on_control_applied=self._on_control_applied_threadsafe, on_error=self._on_error_threadsafe,
            )
            self.handle.set_gpu_share(self.reservation.share)
            host.keep(self.reservation, self._on_lease_lost_threadsafe)
            self.price, self.spec, self.org = spec.price_per_gpu_second, spec, org
            self.started_at = self.last_input_at = time.monotonic()
            record = await database_sync_to_async(actions.open_record)(
                session_id=session_id, org=org, api_key=self.principal.api_key, model=spec.id, tier=tier,
                width=self.handle.width, height=self.handle.height, fps=int(round(self.handle.fps)),
                device=self.reservation.device_id, share=self.reservation.share, node=self.reservation.node_id,
            )
            self.record_id = record.pk
        except BaseException:
            # Nothing half-started survives: no runtime session, no lease, no record.
            if self.handle is not None:
                self.handle.close()
                self.handle = None
            await asyncio.shield(self._release())
            raise
        await self.send(text_data=protocol.session_ready(
            session_id=session_id, model=spec.id, tier=tier, width=self.handle.width,
            height=self.handle.height, fps=int(round(self.handle.fps)), frame_budget_ms=self.handle.frame_budget_ms,
            device=self.reservation.device_id, share=self.reservation.share,
            price_per_gpu_second=spec.price_per_gpu_second, currency=actions.CURRENCY,
        ))
        self.tasks = [asyncio.create_task(self._sender()), asyncio.create_task(self._ticker())]

    # --- control and frames -----------------------------------------------------------------------

    async def _on_control(self, msg) -> None:
        from inference.engines import InvalidParams

        if self.handle is None:
            await self._error(ErrorCode.NOT_STARTED, "no session is running; send session.start first")
            return
        if msg.seq <= self.last_control_seq:
            # control_seq in output headers names the newest control; an older seq would lie there.
            await self.send(text_data=protocol.control_rejected(
                msg.seq, "invalid_params", f"seq must increase: the last control was {self.last_control_seq}"))
            return
        try:
            self.handle.apply_control(msg.seq, prompt=msg.prompt, params=msg.params)
        except InvalidParams as exc:
            await self.send(text_data=protocol.control_rejected(msg.seq, "invalid_params", str(exc)))
            return
        self.last_control_seq = msg.seq

    async def _on_frame(self, data: bytes) -> None:
        from inference.engines import BadFrame

        if self.handle is None:
            await self._error(ErrorCode.NOT_STARTED, "no session is running; send session.start first")
            return
        if self.spec.kind != "video-to-video":
            await self._error(ErrorCode.BAD_FRAME, f"{self.spec.id} is text-to-video and takes no input frames")
            return
        try:
            frame = protocol.unpack_input_frame(data)
            self.handle.submit_frame(frame.seq, frame.capture_ts_us, frame.jpeg)
        except protocol.ProtocolError as exc:
            await self._error(ErrorCode.BAD_FRAME, exc.message)
            return
        except BadFrame as exc:
            await self._error(ErrorCode.BAD_FRAME, str(exc))
            return
        self.last_input_at = time.monotonic()

    # --- callbacks from runtime threads -------------------------------------------------------------

    def _on_output_threadsafe(self, out) -> bool:
        flow = self.flow
        if flow is not None and flow.backed_up:
            return False  # the socket has not taken the last frames: drop (the runtime counts it)
        with self.pending_lock:
            if self.pending >= OUTPUT_BUFFER or self.ended:
                return False
            self.pending += 1
        self.loop.call_soon_threadsafe(self.outbox.put_nowait, ("frame", out))
        return True

    def _on_control_applied_threadsafe(self, seq: int, frame_index: int) -> None:
        self.loop.call_soon_threadsafe(self.outbox.put_nowait, ("text", protocol.control_applied(seq, frame_index)))

    def _on_error_threadsafe(self, fault) -> None:
        if fault.fatal:
            # The engine failed: the session can produce nothing more. Say so, then end it.
            self.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._fail(fault.code, fault.message)))
        else:
            self.loop.call_soon_threadsafe(self.outbox.put_nowait, ("error", (fault.code, fault.message)))

    def _on_lease_lost_threadsafe(self, reason: str) -> None:
        log.warning("live session %s lost its reservation (%s)", self.record_id, reason)
        self.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._end(EndReason.SERVER_ERROR)))

    async def _fail(self, code: ErrorCode, message: str) -> None:
        if self.ended or self.handle is None:
            return
        log.error("live session %s failed: %s", self.record_id, message)
        try:
            await self._error(code, message)
        finally:
            await self._end(EndReason.SERVER_ERROR)

    async def _sender(self) -> None:
        while True:
            kind, item = await self.outbox.get()
            try:
                if kind == "frame":
                    with self.pending_lock:
                        self.pending -= 1
                    await self.send(bytes_data=protocol.pack_output_frame(
                        item.frame_index, item.input_seq, item.input_capture_ts_us, item.control_seq, item.jpeg))
                elif kind == "error":
                    await self._error(*item)
                else:
                    await self.send(text_data=item)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("live session %s could not send; ending it", self.record_id)
                await self._end(EndReason.SERVER_ERROR, send=False)
                return

    async def _ticker(self) -> None:
        """About once a second: metrics to the client, usage to the database, limits checked."""
        failures = 0
        self.next_key_check = time.monotonic() + KEY_RECHECK_S
        while not self.ended:
            await asyncio.sleep(settings.LIVE_METRICS_INTERVAL_S)
            if self.ended:
                return
            try:
                reason = await self._tick()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                log.exception("live session %s: tick %d failed", self.record_id, failures)
                reason = EndReason.SERVER_ERROR if failures >= MAX_FAILED_TICKS else None
            if reason:
                await self._end(reason)
                return

    async def _tick(self) -> EndReason | None:
        """One round of metrics, checkpoint and limits; returns an end reason or None."""
        metrics = self.handle.metrics()
        if self.flow is not None and self.flow.stalled_for() >= settings.LIVE_SLOW_READER_TIMEOUT_S:
            return EndReason.SLOW_READER
        if self.flow is None or not self.flow.backed_up:  # nobody reads them while it is
            await self.send(text_data=protocol.metrics(metrics.as_protocol_dict()))
        await database_sync_to_async(actions.checkpoint)(self.record_id, metrics.as_dict(), self.price)
        now = time.monotonic()
        if self.org.gpu_seconds_limit is not None:
            # Organisation-wide, read after this session's own checkpoint: concurrent sessions of
            # one organisation share one monthly quota.
            remaining = await database_sync_to_async(actions.quota_remaining)(self.org)
            if remaining is not None and remaining <= 0:
                return EndReason.QUOTA
        if now - self.started_at >= settings.LIVE_MAX_DURATION_S:
            return EndReason.MAX_DURATION
        if self.spec.kind == "video-to-video" and now - self.last_input_at >= settings.LIVE_IDLE_TIMEOUT_S:
            return EndReason.IDLE
        if now >= self.next_key_check:
            # The channel-layer group reaches every process at once when the layer is shared
            # (Redis); this re-check covers a revocation made where it is not (the in-memory
            # layer of the embedded default, revoked from the CLI), still well within 5 s.
            self.next_key_check = now + KEY_RECHECK_S
            if await database_sync_to_async(_key_revoked)(self.principal):
                return EndReason.REVOKED
        return None

    # --- channel-layer events -----------------------------------------------------------------------

    async def key_revoked(self, event) -> None:
        """The key this socket authenticated with was revoked (in any process)."""
        if self.handle is not None:
            await self._end(EndReason.REVOKED)
        else:
            self.principal = None
            await self.close(code=protocol.CLOSE_UNAUTHENTICATED, reason="API key revoked")

    # --- ending -------------------------------------------------------------------------------------

    async def _end(self, reason: EndReason, send: bool = True) -> None:
        if self.ended or self.handle is None:
            return
        self.ended = True
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        final = await asyncio.to_thread(self.handle.close)
        await self._release()
        data = final.as_dict()
        usage = actions.usage_dict(float(data.get("gpu_seconds", 0.0)), int(data.get("frames_out", 0)), self.price)
        await database_sync_to_async(actions.close_record)(self.record_id, str(reason), data, self.price)
        if send:
            try:
                await self.send(text_data=protocol.session_ended(reason, usage))
                await self.close(code=protocol.CLOSE_NORMAL)
            except Exception:  # the socket may already be gone; the record is what matters
                pass

    def _abandon(self, reason: EndReason) -> None:
        """End the session without the event loop (it is being cancelled): close, release, record."""
        self.ended = True
        handle, reservation, record_id = self.handle, self.reservation, self.record_id
        self.reservation = None

        def finish() -> None:
            final = handle.close()
            if reservation is not None:
                host = get_host()
                current = host.current(reservation)
                host.forget(reservation)
                host.pool.release(current)
            if record_id is not None:
                from django.db import close_old_connections

                actions.close_record(record_id, str(reason), final.as_dict(), self.price)
                close_old_connections()

        # A thread: the ORM refuses to run inside an event loop, even one being torn down.
        worker = threading.Thread(target=finish, name="nf-live-abandon", daemon=True)
        worker.start()
        worker.join(timeout=10)

    async def _release(self) -> None:
        if self.reservation is None:
            return
        reservation, self.reservation = self.reservation, None
        host = get_host()
        current = host.current(reservation)
        host.forget(reservation)
        await asyncio.to_thread(host.pool.release, current)

    async def _error(self, code: ErrorCode, message: str, retry_after_s: float | None = None) -> None:
        """Send a non-fatal `error`; skipped while the socket is backed up (nobody reads it then)."""
        if self.flow is not None and self.flow.backed_up:
            return
        await self.send(text_data=protocol.error(code, message, retry_after_s=retry_after_s))

    async def _refuse(self, code: ErrorCode, message: str, *, reason: str,
                      retry_after_s: float | None = None) -> None:
        """Refuse a session: the `error`, then the close code the registry gives that error."""
        await self.send(text_data=protocol.error(code, message, retry_after_s=retry_after_s))
        await self.close(code=close_code_for(code), reason=reason)


class UnknownPathConsumer(AsyncWebsocketConsumer):
    """Any other WebSocket path: the handshake is refused (HTTP 403) instead of a server error."""

    async def connect(self):
        await self.close()


def _is_stop(text: str | None) -> bool:
    """Whether a text message is `session.stop` (parsed only when short: this runs past the rate limit)."""
    if not isinstance(text, str) or len(text) > STOP_PARSE_MAX_CHARS:
        return False
    try:
        return isinstance(protocol.parse_client_message(text), protocol.SessionStop)
    except protocol.ProtocolError:
        return False


def _key_revoked(principal) -> bool:
    from nextframe.tenancy.models import ApiKey

    if principal is None or principal.api_key is None:
        return False
    return ApiKey.objects.filter(pk=principal.api_key.pk, revoked_at__isnull=False).exists()


def _catalog_tier(spec) -> str:
    """The tier announced in session.ready: the measured one when an audit exists."""
    try:
        from nextframe.api.catalog import evidence_for

        evidence = evidence_for(spec.id)
    except Exception:
        evidence = None
    # session.ready can only say interactive or streaming (protocol v1); a live model measured as
    # anything else keeps its declared label there, and GET /v1/models shows the disagreement.
    if evidence and evidence.get("tier") in protocol.LIVE_TIERS:
        return evidence["tier"]
    return spec.declared_tier
