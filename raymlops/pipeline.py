"""The training pipeline's public entry points (kept here so existing imports keep working).

The stages live in :mod:`raymlops.training`: ``prepare``, ``select``, ``evaluate``,
``register``, orchestrated by :func:`raymlops.training.run.train`.
"""

from raymlops.training.run import StageLog, TrainResult, open_registry, train

__all__ = ["StageLog", "TrainResult", "open_registry", "train"]
