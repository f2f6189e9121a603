"""Stage 3, evaluate: the new model and the champion on the same holdout, and the gate.

Example:
    >>> evaluation = evaluate(config, registry, prepared, selected, StageLog())  # doctest: +SKIP
    >>> evaluation.gate.passed  # doctest: +SKIP
    True
"""

from __future__ import annotations

from dataclasses import dataclass

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


def evaluate(
    config: ProjectConfig,
    registry: Registry,
    prepared: Prepared,
    selected: Selected,
    stages: StageLog,
) -> Evaluation:
    """Score the new model and the champion on the holdout; decide the gate."""
    schema = Schema.from_config(config)
    with stages.stage("evaluate on holdout") as note:
        best, hold = selected.best, prepared.holdout_arrays
        model = load_model(best.model, selected.model_bytes)
        scores = predict_scores(model, best.model, schema.task, hold.x, prepared.n_classes)
        metrics = compute_metrics(schema.task, hold.y, scores, n_classes=prepared.n_classes)
        note["detail"] = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    champion = _score_champion(registry, prepared, schema, stages)
    metric = config.training.metric or ""
    gate = decide(metric, metrics, champion.metrics, config.gate, champion_version=champion.version)
    if champion.version is not None and champion.metrics is None:
        reasons = [champion.problem or "champion not scored"]
        gate = GateDecision(False, metric, metrics, None, champion.version, reasons)
    return Evaluation(metric, metrics, champion, gate)


def _score_champion(
    registry: Registry, prepared: Prepared, schema: Schema, stages: StageLog
) -> ChampionScore:
    from raymlops.predictor import load_predictor

    champion = registry.champion()
    if champion is None:
        return ChampionScore(None)
    holdout = prepared.holdout.to_pandas()
    with stages.stage("score champion on the same holdout") as note:
        predictor = load_predictor(registry, champion)
        try:
            typed = predictor.validate(holdout[predictor.schema.names], require_target=True)
            y = predictor.pipeline.target.encode(typed[schema.target])
            scores = predictor.scores(typed)
        except (KeyError, DataValidationError, ValueError) as exc:
            note["detail"] = f"{champion} cannot score this holdout"
            return ChampionScore(
                champion, None, f"champion {champion} cannot score this holdout: {exc}"
            )
        note["detail"] = champion
        metrics = compute_metrics(schema.task, y, scores, n_classes=predictor.n_classes)
        return ChampionScore(champion, metrics)
