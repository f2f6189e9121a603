"""Successive halving whose outcome does not depend on timing (pure; no Ray).

Ray Tune's ASHA compares a trial, at each rung, with the trials that happened to reach that
rung before it, so with several trials running at once the trials it stops, and so the best
trial, change from run to run. :class:`OrderedRungs` applies ASHA's rule in trial order
instead: trial *i* passes rung *r* when its score is not below the rung's cutoff (ASHA's
``1 - 1/reduction_factor`` percentile) among the trials *j < i* that reached *r*. When an
earlier trial has not yet reported rung *r*, the decision waits and the trial keeps running;
if it is later cut, its result is the one it had at the rung. The same trials and scores
therefore always give the same cuts, the same results and the same best trial.

Example:
    >>> rungs = OrderedRungs(milestones=[2, 6], reduction_factor=3, mode="max")
    >>> rungs.add_trial(0, max_steps=8); rungs.add_trial(1, max_steps=8)
    >>> rungs.record(0, step=2, score=0.9)
    False
    >>> rungs.record(1, step=2, score=0.5)  # worse than trial 0 at rung 2: stop
    True
    >>> rungs.result(1)
    (0.5, 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["OrderedRungs", "milestones"]


def milestones(grace_period: int, reduction_factor: int, max_t: int) -> list[int]:
    """ASHA's rung steps: grace_period * rf^k below max_t."""
    steps, step = [], grace_period
    while step < max_t:
        steps.append(step)
        step *= reduction_factor
    return steps


@dataclass
class _Trial:
    max_steps: int
    scores: dict[int, float] = field(default_factory=dict)  # step -> score, every report
    cut_at: int | None = None
    finished: bool = False


class OrderedRungs:
    """Rung decisions in trial order; see the module docstring."""

    def __init__(self, milestones: list[int], reduction_factor: int, mode: str) -> None:
        self.milestones = sorted(milestones)
        self.reduction_factor = reduction_factor
        self.sign = 1.0 if mode == "max" else -1.0
        self.trials: dict[int, _Trial] = {}
        self._passed: dict[tuple[int, int], bool] = {}

    def add_trial(self, index: int, *, max_steps: int) -> None:
        self.trials[index] = _Trial(max_steps)

    def _reaches(self, index: int, rung: int) -> bool | None:
        """Whether trial ``index`` reaches ``rung`` (None: not known yet)."""
        trial = self.trials[index]
        if trial.max_steps < rung:
            return False
        if trial.finished and rung not in trial.scores:
            return False  # it ended early (an error, or Tune's time budget)
        for earlier in (m for m in self.milestones if m < rung):
            passed = self._decide(index, earlier)
            if passed is None:
                return None
            if not passed:
                return False
        return True

    def _decide(self, index: int, rung: int) -> bool | None:
        """Whether trial ``index`` passes ``rung`` (None: not decidable yet)."""
        key = (index, rung)
        if key in self._passed:
            return self._passed[key]
        trial = self.trials[index]
        if rung not in trial.scores:
            return None
        recorded = []
        for other in sorted(i for i in self.trials if i < index):
            reaches = self._reaches(other, rung)
            if reaches is None:
                return None
            if reaches:
                score = self.trials[other].scores.get(rung)
                if score is None:
                    return None
                recorded.append(self.sign * score)
        if recorded:
            cutoff = float(np.nanpercentile(recorded, (1 - 1 / self.reduction_factor) * 100))
            passed = bool(self.sign * trial.scores[rung] >= cutoff)
        else:
            passed = True
        self._passed[key] = passed
        return passed

    def _settle(self, index: int) -> None:
        """Fix the rung where ``index`` is cut, if that can be decided now."""
        trial = self.trials[index]
        if trial.cut_at is not None:
            return
        for rung in self.milestones:
            if rung > trial.max_steps or rung not in trial.scores:
                return
            passed = self._decide(index, rung)
            if passed is None:
                return
            if not passed:
                trial.cut_at = rung
                return

    def record(self, index: int, *, step: int, score: float) -> bool:
        """Record a report; True when the trial should stop now (it was cut at a rung)."""
        self.trials[index].scores[step] = score
        for other in sorted(self.trials):
            self._settle(other)
        return self.trials[index].cut_at is not None

    def should_stop(self, index: int) -> bool:
        return self.trials[index].cut_at is not None

    def finish(self, index: int) -> None:
        self.trials[index].finished = True
        for other in sorted(self.trials):
            self._settle(other)

    def result(self, index: int) -> tuple[float, int]:
        """(score, steps) of the trial: at the rung where it was cut, else its last report."""
        trial = self.trials[index]
        if not trial.scores:
            return float("nan"), 0
        step = trial.cut_at if trial.cut_at is not None else max(trial.scores)
        return trial.scores[step], step
