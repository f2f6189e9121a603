"""Model kinds: seeded search spaces, stepwise fitting, native files without pickle."""

from __future__ import annotations

import numpy as np
import pytest
import skops.io as sio

from raymlops.config import ModelKind
from raymlops.training.models import (
    MODEL_FILES,
    SEARCH_SPACES,
    FitOptions,
    TrialSpec,
    dump_model,
    fit_model,
    load_model,
    predict_scores,
    sample_trials,
)

KINDS = list(ModelKind.__args__)  # type: ignore[attr-defined]


def test_every_model_kind_has_a_space_and_a_file_format() -> None:
    """Completeness guard: a new kind must come with its search space and file format."""
    assert set(KINDS) == set(SEARCH_SPACES) == set(MODEL_FILES)


def test_sampling_is_seeded_and_cycles_through_models() -> None:
    first = sample_trials(
        ["xgboost", "random_forest", "logistic_regression"], num_samples=9, seed=3
    )
    again = sample_trials(
        ["xgboost", "random_forest", "logistic_regression"], num_samples=9, seed=3
    )
    other = sample_trials(
        ["xgboost", "random_forest", "logistic_regression"], num_samples=9, seed=4
    )
    assert first == again
    assert first != other
    assert [t.model for t in first[:3]] == ["xgboost", "random_forest", "logistic_regression"]
    for trial in first:
        for name, spec in SEARCH_SPACES[trial.model].items():
            value = trial.params[name]
            if spec[0] == "choice":
                assert value in spec[1]
            else:
                assert spec[1] <= value <= spec[2], (name, value)


def _data(task: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(int) if task == "classification" else x[:, 0] * 2 + 1
    return x, y


@pytest.mark.parametrize(
    ("kind", "task"),
    [
        ("xgboost", "classification"),
        ("xgboost", "regression"),
        ("random_forest", "classification"),
        ("random_forest", "regression"),
        ("logistic_regression", "classification"),
        ("ridge", "regression"),
    ],
)
def test_fit_dump_load_predict_round_trip(kind: str, task: str) -> None:
    x, y = _data(task)
    spec = sample_trials([kind], num_samples=1, seed=0)[0]
    options = FitOptions(
        task=task,
        n_classes=2 if task == "classification" else 0,
        max_rounds=30,
        rounds_per_report=10,
    )
    steps: list[int] = []
    model, taken = fit_model(
        spec, x, y, options, valid=(x, y), on_step=lambda s, _: steps.append(s)
    )
    assert steps == list(range(1, taken + 1)), "every step reports once, in order"
    filename, data = dump_model(model, kind)
    assert filename == MODEL_FILES[kind]
    assert b"pickle" not in data[:64]
    loaded = load_model(kind, data)
    before = predict_scores(model, kind, task, x, 2)
    after = predict_scores(loaded, kind, task, x, 2)
    np.testing.assert_array_equal(before, after)
    if task == "classification":
        assert before.shape == (300, 2)
        assert np.allclose(before.sum(axis=1), 1.0)


def test_refit_with_steps_stops_where_the_trial_stopped() -> None:
    x, y = _data("classification")
    spec = TrialSpec(0, "xgboost", {"max_depth": 3}, 0)
    model, steps = fit_model(
        spec,
        x,
        y,
        FitOptions(
            task="classification", n_classes=2, max_rounds=100, rounds_per_report=10, steps=3
        ),
    )
    assert steps == 3
    assert model.num_boosted_rounds() == 30


def test_skops_files_with_untrusted_types_are_refused() -> None:
    import os

    from sklearn.preprocessing import FunctionTransformer

    data = sio.dumps(FunctionTransformer(func=os.system))
    with pytest.raises(ValueError, match="not trusted: posix.system"):
        load_model("random_forest", data)
    with pytest.raises(ValueError, match="not one of"):
        load_model("random_forest", sio.dumps(FunctionTransformer(func=np.exp)))


def test_gpu_trials_move_xgboost_to_cuda() -> None:
    from raymlops.training.models import xgboost_params

    spec = TrialSpec(0, "xgboost", {"max_depth": 3}, 0)
    assert xgboost_params(spec, FitOptions(task="classification", gpu=True))["device"] == "cuda"
    cpu = xgboost_params(spec, FitOptions(task="classification", gpu=False, threads=2))
    assert cpu["device"] == "cpu"
    assert cpu["tree_method"] == "hist"
    assert cpu["nthread"] == 2
