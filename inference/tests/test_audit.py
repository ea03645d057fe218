"""The audit harness labels engines by what they do, on the real frame loop with a fake clock.

SimulatedRuntimeTransport runs DeviceCore step by step on a FakeClock: which frame shows which
control, and what a restart forgets, are exact and reproducible; no assertion depends on the speed
of this machine (speed is measured by the real-time transports and the benchmarks).
"""
from __future__ import annotations

import asyncio

import pytest

from inference.audit import AuditPlan, Evidence, audit_live
from inference.audit.reference_engines import LATE_ENGINE_ID, LateControlEngine
from inference.audit.simulated import SimulatedRuntimeTransport
from inference.engines import register_engine, unregister_engine

PLAN = dict(sessions=2, width=64, height=64, fps=30.0, warmup_frames=2, idle_frames=12, controls=6,
            control_every=5)


# Two shared cores: torch's intra-op thread pool spins against other processes and makes a
# 64x64 step ~50x slower. The audit measures frame logic here, not speed.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def audit(model: str, **overrides) -> Evidence:
    async def go() -> Evidence:
        transport = SimulatedRuntimeTransport()
        try:
            return await audit_live(transport, model, AuditPlan(**{**PLAN, **overrides}))
        finally:
            await transport.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("model", ["dreamfield", "stylize", "backdrop"])
def test_per_frame_engines_with_controls_are_interactive(model):
    ev = audit(model)
    assert ev.tier == "interactive", ev.reasons
    # 6 probes + the return to default (backdrop's 3 modes: the 6th probe already is the default)
    sent = 6 if model == "backdrop" else 7
    assert ev.controls_sent == sent and ev.controls_landed_pixels == sent
    assert ev.control_lag_frames_pixels == 0 and ev.control_lag_frames_pixels_max == 0
    assert ev.control_lag_source == "pixels"
    assert ev.state_persistence == "persists"
    assert ev.fps_sustained == pytest.approx(30.0, rel=0.01) and ev.fps_idle == pytest.approx(30.0, rel=0.01)
    assert ev.spurious_changes == 0


def test_identity_has_no_controls_and_no_state_and_is_interactive():
    ev = audit("identity")
    assert ev.tier == "interactive", ev.reasons
    assert ev.probe is None and ev.controls_sent == 0 and ev.control_lag_frames is None
    assert ev.state_persistence == "stateless" and ev.state_memory < 1.5
    assert any("not applicable" in r for r in ev.reasons)


def test_chunked_engine_is_streaming_because_controls_land_at_the_next_chunk():
    ev = audit("dreamfield-chunked")
    assert ev.tier == "streaming", ev.reasons
    assert ev.declared_tier == "streaming"
    lags = [c["pixel_lag_frames"] for c in ev.controls]
    # Controls every 5 frames against 8-frame chunks hit every phase of a chunk: lags spread over 0..7.
    assert all(0 <= lag <= 7 for lag in lags) and len(set(lags)) >= 5
    assert ev.control_lag_frames_pixels > 1
    assert ev.state_persistence == "persists"


def test_an_engine_that_lies_about_its_tier_is_labelled_by_what_it_does(liar):
    ev = audit(LATE_ENGINE_ID)
    assert ev.declared_tier == "interactive"
    assert ev.tier == "streaming", ev.reasons
    assert ev.control_lag_frames_pixels == 3 and ev.control_lag_frames_header == 3
    assert ev.control_lag_frames_pixels_max == 3


def test_late_pixels_behind_an_honest_header_are_caught_by_the_pixel_detector():
    register_engine(LateControlEngine(delay_frames=3, late_header=False))
    try:
        ev = audit(LATE_ENGINE_ID)
    finally:
        unregister_engine(LATE_ENGINE_ID)
    assert ev.control_lag_frames_header == 0  # the server claims every control lands at once
    assert ev.control_lag_frames_pixels == 3
    assert ev.tier == "streaming"
    assert any("headers claim" in r for r in ev.reasons)


def test_a_late_header_over_prompt_pixels_does_not_cost_the_label():
    register_engine(LateControlEngine(delay_frames=3, late_pixels=False))
    try:
        ev = audit(LATE_ENGINE_ID)
    finally:
        unregister_engine(LATE_ENGINE_ID)
    assert ev.control_lag_frames_pixels == 0 and ev.control_lag_frames_header == 3
    assert ev.tier == "interactive"


def test_audit_needs_two_sessions():
    with pytest.raises(ValueError):
        AuditPlan(sessions=1)
