"""Hyperparameter search with Ray Tune (a thin shell around :mod:`raymlops.training.models`).

The trials are drawn up front from the seeded search spaces and handed to Tune as a grid, so
the same config and data give the same trials. Tune runs them ``max_concurrent`` at a time with
the per-trial resources, ASHA stops weak ones at its rungs (XGBoost boosting rounds, forest
size), actors are reused and nothing is checkpointed: a trial reports a validation score per
step and the winner is refit once, in a Ray task with the same resources.

Example:
    >>> result = run_search(config.training, train, valid, n_classes=2)  # doctest: +SKIP
    >>> result.best.model, result.best.score  # doctest: +SKIP
    ('xgboost', 0.97)
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
from ray import tune

from raymlops.config import TrainingConfig
from raymlops.errors import RaymlopsError
from raymlops.training.metrics import higher_is_better, score
from raymlops.training.models import FitOptions, TrialSpec, dump_model, fit_model, sample_trials

__all__ = ["SearchResult", "TrialResult", "refit", "run_search"]


@dataclass(frozen=True)
class TrialResult:
    """One finished trial: what it tried, how far it got, its validation score."""

    trial_id: str
    index: int
    model: str
    params: dict[str, Any]
    seed: int
    score: float
    steps: int
    status: str  # done | stopped (by ASHA or the time budget) | error
    time_s: float
    fit_s: float
    node_id: str | None = None
    error: str | None = None

    @property
    def spec(self) -> TrialSpec:
        return TrialSpec(self.index, self.model, self.params, self.seed)


@dataclass
class SearchResult:
    """All trials, the best one, and the search's wall time."""

    metric: str
    mode: str
    trials: list[TrialResult]
    best: TrialResult
    wall_s: float
    parallel: int
    extra: dict[str, Any] = field(default_factory=dict)


def _trainable(config: dict[str, Any], data: dict[str, Any], specs: list[TrialSpec], options: FitOptions, metric: str) -> None:
    spec = specs[config["trial"]]
    node_id = ray.get_runtime_context().get_node_id()
    start = time.perf_counter()

    def report(step: int, predictions: np.ndarray) -> None:
        value = score(options.task, metric, data["y_valid"], predictions, options.n_classes)
        tune.report({"score": value, "step": step, "fit_s": time.perf_counter() - start, "node_id": node_id})

    fit_model(spec, data["x"], data["y"], options, valid=(data["x_valid"], data["y_valid"]), on_step=report)


def _max_steps(spec: TrialSpec, options: FitOptions) -> int:
    if spec.model == "xgboost":
        return options.max_rounds // options.rounds_per_report
    if spec.model == "random_forest":
        return -(-spec.params["n_estimators"] // 25)
    return 1


def run_search(
    training: TrainingConfig,
    train: tuple[np.ndarray, np.ndarray],
    valid: tuple[np.ndarray, np.ndarray],
    *,
    n_classes: int = 0,
    verbose: int = 1,
) -> SearchResult:
    """Run the Tune search described by ``training`` on (x, y) arrays; return every trial."""
    cfg = training
    search = cfg.search
    resources = cfg.resources_per_trial
    metric = cfg.metric or ""
    mode = "max" if higher_is_better(metric) else "min"
    specs = sample_trials(list(cfg.models or []), num_samples=search.num_samples, seed=search.seed)
    options = FitOptions(
        task=cfg.task,
        n_classes=n_classes,
        threads=max(1, int(resources.cpu)),
        gpu=resources.gpu > 0,
        max_rounds=search.max_boosting_rounds,
        rounds_per_report=search.rounds_per_report,
    )
    max_t = max(_max_steps(s, options) for s in specs)
    scheduler: Any = None
    if search.scheduler == "asha" and max_t > 1:
        scheduler = tune.schedulers.ASHAScheduler(
            time_attr="training_iteration", max_t=max_t, grace_period=min(3, max_t), reduction_factor=3
        )
    # Tune's per-result CSV/JSON/TensorBoard loggers cost time per report and are not used.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(search.max_concurrent))
    # with those loggers off, the result grid warns that it finds no result files: it has the
    # results in memory, so the warning is noise
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    data = {"x": train[0], "y": train[1], "x_valid": valid[0], "y_valid": valid[1]}
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, data=data, specs=specs, options=options, metric=metric),
        {"cpu": resources.cpu, "gpu": resources.gpu},
    )
    storage = tempfile.mkdtemp(prefix="raymlops-tune-")
    tuner = tune.Tuner(
        trainable,
        # only the trial's index goes through Tune's config: the specs travel with the
        # trainable, so Tune's output and trial names stay short
        param_space={"trial": tune.grid_search([s.trial_index for s in specs])},
        tune_config=tune.TuneConfig(
            metric="score",
            mode=mode,
            scheduler=scheduler,
            max_concurrent_trials=search.max_concurrent,
            time_budget_s=search.time_budget_s,
            reuse_actors=True,
            trial_name_creator=lambda t: f"{specs[t.config['trial']].model}_{t.config['trial']}",
            trial_dirname_creator=lambda t: f"trial_{t.config['trial']}",
        ),
        run_config=tune.RunConfig(
            name="search",
            storage_path=storage,
            verbose=verbose,
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
        ),
    )
    started = time.perf_counter()
    try:
        grid = tuner.fit()
        wall = time.perf_counter() - started
        trials = [_trial_result(r, specs, options) for r in grid]
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    trials.sort(key=lambda t: t.index)
    scored = [t for t in trials if t.status != "error" and np.isfinite(t.score)]
    if not scored:
        errors = "; ".join(f"trial {t.index} ({t.model}): {t.error}" for t in trials[:3])
        raise RaymlopsError(f"no trial finished with a score. {errors}")
    sign = 1.0 if mode == "max" else -1.0
    best = min(scored, key=lambda t: (-sign * t.score, t.index))
    return SearchResult(metric, mode, trials, best, wall, search.max_concurrent)


def _trial_result(result: Any, specs: list[TrialSpec], options: FitOptions) -> TrialResult:
    spec = specs[result.config["trial"]]
    metrics = result.metrics or {}
    steps = int(metrics.get("training_iteration", 0) or 0)
    error = None if result.error is None else str(result.error).splitlines()[-1][:300]
    if error is not None:
        status = "error"
    else:
        status = "done" if steps >= _max_steps(spec, options) else "stopped"
    return TrialResult(
        trial_id=str(metrics.get("trial_id", "")),
        index=spec.trial_index,
        model=spec.model,
        params=spec.params,
        seed=spec.seed,
        score=float(metrics.get("score", float("nan"))),
        steps=steps,
        status=status,
        time_s=float(metrics.get("time_total_s", 0.0) or 0.0),
        fit_s=float(metrics.get("fit_s", 0.0) or 0.0),
        node_id=metrics.get("node_id"),
        error=error,
    )


@ray.remote
def _refit_task(spec: TrialSpec, steps: int, x: np.ndarray, y: np.ndarray, options: FitOptions) -> tuple[str, bytes]:
    options.steps = steps
    model, _ = fit_model(spec, x, y, options)
    return dump_model(model, spec.model)


def refit(
    best: TrialResult, x: np.ndarray, y: np.ndarray, training: TrainingConfig, *, n_classes: int
) -> tuple[str, bytes]:
    """Fit the best trial's model on all training rows, as far as the trial got, in a Ray task
    with the trial's resources (a GPU when configured). Returns the native model file."""
    resources = training.resources_per_trial
    options = FitOptions(
        task=training.task,
        n_classes=n_classes,
        threads=max(1, int(resources.cpu)),
        gpu=resources.gpu > 0,
        max_rounds=training.search.max_boosting_rounds,
        rounds_per_report=training.search.rounds_per_report,
    )
    task = _refit_task.options(num_cpus=resources.cpu, num_gpus=resources.gpu)
    return ray.get(task.remote(best.spec, max(1, best.steps), x, y, options))
