"""The live WebSocket endpoint, protocol v1 (docs/protocol.md): thin glue between a socket and the
frame loop in `inference.runtime`.

Frames never travel through the channel layer: binary input goes straight into the session's
latest-wins slot, output frames come back from the runtime's worker threads into a small bounded
buffer and out of the socket. The channel layer carries only control-plane events (key revoked).
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
from nextframe.live import actions
from nextframe.live.host import get_host
from nextframe.live.models import new_session_id
from nextframe.tenancy import actions as tenancy

log = logging.getLogger(__name__)

# Output frames waiting for the socket. Small on purpose: a slow reader loses frames (counted by
# the runtime as dropped outputs) instead of growing a backlog of stale video.
OUTPUT_BUFFER = 2
# How often a running session re-reads its key's revocation from the database.
KEY_RECHECK_S = 2.0
# A record whose process stopped checkpointing this long ago belongs to a dead process.
STALE_RECORD_S = 60.0
_swept = False


class LiveConsumer(AsyncWebsocketConsumer):
    """One WebSocket = at most one live session at a time."""

    async def connect(self):
        self.principal = None
        self.handle = None
        self.reservation = None
        self.record_id = None
        self.ended = False
        self.tasks: list[asyncio.Task] = []
        self.loop = asyncio.get_running_loop()
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.pending = 0
        self.pending_lock = threading.Lock()
        self.group = None
        self.text_tokens = float(settings.LIVE_TEXT_RATE_PER_S)
        self.text_refill_at = time.monotonic()
        try:
            self.principal = await self._authenticate()
        except tenancy.AuthError as exc:
            await self.accept()
            await self.close(code=protocol.CLOSE_UNAUTHENTICATED, reason=str(exc)[:120])
            return
        await self.accept()
        if not self.principal.has_scope("live"):
            await self.close(code=protocol.CLOSE_FORBIDDEN, reason="this API key lacks the 'live' scope")
            return
        global _swept
        if not _swept:
            _swept = True
            # Records left `active` by a process that died (no checkpoint for a minute) are ended.
            await database_sync_to_async(actions.sweep_stale)(STALE_RECORD_S)
        if self.principal.api_key is not None:
            self.group = tenancy.key_group(self.principal.api_key.key_id)
            await self.channel_layer.group_add(self.group, self.channel_name)

    @database_sync_to_async
    def _authenticate(self) -> tenancy.Principal:
        headers = dict(self.scope.get("headers") or [])
        auth = headers.get(b"authorization", b"").decode("latin-1").strip()
        if auth:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise tenancy.AuthError("Authorization header must be 'Bearer <api key>'")
            return tenancy.authenticate_key(token.strip())
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        ticket = (query.get("ticket") or [""])[0]
        if ticket:
            return tenancy.redeem_ticket(ticket)
        raise tenancy.AuthError("missing credentials: 'Authorization: Bearer <api key>' or ?ticket=")

    # --- socket events --------------------------------------------------------------------------

    async def disconnect(self, code):
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        # A client that vanishes without session.stop still frees its reservation and is recorded.
        await self._end("client", send=False)

    async def receive(self, text_data=None, bytes_data=None):
        if self.principal is None or (self.ended and self.handle is not None):
            return
        if bytes_data is not None:
            await self._on_frame(bytes_data)
            return
        if not self._take_text_token():
            await self._error("rate_limited", f"more than {settings.LIVE_TEXT_RATE_PER_S} text messages per second",
                              retry_after_s=1)
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
            if self.handle is None:
                await self._error("not_started", "no session is running; send session.start first")
            else:
                await self._end("client")

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
        from inference.engines import InvalidParams, UnknownModel, get_spec
        from inference.pool import CapacityUnavailable, ConcurrencyLimit
        from inference.runtime import SessionConfig

        if self.handle is not None or self.ended:
            await self._error("bad_message", "a session is already running on this socket")
            return
        try:
            spec = get_spec(msg.model)
            config = SessionConfig(engine_id=msg.model, width=msg.width, height=msg.height, fps=msg.fps,
                                   prompt=msg.prompt or "", params=msg.params or {})
            width, height, fps, params = _resolve(spec, config)
        except UnknownModel as exc:
            await self._error("unknown_model", str(exc))
            return
        except InvalidParams as exc:
            await self._error("invalid_params", str(exc))
            return
        org = self.principal.organization
        remaining = await database_sync_to_async(actions.quota_remaining)(org)
        if remaining is not None and remaining <= 0:
            await self._error("quota_exceeded", "the organisation's monthly GPU-seconds are used up")
            await self.close(code=protocol.CLOSE_FORBIDDEN)
            return
        self.quota_remaining = remaining
        cost = spec.cost(width, height, fps)
        session_id = new_session_id()
        host = get_host()
        try:
            self.reservation = await asyncio.to_thread(
                host.pool.reserve, str(org.pk), session_id, cost.compute_share, cost.memory_bytes, "live",
                org.max_live_sessions,
            )
        except ConcurrencyLimit as exc:
            await self._error("concurrency_limit", f"the organisation already runs its maximum of {org.max_live_sessions} live sessions")
            await self.close(code=protocol.CLOSE_CONCURRENCY)
            return
        except CapacityUnavailable as exc:
            await self._error("capacity_unavailable", "no device has room for this session right now",
                              retry_after_s=exc.retry_after_s)
            await self.close(code=protocol.CLOSE_TRY_AGAIN)
            return
        try:
            runtime = host.runtime_for(self.reservation.device_id)
            self.handle = runtime.open_session(
                config, on_output=self._on_output_threadsafe,
                on_control_applied=self._on_control_applied_threadsafe, on_error=self._on_error_threadsafe,
            )
            self.handle.set_gpu_share(self.reservation.share)
            host.keep(self.reservation, self._on_lease_lost_threadsafe)
            self.price = spec.price_per_gpu_second
            self.spec = spec
            self.started_at = time.monotonic()
            self.last_input_at = self.started_at
            record = await database_sync_to_async(actions.open_record)(
                session_id=session_id, org=org, api_key=self.principal.api_key, model=spec.id,
                tier=spec.declared_tier, width=self.handle.width, height=self.handle.height, fps=int(round(self.handle.fps)),
                device=self.reservation.device_id, share=self.reservation.share, node=self.reservation.node_id,
            )
            self.record_id = record.pk
        except Exception as exc:
            log.exception("could not start a live session")
            await self._release()
            msg_type = getattr(exc, "code", None)
            if msg_type in ("invalid_params", "unknown_model"):
                await self._error(msg_type, str(exc))
                return
            await self._error("bad_message", "the session could not be started")
            return
        tier = await database_sync_to_async(_catalog_tier)(spec)
        await self.send(text_data=protocol.session_ready(
            session_id=session_id, model=spec.id, tier=tier, width=self.handle.width,
            height=self.handle.height, fps=int(round(self.handle.fps)), frame_budget_ms=self.handle.frame_budget_ms,
            device=self.reservation.device_id, share=self.reservation.share, price_per_gpu_second=spec.price_per_gpu_second, currency=actions.CURRENCY,
        ))
        self.tasks = [asyncio.create_task(self._sender()), asyncio.create_task(self._ticker())]

    # --- control and frames -----------------------------------------------------------------------

    async def _on_control(self, msg) -> None:
        from inference.engines import InvalidParams

        if self.handle is None:
            await self._error("not_started", "no session is running; send session.start first")
            return
        try:
            self.handle.apply_control(msg.seq, prompt=msg.prompt, params=msg.params)
        except InvalidParams as exc:
            await self.send(text_data=protocol.control_rejected(msg.seq, "invalid_params", str(exc)))

    async def _on_frame(self, data: bytes) -> None:
        from inference.engines import BadFrame

        if self.handle is None:
            await self._error("not_started", "no session is running; send session.start first")
            return
        if self.spec.kind != "video-to-video":
            await self._error("bad_frame", f"{self.spec.id} is text-to-video and takes no input frames")
            return
        try:
            frame = protocol.unpack_input_frame(data)
            self.handle.submit_frame(frame.seq, frame.capture_ts_us, frame.jpeg)
        except protocol.ProtocolError as exc:
            await self._error("bad_frame", exc.message)
            return
        except BadFrame as exc:
            await self._error("bad_frame", str(exc))
            return
        self.last_input_at = time.monotonic()

    # --- callbacks from runtime threads -------------------------------------------------------------

    def _on_output_threadsafe(self, out) -> bool:
        with self.pending_lock:
            if self.pending >= OUTPUT_BUFFER or self.ended:
                return False
            self.pending += 1
        self.loop.call_soon_threadsafe(self.outbox.put_nowait, ("frame", out))
        return True

    def _on_control_applied_threadsafe(self, seq: int, frame_index: int) -> None:
        self.loop.call_soon_threadsafe(self.outbox.put_nowait, ("text", protocol.control_applied(seq, frame_index)))

    def _on_error_threadsafe(self, code: str, message: str) -> None:
        self.loop.call_soon_threadsafe(self.outbox.put_nowait, ("text", protocol.error(code, message)))

    def _on_lease_lost_threadsafe(self, reason: str) -> None:
        log.warning("live session %s lost its reservation (%s)", self.record_id, reason)
        self.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._end("server_error")))

    async def _sender(self) -> None:
        while True:
            kind, item = await self.outbox.get()
            if kind == "frame":
                with self.pending_lock:
                    self.pending -= 1
                await self.send(bytes_data=protocol.pack_output_frame(
                    item.frame_index, item.input_seq, item.input_capture_ts_us, item.control_seq, item.jpeg))
            else:
                await self.send(text_data=item)

    async def _ticker(self) -> None:
        """About once a second: metrics to the client, usage to the database, limits checked."""
        interval = settings.LIVE_METRICS_INTERVAL_S
        next_key_check = time.monotonic() + KEY_RECHECK_S
        while not self.ended:
            await asyncio.sleep(interval)
            if self.ended:
                return
            metrics = self.handle.metrics()
            data = metrics.as_protocol_dict()
            await self.send(text_data=protocol.metrics(data))
            await database_sync_to_async(actions.checkpoint)(self.record_id, metrics.as_dict(), self.price)
            now = time.monotonic()
            if self.quota_remaining is not None and data["gpu_seconds"] >= float(self.quota_remaining):
                await self._end("quota")
            elif now - self.started_at >= settings.LIVE_MAX_DURATION_S:
                await self._end("max_duration")
            elif self.spec.kind == "video-to-video" and now - self.last_input_at >= settings.LIVE_IDLE_TIMEOUT_S:
                await self._end("idle")
            elif now >= next_key_check:
                # The channel-layer group reaches every process at once when the layer is shared
                # (Redis); this re-check covers a revocation made where it is not (the in-memory
                # layer of the embedded default, revoked from the CLI), still well within 5 s.
                next_key_check = now + KEY_RECHECK_S
                if await database_sync_to_async(_key_revoked)(self.principal):
                    await self._end("revoked")

    # --- channel-layer events -----------------------------------------------------------------------

    async def key_revoked(self, event) -> None:
        """The key this socket authenticated with was revoked (in any process)."""
        if self.handle is not None:
            await self._end("revoked")
        else:
            await self.close(code=protocol.CLOSE_UNAUTHENTICATED, reason="API key revoked")

    # --- ending -------------------------------------------------------------------------------------

    async def _end(self, reason: str, send: bool = True) -> None:
        if self.ended or self.handle is None:
            self.ended = True
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
        await database_sync_to_async(actions.close_record)(self.record_id, reason, data, self.price)
        if send:
            try:
                await self.send(text_data=protocol.session_ended(reason, usage))
                await self.close(code=protocol.CLOSE_NORMAL)
            except Exception:  # the socket may already be gone; the record is what matters
                pass

    async def _release(self) -> None:
        if self.reservation is None:
            return
        host = get_host()
        reservation = host.current(self.reservation)
        host.forget(self.reservation)
        await asyncio.to_thread(host.pool.release, reservation)
        self.reservation = None

    async def _error(self, code: str, message: str, retry_after_s: float | None = None) -> None:
        await self.send(text_data=protocol.error(code, message, retry_after_s=retry_after_s))


def _resolve(spec, config):
    """Session size, fps and params after defaults and validation (raises InvalidParams)."""
    from inference.engines import InvalidParams

    width = config.width or spec.default_width
    height = config.height or spec.default_height
    fps = config.fps or spec.default_fps
    if width > spec.max_width or height > spec.max_height:
        raise InvalidParams(f"{width}x{height} exceeds {spec.id}'s maximum of {spec.max_width}x{spec.max_height}")
    if fps > spec.max_fps:
        raise InvalidParams(f"fps {fps} exceeds {spec.id}'s maximum of {spec.max_fps}")
    params = spec.validate_params(config.params or {})
    return width, height, fps, params


def _key_revoked(principal) -> bool:
    from nextframe.tenancy.models import ApiKey

    if principal.api_key is None:
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
