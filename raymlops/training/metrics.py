"""Holdout metrics (pure).

Classification: roc_auc, accuracy, f1, log_loss (binary f1 and roc_auc for two classes;
macro f1 and one-vs-rest roc_auc for more). Regression: rmse, mae, r2.

Example:
    >>> compute_metrics("regression", np.array([1.0, 2.0]), np.array([1.0, 3.0]))["mae"]
    0.5
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from raymlops.config import CLASSIFICATION_METRICS, REGRESSION_METRICS

__all__ = ["compute_metrics", "higher_is_better", "score"]


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better."""
    table = {**CLASSIFICATION_METRICS, **REGRESSION_METRICS}
    return table[metric]


def compute_metrics(
    task: str, y_true: np.ndarray, predictions: np.ndarray, *, n_classes: int | None = None
) -> dict[str, float]:
    """All metrics of ``task``.

    Args:
        task: ``classification`` or ``regression``.
        y_true: class indices (classification) or values (regression).
        predictions: class probabilities, shape (n, k), for classification; values otherwise.
        n_classes: the number of classes the model knows (defaults to the probability columns).
    """
    if task == "regression":
        y_pred = np.asarray(predictions, dtype=np.float64).ravel()
        return {
            "rmse": float(np.sqrt(skm.mean_squared_error(y_true, y_pred))),
            "mae": float(skm.mean_absolute_error(y_true, y_pred)),
            "r2": float(skm.r2_score(y_true, y_pred)) if len(y_true) > 1 else float("nan"),
        }
    proba = np.asarray(predictions, dtype=np.float64)
    k = n_classes or proba.shape[1]
    labels = np.arange(k)
    y_pred = proba.argmax(axis=1)
    binary = k == 2
    present = np.unique(y_true)
    if len(present) < 2:
        auc = float("nan")
    elif binary:
        auc = float(skm.roc_auc_score(y_true, proba[:, 1]))
    else:
        auc = float(skm.roc_auc_score(y_true, proba, multi_class="ovr", labels=labels))
    return {
        "roc_auc": auc,
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "f1": float(
            skm.f1_score(
                y_true,
                y_pred,
                average="binary" if binary else "macro",
                labels=labels if not binary else None,
                zero_division=0,
            )
        ),
        "log_loss": float(skm.log_loss(y_true, np.clip(proba, 1e-15, 1 - 1e-15), labels=labels)),
    }


def score(
    task: str,
    metric: str,
    y_true: np.ndarray,
    predictions: np.ndarray,
    n_classes: int | None = None,
) -> float:
    """One metric (used per report inside Tune trials)."""
    return compute_metrics(task, y_true, predictions, n_classes=n_classes)[metric]
