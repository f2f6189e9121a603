"""Stage 1, prepare: read and validate (Ray Data), split, fit the features, transform.

Example:
    >>> prepared = prepare(config, schema, config.data.source, StageLog())  # doctest: +SKIP
    >>> prepared.rows.train, prepared.n_classes  # doctest: +SKIP
    (2400, 2)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ray

from raymlops.config import ProjectConfig
from raymlops.data.dataset import ROW_ID, ValidatedData, load_validated, split
from raymlops.data.split import holdout_mask
from raymlops.errors import DataValidationError
from raymlops.features.fit import fit_pipeline, to_numpy
from raymlops.features.pipeline import FeaturePipeline
from raymlops.schema import Schema
from raymlops.training.stages import StageLog

__all__ = ["Arrays", "Prepared", "RowCounts", "prepare"]


@dataclass(frozen=True)
class RowCounts:
    total: int
    train: int
    holdout: int

    def to_dict(self) -> dict[str, int]:
        return {"total": self.total, "train": self.train, "holdout": self.holdout}


@dataclass(frozen=True)
class Arrays:
    """Features and encoded target of one side of the data."""

    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class Prepared:
    """Validated, split and transformed data, and the fitted feature pipeline."""

    data: ValidatedData
    train: ray.data.Dataset
    holdout: ray.data.Dataset
    rows: RowCounts
    pipeline: FeaturePipeline
    n_classes: int
    train_arrays: Arrays  # every training row, in row order (the refit's data)
    valid_mask: np.ndarray  # the training rows Tune scores on; it fits on the others
    holdout_arrays: Arrays

    @property
    def fit(self) -> Arrays:
        return Arrays(self.train_arrays.x[~self.valid_mask], self.train_arrays.y[~self.valid_mask])

    @property
    def valid(self) -> Arrays:
        return Arrays(self.train_arrays.x[self.valid_mask], self.train_arrays.y[self.valid_mask])


def prepare(config: ProjectConfig, schema: Schema, source: str, stages: StageLog) -> Prepared:
    """Validate ``source`` against ``schema``, split it and transform both sides.

    Raises:
        DataValidationError: the data breaks the schema, a side of the split is empty, or a
            classification target has fewer than two classes (nothing is registered).
    """
    with stages.stage("read and validate data (Ray Data)") as note:
        data = load_validated(source, schema)
        note["detail"] = f"{data.rows} rows ok"
    with stages.stage("split train/holdout") as note:
        split_cfg = config.data.split
        train_ds, holdout_ds = split(
            data.dataset, fraction=split_cfg.test_fraction, seed=split_cfg.seed
        )
        rows = RowCounts(data.rows, train_ds.count(), holdout_ds.count())
        note["detail"] = f"{rows.train} train, {rows.holdout} holdout (seed {split_cfg.seed})"
        _check_split(rows)
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
        n_classes = _check_classes(schema, pipeline)
        valid_mask = holdout_mask(
            ids, fraction=config.training.search.validation_fraction, seed=split_cfg.seed + 1
        )
        note["detail"] = (
            f"X {x.shape[0]}x{x.shape[1]}; {int(valid_mask.sum())} rows for Tune's validation"
        )
    return Prepared(
        data=data,
        train=train_ds,
        holdout=holdout_ds,
        rows=rows,
        pipeline=pipeline,
        n_classes=n_classes,
        train_arrays=Arrays(x, y),
        valid_mask=valid_mask,
        holdout_arrays=Arrays(x_hold, y_hold),
    )


def _check_split(rows: RowCounts) -> None:
    if rows.train == 0 or rows.holdout == 0:
        raise DataValidationError(
            f"the split left {rows.train} train and {rows.holdout} holdout rows; "
            "more data or another data.split.test_fraction is needed"
        )


def _check_classes(schema: Schema, pipeline: FeaturePipeline) -> int:
    n_classes = len(pipeline.target.classes)
    if schema.task == "classification" and n_classes < 2:
        raise DataValidationError(
            f"column {schema.target!r}: the training rows hold {n_classes} class(es); "
            "classification needs at least 2"
        )
    return n_classes
