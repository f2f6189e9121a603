"""Stage 3, evaluate: the new model and the champion on the same holdout, and the gate.

Both are scored in one pass of Ray tasks over the holdout's blocks in the object store
(:mod:`raymlops.training.holdout`); only the metrics come back (exact ones: roc_auc over
every holdout row, not an average of blocks).

Example:
    >>> evaluation = evaluate(config, registry, prepared, selected, StageLog())  # doctest: +SKIP
    >>> evaluation.gate.passed  # doctest: +SKIP
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raymlops.config import ProjectConfig
from raymlops.registry import Registry
from raymlops.schema import Schema
from raymlops.training.gate import GateDecision, decide
from raymlops.training.holdout import NewModel, score_holdout
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
    new = NewModel(selected.best.model, selected.model_bytes, schema.task, prepared.n_classes)
    champion = registry.champion()
    with stages.stage("evaluate on holdout") as note:
        predictor = _load_champion(registry, champion)
        scored = score_holdout(
            new,
            prepared.arrays.holdout,
            champion=predictor,
            typed_blocks=prepared.data.holdout,
            target=schema.target,
        )
        metrics = scored.metrics
        note["detail"] = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        if champion is not None:  # scored on the same pass over the holdout's blocks
            problem = scored.champion_problem
            note["detail"] += f"; champion {champion}" + (" cannot score it" if problem else "")
    score = ChampionScore(champion, scored.champion_metrics, scored.champion_problem)
    metric = config.training.metric or ""
    gate = decide(metric, metrics, score.metrics, config.gate, champion_version=score.version)
    if score.version is not None and score.metrics is None:
        reasons = [score.problem or "champion not scored"]
        gate = GateDecision(False, metric, metrics, None, score.version, reasons)
    return Evaluation(metric, metrics, score, gate)


def _load_champion(registry: Registry, champion: str | None) -> Any:
    """The champion's predictor (its files read and verified here, no data), or None."""
    if champion is None:
        return None
    from raymlops.predictor import load_predictor

    return load_predictor(registry, champion)
