"""Ray Tune search: reproducible trials and results, ASHA stops weak trials, errors are clear."""

from __future__ import annotations

import numpy as np

from raymlops.config import TrainingConfig
from raymlops.training.search import run_search


def _data(
    rows: int = 3000, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 6))
    y = ((x[:, 0] * x[:, 1] > 0) ^ (rng.random(rows) < 0.1)).astype(int)
    cut = int(rows * 0.8)
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def _config(**search: object) -> TrainingConfig:
    return TrainingConfig.model_validate(
        {
            "task": "classification",
            "metric": "roc_auc",
            "models": ["xgboost", "random_forest", "logistic_regression"],
            "search": {"num_samples": 6, "max_boosting_rounds": 60, "time_budget_s": 300, **search},
        }
    )


def _outcome(config: TrainingConfig) -> tuple[object, ...]:
    train, valid = _data()
    result = run_search(config, train, valid, n_classes=2, verbose=0)
    assert len(result.trials) == 6
    assert all(t.status in ("done", "stopped") for t in result.trials), [
        t.error for t in result.trials
    ]
    return (
        result.best.index,
        result.best.params,
        result.best.score,
        [(t.index, t.score, t.steps) for t in result.trials],
    )


def test_same_config_and_data_give_the_same_search_in_parallel() -> None:
    config = _config(max_concurrent=2, scheduler="fifo", seed=11)
    assert _outcome(config) == _outcome(config)


def test_asha_search_in_parallel_is_reproducible_and_stops_weak_trials() -> None:
    config = _config(max_concurrent=2, scheduler="asha", seed=5)
    first = _outcome(config)
    assert first == _outcome(config)
    steps = {index: taken for index, _, taken in first[3]}
    assert min(steps[i] for i in (0, 3)) < 6, f"ASHA stopped a weak xgboost trial early: {steps}"


def test_trees_beat_the_linear_model_on_an_interaction() -> None:
    train, valid = _data()
    events: list[tuple[int, int, float | None]] = []  # the CLI's progress bar reads these
    result = run_search(
        _config(max_concurrent=2, seed=1), train, valid, n_classes=2, verbose=0,
        progress=lambda *event: events.append(event),
    )  # fmt: skip
    assert result.best.model in ("xgboost", "random_forest")
    linear = max(t.score for t in result.trials if t.model == "logistic_regression")
    assert result.best.score > linear + 0.2

    # progress: 0 of 6 at the start, then one more each time a trial ends, with the best so far
    assert [(done, total) for done, total, _ in events] == [(i, 6) for i in range(7)], events
    assert events[0][2] is None
    best = [b for _, _, b in events[1:]]
    assert best == sorted(best), f"the best so far never gets worse: {best}"
    assert best[-1] == result.best.score
