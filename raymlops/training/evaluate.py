"""Stage 3, evaluate: the new model and the champion on the same holdout, and the gate.

Both are scored in Ray tasks that read the holdout from the object store; only the metrics
come back (exact ones: roc_auc over every holdout row, not an average of blocks).

Example:
    >>> evaluation = evaluate(config, registry, prepared, selected, StageLog())  # doctest: +SKIP
    >>> evaluation.gate.passed  # doctest: +SKIP
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import ray

from raymlops.config import ProjectConfig
from raymlops.errors import DataValidationError
from raymlops.registry import Registry
from raymlops.schema import Schema
from raymlops.training.gate import GateDecision, decide
from raymlops.training.metrics import compute_metrics
from raymlops.training.models import load_model, predict_scores
from raymlops.training.prepare import Prepared
from raymlops.training.select import Selected
from raymlops.training.stages import StageLog

__all__ = ["ChampionScore", "Evaluation", "evaluate"]


@dataclass(frozen=True)
class ChampionScore:
    """The champion on this run's holdout: its metrics, or why it could not be scored."""

    version: str | None
    metrics: dict[str, float] | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Evaluation:
    """Holdout metrics of the new model, the champion's on the same rows, the gate."""

    metric: str
    metrics: dict[str, float]
    champion: ChampionScore
    gate: GateDecision


@ray.remote
def _holdout_metrics(  # type: ignore[no-untyped-def]
    kind: str, model_bytes: bytes, task: str, n_classes: int, x, y
) -> dict[str, float]:
    model = load_model(kind, model_bytes)
    scores = predict_scores(model, kind, task, x, n_classes)
    return compute_metrics(task, y, scores, n_classes=n_classes)


@ray.remote
def _champion_metrics(predictor: Any, target: str, *frames: pd.DataFrame) -> ChampionScore:
    champion = predictor.version
    holdout = pd.concat(frames, ignore_index=True)
    try:
        typed = predictor.validate(holdout[predictor.schema.names], require_target=True)
        y = predictor.pipeline.target.encode(typed[target])
        scores = predictor.scores(typed)
    except (KeyError, DataValidationError, ValueError) as exc:
        return ChampionScore(
            champion, None, f"champion {champion} cannot score this holdout: {exc}"
        )
    task = predictor.schema.task
    return ChampionScore(champion, compute_metrics(task, y, scores, n_classes=predictor.n_classes))


def evaluate(
    config: ProjectConfig,
    registry: Registry,
    prepared: Prepared,
    selected: Selected,
    stages: StageLog,
) -> Evaluation:
    """Score the new model and the champion on the holdout; decide the gate."""
    schema = Schema.from_config(config)
    best = selected.best
    with stages.stage("evaluate on holdout") as note:
        new = _holdout_metrics.remote(
            best.model,
            selected.model_bytes,
            schema.task,
            prepared.n_classes,
            *prepared.arrays.holdout,
        )
        champion = _score_champion(registry, prepared, schema)
        metrics = ray.get(new)
        note["detail"] = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    score = champion
    if isinstance(champion, ray.ObjectRef):
        with stages.stage("score champion on the same holdout") as note:
            score = ray.get(champion)
            note["detail"] = (
                f"{score.version} cannot score this holdout" if score.problem else score.version
            )
    metric = config.training.metric or ""
    gate = decide(metric, metrics, score.metrics, config.gate, champion_version=score.version)
    if score.version is not None and score.metrics is None:
        reasons = [score.problem or "champion not scored"]
        gate = GateDecision(False, metric, metrics, None, score.version, reasons)
    return Evaluation(metric, _plain(metrics), score, gate)


def _score_champion(registry: Registry, prepared: Prepared, schema: Schema) -> Any:
    """The champion's score task (running while the new model is scored), or no champion."""
    from raymlops.predictor import load_predictor

    champion = registry.champion()
    if champion is None:
        return ChampionScore(None)
    # the model's files (not data) are read here, verified, and sent to the task
    predictor = load_predictor(registry, champion)
    return _champion_metrics.remote(predictor, schema.target, *prepared.data.holdout)


def _plain(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) if isinstance(v, np.generic) else v for k, v in metrics.items()}
