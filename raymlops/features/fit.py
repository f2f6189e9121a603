"""Fit and apply the feature pipeline on Ray Data (the Ray shell around the pure pipeline).

Statistics come from Ray Data aggregates in one pass: mean/std, min/max, missing counts for
numbers; category frequencies with ``ValueCounter``. The transform is
:meth:`FeaturePipeline.transform`, applied with ``map_batches``.

Example:
    >>> pipeline = fit_pipeline(train_ds, schema)  # doctest: +SKIP
    >>> features = transform_dataset(train_ds, pipeline, schema)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import ray
from ray.data.aggregate import Count, Max, Mean, Min, Std, ValueCounter

from raymlops.features.pipeline import ColumnStats, FeaturePipeline, numeric_view
from raymlops.schema import Schema

__all__ = ["fit_pipeline", "fit_stats", "to_numpy"]


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
