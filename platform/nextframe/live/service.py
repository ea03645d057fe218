"""One live session without its socket: admission, control, frames, ticks and ending, synchronously.

The WebSocket consumer (nextframe.live.consumer) is socket plumbing over this service, the way
vLLM's async front sits over EngineCore: it parses messages, calls a method here, and turns what
comes back (the `protocol.SessionReady` to send, a `Tick`, a `Usage`, or a `Rejected`/`ControlRejected`) into protocol
messages. Everything that decides - validation, revocation, quota, reservation, the record, limits,
ending exactly once - is here and is tested without a socket (live/tests/test_service.py).

Threads: `control` and `submit_frame` never block and are called on the event loop (a control's lag
is part of the product); `start`, `tick` and `finish_end` block (database, pool) and are called off
it. `claim_end` is the cheap, thread-safe half of ending that makes it happen exactly once.

Seams for the next issues:
- prompts pass `prompt_check` at start and at each control (reject with code `moderation`; the
  default allows everything) before they reach the model;
- output frames pass the host's `frame_check` with this session's `SessionContext`, and a replaced
  frame is reported to the `on_moderation` of `SessionEvents`;
- usage and quota go through `nextframe.usage` only, written from one method (`_write_usage`).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings

from inference import protocol
from inference.error_codes import ControlRejectCode, EndReason, ErrorCode
from nextframe import usage
from nextframe.live import actions
from nextframe.live.host import LiveHost, SessionContext, get_host
from nextframe.live.models import new_session_id

if TYPE_CHECKING:
    from inference.engines.base import EngineSpec
    from inference.pool.types import Reservation
    from inference.runtime import OutputFrame, SessionFault, SessionHandle, SessionMetrics
    from nextframe.tenancy.actions import Principal

log = logging.getLogger(__name__)

# How often a running session re-reads its key's revocation from the database.
KEY_RECHECK_S = 2.0
# A session whose ticks keep failing (database unreachable, say) ends with server_error once they
# have failed MAX_FAILED_TICKS times in a row AND for LIVE_TICK_FAILURE_GRACE_S: without its ticks,
# quota, idle, duration and revocation go unenforced, but a database restart or failover (seconds)
# must not end every live session (tests/test_faults.py: 5 ticks alone ended them all 5 s into a
# 10 s outage). Frames never wait on a tick, and usage is cumulative: the first tick that succeeds
# writes what the failed ones could not.
MAX_FAILED_TICKS = 5

# (context, prompt) -> None to allow it, or the message of a `moderation` rejection.
PromptCheck = Callable[[SessionContext, str], "str | None"]


def allow_every_prompt(context: SessionContext, prompt: str) -> str | None:
    """A prompt check that lets everything pass (tests of other concerns)."""
    return None


def default_prompt_check() -> PromptCheck:
    """The prompt check named by settings.LIVE_PROMPT_CHECK (moderation.live.prompt_check)."""
    from django.utils.module_loading import import_string

    path = getattr(settings, "LIVE_PROMPT_CHECK", "")
    return import_string(path) if path else allow_every_prompt


class Rejected(Exception):
    """A client message refused with an `error` of `code`. When the registry gives the code a
    close code (inference.error_codes.close_code_for) the socket is closed after the error."""

    def __init__(self, code: ErrorCode, message: str, *, retry_after_s: float | None = None,
                 close_reason: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.retry_after_s, self.close_reason = code, message, retry_after_s, close_reason


class Redirected(Exception):
    """The pool placed the session on another node: send `message` (session.redirect), close 1000."""

    def __init__(self, message: protocol.SessionRedirect) -> None:
        super().__init__(message.url)
        self.message = message


class KeyRevoked(Exception):
    """The API key was revoked after the socket opened: close it 4401, say nothing more."""


class ControlRejected(Exception):
    """A control refused with `control.rejected` (`invalid_params` or `moderation`); the session goes on."""

    def __init__(self, seq: int, code: ControlRejectCode, message: str) -> None:
        super().__init__(message)
        self.seq, self.code, self.message = seq, code, message


class SessionEvents(Protocol):
    """What the session tells its owner, from runtime and keeper threads (never blocking)."""

    def on_output(self, out: OutputFrame) -> bool: ...
    def on_control_applied(self, seq: int, frame_index: int) -> None: ...
    def on_error(self, fault: SessionFault) -> None: ...
    def on_lease_lost(self, reason: str) -> None: ...
    def on_moderation(self, frame_index: int, category: str, *, source: str | None = None,
                      detector: str | None = None, end: bool = False) -> None: ...


@dataclass(frozen=True)
class Tick:
    """One tick: the metrics to send and, when a limit was reached, why the session must end."""

    metrics: SessionMetrics
    end: EndReason | None
    # `quota.warning` to send first (once per session, at 90% of the organisation's monthly limit).
    warning: protocol.QuotaWarning | None = None


class LiveSessionService:
    """At most one live session of one authenticated principal (one socket)."""

    def __init__(self, principal: Principal, *, host: LiveHost | None = None,
                 prompt_check: PromptCheck | None = None, clock: Callable[[], float] = time.monotonic,
                 policy: str = "default") -> None:
        self.principal = principal
        self.host = host or get_host()
        self.prompt_check = prompt_check or default_prompt_check()
        self.clock = clock
        self.policy = policy
        self.handle: SessionHandle | None = None
        self.reservation: Reservation | None = None
        # A reservation handed over by a session.redirect (nextframe.live.redirect): kept alive by
        # the host's keeper until the next start runs on it, or released with the socket.
        self.adopted: Reservation | None = None
        self.record_id: str | None = None
        self.context: SessionContext | None = None
        self.ended = False
        self._spec: EngineSpec | None = None
        self._price = "0"
        self.tier: str | None = None  # announced in session.ready (read by /metrics)
        self._last_control_seq = 0
        self._failed_ticks = 0
        self._failing_since: float | None = None
        self._warned = False
        self._warning: protocol.QuotaWarning | None = None
        self._started_at = self._last_input_at = self._next_key_check = 0.0
        self._lock = threading.Lock()
        self._shut = False  # the socket is gone: a start still in flight must undo itself
        self._admitted = False  # start() completed: the session may be ended (once)

    @property
    def admitted(self) -> bool:
        """A session was started on this service (it may have ended since)."""
        return self._admitted

    @property
    def running(self) -> bool:
        return self._admitted and not self.ended

    # --- admission ------------------------------------------------------------------------------

    def warm_engine(self, model: str) -> None:
        """Build `model`'s engine if this process has not yet (torch, weights: seconds).

        Called before `start`, off the event loop and off the database thread: a lease reserved
        before a long build went unheartbeated past its TTL (the session then ended `server_error`
        at its first heartbeat), and a build on the event loop froze every socket of the node. An
        unknown model is left for `start` to refuse with its code. Skipped on a node that cannot
        host the session (an edge node, all devices drained): it will be redirected."""
        from inference.engines import UnknownModel, get_engine

        if self.adopted is None and not self.host.pool.can_host():
            return

        try:
            get_engine(model)
        except UnknownModel:
            pass
        # The prompt check's models too (moderation's classifier: seconds on a process's first session).
        warm = getattr(self.prompt_check, "warm", None)
        if warm is not None:
            warm()

    def start(self, msg: protocol.SessionStart, events: SessionEvents) -> protocol.SessionReady:
        """Validate, check the key and the quota, reserve, open the runtime session and its record.

        Raises Rejected or KeyRevoked; whatever else fails, nothing half-started survives."""
        from inference.engines import InvalidParams, UnknownModel, get_spec
        from inference.pool import CapacityUnavailable, ConcurrencyLimit
        from inference.runtime import SessionConfig

        if self._admitted:
            raise Rejected(ErrorCode.BAD_MESSAGE, "a session is already running on this socket")
        org = self.principal.organization
        session_id = self.adopted.session_id if self.adopted is not None else new_session_id()
        try:
            spec = get_spec(msg.model)
            width, height, fps = spec.resolve_size(msg.width, msg.height, msg.fps)
            spec.validate_params(msg.params or {})
            spec.validate_prompt(msg.prompt or "")
        except UnknownModel as exc:
            raise Rejected(ErrorCode.UNKNOWN_MODEL, str(exc)) from None
        except InvalidParams as exc:
            raise Rejected(ErrorCode.INVALID_PARAMS, str(exc)) from None
        context = SessionContext(str(org.pk), session_id, spec.id, self.policy)
        refusal = self.prompt_check(context, msg.prompt or "")
        if refusal is not None:
            raise Rejected(ErrorCode.MODERATION, refusal)
        if self.key_revoked():  # and the revocation did not reach this process's channel layer
            raise KeyRevoked()
        if usage.account_suspended(org):
            raise Rejected(ErrorCode.ACCOUNT_SUSPENDED, "the organisation's account is suspended (an invoice is unpaid)",
                           close_reason="account suspended")
        if self.metered_for_quota and usage.quota_exhausted(org):
            raise Rejected(ErrorCode.QUOTA_EXCEEDED, "the organisation's monthly quota (GPU-seconds or spend) is used up",
                           close_reason="quota exceeded")
        cost = spec.cost(width, height, fps)
        try:
            self.reservation = self._place(session_id, cost.compute_share, cost.memory_bytes)
        except ConcurrencyLimit:
            raise Rejected(ErrorCode.CONCURRENCY_LIMIT,
                           f"the organisation already runs its maximum of {org.max_live_sessions} live sessions",
                           close_reason="concurrency limit") from None
        except CapacityUnavailable as exc:
            raise Rejected(ErrorCode.CAPACITY_UNAVAILABLE, "no device has room for this session right now",
                           retry_after_s=exc.retry_after_s, close_reason="no capacity") from None
        reservation = self.reservation
        try:
            tier = self.tier = catalog_tier(spec)
            runtime = self.host.runtime_for(reservation.device_id)
            config = SessionConfig(engine_id=spec.id, width=width, height=height, fps=fps, prompt=msg.prompt or "",
                                   params=msg.params or {})
            self.host.prepare(context)  # the frame checks' per-session state (database reads: here, not per frame)
            handle = self.handle = runtime.open_session(config, on_output=events.on_output,
                                                        on_control_applied=events.on_control_applied,
                                                        on_error=events.on_error)
            self.host.moderate(handle.session_id, context, events.on_moderation)
            handle.set_gpu_share(reservation.share)
            self.host.keep(reservation, events.on_lease_lost)
            # The price is fixed at admission (what session.ready announces) and read from the seam.
            self._spec, self._price, self.context = spec, str(usage.price_of(spec.id, self.principal.api_key)), context
            self._started_at = self._last_input_at = self.clock()
            self._next_key_check = self._started_at + KEY_RECHECK_S
            record = actions.open_record(
                session_id=session_id, org=org, api_key=self.principal.api_key, model=spec.id, tier=tier,
                width=handle.width, height=handle.height, fps=int(round(handle.fps)),
                device=reservation.device_id, share=reservation.share, node=reservation.node_id,
            )
            self.record_id = record.pk
        except BaseException:
            # Nothing half-started survives: no runtime session, no lease, no record, no check state.
            if self.handle is None:
                self.host.release(context)
            self._close_runtime()
            self.handle = None
            self._release()
            raise
        with self._lock:
            shut = self._shut
            self._admitted = not shut
        if shut:  # the socket went away while this ran in its thread (a server shutdown)
            self.ended = True
            self.finish_end(EndReason.SERVER_ERROR)
            raise Rejected(ErrorCode.SERVER_ERROR, "the connection closed during admission")
        return protocol.SessionReady(
            session_id=session_id, model=spec.id, tier=tier, width=handle.width, height=handle.height,
            fps=int(round(handle.fps)), frame_budget_ms=handle.frame_budget_ms, device=reservation.device_id,
            share=reservation.share, price_per_gpu_second=self._price, currency=usage.CURRENCY)

    def _place(self, session_id: str, share: float, memory_bytes: int) -> Reservation:
        """This session's reservation: the adopted one when it was made for this cost (the same
        session.start as the one redirected), else a new one; a new one the pool placed on another
        node's device is handed over (raises Redirected)."""
        from nextframe.live import redirect

        org = self.principal.organization
        adopted, self.adopted = self.adopted, None
        if adopted is not None:
            current = self.host.current(adopted)
            if self.host.holds(adopted) and abs(current.share - share) <= 1e-9 and current.memory_bytes == memory_bytes:
                return current
            self._let_go(adopted)  # lost meanwhile, or a different start than the one redirected: place anew
        pool = self.host.pool
        reservation = pool.reserve(str(org.pk), session_id, share, memory_bytes, "live", org.max_live_sessions)
        if reservation.node_id == pool.node_id:
            return reservation
        try:
            raise Redirected(redirect.hand_over(self.principal, reservation, pool))
        except redirect.Unroutable as exc:  # released by hand_over
            raise Rejected(ErrorCode.CAPACITY_UNAVAILABLE, f"the session's node cannot be reached: {exc}",
                           retry_after_s=redirect.RETRY_AFTER_S, close_reason="no capacity") from None

    def refuse_adoption(self, reservation: Reservation) -> None:
        """A redirected socket refused before its service ran (draining, no live scope): release the
        reservation it brought now rather than at its expiry."""
        self.adopted = reservation
        self.drop_adopted()

    def adopt(self, reservation: Reservation) -> bool:
        """Take over a reservation a redirect handed to this node: heartbeated at once and from then
        on, for the next `start`. False (nothing adopted) when the lease is gone already."""
        try:
            fresh = self.host.pool.heartbeat(reservation)
        except Exception as exc:  # expired (the client came late), or the pool unreachable
            log.warning("redirected reservation %s not adopted: %s", reservation.lease_id, exc)
            return False
        self.adopted = fresh
        self.host.keep(fresh, lambda reason: None)  # lost: the next start finds it gone and places anew
        return True

    def drop_adopted(self) -> None:
        """Release an adopted reservation no session ran on (the socket closes first); when the pool
        cannot be reached, the lease expires by itself within its TTL (logged, not raised)."""
        adopted, self.adopted = self.adopted, None
        if adopted is not None:
            try:
                self._let_go(adopted)
            except Exception:
                log.exception("redirected reservation %s could not be released", adopted.lease_id)

    def _let_go(self, reservation: Reservation) -> None:
        current = self.host.current(reservation)
        self.host.forget(reservation)
        try:
            self.host.pool.release(current)
        except Exception:
            # The pool is unreachable (Redis restarting): the lease expires by its TTL, and the
            # caller must still write the final usage (a raise here skipped it).
            log.exception("live session %s: its reservation could not be released; it expires by TTL",
                          self.record_id)

    @property
    def metered_for_quota(self) -> bool:
        """Whether this session counts against the quota (test-mode keys never do)."""
        key = self.principal.api_key
        return key is None or key.mode != "test"

    def key_revoked(self) -> bool:
        """Whether the principal's API key has been revoked (read from the database)."""
        from nextframe.tenancy.models import ApiKey

        key = self.principal.api_key
        return key is not None and ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=False).exists()

    # --- control and frames (non-blocking: called on the event loop) --------------------------------

    def control(self, seq: int, prompt: str | None, params: dict[str, Any] | None) -> None:
        """Queue a control for the next step; raises Rejected (no session) or ControlRejected."""
        from inference.engines import InvalidParams

        handle, spec = self._running()
        if seq <= self._last_control_seq:
            # control_seq in output headers names the newest control; an older seq would lie there.
            raise ControlRejected(seq, ControlRejectCode.INVALID_PARAMS,
                                  f"seq must increase: the last control was {self._last_control_seq}")
        try:
            if prompt is not None:
                prompt = spec.validate_prompt(prompt)
                assert self.context is not None
                refusal = self.prompt_check(self.context, prompt)
                if refusal is not None:  # the previous prompt keeps playing
                    raise ControlRejected(seq, ControlRejectCode.MODERATION, refusal)
            handle.apply_control(seq, prompt=prompt, params=params)
        except InvalidParams as exc:
            raise ControlRejected(seq, ControlRejectCode.INVALID_PARAMS, str(exc)) from None
        self._last_control_seq = seq

    def submit_frame(self, data: bytes) -> None:
        """Offer a binary input frame (latest wins); raises Rejected (no session, bad frame)."""
        from inference.engines import BadFrame

        handle, spec = self._running()
        if spec.kind != "video-to-video":
            raise Rejected(ErrorCode.BAD_FRAME, f"{spec.id} is text-to-video and takes no input frames")
        try:
            frame = protocol.unpack_input_frame(data)
            handle.submit_frame(frame.seq, frame.capture_ts_us, frame.jpeg)
        except protocol.ProtocolError as exc:
            raise Rejected(ErrorCode.BAD_FRAME, exc.message) from None
        except BadFrame as exc:
            raise Rejected(ErrorCode.BAD_FRAME, str(exc)) from None
        self._last_input_at = self.clock()

    def _running(self) -> tuple[SessionHandle, EngineSpec]:
        if self.handle is None or self._spec is None:
            raise Rejected(ErrorCode.NOT_STARTED, "no session is running; send session.start first")
        return self.handle, self._spec

    # --- ticks ----------------------------------------------------------------------------------------

    def tick(self) -> Tick:
        """About once a second: usage written, limits checked. A failing tick is logged and counted;
        MAX_FAILED_TICKS in a row over LIVE_TICK_FAILURE_GRACE_S end the session (its limits would go
        unenforced otherwise)."""
        handle, _ = self._running()
        metrics = handle.metrics()
        try:
            end = self._check_limits(metrics)
            self._failed_ticks, self._failing_since = 0, None
            warning, self._warning = self._warning, None
        except Exception:
            self._failed_ticks += 1
            now = self.clock()
            if self._failing_since is None:
                self._failing_since = now
            log.exception("live session %s: tick %d failed", self.record_id, self._failed_ticks)
            failing_for = now - self._failing_since
            given_up = (self._failed_ticks >= MAX_FAILED_TICKS
                        and failing_for >= settings.LIVE_TICK_FAILURE_GRACE_S)
            end = EndReason.SERVER_ERROR if given_up else None
            warning = None
        return Tick(metrics, end, warning)

    def _check_limits(self, metrics: SessionMetrics) -> EndReason | None:
        assert self._spec is not None
        self._write_usage(metrics.as_dict())
        now = self.clock()
        org = self.principal.organization
        # Organisation-wide, read after this session's own checkpoint (with what every running
        # session measured since its last ledger segment): concurrent sessions share one quota.
        if self.metered_for_quota:
            quota = usage.quota_state(org, *usage.live_pending(org))
            if quota.exhausted:
                return EndReason.QUOTA
            if quota.percent >= usage.WARN_PERCENT and not self._warned:
                self._warned = True
                self._warning = quota_warning(quota)
        if now - self._started_at >= settings.LIVE_MAX_DURATION_S:
            return EndReason.MAX_DURATION
        if self._spec.kind == "video-to-video" and now - self._last_input_at >= settings.LIVE_IDLE_TIMEOUT_S:
            return EndReason.IDLE
        if now >= self._next_key_check:
            # The channel-layer group reaches every process at once when the layer is shared
            # (Redis); this re-check covers a revocation made where it is not (the in-memory
            # layer of the embedded default, revoked from the CLI), still well within 5 s.
            self._next_key_check = now + KEY_RECHECK_S
            if self.key_revoked():
                return EndReason.REVOKED
        return None

    def _write_usage(self, metrics: dict[str, Any], end_reason: EndReason | None = None) -> usage.Usage:
        """The one place a live session writes usage: running totals, or the final ones."""
        assert self.record_id is not None
        return usage.record_live(self.record_id, metrics, self._price,
                                 end_reason=None if end_reason is None else str(end_reason))

    # --- ending, exactly once -------------------------------------------------------------------------

    def claim_end(self) -> bool:
        """Claim the ending of the running session (thread-safe, never blocks for long): True for the
        one caller that must then call `finish_end`, False when there is none or it is already ending."""
        with self._lock:
            if self.ended or not self._admitted:
                return False
            self.ended = True
            return True

    def finish_end(self, reason: EndReason) -> usage.Usage:
        """Close the runtime session, release the reservation, write the final usage and the end.

        The record write failing (the database is down) is logged: the capacity is free already and
        the client still gets its usage; the stale sweep ends the record at its last checkpoint."""
        final = self._close_runtime()
        self._release()
        assert final is not None
        data = final.as_dict()
        try:
            return self._write_usage(data, reason)
        except Exception:
            log.exception("live session %s: the final usage could not be written", self.record_id)
            return usage.live_usage(data, self._price)

    def end(self, reason: EndReason) -> usage.Usage | None:
        """claim_end + finish_end, for a caller that may block; None when there was nothing to end."""
        return self.finish_end(reason) if self.claim_end() else None

    def shut(self) -> None:
        """The socket is gone: a start still running in its thread will undo itself."""
        with self._lock:
            self._shut = True

    def abandon(self, reason: EndReason, timeout_s: float = 10.0) -> None:
        """End without the caller's event loop (it is being cancelled, by a server shutdown say):
        shut, then close, release and record on a thread of its own, waited for up to `timeout_s`."""
        self.shut()
        if not self.claim_end():
            if self.adopted is not None:
                threading.Thread(target=self.drop_adopted, name="nf-live-abandon", daemon=True).start()
            return

        def finish() -> None:
            from django.db import close_old_connections

            try:
                self.finish_end(reason)
            finally:
                close_old_connections()

        # A thread: the ORM refuses to run inside an event loop, even one being torn down.
        worker = threading.Thread(target=finish, name="nf-live-abandon", daemon=True)
        worker.start()
        worker.join(timeout=timeout_s)

    def _close_runtime(self) -> SessionMetrics | None:
        handle = self.handle
        if handle is None:
            return None
        final = handle.close()
        self.host.unmoderate(handle.session_id)
        return final

    def _release(self) -> None:
        reservation, self.reservation = self.reservation, None
        if reservation is not None:
            self._let_go(reservation)


def quota_warning(quota: usage.QuotaState) -> protocol.QuotaWarning:
    """`quota.warning` for the limit nearest to its end (GPU-seconds when there is one)."""
    return protocol.QuotaWarning(used_gpu_seconds=float(quota.used_gpu_seconds),
                                 limit_gpu_seconds=None if quota.limit_gpu_seconds is None
                                 else float(quota.limit_gpu_seconds),
                                 percent=usage.WARN_PERCENT)


def catalog_tier(spec: EngineSpec) -> str:
    """The tier announced in session.ready: the measured one when an audit exists.

    Reading the evidence must not refuse a session (the declared tier is then announced), but a
    failure is logged, never hidden: an import error here is a bug, not a missing audit."""
    from nextframe.api.catalog import evidence_for

    try:
        evidence = evidence_for(spec.id)
    except Exception:
        log.exception("audit evidence of %s could not be read; session.ready announces the declared tier", spec.id)
        evidence = None
    # session.ready can only say interactive or streaming (protocol v1); a live model measured as
    # anything else keeps its declared label there, and GET /v1/models shows the disagreement.
    if evidence and evidence.get("tier") in protocol.LIVE_TIERS:
        return evidence["tier"]
    return spec.declared_tier
