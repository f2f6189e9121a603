"""Holdout metrics (pure).

Classification: roc_auc, accuracy, f1, log_loss (binary f1 and roc_auc for two classes;
macro f1 and one-vs-rest roc_auc for more). Regression: rmse, mae, r2.

Example:
    >>> compute_metrics("regression", np.array([1.0, 2.0]), np.array([1.0, 3.0]))["mae"]
    0.5
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn import metrics as skm

from raymlops.config import CLASSIFICATION_METRICS, REGRESSION_METRICS

__all__ = ["compute_metrics", "higher_is_better", "score"]


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better."""
    table = {**CLASSIFICATION_METRICS, **REGRESSION_METRICS}
    return table[metric]


def _roc_auc(y: np.ndarray, proba: np.ndarray, labels: np.ndarray) -> float:
    if len(np.unique(y)) < 2:
        return float("nan")
    if len(labels) == 2:
        return float(skm.roc_auc_score(y, proba[:, 1]))
    return float(skm.roc_auc_score(y, proba, multi_class="ovr", labels=labels))


def _f1(y: np.ndarray, proba: np.ndarray, labels: np.ndarray) -> float:
    binary = len(labels) == 2
    average = "binary" if binary else "macro"
    return float(
        skm.f1_score(
            y,
            proba.argmax(axis=1),
            average=average,
            labels=None if binary else labels,
            zero_division=0,
        )
    )


_CLASSIFICATION: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], float]] = {
    "roc_auc": _roc_auc,
    "accuracy": lambda y, p, _: float(skm.accuracy_score(y, p.argmax(axis=1))),
    "f1": _f1,
    "log_loss": lambda y, p, labels: float(
        skm.log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=labels)
    ),
}
_REGRESSION: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "rmse": lambda y, p: float(np.sqrt(skm.mean_squared_error(y, p))),
    "mae": lambda y, p: float(skm.mean_absolute_error(y, p)),
    "r2": lambda y, p: float(skm.r2_score(y, p)) if len(y) > 1 else float("nan"),
}


def compute_metrics(
    task: str,
    y_true: np.ndarray,
    predictions: np.ndarray,
    *,
    n_classes: int | None = None,
    only: str | None = None,
) -> dict[str, float]:
    """The metrics of ``task`` (or just ``only``).

    Args:
        task: ``classification`` or ``regression``.
        y_true: class indices (classification) or values (regression).
        predictions: class probabilities, shape (n, k), for classification; values otherwise.
        n_classes: the number of classes the model knows (defaults to the probability columns).
        only: compute this metric alone.
    """
    if task == "regression":
        y_pred = np.asarray(predictions, dtype=np.float64).ravel()
        chosen = {only: _REGRESSION[only]} if only else _REGRESSION
        return {name: fn(y_true, y_pred) for name, fn in chosen.items()}
    proba = np.asarray(predictions, dtype=np.float64)
    labels = np.arange(n_classes or proba.shape[1])
    picked = {only: _CLASSIFICATION[only]} if only else _CLASSIFICATION
    return {name: fn(y_true, proba, labels) for name, fn in picked.items()}


def score(
    task: str,
    metric: str,
    y_true: np.ndarray,
    predictions: np.ndarray,
    n_classes: int | None = None,
) -> float:
    """One metric (used per report inside Tune trials)."""
    return compute_metrics(task, y_true, predictions, n_classes=n_classes)[metric]
