"""Hyperparameter search with Ray Tune (a thin shell around :mod:`raymlops.training.models`).

The trials are drawn up front from the seeded search spaces and handed to Tune as a grid, so
the same config and data give the same trials. Tune runs them ``max_concurrent`` at a time with
the per-trial resources; actors are reused and nothing is checkpointed: a trial reports a
validation score per step (boosting rounds, forest size); the winner is refit once, in a
Ray task with the same resources, or kept as its trial left it (``keep_models``).

Early stopping (``scheduler: asha``) applies ASHA's rule through :class:`OrderedASHA`: rung
decisions are taken in trial order (:mod:`raymlops.training.rungs`), so they do not depend on
which trial reports first, and the same config and data give the same best trial and score
even with several trials at once. Only ``time_budget_s``, which cuts by wall time, can make
two runs differ.

Example:
    >>> result = run_search(config.training, train, valid, n_classes=2)  # doctest: +SKIP
    >>> result.best.model, result.best.score  # doctest: +SKIP
    ('xgboost', 0.97)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import tune
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from raymlops.config import TrainingConfig
from raymlops.errors import RaymlopsError
from raymlops.training.metrics import higher_is_better, score
from raymlops.training.models import (
    MODEL_FILES,
    FitOptions,
    TrialSpec,
    dump_model,
    fit_model,
    max_steps,
    sample_trials,
)
from raymlops.training.rungs import OrderedRungs, milestones
from raymlops.training.scaling import placement_problem
from raymlops.training.stages import peak_rss

__all__ = [
    "DataParallel",
    "OrderedASHA",
    "SearchResult",
    "TrialResult",
    "refit_data_parallel",
    "refit_parts",
    "run_search",
]

_REDUCTION_FACTOR = 3
#: marks the report that carries a finished trial's model (not a step of the search)
_MODEL_SAVED = "model_saved"
#: Ray's logical memory a data-parallel trial's driver asks for (it only drives Ray Train;
#: Tune wants some resource in a trial's bundle, and a CPU would starve its own workers)
_DRIVER_MEMORY = 64 * 2**20


@dataclass(frozen=True)
class DataParallel:
    """How XGBoost trials run data-parallel: the rows as Ray Datasets, workers per trial."""

    shards: Any  # raymlops.training.distributed.Shards
    workers: int
    n_features: int


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
    status: str  # done | stopped (at a rung, or by the time budget) | error
    time_s: float
    fit_s: float
    node_id: str | None = None
    error: str | None = None
    model_path: str | None = None  # the finished trial's model file (run_search keep_models)
    workers: int = 1
    #: where the trial's workers ran: rank, node_id, address and fit_rows of each
    nodes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def spec(self) -> TrialSpec:
        return TrialSpec(self.index, self.model, self.params, self.seed)


@dataclass
class SearchResult:
    """All trials, the best one, the search's wall time and how many trials ran at once."""

    metric: str
    mode: str
    trials: list[TrialResult]
    best: TrialResult
    wall_s: float
    parallel: int
    extra: dict[str, Any] = field(default_factory=dict)


class OrderedASHA(FIFOScheduler):
    """ASHA's stopping rule with decisions in trial order (see :class:`OrderedRungs`)."""

    def __init__(self, rungs: OrderedRungs, specs: list[TrialSpec], options: FitOptions) -> None:
        super().__init__()
        self.rungs = rungs
        self._specs = specs
        self._options = options

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        index = trial.config["trial"]
        self.rungs.add_trial(index, max_steps=max_steps(self._specs[index], self._options))

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if "score" not in result or result.get(_MODEL_SAVED):
            return TrialScheduler.CONTINUE
        index = trial.config["trial"]
        stop = self.rungs.record(
            index, step=int(result["training_iteration"]), score=float(result["score"])
        )
        return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        index = trial.config["trial"]
        if result and "score" in result and not result.get(_MODEL_SAVED):
            self.rungs.record(
                index, step=int(result["training_iteration"]), score=float(result["score"])
            )
        self.rungs.finish(index)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self.rungs.finish(trial.config["trial"])

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self.rungs.finish(trial.config["trial"])


class _Progress(tune.Callback):
    """Tells ``report(done, total, best)`` each time a trial ends; the best is taken from the
    rungs, so a trial cut at a rung counts with its score there, as in the result."""

    def __init__(
        self,
        report: Callable[[int, int, float | None], None],
        total: int,
        mode: str,
        rungs: OrderedRungs,
    ) -> None:
        self.report, self.total, self.rungs = report, total, rungs
        self.sign = 1.0 if mode == "max" else -1.0
        self.done = 0
        self.best: float | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its run config (this callback in it) to save the experiment's state;
        # ``report`` may hold a terminal's console, which does not pickle: a copy reports nothing
        return {**self.__dict__, "report": None}

    def _ended(self, trial: Any) -> None:
        if self.report is None:
            return
        self.done += 1
        with contextlib.suppress(KeyError, ValueError):
            value, _ = self.rungs.result(trial.config["trial"])
            if np.isfinite(value) and (self.best is None or self.sign * (value - self.best) > 0):
                self.best = float(value)
        self.report(min(self.done, self.total), self.total, self.best)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)


def _trainable(
    config: dict[str, Any],
    data: dict[str, Any],
    specs: list[TrialSpec],
    options: FitOptions,
    metric: str,
    keep_model: bool = False,
    parallel: DataParallel | None = None,
    resources: Any = None,
) -> None:
    spec = specs[config["trial"]]
    if parallel is not None and spec.model == "xgboost":
        _data_parallel_trial(spec, options, metric, parallel, resources, keep_model)
        return
    node_id = ray.get_runtime_context().get_node_id()
    start = time.perf_counter()
    # ObjectRefs are read here, on the trial's node, straight from the object store
    x, y, x_valid, y_valid = (_resolve(data[k]) for k in ("x", "y", "x_valid", "y_valid"))
    nodes = [
        {
            "rank": 0,
            "node_id": node_id,
            "address": ray.util.get_node_ip_address(),
            "fit_rows": len(y),
        }
    ]

    last: dict[str, Any] = {}

    def report(step: int, predictions: np.ndarray) -> None:
        value = score(options.task, metric, y_valid, predictions, options.n_classes)
        elapsed = time.perf_counter() - start
        last.update(score=value, step=step, fit_s=elapsed, node_id=node_id, nodes=nodes)
        tune.report(dict(last))

    model, steps = fit_model(spec, x, y, options, valid=(x_valid, y_valid), on_step=report)
    nodes[0]["peak_rss"] = peak_rss()  # after the fit: the arrays and the DMatrix were held
    if keep_model:
        _report_model(last, *dump_model(model, spec.model))


def _report_model(last: dict[str, Any], name: str, payload: bytes) -> None:
    """The finished trial's model, so the winner need not be fitted again (search.refit off);
    the scheduler and the rungs skip this report (it repeats the last score)."""
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, name).write_bytes(payload)
        tune.report({**last, _MODEL_SAVED: True}, checkpoint=tune.Checkpoint.from_directory(folder))


def _data_parallel_trial(
    spec: TrialSpec,
    options: FitOptions,
    metric: str,
    parallel: DataParallel,
    resources: Any,
    keep_model: bool,
) -> None:
    """This Tune trial drives a Ray Train run over ``parallel.workers`` workers; Ray Train's
    reports reach Tune through ``TuneReportCallback`` (Ray's docs for Train inside Tune)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from raymlops.training.distributed import fit_data_parallel

    outcome = fit_data_parallel(
        spec,
        options,
        metric,
        parallel.shards,
        parallel.workers,
        resources,
        name=f"train-{tune.get_context().get_trial_id()}",
        n_features=parallel.n_features,
        keep_model=keep_model,
        report=TuneReportCallback,
    )
    if keep_model and outcome.model is not None:
        last = {k: outcome.metrics[k] for k in ("score", "step", "fit_s", "node_id", "nodes")}
        _report_model(last, MODEL_FILES["xgboost"], outcome.model)


def _resolve(value: Any) -> Any:
    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


@contextlib.contextmanager
def _tune_environment(max_concurrent: int) -> Iterator[None]:
    """Environment Tune reads at fit time, set for this search only and restored after."""
    settings = {
        # Tune's per-result CSV/JSON/TensorBoard loggers cost time per report and are not used
        "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
        "TUNE_MAX_PENDING_TRIALS_PG": str(max_concurrent),
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    # with the loggers off the result grid warns that it finds no result files; it has the
    # results in memory, so the warning is noise
    analysis_log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = analysis_log.level
    analysis_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        analysis_log.setLevel(level)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _concurrency(requested: int, cpu: float, gpu: float, workers: int = 1) -> int:
    """How many trials can really run at once on this cluster. With data-parallel trials, as
    many as can place all their workers together, so no Train run waits for another's (a
    one-worker trial beside them takes no more than a data-parallel one)."""
    resources = ray.cluster_resources()
    fits = [requested]
    if cpu > 0:
        fits.append(int(resources.get("CPU", 0) // (cpu * workers)))
    if gpu > 0:
        fits.append(int(resources.get("GPU", 0) // (gpu * workers)))
    return max(1, min(fits))


def _trial_resources(
    specs: list[TrialSpec], cpu: float, gpu: float, memory_gb: float | None, parallel: bool
) -> Any:
    """Tune's resources per trial: the trial's own, or a driver's for a data-parallel trial
    (its workers are Ray Train's, placed by Train)."""
    from ray.tune.execution.placement_groups import PlacementGroupFactory

    own = {"CPU": cpu, "GPU": gpu}
    if memory_gb is not None:
        own["memory"] = memory_gb * 2**30
    own = {k: v for k, v in own.items() if v > 0}
    if not parallel:
        return PlacementGroupFactory([own])

    def per_trial(config: dict[str, Any]) -> Any:
        if specs[config["trial"]].model == "xgboost":
            return PlacementGroupFactory([{"CPU": 0, "memory": _DRIVER_MEMORY}])
        return PlacementGroupFactory([own])

    return per_trial


def run_search(
    training: TrainingConfig,
    train: tuple[np.ndarray, np.ndarray],
    valid: tuple[np.ndarray, np.ndarray],
    *,
    n_classes: int = 0,
    verbose: int = 1,
    name: str = "raymlops",
    keep_models: bool = False,
    parallel: DataParallel | None = None,
    progress: Callable[[int, int, float | None], None] | None = None,
) -> SearchResult:
    """Run the Tune search described by ``training`` on (x, y); return every trial.

    ``train`` and ``valid`` hold numpy arrays or ObjectRefs of them; refs are read by each
    trial from the object store, so the data never passes through the driver.
    ``keep_models``: a trial that runs to its end keeps its model (``TrialResult.model_file``)
    so the best one can be registered without a refit.
    ``parallel`` (more than one worker): XGBoost trials run as Ray Train ``XGBoostTrainer``
    runs over that many workers, each reading its own shard (``train``/``valid`` may then be
    None when every model is XGBoost).

    Tune's experiment folder goes to Ray's usual place (``~/ray_results/<name>-<time>``).

    Raises:
        ResourcesError: the cluster cannot place a data-parallel trial's workers.
        RaymlopsError: no trial produced a score (the first errors are quoted).
    """
    search = training.search
    resources = training.resources_per_trial
    metric = training.metric or ""
    mode = "max" if higher_is_better(metric) else "min"
    specs = sample_trials(
        list(training.models or []), num_samples=search.num_samples, seed=search.seed
    )
    options = FitOptions(
        task=training.task,
        n_classes=n_classes,
        threads=max(1, int(resources.cpu)),
        gpu=resources.gpu > 0,
        max_rounds=search.max_boosting_rounds,
        rounds_per_report=search.rounds_per_report,
    )
    max_t = max(max_steps(s, options) for s in specs)
    rungs = OrderedRungs(
        milestones(min(3, max_t), _REDUCTION_FACTOR, max_t) if search.scheduler == "asha" else [],
        reduction_factor=_REDUCTION_FACTOR,
        mode=mode,
    )
    if parallel is not None and parallel.workers < 2:
        parallel = None
    workers = parallel.workers if parallel is not None else 1
    if parallel is not None:
        _check_placement(workers, resources)
    train, valid = train or (None, None), valid or (None, None)
    data = {"x": train[0], "y": train[1], "x_valid": valid[0], "y_valid": valid[1]}
    trainable = tune.with_resources(
        tune.with_parameters(
            _trainable,
            data=data,
            specs=specs,
            options=options,
            metric=metric,
            keep_model=keep_models,
            parallel=parallel,
            resources=resources,
        ),
        _trial_resources(specs, resources.cpu, resources.gpu, resources.memory_gb, workers > 1),
    )
    parallel_trials = _concurrency(search.max_concurrent, resources.cpu, resources.gpu, workers)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    tuner = tune.Tuner(
        trainable,
        # only the trial's index goes through Tune's config: the specs travel with the
        # trainable, so Tune's output and trial names stay short
        param_space={"trial": tune.grid_search([s.trial_index for s in specs])},
        tune_config=tune.TuneConfig(
            metric="score",
            mode=mode,
            scheduler=OrderedASHA(rungs, specs, options),
            max_concurrent_trials=parallel_trials,
            time_budget_s=search.time_budget_s,
            # a stopped data-parallel trial's actor must end, and with it its Train run
            reuse_actors=workers == 1,
            trial_name_creator=lambda t: f"{specs[t.config['trial']].model}_{t.config['trial']}",
            trial_dirname_creator=lambda t: f"trial_{t.config['trial']}",
        ),
        run_config=tune.RunConfig(
            name=f"{name}-{stamp}",
            verbose=verbose,
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
            callbacks=[] if progress is None else [_Progress(progress, len(specs), mode, rungs)],
        ),
    )
    if progress is not None:
        progress(0, len(specs), None)
    started = time.perf_counter()
    with _tune_environment(parallel_trials):
        grid = tuner.fit()
    wall = time.perf_counter() - started
    trials = sorted((_trial_result(r, specs, options, rungs) for r in grid), key=lambda t: t.index)
    scored = [t for t in trials if t.status != "error" and np.isfinite(t.score)]
    if not scored:
        errors = "; ".join(f"trial {t.index} ({t.model}): {t.error}" for t in trials[:3])
        raise RaymlopsError(f"no trial finished with a score. {errors}")
    sign = 1.0 if mode == "max" else -1.0
    best = min(scored, key=lambda t: (-sign * t.score, t.index))
    return SearchResult(metric, mode, trials, best, wall, parallel_trials, {"workers": workers})


def _check_placement(workers: int, resources: Any) -> None:
    from raymlops.errors import ResourcesError
    from raymlops.training.distributed import cluster_nodes

    problem = placement_problem(workers, resources, cluster_nodes())
    if problem is not None:
        raise ResourcesError(problem)


def _trial_result(
    result: Any, specs: list[TrialSpec], options: FitOptions, rungs: OrderedRungs
) -> TrialResult:
    spec = specs[result.config["trial"]]
    metrics = result.metrics or {}
    # the score and steps at the rung where the trial was cut, else at its last report
    value, steps = rungs.result(spec.trial_index)
    error = None if result.error is None else str(result.error).splitlines()[-1][:300]
    if error is not None:
        status = "error"
    elif steps >= max_steps(spec, options):
        status = "done"
    else:
        status = "stopped"
    return TrialResult(
        trial_id=str(metrics.get("trial_id", "")),
        index=spec.trial_index,
        model=spec.model,
        params=spec.params,
        seed=spec.seed,
        score=value,
        steps=steps,
        status=status,
        time_s=float(metrics.get("time_total_s", 0.0) or 0.0),
        fit_s=float(metrics.get("fit_s", 0.0) or 0.0),
        node_id=metrics.get("node_id"),
        error=error,
        model_path=_model_path(result.checkpoint, spec.model) if status == "done" else None,
        workers=len(metrics.get("nodes") or []) or 1,
        nodes=list(metrics.get("nodes") or []),
    )


def _model_path(checkpoint: Any, kind: str) -> str | None:
    if checkpoint is None or checkpoint.filesystem.type_name != "local":
        return None
    path = Path(checkpoint.path, MODEL_FILES[kind])
    return str(path) if path.exists() else None


@ray.remote
def _refit_parts_task(  # type: ignore[no-untyped-def]
    spec: TrialSpec, options: FitOptions, x_fit, y_fit, x_valid, y_valid, valid_mask
) -> tuple[str, bytes]:
    # all training rows back in row order: the same model as a refit on the unsplit arrays
    x = np.empty((len(valid_mask), x_fit.shape[1]), dtype=x_fit.dtype)
    y = np.empty(len(valid_mask), dtype=y_fit.dtype)
    x[~valid_mask], x[valid_mask] = x_fit, x_valid
    y[~valid_mask], y[valid_mask] = y_fit, y_valid
    del x_fit, x_valid
    model, _ = fit_model(spec, x, y, options)
    return dump_model(model, spec.model)


def refit_parts(
    best: TrialResult,
    fit: tuple[Any, Any],
    valid: tuple[Any, Any],
    valid_mask: Any,
    training: TrainingConfig,
    *,
    n_classes: int,
) -> tuple[str, bytes]:
    """Fit the best trial's model on all training rows, as far as the trial got, in a Ray task
    with the trial's resources (a GPU when configured). The search's fit and validation rows
    (arrays or ObjectRefs) are joined in row order inside the task: the rows never pass
    through the driver. Returns the native model file."""
    resources = training.resources_per_trial
    task = _refit_parts_task.options(num_cpus=resources.cpu, num_gpus=resources.gpu)
    options = _refit_options(best, training, n_classes)
    return ray.get(task.remote(best.spec, options, *fit, *valid, valid_mask))


def _refit_options(best: TrialResult, training: TrainingConfig, n_classes: int) -> FitOptions:
    resources = training.resources_per_trial
    return FitOptions(
        task=training.task,
        n_classes=n_classes,
        threads=max(1, int(resources.cpu)),
        gpu=resources.gpu > 0,
        max_rounds=training.search.max_boosting_rounds,
        rounds_per_report=training.search.rounds_per_report,
        steps=max(1, best.steps),
    )


def refit_data_parallel(
    best: TrialResult,
    parallel: DataParallel,
    training: TrainingConfig,
    *,
    n_classes: int,
) -> tuple[str, bytes]:
    """Fit the best trial again on all training rows (fit and validation shards together)
    over the same Ray Train workers, as far as the trial got. Returns the native model file."""
    from raymlops.training.distributed import Shards, fit_data_parallel

    shards = Shards(parallel.shards.fit.union(parallel.shards.valid), None)
    outcome = fit_data_parallel(
        best.spec,
        _refit_options(best, training, n_classes),
        training.metric or "",
        shards,
        parallel.workers,
        training.resources_per_trial,
        name=f"refit-{best.trial_id or best.index}-{time.time_ns()}",
        n_features=parallel.n_features,
        keep_model=True,
        score_valid=False,
    )
    if outcome.model is None:
        raise RaymlopsError("the data-parallel refit returned no model")
    return MODEL_FILES["xgboost"], outcome.model
