"""EdfScheduler and StepTimeModel: pure decisions, no clock, no threads."""
from __future__ import annotations

from inference.runtime.scheduler import Candidate, EdfScheduler, StepTimeModel


def _sched(per_item: float, max_batch: int = 8) -> EdfScheduler:
    times = StepTimeModel()
    for key in ("a", "b"):
        times.prime(key, per_item)
    return EdfScheduler(times, max_batch=max_batch)


def test_nothing_ready_means_no_batch():
    assert _sched(0.01).pick([], now=0.0) == []


def test_earliest_deadline_heads_the_batch_and_only_its_key_joins():
    s = _sched(0.001)
    cands = [Candidate("late-a", "a", 0.9), Candidate("soon-b", "b", 0.2), Candidate("mid-b", "b", 0.5)]
    assert [c.session_id for c in s.pick(cands, now=0.0)] == ["soon-b", "mid-b"]


def test_a_member_joins_only_if_every_deadline_still_holds():
    s = _sched(0.010)
    cands = [Candidate(f"s{i}", "a", 0.025 + i * 0.001) for i in range(4)]
    # 2 items = 20 ms < 25 ms; 3 items = 30 ms > 25 ms (the head's deadline).
    assert [c.session_id for c in s.pick(cands, now=0.0)] == ["s0", "s1"]


def test_a_member_late_even_alone_does_not_veto():
    s = _sched(0.010)
    cands = [Candidate("doomed", "a", 0.005), Candidate("ok", "a", 0.050)]
    assert [c.session_id for c in s.pick(cands, now=0.0)] == ["doomed", "ok"]


def test_chunks_count_as_their_frames_and_max_batch_caps():
    s = _sched(0.010, max_batch=3)
    chunky = [Candidate(f"c{i}", "a", 0.2, items_per_step=8) for i in range(3)]
    assert len(s.pick(chunky, now=0.0)) == 2  # 16 frames = 160 ms fits 200 ms; 24 would not
    many = [Candidate(f"m{i}", "b", 10.0) for i in range(10)]
    assert len(s.pick(many, now=0.0)) == 3


def test_step_time_model_learns_from_measurements():
    t = StepTimeModel(alpha=0.5)
    t.prime("k", 0.010)
    t.prime("k", 0.999)  # a prior never overrides what is known
    assert t.estimate("k", 2) == 0.020
    t.observe("k", 2, 0.060)  # 30 ms per item measured
    assert abs(t.estimate("k", 1) - 0.020) < 1e-12
    assert t.estimate("unknown", 5) == 0.0
