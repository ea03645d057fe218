"""The live session service without a socket: a real pool and DeviceRuntime on the CPU, the real
database, a fake clock where timing matters. What the consumer turns into protocol messages is
decided here: admission, refusals, prompt and frame moderation seams, ticks, ending exactly once."""
from __future__ import annotations

import threading
import time
from decimal import Decimal

import numpy as np
import pytest
import simplejpeg

from inference import protocol
from inference.error_codes import ControlRejectCode, EndReason, ErrorCode
from inference.runtime import FakeClock
from nextframe import usage
from nextframe.live import actions as live_actions
from nextframe.live.host import FrameVerdict, LiveHost
from nextframe.live.models import LiveSession
from nextframe.live.service import (
    MAX_FAILED_TICKS,
    ControlRejected,
    KeyRevoked,
    LiveSessionService,
    Rejected,
)
from nextframe.tenancy import actions as tenancy

pytestmark = pytest.mark.django_db


class Events:
    """SessionEvents that record what the runtime tells the session's owner."""

    def __init__(self) -> None:
        self.outputs: list = []
        self.applied: list[tuple[int, int]] = []
        self.errors: list = []
        self.lost: list[str] = []
        self.moderated: list[tuple[int, str]] = []
        self.got_output = threading.Event()

    def on_output(self, out) -> bool:
        self.outputs.append(out)
        self.got_output.set()
        return True

    def on_control_applied(self, seq: int, frame_index: int) -> None:
        self.applied.append((seq, frame_index))

    def on_error(self, fault) -> None:
        self.errors.append(fault)

    def on_lease_lost(self, reason: str) -> None:
        self.lost.append(reason)

    def on_moderation(self, frame_index: int, category: str) -> None:
        self.moderated.append((frame_index, category))


def start_msg(model: str = "dreamfield", **fields) -> protocol.SessionStart:
    text = protocol.SessionStart(model=model, width=fields.pop("width", 64), height=fields.pop("height", 64),
                                 fps=fields.pop("fps", 30), **fields).to_json()
    message = protocol.parse_client_message(text)
    assert isinstance(message, protocol.SessionStart)
    return message


def wait_for(predicate, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def principal(live_pool):
    live_pool(1.0)
    org = tenancy.create_org("acme", max_live_sessions=2)
    return tenancy.authenticate_key(tenancy.create_key(org)[1])


def leases():
    from nextframe.capacity import get_pool

    return get_pool().active_leases()


def test_a_session_is_admitted_reserved_recorded_and_ended_exactly_once(principal):
    service = LiveSessionService(principal)
    events = Events()
    ready = service.start(start_msg(prompt="ocean"), events)
    assert ready.model == "dreamfield" and ready.width == 64 and ready.share > 0 and ready.tier == "interactive"
    assert len(leases()) == 1 and service.running
    record = LiveSession.objects.get(pk=ready.session_id)
    assert record.status == "active" and record.organization_id == principal.organization.pk
    assert events.got_output.wait(10)

    assert service.claim_end() and not service.claim_end()  # exactly one caller finishes the ending
    used = service.finish_end(EndReason.CLIENT)
    assert service.end(EndReason.SERVER_ERROR) is None
    assert leases() == [] and not service.running
    record.refresh_from_db()
    assert record.status == "ended" and record.end_reason == "client"
    assert used.frames == record.frames >= 1 and used.gpu_seconds == record.gpu_seconds
    # The ledger holds exactly what the client is told (docs/billing.md).
    from billing.models import Segment
    ledger = Segment.objects.filter(source="live", source_id=record.pk)
    assert sum(s.gpu_seconds for s in ledger) == used.gpu_seconds and sum(s.amount for s in ledger) == used.cost
    assert used.cost == usage.cost_of(used.gpu_seconds, "0.0004") and used.as_dict()["currency"] == "usd"
    count = len(events.outputs)
    time.sleep(0.2)
    assert len(events.outputs) == count  # no callback after the end


@pytest.mark.parametrize("msg, code", [
    (lambda: start_msg("no-such-model"), ErrorCode.UNKNOWN_MODEL),
    (lambda: start_msg(params={"speed": 10**400}), ErrorCode.INVALID_PARAMS),
    (lambda: start_msg(params={"palette": 42}), ErrorCode.INVALID_PARAMS),
])
def test_invalid_starts_are_rejected_without_reserving_and_the_socket_may_try_again(principal, msg, code):
    service = LiveSessionService(principal)
    with pytest.raises(Rejected) as refused:
        service.start(msg(), Events())
    assert refused.value.code == code and refused.value.close_reason == ""
    assert leases() == [] and LiveSession.objects.count() == 0
    service.start(start_msg(), Events())  # the same service (socket) can still start a session
    service.end(EndReason.CLIENT)


def test_quota_concurrency_and_capacity_refusals_close_and_reserve_nothing(live_pool, db):
    live_pool(0.1)  # room for one 64x64 dreamfield session (0.075 share)
    org = tenancy.create_org("tight", max_live_sessions=1)
    principal = tenancy.authenticate_key(tenancy.create_key(org)[1])
    first = LiveSessionService(principal)
    first.start(start_msg(), Events())
    with pytest.raises(Rejected) as refused:
        LiveSessionService(principal).start(start_msg(), Events())
    assert refused.value.code == ErrorCode.CONCURRENCY_LIMIT and refused.value.close_reason == "concurrency limit"

    other = tenancy.create_org("other", max_live_sessions=3)
    with pytest.raises(Rejected) as refused:
        LiveSessionService(tenancy.authenticate_key(tenancy.create_key(other)[1])).start(start_msg(), Events())
    assert refused.value.code == ErrorCode.CAPACITY_UNAVAILABLE and refused.value.retry_after_s
    first.end(EndReason.CLIENT)

    broke = tenancy.create_org("broke", gpu_seconds_limit=Decimal(0))
    with pytest.raises(Rejected) as refused:
        LiveSessionService(tenancy.authenticate_key(tenancy.create_key(broke)[1])).start(start_msg(), Events())
    assert refused.value.code == ErrorCode.QUOTA_EXCEEDED and refused.value.close_reason == "quota exceeded"
    assert leases() == [] and LiveSession.objects.filter(status="active").count() == 0


def test_a_key_revoked_after_connecting_cannot_start(principal):
    tenancy.revoke_key(principal.api_key)
    with pytest.raises(KeyRevoked):
        LiveSessionService(principal).start(start_msg(), Events())
    assert leases() == []


def test_a_failure_after_reserving_leaves_nothing_half_started(principal, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(live_actions, "open_record", broken)
    service = LiveSessionService(principal)
    with pytest.raises(RuntimeError):
        service.start(start_msg(), Events())
    assert leases() == [] and service.handle is None and not service.running
    assert service.host.runtime_for("test/cpu:0").session_count() == 0


def test_a_start_whose_socket_went_away_meanwhile_undoes_itself(principal):
    """A server shutdown cancels the consumer while start() still runs in its thread."""
    service = LiveSessionService(principal)
    service.shut()
    with pytest.raises(Rejected):
        service.start(start_msg(), Events())
    assert leases() == [] and not service.claim_end()
    record = LiveSession.objects.get()
    assert record.status == "ended" and record.end_reason == "server_error"


# -- the prompt-moderation seam -----------------------------------------------------------------------

def test_the_prompt_check_sees_the_session_context_at_start_and_at_control(principal):
    seen = []

    def no_volcanoes(context, prompt: str) -> str | None:
        seen.append((context, prompt))
        return "volcanoes are not allowed" if "volcano" in prompt else None

    with pytest.raises(Rejected) as refused:
        LiveSessionService(principal, prompt_check=no_volcanoes).start(start_msg(prompt="a volcano"), Events())
    assert refused.value.code == ErrorCode.MODERATION and leases() == []

    service = LiveSessionService(principal, prompt_check=no_volcanoes, policy="strict")
    events = Events()
    ready = service.start(start_msg(prompt="ocean"), events)
    context = seen[-1][0]
    assert (context.organization_id, context.session_id, context.policy) == (
        str(principal.organization.pk), ready.session_id, "strict")
    with pytest.raises(ControlRejected) as rejected:
        service.control(1, "volcano at dusk", None)
    assert rejected.value.code == ControlRejectCode.MODERATION and rejected.value.seq == 1
    service.control(2, "forest", None)  # the rejected seq was not taken: 2 is the next control
    wait_for(lambda: events.applied)
    assert [seq for seq, _ in events.applied] == [2]
    service.end(EndReason.CLIENT)


def test_controls_must_increase_and_be_valid(principal):
    service = LiveSessionService(principal)
    with pytest.raises(Rejected) as refused:
        service.control(1, None, {"zoom": 2})
    assert refused.value.code == ErrorCode.NOT_STARTED
    service.start(start_msg(), Events())
    service.control(7, None, {"zoom": 2})
    for seq in (7, 3):
        with pytest.raises(ControlRejected) as rejected:
            service.control(seq, None, {"zoom": 3})
        assert rejected.value.code == ControlRejectCode.INVALID_PARAMS and "increase" in rejected.value.message
    with pytest.raises(ControlRejected) as rejected:
        service.control(8, None, {"zoom": "huge"})
    assert rejected.value.code == ControlRejectCode.INVALID_PARAMS
    service.end(EndReason.CLIENT)


# -- the frame-moderation seam ------------------------------------------------------------------------

def test_the_frame_check_gets_the_session_context_and_replaced_frames_reach_on_moderation(principal):
    contexts = []

    def blackout(context, frame_index: int, pixels: np.ndarray):
        contexts.append(context)
        return FrameVerdict("test-category", np.zeros_like(pixels)) if frame_index % 2 == 0 else None

    host = LiveHost(frame_check=blackout)
    try:
        service = LiveSessionService(principal, host=host)
        events = Events()
        ready = service.start(start_msg(prompt="ocean"), events)
        wait_for(lambda: len(events.outputs) >= 4)
        service.end(EndReason.CLIENT)
    finally:
        host.shutdown()
    assert {(c.session_id, c.organization_id, c.model) for c in contexts} == {
        (ready.session_id, str(principal.organization.pk), "dreamfield")}
    replaced = {index for index, category in events.moderated if category == "test-category"}
    for out in events.outputs:
        dark = simplejpeg.decode_jpeg(out.jpeg).mean() < 8
        assert dark == (out.frame_index in replaced) == (out.frame_index % 2 == 0)


def test_without_a_frame_check_the_runtimes_run_without_a_hook(principal):
    host = LiveHost()
    try:
        assert host.runtime_for("test/cpu:0").core.moderation_hook is None
    finally:
        host.shutdown()


# -- ticks: usage and limits, on a fake clock ---------------------------------------------------------

def test_ticks_write_usage_and_end_an_idle_video_session(principal, settings):
    settings.LIVE_IDLE_TIMEOUT_S = 30
    clock = FakeClock()
    service = LiveSessionService(principal, clock=clock.now)
    ready = service.start(start_msg("identity"), Events())
    time.sleep(0.2)  # gpu_seconds accrue on the runtime's own clock
    assert service.tick().end is None
    record = LiveSession.objects.get(pk=ready.session_id)
    assert record.gpu_seconds > 0 and record.cost > 0 and record.status == "active"
    clock.advance(29)
    assert service.tick().end is None
    clock.advance(1)
    assert service.tick().end == EndReason.IDLE
    service.end(EndReason.IDLE)


def test_max_duration_and_a_revocation_seen_within_the_recheck(principal, settings):
    settings.LIVE_MAX_DURATION_S = 60
    clock = FakeClock()
    service = LiveSessionService(principal, clock=clock.now)
    service.start(start_msg(), Events())
    tenancy.revoke_key(principal.api_key)
    clock.advance(1)
    assert service.tick().end is None  # the key is re-read every KEY_RECHECK_S
    clock.advance(1)
    assert service.tick().end == EndReason.REVOKED
    clock.advance(58)
    assert service.tick().end == EndReason.MAX_DURATION
    service.end(EndReason.MAX_DURATION)


def test_the_organisation_quota_running_out_ends_the_session(live_pool, db):
    live_pool(1.0)
    org = tenancy.create_org("metered", gpu_seconds_limit=Decimal("0.001"))
    service = LiveSessionService(tenancy.authenticate_key(tenancy.create_key(org)[1]))
    service.start(start_msg(), Events())
    wait_for(lambda: service.handle.metrics().gpu_seconds > 0.001)
    assert service.tick().end == EndReason.QUOTA
    service.end(EndReason.QUOTA)
    assert usage.quota_exhausted(org)


def test_failing_ticks_end_the_session_after_a_bound_and_it_still_ends_cleanly(principal, monkeypatch, settings):
    def locked(*args, **kwargs):
        raise RuntimeError("database is locked")

    settings.LIVE_TICK_FAILURE_GRACE_S = 0.0
    service = LiveSessionService(principal)
    service.start(start_msg(), Events())
    monkeypatch.setattr(usage, "record_live", locked)
    ends = [service.tick().end for _ in range(MAX_FAILED_TICKS)]
    assert ends == [None] * (MAX_FAILED_TICKS - 1) + [EndReason.SERVER_ERROR]
    used = service.end(EndReason.SERVER_ERROR)  # the final write fails too: capacity is freed anyway
    assert used is not None and used.frames >= 0 and leases() == []


def test_ticks_failing_for_less_than_the_grace_do_not_end_the_session(principal, monkeypatch, settings):
    """A database outage of 10 s (a restart, a failover) fails ten ticks: the session runs on and the
    first tick that succeeds writes the usage; only failures past the grace end it."""
    settings.LIVE_TICK_FAILURE_GRACE_S = 12.0
    clock = FakeClock()
    service = LiveSessionService(principal, clock=clock.now)
    service.start(start_msg(), Events())
    real = usage.record_live
    down = True

    def flaky(*args, **kwargs):
        if down:
            raise RuntimeError("connection refused")
        return real(*args, **kwargs)

    monkeypatch.setattr(usage, "record_live", flaky)
    ends = []
    for _ in range(11):  # 0 .. 10 s
        ends.append(service.tick().end)
        clock.advance(1.0)
    assert ends == [None] * 11
    down = False
    assert service.tick().end is None  # recovered: the count starts again
    down = True
    ends = []
    for _ in range(13):  # failing from 0 s: the tick at 12 s is the first past the grace
        ends.append(service.tick().end)
        clock.advance(1.0)
    assert ends == [None] * 12 + [EndReason.SERVER_ERROR]
    service.end(EndReason.SERVER_ERROR)
