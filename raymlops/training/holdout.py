"""Holdout scoring where the holdout lies: one Ray task per block, one task for the metrics.

Each block's task scores the new model on the block's transformed rows and the champion on
the same block's typed rows (one pass over the holdout for both), and returns their scores
and labels; one more task joins those and computes the exact metrics (roc_auc over every
holdout row, not an average of blocks). Only the metrics reach the driver.

This module imports no Tune or Train, so the workers that run its tasks start quickly.

Example:
    >>> scored = score_holdout(new, blocks, champion=None)  # doctest: +SKIP
    >>> scored.metrics["roc_auc"]  # doctest: +SKIP
    0.8644
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

from raymlops.errors import DataValidationError

__all__ = ["HoldoutScores", "NewModel", "score_holdout"]


@dataclass(frozen=True)
class NewModel:
    """The model being evaluated: its kind, native file and task."""

    kind: str
    model_bytes: bytes
    task: str
    n_classes: int


@dataclass(frozen=True)
class HoldoutScores:
    """The metrics of the new model and of the champion (or why it could not be scored)."""

    metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    champion_problem: str | None


@dataclass(frozen=True)
class _BlockScores:
    y: np.ndarray
    scores: np.ndarray
    champion_y: np.ndarray | None
    champion_scores: np.ndarray | None
    champion_problem: str | None


@ray.remote
def _score_block(  # type: ignore[no-untyped-def]
    new: NewModel, x, y, champion: Any, target: str, typed: Any
) -> _BlockScores:
    from raymlops.training.models import load_model, predict_scores

    model = load_model(new.kind, new.model_bytes)
    scores = predict_scores(model, new.kind, new.task, x, new.n_classes)
    if champion is None:
        return _BlockScores(y, scores, None, None, None)
    try:
        rows = champion.validate(typed[champion.schema.names], require_target=True)
        champion_y = champion.pipeline.target.encode(rows[target])
        champion_scores = champion.scores(rows)
    except (KeyError, DataValidationError, ValueError) as exc:
        problem = f"champion {champion.version} cannot score this holdout: {exc}"
        return _BlockScores(y, scores, None, None, problem)
    return _BlockScores(y, scores, champion_y, champion_scores, None)


@ray.remote
def _metrics(  # type: ignore[no-untyped-def]
    task: str, n_classes: int, champion: bool, *blocks: _BlockScores
) -> tuple[dict[str, float] | None, str | None]:
    """One model's exact metrics on every block's rows (or why the champion has none)."""
    from raymlops.training.metrics import compute_metrics

    if champion:
        problem = next((b.champion_problem for b in blocks if b.champion_problem), None)
        if problem is not None:
            return None, problem
        y = np.concatenate([b.champion_y for b in blocks])
        scores = np.concatenate([b.champion_scores for b in blocks])
    else:
        y = np.concatenate([b.y for b in blocks])
        scores = np.concatenate([b.scores for b in blocks])
    return _plain(compute_metrics(task, y, scores, n_classes=n_classes)), None


def score_holdout(
    new: NewModel,
    blocks: list[tuple[Any, Any]],
    *,
    champion: Any = None,
    typed_blocks: list[Any] | None = None,
    target: str = "",
) -> HoldoutScores:
    """The metrics of ``new`` on the transformed holdout ``blocks`` ((x, y) ObjectRefs each)
    and of ``champion`` (a predictor, or None) on the same blocks' typed rows
    ``typed_blocks``: one task per block scores both, then one task per model computes its
    metrics (the two at once)."""
    if champion is not None and (typed_blocks is None or len(typed_blocks) != len(blocks)):
        raise ValueError("the champion needs the typed rows of every holdout block")
    # each put once: every block's task reads the same model and champion
    new_ref = ray.put(new)
    champion_ref = ray.put(champion) if champion is not None else None
    typed = typed_blocks if champion is not None else [None] * len(blocks)
    parts = [
        _score_block.remote(new_ref, x, y, champion_ref, target, rows)
        for (x, y), rows in zip(blocks, typed, strict=True)
    ]
    new_metrics = _metrics.remote(new.task, new.n_classes, False, *parts)
    if champion is None:
        metrics, _ = ray.get(new_metrics)
        return HoldoutScores(metrics, None, None)
    theirs = _metrics.remote(champion.schema.task, champion.n_classes, True, *parts)
    (metrics, _), (champion_metrics, problem) = ray.get([new_metrics, theirs])
    return HoldoutScores(metrics, champion_metrics, problem)


def _plain(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) if isinstance(v, np.generic) else v for k, v in metrics.items()}
