"""Ordered successive halving: the same scores give the same cuts, whatever the arrival order."""

from __future__ import annotations

import numpy as np
import pytest

from raymlops.training.rungs import OrderedRungs, milestones


def _simulate(
    curves: dict[int, list[float]], seed: int, concurrency: int
) -> dict[int, tuple[float, int]]:
    """Replay trials' report streams in a random interleaving, at most ``concurrency`` at once,
    starting trials in index order as Tune does; stop a trial when the rungs say so."""
    rng = np.random.default_rng(seed)
    rungs = OrderedRungs(milestones(1, 3, 9), reduction_factor=3, mode="max")
    for index, curve in curves.items():
        rungs.add_trial(index, max_steps=len(curve))
    waiting = sorted(curves)
    running: dict[int, int] = {}
    while waiting or running:
        while waiting and len(running) < concurrency:
            running[waiting.pop(0)] = 0
        index = list(running)[int(rng.integers(len(running)))]
        step = running[index] + 1
        stop = rungs.record(index, step=step, score=curves[index][step - 1])
        if stop or step == len(curves[index]):
            del running[index]
            rungs.finish(index)
        else:
            running[index] = step
    return {index: rungs.result(index) for index in curves}


def _curves(seed: int, trials: int = 10) -> dict[int, list[float]]:
    rng = np.random.default_rng(seed)
    curves = {}
    for index in range(trials):
        length = int(rng.choice([1, 4, 9]))
        start, gain = rng.uniform(0.5, 0.7), rng.uniform(0.0, 0.04)
        curves[index] = [float(start + gain * s) for s in range(length)]
    return curves


@pytest.mark.parametrize("data_seed", range(5))
def test_results_do_not_depend_on_arrival_order(data_seed: int) -> None:
    curves = _curves(data_seed)
    sequential = _simulate(curves, seed=0, concurrency=1)
    for seed in range(20):
        assert _simulate(curves, seed=seed, concurrency=3) == sequential


def test_weak_trials_are_cut_at_a_rung_and_keep_that_result() -> None:
    curves = {0: [0.9, 0.91, 0.92, 0.93], 1: [0.5, 0.6, 0.7, 0.8], 2: [0.95, 0.96, 0.97, 0.98]}
    results = _simulate(curves, seed=1, concurrency=3)
    assert results[1] == (0.5, 1), "trial 1 is worse than trial 0 at the first rung"
    assert results[0] == (0.93, 4)
    assert results[2] == (0.98, 4)


def test_milestones_follow_asha() -> None:
    assert milestones(1, 3, 100) == [1, 3, 9, 27, 81]
    assert milestones(3, 3, 20) == [3, 9]
