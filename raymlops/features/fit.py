"""Fit and apply the feature pipeline on Ray Data (the Ray shell around the pure pipeline).

Statistics come from Ray Data aggregates in one pass: mean/std, min/max, missing counts for
numbers; category frequencies with ``ValueCounter``. The transform is
:meth:`FeaturePipeline.transform`, applied with ``map_batches``.

Example:
    >>> pipeline = fit_pipeline(train_ds, schema)  # doctest: +SKIP
    >>> features = transform_dataset(train_ds, pipeline, schema)  # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import ray
from ray.data.aggregate import Count, Max, Mean, Min, Std, ValueCounter

from raymlops.features.pipeline import ColumnStats, FeaturePipeline, float_values, numeric_view
from raymlops.schema import Schema

__all__ = [
    "BlockStats",
    "TrainArrays",
    "block_stats",
    "fit_pipeline",
    "fit_stats",
    "merge_stats",
    "pipeline_from_blocks",
    "to_numpy",
    "transform_blocks",
]


def fit_stats(
    dataset: ray.data.Dataset, schema: Schema
) -> tuple[dict[str, ColumnStats], list[Any]]:
    """Per-feature statistics and the sorted target classes, with Ray Data aggregates."""
    target = schema.target
    view = dataset.map_batches(
        lambda b: numeric_view(b, schema).assign(**{target: b[target].astype(object)}),
        batch_format="pandas",
    )
    aggregates: list[Any] = [Count(alias_name="__rows")]
    numeric = [c for c in schema.feature_columns if schema.columns[c].type != "category"]
    categorical = [c for c in schema.feature_columns if schema.columns[c].type == "category"]
    for name in numeric:
        aggregates += [
            Count(name, ignore_nulls=True, alias_name=f"count({name})"),
            Mean(name, alias_name=f"mean({name})"),
            Std(name, ddof=0, alias_name=f"std({name})"),
            Min(name, alias_name=f"min({name})"),
            Max(name, alias_name=f"max({name})"),
        ]
    for name in categorical:
        aggregates += [
            Count(name, ignore_nulls=True, alias_name=f"count({name})"),
            ValueCounter(name, alias_name=f"values({name})"),
        ]
    if schema.task == "classification":
        aggregates.append(ValueCounter(target, alias_name="values(__target)"))
    result = view.aggregate(*aggregates)
    rows = int(result["__rows"])
    stats: dict[str, ColumnStats] = {}
    for name in numeric:
        count = int(result[f"count({name})"] or 0)
        stats[name] = ColumnStats(
            count=count,
            missing=rows - count,
            mean=_number(result[f"mean({name})"]),
            std=_number(result[f"std({name})"]),
            min=_number(result[f"min({name})"]),
            max=_number(result[f"max({name})"]),
        )
    for name in categorical:
        count = int(result[f"count({name})"] or 0)
        stats[name] = ColumnStats(
            count=count, missing=rows - count, frequencies=_frequencies(result[f"values({name})"])
        )
    classes: list[Any] = []
    if schema.task == "classification":
        seen = _frequencies(result["values(__target)"], keep_type=True)
        classes = sorted(seen, key=lambda v: (not isinstance(v, (int, float)), v))
    return stats, classes


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if np.isnan(value) else value


def _frequencies(
    counter: dict[str, list[Any]] | None, *, keep_type: bool = False
) -> dict[Any, int]:
    if not counter:
        return {}
    out: dict[Any, int] = {}
    for value, count in zip(counter["values"], counter["counts"], strict=True):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        key = _plain(value) if keep_type else str(value)
        out[key] = out.get(key, 0) + int(count)
    return out


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def fit_pipeline(dataset: ray.data.Dataset, schema: Schema) -> FeaturePipeline:
    """Fit the feature pipeline of ``schema`` on the (training) dataset."""
    stats, classes = fit_stats(dataset, schema)
    return FeaturePipeline.from_stats(schema, stats, classes)


def to_numpy(
    dataset: ray.data.Dataset,
    pipeline: FeaturePipeline,
    schema: Schema,
    *,
    with_ids: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Apply the transform with ``map_batches`` and collect (X, y, row ids) as numpy arrays."""
    target = schema.target

    def _encode(batch: pd.DataFrame) -> pd.DataFrame:
        features = pipeline.transform(batch)
        features["__y"] = pipeline.target.encode(batch[target])
        if with_ids:
            features["__id"] = batch[with_ids].to_numpy()
        return features

    frame = dataset.map_batches(_encode, batch_format="pandas").to_pandas()
    ids = frame.pop("__id").to_numpy() if with_ids else None
    y = frame.pop("__y").to_numpy()
    x = frame[pipeline.feature_names].to_numpy(dtype=np.float64)
    return x, y, ids


# -- one pass over blocks (the training pipeline) -------------------------------------------------


@dataclass
class BlockStats:
    """Mergeable statistics of one block: per numeric column (count, mean, M2, min, max),
    per category column its value counts, and the target's class counts."""

    rows: int
    numeric: dict[str, tuple[int, float, float, float, float]] = field(default_factory=dict)
    categories: dict[str, Counter] = field(default_factory=dict)
    classes: Counter = field(default_factory=Counter)


def block_stats(frame: pd.DataFrame, schema: Schema) -> BlockStats:
    """Statistics of one block of typed rows (pure; runs in the task that validated it)."""
    out = BlockStats(rows=len(frame))
    for name in schema.feature_columns:
        kind = schema.columns[name].type
        if kind == "category":
            values = frame[name].astype(object).dropna()
            out.categories[name] = Counter(
                {str(k): int(v) for k, v in values.value_counts().items()}
            )
            continue
        # numeric_view's values column by column (no frame of them all is built)
        values = float_values(frame[name], kind)
        values = values[~np.isnan(values)]
        if len(values) == 0:
            out.numeric[name] = (0, 0.0, 0.0, np.inf, -np.inf)
            continue
        mean = float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        out.numeric[name] = (len(values), mean, m2, float(values.min()), float(values.max()))
    if schema.task == "classification":
        labels = frame[schema.target].astype(object).dropna()
        out.classes = Counter({_plain(k): int(v) for k, v in labels.value_counts().items()})
    return out


def _merge_moments(
    a: tuple[int, float, float, float, float], b: tuple[int, float, float, float, float]
) -> tuple[int, float, float, float, float]:
    """Chan et al.'s parallel update of count, mean and sum of squared deviations."""
    n_a, mean_a, m2_a, min_a, max_a = a
    n_b, mean_b, m2_b, min_b, max_b = b
    n = n_a + n_b
    if n == 0:
        return a
    delta = mean_b - mean_a
    mean = mean_a + delta * n_b / n
    m2 = m2_a + m2_b + delta * delta * n_a * n_b / n
    return n, mean, m2, min(min_a, min_b), max(max_a, max_b)


def merge_stats(
    parts: list[BlockStats], schema: Schema
) -> tuple[dict[str, ColumnStats], list[Any]]:
    """Per-feature statistics and sorted target classes from every block's :class:`BlockStats`
    (the same numbers :func:`fit_stats` computes with Ray Data aggregates)."""
    rows = sum(p.rows for p in parts)
    stats: dict[str, ColumnStats] = {}
    for name in schema.feature_columns:
        if schema.columns[name].type == "category":
            counts: Counter = Counter()
            for part in parts:
                counts.update(part.categories.get(name, {}))
            count = sum(counts.values())
            stats[name] = ColumnStats(count=count, missing=rows - count, frequencies=dict(counts))
            continue
        moments = (0, 0.0, 0.0, np.inf, -np.inf)
        for part in parts:
            moments = _merge_moments(moments, part.numeric[name])
        n, mean, m2, low, high = moments
        stats[name] = ColumnStats(
            count=n,
            missing=rows - n,
            mean=mean if n else None,
            std=float(np.sqrt(m2 / n)) if n else None,
            min=low if n else None,
            max=high if n else None,
        )
    classes: list[Any] = []
    if schema.task == "classification":
        seen: Counter = Counter()
        for part in parts:
            seen.update(part.classes)
        classes = sorted(seen, key=lambda v: (not isinstance(v, (int, float)), v))
    return stats, classes


def pipeline_from_blocks(parts: list[BlockStats], schema: Schema) -> FeaturePipeline:
    """The feature pipeline of ``schema`` fitted on the blocks' merged statistics."""
    stats, classes = merge_stats(parts, schema)
    return FeaturePipeline.from_stats(schema, stats, classes)


@ray.remote(num_returns=7)
def _transform_block(  # type: ignore[no-untyped-def]
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    pipeline: FeaturePipeline,
    target: str,
    row_ids: str,
    fraction: float,
    seed: int,
):
    from raymlops.data.split import holdout_mask

    def encode(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        x = pipeline.transform(frame).to_numpy(dtype=np.float64)
        return x, pipeline.target.encode(frame[target])

    x, y = encode(train)
    mask = holdout_mask(train[row_ids].to_numpy(), fraction=fraction, seed=seed)
    x_hold, y_hold = encode(holdout)
    return x[~mask], y[~mask], x[mask], y[mask], mask, x_hold, y_hold


@dataclass(frozen=True)
class TrainArrays:
    """Transformed rows in the object store (ObjectRefs of numpy arrays), nothing on the driver.

    ``fit``/``valid`` are the training rows Tune fits on and scores on; ``valid_mask`` puts
    them back in row order for the refit; ``holdout`` is the evaluation side, one (x, y) pair
    per block, never joined (the evaluation scores each block where it lies). When the
    training rows are not joined (data-parallel trials, ``assemble_training=False``),
    ``fit``/``valid``/``valid_mask`` are None and ``fit_tables``/``valid_tables`` hold one
    Arrow table per block (an ``x`` tensor column and ``y``), the blocks of the Ray Datasets
    that Ray Train shards across a trial's workers.
    """

    fit: tuple[Any, Any] | None
    valid: tuple[Any, Any] | None
    valid_mask: Any
    holdout: list[tuple[Any, Any]]
    fit_rows: int
    valid_rows: int
    n_features: int
    fit_tables: list[Any] = field(default_factory=list)
    valid_tables: list[Any] = field(default_factory=list)

    @property
    def assembled(self) -> bool:
        """Whether the training rows are joined into arrays (one worker can read them)."""
        return self.fit is not None


@ray.remote(num_returns=6)
def _assemble(blocks: int, *parts):  # type: ignore[no-untyped-def]
    """The training side's five arrays from the blocks' parts, each one concatenation (no
    intermediate copy)."""
    joined = [np.concatenate(parts[i * blocks : (i + 1) * blocks]) for i in range(5)]
    mask = joined[4]
    return (*joined, (len(mask) - int(mask.sum()), int(mask.sum())))


@ray.remote(num_returns=3)
def _block_tables(x_fit, y_fit, x_valid, y_valid):  # type: ignore[no-untyped-def]
    """One block's fit and validation rows as Arrow tables (``x`` tensor column, ``y``)."""
    import pyarrow as pa
    from ray.data.extensions import ArrowTensorArray

    def table(x: np.ndarray, y: np.ndarray) -> pa.Table:
        return pa.table({"x": ArrowTensorArray.from_numpy(x), "y": np.asarray(y)})

    return table(x_fit, y_fit), table(x_valid, y_valid), (len(y_fit), len(y_valid))


def transform_blocks(
    train: list[Any],
    holdout: list[Any],
    pipeline: FeaturePipeline,
    schema: Schema,
    *,
    row_ids: str,
    valid_fraction: float,
    valid_seed: int,
    assemble_training: bool = True,
    shard_tables: bool = False,
) -> TrainArrays:
    """Transform every block in parallel and join them, in Ray tasks, into the arrays Tune,
    the refit and the evaluation read from the object store. Tune's validation rows are
    chosen by :func:`~raymlops.data.split.holdout_mask` of the row number.

    ``shard_tables`` also keeps the training rows as per-block Arrow tables, for trials whose
    workers each read a shard; ``assemble_training=False`` keeps only those (no object holds
    all the training rows).

    Raises:
        ValueError: a label cannot be encoded (e.g. a class only in the holdout).
    """
    pipeline_ref = ray.put(pipeline)
    outs = [
        _transform_block.remote(
            t, h, pipeline_ref, schema.target, row_ids, valid_fraction, valid_seed
        )
        for t, h in zip(train, holdout, strict=True)
    ]
    n_features = len(pipeline.feature_names)
    holdout = [(out[5], out[6]) for out in outs]
    tables = [_block_tables.remote(*out[:4]) for out in outs] if shard_tables else []
    if not assemble_training:
        tables = tables or [_block_tables.remote(*out[:4]) for out in outs]
        sizes = ray.get([t[2] for t in tables])  # waits: a bad label fails this stage
        return TrainArrays(
            fit=None,
            valid=None,
            valid_mask=None,
            holdout=holdout,
            fit_rows=sum(n for n, _ in sizes),
            valid_rows=sum(n for _, n in sizes),
            n_features=n_features,
            fit_tables=[t[0] for t in tables],
            valid_tables=[t[1] for t in tables],
        )
    parts = [out[i] for i in range(5) for out in outs]
    x_fit, y_fit, x_valid, y_valid, mask, sizes = _assemble.remote(len(outs), *parts)
    fit_rows, valid_rows = ray.get(sizes)  # waits: a bad label fails this stage
    return TrainArrays(
        fit=(x_fit, y_fit),
        valid=(x_valid, y_valid),
        valid_mask=mask,
        holdout=holdout,
        fit_rows=fit_rows,
        valid_rows=valid_rows,
        n_features=n_features,
        fit_tables=[t[0] for t in tables],
        valid_tables=[t[1] for t in tables],
    )
