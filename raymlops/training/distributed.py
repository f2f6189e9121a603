"""Data-parallel XGBoost trials: a Ray Train V2 ``XGBoostTrainer`` inside a Tune trial.

The Tune trial is the Train driver, as Ray's docs show for Train inside Tune: it builds an
``XGBoostTrainer`` whose ``train_loop_per_worker`` (:func:`_worker_loop`) reads the worker's
own shard of the fit and validation rows with ``ray.train.get_dataset_shard``, and a
``TuneReportCallback`` passes each report on to Tune, so :class:`OrderedASHA` sees a score
every ``rounds_per_report`` boosting rounds and can stop the trial (its actor, and with it the
Train controller and workers, ends).

Scores are exact and the same on every worker: at each report the workers gather their
validation predictions in rank order with XGBoost's collective ``allreduce``, and every worker
scores all validation rows (``ray.train.report`` is a call every worker makes; Train passes
rank 0's on). Shards are deterministic: Ray Data keeps the blocks' order
(``preserve_order``), so the same data gives each rank the same rows, and the same config the
same trees and scores. The finished model comes back from rank 0 through a queue actor owned
by the trial (no shared storage needed on a multi-node cluster).

Example:
    >>> outcome = fit_data_parallel(spec, options, "roc_auc", shards, 2, resources)  # doctest: +SKIP
    >>> outcome.nodes  # doctest: +SKIP
    [{'rank': 0, 'node_id': '6abb...', 'address': '10.0.0.5', 'fit_rows': 4000}, ...]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
import ray.train
from ray.train.xgboost import XGBoostTrainer

from raymlops.config import ResourcesConfig, TrainingConfig
from raymlops.errors import ResourcesError
from raymlops.training.metrics import score
from raymlops.training.models import FitOptions, TrialSpec, as_scores, xgboost_params
from raymlops.training.scaling import (
    NodeFacts,
    WorkerPlan,
    placement_problem,
    plan_workers,
    sklearn_problem,
)
from raymlops.training.stages import peak_rss

__all__ = [
    "DataParallelOutcome",
    "Shards",
    "check_requested_workers",
    "cluster_nodes",
    "fit_data_parallel",
    "plan_trial_workers",
    "scaling_config",
]

#: bytes of one worker's "node_id address" record in the gathered list of nodes
_NODE_RECORD = 160


def cluster_nodes() -> list[NodeFacts]:
    """The alive nodes of the connected cluster and their total resources."""
    nodes = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        resources = node.get("Resources", {})
        nodes.append(
            NodeFacts(
                node_id=node["NodeID"],
                address=node.get("NodeManagerAddress", ""),
                cpu=float(resources.get("CPU", 0)),
                gpu=float(resources.get("GPU", 0)),
                memory=float(resources.get("memory", 0)),
            )
        )
    return nodes


def check_requested_workers(training: TrainingConfig) -> None:
    """A set ``workers_per_trial`` the cluster cannot place fails here, before any work.

    Raises:
        ResourcesError: names the resources that are missing.
    """
    if training.workers_per_trial == "auto" or training.workers_per_trial < 2:
        return
    if "xgboost" not in (training.models or []):
        return  # no trial trains data-parallel
    problem = placement_problem(
        int(training.workers_per_trial), training.resources_per_trial, cluster_nodes()
    )
    if problem is not None:
        raise ResourcesError(problem)


def plan_trial_workers(training: TrainingConfig, *, rows: int, n_features: int) -> WorkerPlan:
    """Workers per XGBoost trial for ``rows`` training rows (see :mod:`.scaling`).

    Raises:
        ResourcesError: scikit-learn models with rows beyond one worker's memory, or more
            workers than the cluster can place.
    """
    nodes = cluster_nodes()
    resources = training.resources_per_trial
    plan = plan_workers(
        training.workers_per_trial,
        rows=rows,
        n_features=n_features,
        resources=resources,
        nodes=nodes,
    )
    models = list(training.models or [])
    problem = sklearn_problem(models, plan)
    if problem is None and plan.workers > 1 and "xgboost" in models:
        problem = placement_problem(plan.workers, resources, nodes)
    if problem is not None:
        raise ResourcesError(f"{problem} ({plan.reason})")
    return plan


@dataclass(frozen=True)
class Shards:
    """The fit and validation rows as Ray Datasets of Arrow blocks (``x`` tensor, ``y``)."""

    fit: Any
    valid: Any

    @classmethod
    def from_tables(cls, fit_tables: list[Any], valid_tables: list[Any]) -> Shards:
        return cls(ray.data.from_arrow_refs(fit_tables), ray.data.from_arrow_refs(valid_tables))


@dataclass
class DataParallelOutcome:
    """A data-parallel trial's last report, its model (rank 0's) and the workers' nodes."""

    metrics: dict[str, Any]
    model: bytes | None
    nodes: list[dict[str, Any]] = field(default_factory=list)


def scaling_config(workers: int, resources: ResourcesConfig) -> ray.train.ScalingConfig:
    """``workers`` Train workers with the per-trial resources each (a GPU: ``use_gpu``)."""
    per_worker: dict[str, float] = {"CPU": resources.cpu}
    if resources.memory_gb is not None:
        per_worker["memory"] = resources.memory_gb * 2**30
    if resources.gpu > 0:
        per_worker["GPU"] = resources.gpu
    return ray.train.ScalingConfig(
        num_workers=workers, use_gpu=resources.gpu > 0, resources_per_worker=per_worker
    )


def _read_shard(name: str, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """This worker's rows, features as float32: a DMatrix holds float32 and casts float64 to
    it anyway (the same values reach XGBoost), and the joined copy takes half the memory."""
    xs, ys = [], []
    shard = ray.train.get_dataset_shard(name)
    for batch in shard.iter_batches(batch_format="numpy", batch_size=None, prefetch_batches=0):
        xs.append(batch["x"].astype(np.float32))
        ys.append(batch["y"])
    if not xs:  # fewer blocks than workers: this worker holds no rows
        return np.empty((0, n_features), dtype=np.float32), np.empty(0)
    return np.concatenate(xs), np.concatenate(ys)


class _Gather:
    """Arrays of every worker joined in rank order (XGBoost's collective ``allreduce``)."""

    def __init__(self, rank: int, world: int) -> None:
        import xgboost as xgb

        self._collective = xgb.collective
        self.rank, self.world = rank, world

    def _sum(self, values: np.ndarray) -> np.ndarray:
        # xgboost's allreduce returns the values flattened
        return self._collective.allreduce(values, self._collective.Op.SUM).reshape(values.shape)

    def counts(self, count: int) -> np.ndarray:
        mine = np.zeros(self.world, dtype=np.float64)
        mine[self.rank] = count
        return self._sum(mine).astype(np.int64)

    def rows(self, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """``values`` (rows of this worker) joined with the others' in rank order."""
        out = np.zeros((int(counts.sum()), *values.shape[1:]), dtype=np.float64)
        start = int(counts[: self.rank].sum())
        out[start : start + len(values)] = values
        return self._sum(out)

    def text(self, value: str) -> list[str]:
        encoded = value.encode()[:_NODE_RECORD]
        mine = np.zeros((self.world, _NODE_RECORD), dtype=np.float64)
        mine[self.rank, : len(encoded)] = np.frombuffer(encoded, dtype=np.uint8)
        joined = self._sum(mine).astype(np.uint8)
        return [bytes(row).rstrip(b"\0").decode() for row in joined]


def _worker_nodes(gather: _Gather, fit_rows: int) -> list[dict[str, Any]]:
    """Each rank's node id, node address and number of fit rows, in rank order."""
    record = f"{ray.get_runtime_context().get_node_id()} {ray.util.get_node_ip_address()}"
    nodes = []
    for rank, text in enumerate(gather.text(f"{record} {fit_rows}")):
        node_id, address, rows = text.split()
        nodes.append({"rank": rank, "node_id": node_id, "address": address, "fit_rows": int(rows)})
    return nodes


def _worker_loop(config: dict[str, Any]) -> None:
    """One Train worker: its shard, the boosting rounds, a report every ``rounds_per_report``
    (every worker reports: Train passes rank 0's on)."""
    import xgboost as xgb

    spec: TrialSpec = config["spec"]
    options: FitOptions = config["options"]
    started = time.perf_counter()
    context = ray.train.get_context()
    gather = _Gather(context.get_world_rank(), context.get_world_size())
    x, y = _read_shard("fit", config["n_features"])
    nodes = _worker_nodes(gather, len(y))
    dtrain = xgb.DMatrix(x, label=y, nthread=options.threads)
    del x, y  # the DMatrix holds the rows now
    every = options.rounds_per_report
    rounds = options.max_rounds if options.steps is None else options.steps * every
    last: dict[str, Any] = {"steps": rounds // every, "nodes": nodes}
    callbacks: list[Any] = []
    if config["score"]:
        x_valid, y_valid = _read_shard("valid", config["n_features"])
        counts = gather.counts(len(y_valid))
        y_all = gather.rows(y_valid, counts)
        dvalid = xgb.DMatrix(x_valid, nthread=options.threads)
        del x_valid

        class Report(xgb.callback.TrainingCallback):
            def after_iteration(self, model, epoch, evals_log):  # type: ignore[no-untyped-def]
                if (epoch + 1) % every:
                    return False
                mine = np.asarray(model.predict(dvalid, iteration_range=(0, epoch + 1)))
                predictions = as_scores(gather.rows(mine, counts), options)
                value = score(options.task, config["metric"], y_all, predictions, options.n_classes)
                last.update(
                    score=value,
                    step=(epoch + 1) // every,
                    fit_s=time.perf_counter() - started,
                    node_id=nodes[0]["node_id"],
                )
                ray.train.report(dict(last))
                return False

        callbacks.append(Report())
    booster = xgb.train(
        xgboost_params(spec, options), dtrain, num_boost_round=rounds, callbacks=callbacks
    )
    # each worker's peak memory: what one worker held of the data (lineage, benchmark)
    for node, peak in zip(nodes, gather.counts(peak_rss()), strict=True):
        node["peak_rss"] = int(peak)
    if gather.rank == 0:  # the last report and the model go back to the trial's driver
        model = bytes(booster.save_raw(raw_format="ubj")) if config["keep_model"] else None
        config["outcome"].put((last, model))


def fit_data_parallel(
    spec: TrialSpec,
    options: FitOptions,
    metric: str,
    shards: Shards,
    workers: int,
    resources: ResourcesConfig,
    *,
    name: str,
    n_features: int,
    keep_model: bool = False,
    report: Callable[[], Any] | None = None,
    score_valid: bool = True,
) -> DataParallelOutcome:
    """Fit ``spec`` over ``workers`` Ray Train workers; inside a Tune trial, each report goes
    on to Tune (``report`` gives the ``TuneReportCallback``). Returns rank 0's last report,
    its model when ``keep_model``, and the nodes of the workers.

    Raises:
        ray.train.TrainingFailedError: a worker died or raised (the trial errors; Tune carries
            on with the other trials).
    """
    from ray.data import ExecutionOptions
    from ray.util.queue import Queue

    queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
    datasets = {"fit": shards.fit}
    if score_valid:
        datasets["valid"] = shards.valid
    trainer = XGBoostTrainer(
        _worker_loop,
        train_loop_config={
            "spec": spec,
            "options": options,
            "metric": metric,
            "outcome": queue,
            "keep_model": keep_model,
            "score": score_valid,
            "n_features": n_features,
        },
        scaling_config=scaling_config(workers, resources),
        datasets=datasets,
        # blocks in order: each rank gets the same rows every run (reproducible trees)
        dataset_config=ray.train.DataConfig(
            execution_options=ExecutionOptions(preserve_order=True)
        ),
        run_config=ray.train.RunConfig(
            name=name,
            callbacks=[report()] if report is not None else [],
            failure_config=ray.train.FailureConfig(max_failures=0),
        ),
    )
    try:
        trainer.fit()
        metrics, model = queue.get(timeout=60)
    finally:
        queue.shutdown()
    return DataParallelOutcome(metrics, model, list(metrics.get("nodes", [])))
