"""Earliest-deadline-first batch selection for one device: pure decisions, no threads, no clock.

`EdfScheduler.pick(candidates, now)` returns the sessions to step next: the ready session with the
earliest deadline, plus ready sessions of the same engine and resolution (in deadline order) as long
as the estimated time of the larger batch still meets every member's deadline. A member whose
deadline is already out of reach even alone does not veto batching: it is late either way.
`StepTimeModel` supplies the estimates: a prior from the engine's declared cost, then an
exponential moving average of measured per-item step time.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

DEFAULT_MAX_BATCH = 8


@dataclass(frozen=True)
class Candidate:
    """A ready session as the scheduler sees it."""

    session_id: str
    batch_key: Hashable          # (engine id, width, height): what can share one step
    deadline: float
    items_per_step: int = 1      # frames one step renders for it (chunk size)


class StepTimeModel:
    """Estimated seconds of a step per batch key: items x per-item time, learnt by EMA.

    Linear in the batch size on purpose: on the CPU a batch costs about the sum of its frames, and
    on a GPU (sub-linear) the estimate errs toward keeping deadlines.
    """

    def __init__(self, alpha: float = 0.2) -> None:
        self.alpha = alpha
        self._per_item: dict[Hashable, float] = {}

    def prime(self, key: Hashable, per_item_s: float) -> None:
        """Set the prior (from the engine's declared cost) if nothing was measured yet."""
        self._per_item.setdefault(key, per_item_s)

    def estimate(self, key: Hashable, n: int) -> float:
        return self._per_item.get(key, 0.0) * n

    def observe(self, key: Hashable, n: int, seconds: float) -> None:
        if n <= 0:
            return
        per = seconds / n
        old = self._per_item.get(key)
        self._per_item[key] = per if old is None else old + self.alpha * (per - old)


class EdfScheduler:
    def __init__(self, times: StepTimeModel | None = None, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.times = times or StepTimeModel()
        self.max_batch = max_batch

    def pick(self, candidates: Sequence[Candidate], now: float) -> list[Candidate]:
        """The next batch (empty when nothing is ready), earliest deadline first."""
        if not candidates:
            return []
        ordered = sorted(candidates, key=lambda c: (c.deadline, c.session_id))
        head = ordered[0]
        batch = [head]
        for c in ordered[1:]:
            if len(batch) >= self.max_batch:
                break
            if c.batch_key != head.batch_key:
                continue
            if self._keeps_deadlines(batch + [c], now):
                batch.append(c)
        return batch

    def _keeps_deadlines(self, batch: list[Candidate], now: float) -> bool:
        key = batch[0].batch_key
        finish = now + self.times.estimate(key, sum(c.items_per_step for c in batch))
        for c in batch:
            if now + self.times.estimate(key, c.items_per_step) > c.deadline:
                continue  # late even alone: batching does not make it late
            if finish > c.deadline:
                return False
        return True
