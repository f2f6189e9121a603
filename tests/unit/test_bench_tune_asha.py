"""The tune suite's ASHA checks: raymlops and stock Tune ASHA computed the same thing."""

from __future__ import annotations

from benchmarks.tune_asha import BEST_TOLERANCE, AshaRun, checks


def side(name: str, scores: dict[int, dict[int, float]]) -> AshaRun:
    final = {i: max(s.items()) for i, s in scores.items()}
    best = max(final, key=lambda i: final[i][1])
    return AshaRun(name, 1.0, scores, final, final[best][1], best)


OURS = {0: {10: 0.81}, 1: {10: 0.83}, 2: {3: 0.77}}  # raymlops: each trial's last report
STOCK = {0: {3: 0.77, 6: 0.79}, 1: {3: 0.78, 9: 0.82, 10: 0.83}, 2: {3: 0.77}}


def test_equal_scores_at_shared_steps_and_the_same_best_pass() -> None:
    [same, best] = checks(side("raymlops", OURS), side("stock", STOCK))
    assert same[1], same
    assert "2 of 3 trials compared" in same[2]  # stock cut trial 0 before step 10
    assert best[1], best
    assert "trial 1" in best[2]


def test_a_score_that_differs_at_the_same_step_fails_naming_the_trial() -> None:
    stock = {**STOCK, 2: {3: 0.7701}}
    [same, _] = checks(side("raymlops", OURS), side("stock", stock))
    assert not same[1]
    assert "trial 2 step 3: 0.770000 vs 0.770100" in same[2]


def test_a_trial_on_one_side_only_fails() -> None:
    stock = {i: s for i, s in STOCK.items() if i != 2}
    [same, _] = checks(side("raymlops", OURS), side("stock", stock))
    assert not same[1]
    assert "trials on one side only: [2]" in same[2]


def test_a_best_trial_further_apart_than_the_tolerance_fails() -> None:
    stock = {**STOCK, 1: {3: 0.78}}  # stock cut the best trial early: its best is 0.79
    [_, best] = checks(side("raymlops", OURS), side("stock", stock))
    assert not best[1]
    assert f"|diff| 0.0400 (tolerance {BEST_TOLERANCE})" in best[2]


def test_no_trial_compared_fails() -> None:
    stock = {0: {3: 0.77}, 1: {3: 0.78}, 2: {1: 0.7}}
    ours = {0: {10: 0.81}, 1: {10: 0.785}, 2: {3: 0.77}}
    [same, _] = checks(side("raymlops", ours), side("stock", stock))
    assert not same[1]
    assert "0 of 3 trials compared" in same[2]
