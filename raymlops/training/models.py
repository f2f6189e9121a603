"""Model kinds: search spaces, incremental fitting, prediction and native, pickle-free files.

Each kind fits in steps (XGBoost: ``rounds_per_report`` boosting rounds; random forest: a few
more trees; linear models: one step) and hands the validation predictions of every step to a
callback, so Tune's ASHA scheduler can stop a weak trial early. Nothing here imports Ray: the
Tune trainable in :mod:`raymlops.training.search` is a thin wrapper.

Files: XGBoost as ``model.ubj`` (its own binary JSON); scikit-learn through skops
(``model.skops``), loaded only if every type in the file is on :data:`SKOPS_TRUSTED_TYPES`.

Example:
    >>> trials = sample_trials(["xgboost", "ridge"], num_samples=4, seed=0)
    >>> [t.model for t in trials]
    ['xgboost', 'ridge', 'xgboost', 'ridge']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "MODEL_FILES",
    "SEARCH_SPACES",
    "SKOPS_TRUSTED_TYPES",
    "TrialSpec",
    "as_scores",
    "dump_model",
    "fit_model",
    "load_model",
    "max_steps",
    "predict_scores",
    "sample_trials",
    "xgboost_params",
]

#: (distribution, low, high) or ("choice", options); sampled with numpy, seeded per search
SEARCH_SPACES: dict[str, dict[str, tuple[Any, ...]]] = {
    "xgboost": {
        "max_depth": ("randint", 2, 9),
        "eta": ("loguniform", 0.02, 0.3),
        "subsample": ("uniform", 0.6, 1.0),
        "colsample_bytree": ("uniform", 0.5, 1.0),
        "min_child_weight": ("loguniform", 0.5, 10.0),
        "reg_lambda": ("loguniform", 0.1, 10.0),
    },
    "random_forest": {
        "n_estimators": ("choice", [50, 100, 200]),
        "max_depth": ("randint", 3, 17),
        "min_samples_leaf": ("randint", 1, 11),
        "max_features": ("choice", ["sqrt", 0.5, 1.0]),
    },
    "logistic_regression": {"C": ("loguniform", 1e-3, 10.0)},
    "ridge": {"alpha": ("loguniform", 1e-3, 100.0)},
}

MODEL_FILES = {
    "xgboost": "model.ubj",
    "random_forest": "model.skops",
    "logistic_regression": "model.skops",
    "ridge": "model.skops",
}

#: the only non-default types a skops model file may contain; anything else is refused
SKOPS_TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]

_RF_TREES_PER_STEP = 25
_SKLEARN_CLASSES = {
    "random_forest": ("RandomForestClassifier", "RandomForestRegressor"),
    "logistic_regression": ("LogisticRegression",),
    "ridge": ("Ridge",),
}


@dataclass(frozen=True)
class TrialSpec:
    """One point of the search: a model kind, its parameters and its seed."""

    trial_index: int
    model: str
    params: dict[str, Any]
    seed: int


def _draw(rng: np.random.Generator, spec: tuple[Any, ...]) -> Any:
    kind = spec[0]
    if kind == "choice":
        options = spec[1]
        return options[int(rng.integers(len(options)))]
    low, high = spec[1], spec[2]
    if kind == "randint":
        return int(rng.integers(low, high))
    if kind == "uniform":
        return float(rng.uniform(low, high))
    if kind == "loguniform":
        return float(np.exp(rng.uniform(np.log(low), np.log(high))))
    raise ValueError(f"unknown distribution {kind!r}")


def sample_trials(models: list[str], *, num_samples: int, seed: int) -> list[TrialSpec]:
    """``num_samples`` trials, models taken in turn, parameters drawn from a seeded generator.

    The same models, count and seed always give the same trials.
    """
    rng = np.random.default_rng(seed)
    trials = []
    for index in range(num_samples):
        model = models[index % len(models)]
        params = {name: _draw(rng, spec) for name, spec in SEARCH_SPACES[model].items()}
        trials.append(TrialSpec(index, model, params, seed + index))
    return trials


# -- fitting -------------------------------------------------------------------------------------

#: called after each step with (step number, validation predictions); returns nothing
StepCallback = Callable[[int, np.ndarray], None]


@dataclass
class FitOptions:
    """How to fit: the task, class count, threads, device and step sizes."""

    task: str
    n_classes: int = 0
    threads: int = 1
    gpu: bool = False
    max_rounds: int = 200
    rounds_per_report: int = 10
    steps: int | None = None  # fit exactly this many steps (the final refit), else the maximum
    extra: dict[str, Any] = field(default_factory=dict)


def max_steps(spec: TrialSpec, options: FitOptions) -> int:
    """How many steps (reports) a trial of ``spec`` takes when nothing stops it."""
    if spec.model == "xgboost":
        return options.max_rounds // options.rounds_per_report
    if spec.model == "random_forest":
        return -(-spec.params["n_estimators"] // _RF_TREES_PER_STEP)
    return 1


def fit_model(
    spec: TrialSpec,
    x: np.ndarray,
    y: np.ndarray,
    options: FitOptions,
    *,
    valid: tuple[np.ndarray, np.ndarray] | None = None,
    on_step: StepCallback | None = None,
) -> tuple[Any, int]:
    """Fit ``spec`` in steps; returns the model and the number of steps taken."""
    if spec.model == "xgboost":
        return _fit_xgboost(spec, x, y, options, valid, on_step)
    return _fit_sklearn(spec, x, y, options, valid, on_step)


def xgboost_params(spec: TrialSpec, options: FitOptions) -> dict[str, Any]:
    """XGBoost's parameters for a trial: ``hist``, the device, threads, seed, objective."""
    params: dict[str, Any] = {
        "tree_method": "hist",
        "device": "cuda" if options.gpu else "cpu",
        "nthread": options.threads,
        "seed": spec.seed,
        **spec.params,
    }
    if options.task == "regression":
        params["objective"] = "reg:squarederror"
    elif options.n_classes > 2:
        params.update(objective="multi:softprob", num_class=options.n_classes)
    else:
        params["objective"] = "binary:logistic"
    return params


def _fit_xgboost(spec, x, y, options, valid, on_step):  # type: ignore[no-untyped-def]
    import xgboost as xgb

    every = options.rounds_per_report
    rounds = options.max_rounds if options.steps is None else options.steps * every
    dtrain = xgb.DMatrix(x, label=y, nthread=options.threads)
    dvalid = xgb.DMatrix(valid[0], nthread=options.threads) if valid is not None else None

    class _Report(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):  # type: ignore[no-untyped-def]
            if on_step is not None and dvalid is not None and (epoch + 1) % every == 0:
                raw = model.predict(dvalid, iteration_range=(0, epoch + 1))
                on_step((epoch + 1) // every, as_scores(raw, options))
            return False

    booster = xgb.train(
        xgboost_params(spec, options), dtrain, num_boost_round=rounds, callbacks=[_Report()]
    )
    return booster, rounds // every


def _sklearn_estimator(spec: TrialSpec, options: FitOptions):  # type: ignore[no-untyped-def]
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression, Ridge

    p = spec.params
    if spec.model == "random_forest":
        cls = RandomForestClassifier if options.task == "classification" else RandomForestRegressor
        return cls(
            n_estimators=0,
            warm_start=True,
            max_depth=p["max_depth"],
            min_samples_leaf=p["min_samples_leaf"],
            max_features=p["max_features"],
            n_jobs=options.threads,
            random_state=spec.seed,
        )
    if spec.model == "logistic_regression":
        return LogisticRegression(C=p["C"], max_iter=1000, random_state=spec.seed)
    if spec.model == "ridge":
        return Ridge(alpha=p["alpha"], random_state=spec.seed)
    raise ValueError(f"unknown model kind {spec.model!r}")


def _fit_sklearn(spec, x, y, options, valid, on_step):  # type: ignore[no-untyped-def]
    model = _sklearn_estimator(spec, options)
    if spec.model != "random_forest":
        model.fit(x, y)
        if on_step is not None and valid is not None:
            on_step(1, predict_scores(model, spec.model, options.task, valid[0], options.n_classes))
        return model, 1
    target_trees = spec.params["n_estimators"]
    max_steps = -(-target_trees // _RF_TREES_PER_STEP)
    steps = max_steps if options.steps is None else min(options.steps, max_steps)
    for step in range(1, steps + 1):
        model.n_estimators = min(step * _RF_TREES_PER_STEP, target_trees)
        model.fit(x, y)
        if on_step is not None and valid is not None:
            on_step(
                step, predict_scores(model, spec.model, options.task, valid[0], options.n_classes)
            )
    return model, steps


def as_scores(raw: np.ndarray, options: FitOptions) -> np.ndarray:
    """XGBoost's raw predictions as scores: (n, k) probabilities, or (n,) values."""
    if options.task == "regression":
        return np.asarray(raw, dtype=np.float64).ravel()
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim == 1:
        return np.column_stack([1.0 - raw, raw])
    return raw


def predict_scores(
    model: Any, kind: str, task: str, x: np.ndarray, n_classes: int = 0
) -> np.ndarray:
    """Class probabilities (n, k) for classification, values (n,) for regression."""
    if kind == "xgboost":
        raw = model.inplace_predict(np.ascontiguousarray(x, dtype=np.float64))
        return as_scores(raw, FitOptions(task=task, n_classes=n_classes))
    if task == "classification":
        proba = model.predict_proba(x)
        if n_classes and proba.shape[1] < n_classes:
            # a class absent from a small training set: give it probability 0
            full = np.zeros((len(x), n_classes))
            full[:, model.classes_.astype(int)] = proba
            return full
        return proba
    return np.asarray(model.predict(x), dtype=np.float64)


# -- files (no pickle) ---------------------------------------------------------------------------


def dump_model(model: Any, kind: str) -> tuple[str, bytes]:
    """The model's native file: (file name, bytes)."""
    if kind == "xgboost":
        return MODEL_FILES[kind], bytes(model.save_raw(raw_format="ubj"))
    import skops.io as sio

    return MODEL_FILES[kind], sio.dumps(model)


def load_model(kind: str, data: bytes) -> Any:
    """Load a model file (already checked against its sha256 by the caller).

    Raises:
        ValueError: a skops file holds a type outside :data:`SKOPS_TRUSTED_TYPES`.
    """
    if kind == "xgboost":
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(bytearray(data))
        return booster
    import skops.io as sio

    untrusted = [t for t in sio.get_untrusted_types(data=data) if t not in SKOPS_TRUSTED_TYPES]
    if untrusted:
        raise ValueError(f"model file holds types that are not trusted: {', '.join(untrusted)}")
    model = sio.loads(data, trusted=SKOPS_TRUSTED_TYPES)
    expected = _SKLEARN_CLASSES[kind]
    if type(model).__name__ not in expected:
        raise ValueError(f"a {kind} file holds a {type(model).__name__}, not one of {expected}")
    return model
