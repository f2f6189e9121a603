"""Stage 1, prepare: read, validate, split and gather statistics in one pass, then transform.

Everything runs in Ray tasks over the data's blocks; the driver receives the validation
report, row counts, mergeable statistics and the reference sample, never the rows.

Example:
    >>> prepared = prepare(config, schema, config.data.source, StageLog())  # doctest: +SKIP
    >>> prepared.rows.train, prepared.n_classes  # doctest: +SKIP
    (2400, 2)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import pandas as pd

from raymlops.config import ProjectConfig
from raymlops.data.dataset import ROW_ID, RowSample, SplitBlocks, load_split, reference_sample
from raymlops.errors import DataValidationError
from raymlops.features.fit import (
    BlockStats,
    TrainArrays,
    block_stats,
    pipeline_from_blocks,
    transform_blocks,
)
from raymlops.features.pipeline import FeaturePipeline
from raymlops.schema import Schema
from raymlops.training.scaling import WorkerPlan
from raymlops.training.stages import StageLog

__all__ = ["Prepared", "RowCounts", "prepare"]


@dataclass(frozen=True)
class RowCounts:
    total: int
    train: int
    holdout: int

    def to_dict(self) -> dict[str, int]:
        return {"total": self.total, "train": self.train, "holdout": self.holdout}


@dataclass(frozen=True)
class Prepared:
    """The data's description, the fitted feature pipeline and ObjectRefs of the rows."""

    data: SplitBlocks  # typed train/holdout blocks (refs), source, files, digest
    rows: RowCounts
    pipeline: FeaturePipeline
    n_classes: int
    arrays: TrainArrays  # transformed rows in the object store
    reference: pd.DataFrame  # the drift reference sample (training rows)
    class_counts: dict[Any, int]  # training rows per class (classification; else empty)
    workers: WorkerPlan  # Ray Train workers per XGBoost trial, and why


def _summarizer(schema: Schema) -> Any:
    def summarize(train: pd.DataFrame) -> BlockStats:
        return block_stats(train, schema)

    return summarize


def prepare(config: ProjectConfig, schema: Schema, source: str, stages: StageLog) -> Prepared:
    """Validate ``source`` against ``schema``, split it, fit the features and transform.

    Raises:
        DataValidationError: the data breaks the schema, a side of the split is empty, or a
            classification target has fewer than two classes (nothing is registered).
    """
    split = config.data.split
    with stages.stage("read and validate data (one pass: split, statistics, sample)") as note:
        sample = RowSample(config.data.reference_rows, split.seed + 7)
        time_column = config.data.split_time_column
        data = load_split(
            source,
            schema,
            fraction=split.test_fraction,
            seed=split.seed,
            summarize=_summarizer(schema),
            sample=sample,
            time_column=time_column,
        )
        rows = RowCounts(data.rows, data.train_rows, data.holdout_rows)
        how = (
            f"after {_iso(data.time_cut)} by {time_column}"
            if data.time_cut is not None
            else f"seed {split.seed}"
        )
        note["detail"] = (
            f"{rows.total} rows ok: {rows.train} train, {rows.holdout} holdout "
            f"({how}), {len(data.train)} blocks"
        )
        _check_split(rows)
    with stages.stage("fit features (merged block statistics)") as note:
        pipeline = pipeline_from_blocks(data.summaries, schema)
        n_classes = _check_classes(schema, pipeline)
        reference = reference_sample(data, sample)
        data.candidates.clear()  # frees them in the object store
        class_counts: Counter = Counter()
        for stats in data.summaries:
            class_counts.update(stats.classes)
        note["detail"] = (
            f"{len(pipeline.feature_names)} features from {len(schema.feature_columns)} columns"
        )
    workers = _plan_workers(config, rows.train, len(pipeline.feature_names))
    models = config.training.models or []
    # one worker's trials (scikit-learn always, XGBoost with one worker) read joined arrays;
    # data-parallel ones read the per-block tables as shards
    one_worker = workers.workers == 1 or any(m != "xgboost" for m in models)
    with stages.stage("transform (Ray tasks)") as note:
        try:
            arrays = transform_blocks(
                data.train,
                data.holdout,
                pipeline,
                schema,
                row_ids=ROW_ID,
                valid_fraction=config.training.search.validation_fraction,
                valid_seed=split.seed + 1,
                assemble_training=one_worker,
                shard_tables=workers.workers > 1 and "xgboost" in models,
            )
        except ValueError as exc:
            raise DataValidationError(f"column {schema.target!r}: {_cause(exc)}") from None
        note["detail"] = (
            f"X {arrays.fit_rows + arrays.valid_rows}x{arrays.n_features}; "
            f"{arrays.valid_rows} rows for Tune's validation; {workers.workers} worker(s) "
            "per XGBoost trial"
        )
    return Prepared(
        data,
        rows,
        pipeline,
        n_classes,
        arrays,
        reference.drop(columns=[ROW_ID]),
        dict(class_counts),
        workers,
    )


def _plan_workers(config: ProjectConfig, rows: int, n_features: int) -> WorkerPlan:
    from raymlops.training.distributed import plan_trial_workers

    return plan_trial_workers(config.training, rows=rows, n_features=n_features)


def _cause(exc: Exception) -> Exception:
    """The task's own error, without Ray's traceback around it."""
    return getattr(exc, "cause", None) or exc


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


def _iso(ns: int | None) -> str:
    """A time split's cut, as a person reads it."""
    return pd.Timestamp(ns, tz="UTC").isoformat() if ns is not None else "-"
