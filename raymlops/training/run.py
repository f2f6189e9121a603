"""The training pipeline as one call, used by the CLI, ``jobs/train.py`` and retraining.

prepare (validate, split, features, transform) -> dataset checks -> select (Tune search, refit)
-> evaluate (holdout, champion, gate) -> register (bundle) -> promote (optional)

Example:
    >>> result = train(load_config("raymlops.yaml"), promote=True)  # doctest: +SKIP
    >>> result.version, result.promoted
    ('v1', True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raymlops.config import ProjectConfig
from raymlops.registry import Registry
from raymlops.schema import Schema
from raymlops.storage import Storage
from raymlops.training.gate import GateDecision
from raymlops.training.stages import StageLog

__all__ = ["StageLog", "TrainResult", "open_registry", "train"]


@dataclass
class TrainResult:
    """What a training run produced and decided."""

    name: str
    version: str
    promoted: bool
    metric: str
    metrics: dict[str, float]
    gate: GateDecision
    champion_version: str | None
    registry_location: str
    rows: dict[str, int]
    trials: list[Any]
    best_trial: Any
    search_wall_s: float
    stages: dict[str, float]
    lineage: dict[str, Any]


def open_registry(config: ProjectConfig) -> Registry:
    """The registry of ``config.name`` on ``config.storage``."""
    return Registry(Storage.from_uri(config.storage), config.name)


def _start_ray(address: str | None, stages: StageLog) -> None:
    from raymlops.runtime import ensure_ray

    with stages.stage("start Ray") as note:
        ensure_ray(address)
        import ray

        note["detail"] = (
            f"{len(ray.nodes())} node(s), {int(ray.cluster_resources().get('CPU', 0))} CPU"
        )


def train(
    config: ProjectConfig,
    *,
    promote: bool = False,
    address: str | None = None,
    stages: StageLog | None = None,
    source: str | None = None,
    extra_lineage: dict[str, Any] | None = None,
    verbose: int = 1,
) -> TrainResult:
    """Train, evaluate, gate and register a new version of ``config.name``.

    Args:
        config: the project config.
        promote: move the champion alias to the new version if it passes the gate.
        address: Ray address (default ``RAY_ADDRESS``, else a local Ray).
        stages: receives stage start/end events (progress) and keeps their timings.
        source: train on this source instead of ``config.data.source`` (retraining).
        extra_lineage: merged into lineage.json (e.g. the report that triggered a retrain).

    Raises:
        DataValidationError: the data breaks the schema (nothing is registered).
        ResourcesError: the cluster cannot place ``workers_per_trial`` workers, or
            scikit-learn models get rows beyond one worker's memory (before training).
        StorageError / RegistryError / IntegrityError: storage or champion problems.
    """
    from raymlops.training import register
    from raymlops.training.dataset_checks import check_dataset
    from raymlops.training.distributed import check_requested_workers
    from raymlops.training.evaluate import evaluate
    from raymlops.training.prepare import prepare
    from raymlops.training.select import search_and_refit

    stages = stages or StageLog()
    schema = Schema.from_config(config)
    registry = open_registry(config)  # fail fast on unreachable storage, before any work
    _start_ray(address, stages)
    check_requested_workers(config.training)  # more workers than the cluster has: before any work
    prepared = prepare(config, schema, source or config.data.source, stages)
    checks = check_dataset(config, schema, registry, prepared, stages)  # exit 3 when it blocks
    selected = search_and_refit(config, prepared, stages, verbose=verbose)
    evaluation = evaluate(config, registry, prepared, selected, stages)
    version = register.register_version(
        config,
        registry,
        prepared,
        selected,
        evaluation,
        stages,
        extra_lineage=extra_lineage,
        checks=checks,
    )
    promoted = promote and evaluation.gate.passed
    if promoted:
        register.promote(registry, version.name, evaluation, stages)
    return TrainResult(
        name=config.name,
        version=version.name,
        promoted=promoted,
        metric=evaluation.metric,
        metrics=evaluation.metrics,
        gate=evaluation.gate,
        champion_version=evaluation.champion.version,
        registry_location=registry.location,
        rows=prepared.rows.to_dict(),
        trials=selected.search.trials,
        best_trial=selected.best,
        search_wall_s=selected.search.wall_s,
        stages=dict(stages.seconds),
        lineage=version.lineage,
    )
