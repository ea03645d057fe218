"""The written-down classification rules and the probe choice (the clip tier: test_audit_clip.py)."""
from __future__ import annotations

from typing import Any

import pytest

from inference.audit import Evidence, classify
from inference.audit.classifier import state_verdict
from inference.audit.pixels import change_threshold, choose_probe
from inference.audit.ws_transport import models_url
from inference.engines import get_spec


def evidence(**kw) -> Evidence:
    base: dict[str, Any] = dict(model="m", kind="text-to-video", transport="test", width=64, height=64, fps=30.0, sessions=3,
                ttff_ms=20.0, fps_idle=30.0, fps_sustained=29.0, state_persistence="persists")
    base.update(kw)
    ev = Evidence(**base)
    return ev


def with_lag(ev: Evidence, frames: float, source: str = "pixels") -> Evidence:
    ev.controls_sent, ev.controls_landed_pixels, ev.mid_run_control = 6, 6, True
    ev.control_lag_frames, ev.control_lag_source = frames, source
    ev.control_lag_frames_pixels = frames if source == "pixels" else None
    return ev


def test_lag_of_at_most_one_frame_with_fps_holding_and_state_is_interactive():
    assert classify(with_lag(evidence(), 1))[0] == "interactive"
    assert classify(with_lag(evidence(), 0))[0] == "interactive"


def test_lag_over_one_frame_is_streaming():
    tier, reasons = classify(with_lag(evidence(), 1.5))
    assert tier == "streaming" and any("land late" in r for r in reasons)


def test_fps_that_drops_during_interaction_is_not_interactive():
    tier, reasons = classify(with_lag(evidence(fps_sustained=20.0, fps_idle=30.0), 0))
    assert tier == "streaming" and any("FPS drops" in r for r in reasons)
    assert classify(with_lag(evidence(fps_sustained=24.0, fps_idle=30.0), 0))[0] == "interactive"  # exactly 0.8


def test_inconsistent_state_is_not_interactive():
    assert classify(with_lag(evidence(state_persistence="inconsistent"), 0))[0] == "streaming"
    assert classify(with_lag(evidence(state_persistence="stateless"), 0))[0] == "interactive"


def test_first_output_only_with_the_whole_output_is_fast_batch():
    tier, reasons = classify(evidence(ttff_ms=950.0, complete_ms=1000.0))
    assert tier == "fast-batch" and "95%" in reasons[0]
    assert classify(with_lag(evidence(ttff_ms=100.0, complete_ms=1000.0), 0))[0] == "interactive"


def test_controls_that_never_show_mean_no_mid_run_control():
    ev = evidence()
    ev.controls_sent, ev.mid_run_control = 6, False
    assert classify(ev)[0] == "fast-batch"


def test_state_verdicts():
    assert state_verdict(memory=0.2, continuity=3.0, restart_gap=3.0)[0] == "stateless"
    verdict, score, ratio = state_verdict(memory=60.0, continuity=2.0, restart_gap=50.0)
    assert verdict == "persists" and ratio == pytest.approx(0.04) and score == pytest.approx(0.96)
    assert state_verdict(memory=40.0, continuity=45.0, restart_gap=44.0)[0] == "inconsistent"


def test_probe_is_an_enum_cycle_or_a_float_sweep_ending_at_the_default():
    dream = choose_probe([p.to_dict() for p in get_spec("dreamfield").params])
    assert dream.param == "palette" and dream.values[-1] == "natural" and len(set(dream.values)) == 5
    style = choose_probe([p.to_dict() for p in get_spec("stylize").params])
    assert style.param == "strength" and style.values == (0.0, 0.5, 0.25, 0.7)
    hue = choose_probe([p.to_dict() for p in get_spec("stylize").params], name="hue")
    assert hue.values == (-180.0, -90.0, 0.0)  # never both -180 and 180: the same rotation
    assert choose_probe([]) is None
    with pytest.raises(ValueError):
        choose_probe([p.to_dict() for p in get_spec("stylize").params], name="nope")


def test_change_threshold_stands_above_idle_motion():
    assert change_threshold([]) == 3.0
    assert change_threshold([1.0, 2.0, 8.0]) == pytest.approx(12.0)


def test_models_url_is_derived_from_the_live_url():
    assert models_url("ws://h:8000/v1/live") == "http://h:8000/v1/models"
    assert models_url("wss://api.example.com/v1/live?x=1") == "https://api.example.com/v1/models"


def test_table_shows_the_verdict_the_disagreement_and_why():
    from inference.audit.report import format_table

    ev = with_lag(evidence(declared_tier="interactive"), 3)
    ev.tier, ev.reasons = classify(ev)
    text = format_table(ev)
    assert "streaming" in text and "declared interactive: DISAGREES" in text and "land late" in text


def test_a_session_whose_capacity_was_taken_back_stops_the_audit():
    import asyncio

    from inference.audit import AuditError, RuntimeTransport

    async def go() -> str:
        transport = RuntimeTransport()
        try:
            sess = await transport.open("identity", 64, 64, 30.0)
            transport.lost = "preempted by a live session"
            try:
                await sess.next_frame(0.1)
            except AuditError as exc:
                return exc.code
            finally:
                await sess.close()
            return "no error"
        finally:
            await transport.aclose()

    assert asyncio.run(go()) == "preempted"


def test_a_forced_probe_the_model_cannot_steer_is_a_plan_error_not_no_param():
    import asyncio

    from inference.audit import AuditPlan, AuditPlanError, SimulatedRuntimeTransport, audit_live

    with pytest.raises(ValueError, match="cannot be probed"):
        choose_probe([{"name": "on", "type": "bool", "default": False}], name="on")

    async def go() -> None:
        transport = SimulatedRuntimeTransport()
        try:
            await audit_live(transport, "identity", AuditPlan(sessions=2, probe_param="strength"))
        finally:
            await transport.aclose()

    with pytest.raises(AuditPlanError, match="no param 'strength'"):
        asyncio.run(go())


async def test_ws_transport_frames_without_an_input_do_not_claim_one() -> None:
    # The wire header's "no input" (0xFFFFFFFF) reaches the client as input_seq=None; the audit's
    # frames must still read has_input False, or text-to-video frames land in the input index.
    from inference import protocol
    from inference.audit.ws_transport import _WsSession
    from inference.client import ReceivedFrame

    class Client:
        async def __aiter__(self):
            for index, seq in enumerate((None, 7)):
                yield ReceivedFrame(protocol.OutputFrameHeader(index, seq, 0, 0), b"\xff\xd8", 1.0)

    session = _WsSession(None, Client())  # type: ignore[arg-type]
    first, second = await session._inbox.get(5), await session._inbox.get(5)
    assert first is not None and second is not None
    assert (first.has_input, second.has_input) == (False, True) and second.input_seq == 7
    session._pump.cancel()
