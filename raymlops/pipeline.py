"""The training pipeline as one call, used by the CLI, ``jobs/train.py`` and retraining.

source -> validate (Ray Data) -> split -> fit features (Ray Data aggregates) -> Tune search
-> refit best -> holdout metrics -> gate vs champion -> register version -> promote (optional)

Example:
    >>> result = train(load_config("raymlops.yaml"), promote=True)  # doctest: +SKIP
    >>> result.version, result.promoted
    ('v1', True)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from raymlops.config import ProjectConfig, config_hash
from raymlops.data.split import holdout_mask
from raymlops.errors import DataValidationError
from raymlops.lineage import code_version, package_versions
from raymlops.registry import Registry
from raymlops.registry.bundle import VersionBundle
from raymlops.schema import Schema
from raymlops.storage import Storage
from raymlops.training.gate import GateDecision, decide
from raymlops.training.metrics import compute_metrics

__all__ = ["StageLog", "TrainResult", "open_registry", "train"]


@dataclass
class StageLog:
    """Timings of the pipeline's stages; ``on_stage`` lets a CLI show progress as they run."""

    on_start: Callable[[str], None] | None = None
    on_end: Callable[[str, float, str], None] | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict[str, str]]:
        note: dict[str, str] = {"detail": ""}
        if self.on_start:
            self.on_start(name)
        started = time.perf_counter()
        yield note
        elapsed = time.perf_counter() - started
        self.seconds[name] = elapsed
        if self.on_end:
            self.on_end(name, elapsed, note["detail"])


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


def _champion_metrics(
    registry: Registry, holdout: pd.DataFrame, schema: Schema, stages: StageLog
) -> tuple[str | None, dict[str, float] | None, str | None]:
    """The champion scored on this run's holdout, or why it could not be."""
    from raymlops.predictor import load_predictor

    champion = registry.champion()
    if champion is None:
        return None, None, None
    with stages.stage("score champion on the same holdout") as note:
        predictor = load_predictor(registry, champion)
        try:
            typed = predictor.validate(holdout[predictor.schema.names], require_target=True)
            y = predictor.pipeline.target.encode(typed[schema.target])
            scores = predictor.scores(typed)
        except (KeyError, DataValidationError, ValueError) as exc:
            note["detail"] = f"{champion} cannot score this holdout"
            return champion, None, f"champion {champion} cannot score this holdout: {exc}"
        note["detail"] = champion
        return (
            champion,
            compute_metrics(schema.task, y, scores, n_classes=predictor.n_classes),
            None,
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
        StorageError / RegistryError / IntegrityError: storage or champion problems.
    """
    from raymlops.data.dataset import ROW_ID, load_validated, sample_rows, split
    from raymlops.features.fit import fit_pipeline, to_numpy
    from raymlops.predictor import load_predictor
    from raymlops.runtime import ensure_ray
    from raymlops.training.search import refit, run_search

    stages = stages or StageLog()
    schema = Schema.from_config(config)
    registry = open_registry(config)  # fail fast on unreachable storage, before any work
    data_source = source or config.data.source
    with stages.stage("start Ray") as note:
        ensure_ray(address)
        import ray

        note["detail"] = (
            f"{len(ray.nodes())} node(s), {int(ray.cluster_resources().get('CPU', 0))} CPU"
        )
    with stages.stage("read and validate data (Ray Data)") as note:
        data = load_validated(data_source, schema)
        note["detail"] = f"{data.rows} rows ok"
    with stages.stage("split train/holdout") as note:
        split_cfg = config.data.split
        train_ds, holdout_ds = split(
            data.dataset, fraction=split_cfg.test_fraction, seed=split_cfg.seed
        )
        train_rows, holdout_rows = train_ds.count(), holdout_ds.count()
        note["detail"] = f"{train_rows} train, {holdout_rows} holdout (seed {split_cfg.seed})"
        if train_rows == 0 or holdout_rows == 0:
            raise DataValidationError(
                f"the split left {train_rows} train and {holdout_rows} holdout rows; "
                "more data or another data.split.test_fraction is needed"
            )
    with stages.stage("fit features (Ray Data aggregates)") as note:
        pipeline = fit_pipeline(train_ds, schema)
        note["detail"] = (
            f"{len(pipeline.feature_names)} features from {len(schema.feature_columns)} columns"
        )
    with stages.stage("transform (map_batches)") as note:
        try:
            x, y, ids = to_numpy(train_ds, pipeline, schema, with_ids=ROW_ID)
            x_hold, y_hold, _ = to_numpy(holdout_ds, pipeline, schema)
        except ValueError as exc:
            raise DataValidationError(f"column {schema.target!r}: {exc}") from None
        n_classes = len(pipeline.target.classes)
        if schema.task == "classification" and n_classes < 2:
            raise DataValidationError(
                f"column {schema.target!r}: the training rows hold {n_classes} class(es); "
                "classification needs at least 2"
            )
        valid_mask = holdout_mask(
            ids, fraction=config.training.search.validation_fraction, seed=split_cfg.seed + 1
        )
        note["detail"] = (
            f"X {x.shape[0]}x{x.shape[1]}; {int(valid_mask.sum())} rows for Tune's validation"
        )
    with stages.stage("search (Ray Tune)") as note:
        search = run_search(
            config.training,
            (x[~valid_mask], y[~valid_mask]),
            (x[valid_mask], y[valid_mask]),
            n_classes=n_classes,
            verbose=verbose,
        )
        best = search.best
        note["detail"] = (
            f"{len(search.trials)} trials; best {best.model} #{best.index} {search.metric}={best.score:.4f}"
        )
    with stages.stage("refit best on all training rows") as note:
        model_file, model_bytes = refit(best, x, y, config.training, n_classes=n_classes)
        note["detail"] = f"{model_file} ({len(model_bytes) / 1024:.0f} KiB)"
    with stages.stage("evaluate on holdout") as note:
        from raymlops.training.models import load_model, predict_scores

        model = load_model(best.model, model_bytes)
        scores = predict_scores(model, best.model, schema.task, x_hold, n_classes)
        metrics = compute_metrics(schema.task, y_hold, scores, n_classes=n_classes)
        note["detail"] = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    holdout_frame = holdout_ds.to_pandas()
    champion, champion_metrics, champion_problem = _champion_metrics(
        registry, holdout_frame, schema, stages
    )
    metric = config.training.metric or ""
    gate = decide(metric, metrics, champion_metrics, config.gate, champion_version=champion)
    if champion is not None and champion_metrics is None:
        gate = GateDecision(
            False, metric, metrics, None, champion, [champion_problem or "champion not scored"]
        )
    with stages.stage("register version") as note:
        reference = sample_rows(train_ds, config.data.reference_rows, seed=split_cfg.seed + 7)
        lineage = {
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "data": {
                "source": data.source,
                "files": data.files,
                "digest": data.digest,
                "rows": {"total": data.rows, "train": train_rows, "holdout": holdout_rows},
            },
            "config_hash": config_hash(config),
            "config": config.model_dump(mode="json"),
            "code": code_version(),
            "seeds": {
                "split": split_cfg.seed,
                "search": config.training.search.seed,
                "trial": best.seed,
            },
            "packages": package_versions(),
            "trial": {
                "index": best.index,
                "trial_id": best.trial_id,
                "model": best.model,
                "params": best.params,
                "validation_score": best.score,
                "steps": best.steps,
                "node_id": best.node_id,
            },
            "parent": champion,
            "ray": {"nodes": sorted({t.node_id for t in search.trials if t.node_id})},
            **(extra_lineage or {}),
        }
        bundle = VersionBundle(
            model_kind=best.model,
            model_file=model_file,
            model=model_bytes,
            features_json=pipeline.to_json(),
            schema=schema.to_dict(),
            reference=reference.drop(columns=[ROW_ID]),
            metrics={
                "metric": metric,
                "holdout": metrics,
                "validation_score": best.score,
                "champion": {"version": champion, "holdout": champion_metrics},
            },
            gate=gate.to_dict(),
            lineage=lineage,
            trials=[t.__dict__ for t in search.trials],
        )
        version = bundle.register(
            registry, metric=metric, score=metrics[metric], gate_passed=gate.passed, rows=data.rows
        )
        note["detail"] = f"{config.name} {version} at {registry.location}"
    promoted = False
    if promote and gate.passed:
        with stages.stage("promote to champion") as note:
            # load once through the verified path: what is promoted is what serving will load
            load_predictor(registry, version)
            registry.promote(version, reason="; ".join(gate.reasons))
            promoted = True
            note["detail"] = f"champion: {version}"
    return TrainResult(
        name=config.name,
        version=version,
        promoted=promoted,
        metric=metric,
        metrics=metrics,
        gate=gate,
        champion_version=champion,
        registry_location=registry.location,
        rows={"total": data.rows, "train": train_rows, "holdout": holdout_rows},
        trials=search.trials,
        best_trial=best,
        search_wall_s=search.wall_s,
        stages=dict(stages.seconds),
        lineage=lineage,
    )
