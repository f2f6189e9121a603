"""The feature pipeline: statistics in, one pure pandas transform out, saved as JSON.

:class:`FeaturePipeline` is built from :class:`ColumnStats` (fitted with Ray Data aggregates in
:mod:`raymlops.features.fit`) and the schema. :meth:`FeaturePipeline.transform` is the single
transform used everywhere: inside ``map_batches`` in training and batch inference, and called
in-process by serving. It works element by element, so a batch and the same rows one at a time
give identical output.

Encoding, per column type:

* float / int / datetime: standardised with the training mean and std; datetimes as days since
  1970-01-01. A missing value becomes 0 (the mean) and, for nullable columns, ``<col>__missing``
  is 1.
* bool: 0/1, missing as above.
* category: one-hot over the declared categories (or the most frequent ones seen in training,
  at most ``MAX_LEARNED_CATEGORIES``). An unseen value sets ``<col>=__other__`` when the column
  has no declared categories or says ``unknown: ignore``; missing sets ``<col>__missing``.

Example:
    >>> pipeline = FeaturePipeline.from_stats(schema, stats)  # doctest: +SKIP
    >>> features = pipeline.transform(typed_frame)  # doctest: +SKIP
    >>> FeaturePipeline.from_json(pipeline.to_json()) == pipeline  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from raymlops.schema import Schema

__all__ = [
    "ColumnStats",
    "CompiledTransform",
    "FeaturePipeline",
    "TargetEncoder",
    "float_values",
    "numeric_view",
]

MAX_LEARNED_CATEGORIES = 50
OTHER = "__other__"
_FORMAT_VERSION = 1
_NS_PER_DAY = 86_400 * 10**9


@dataclass(frozen=True)
class ColumnStats:
    """Training statistics of one column (numbers for numeric kinds, counts for categories)."""

    count: int
    missing: int
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    frequencies: dict[str, int] | None = None


def numeric_view(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Feature columns as aggregatable values: numbers as float64 (datetimes in days, bools
    0/1), categories as strings. Used before fitting statistics, so the fit sees exactly the
    numbers the transform will standardise.
    """
    out: dict[str, Any] = {}
    for name in schema.feature_columns:
        kind = schema.columns[name].type
        column = frame[name]
        if kind == "category":
            out[name] = column.astype(object).where(column.notna(), None)
        else:
            out[name] = _as_float(column, kind)
    return pd.DataFrame(out, index=frame.index)


def float_values(column: pd.Series, kind: str) -> np.ndarray:
    """A float, int, bool or datetime column as float64 (NaN where missing; datetimes in days)."""
    return _as_float(column, kind)


def _as_float(column: pd.Series, kind: str) -> np.ndarray:
    if kind == "datetime":
        stamps = pd.to_datetime(column, utc=True)
        nanos = stamps.astype("int64").to_numpy(dtype=np.float64, copy=True)
        nanos[stamps.isna().to_numpy()] = np.nan
        return nanos / _NS_PER_DAY
    if kind == "bool":
        return column.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    if isinstance(column.dtype, pd.api.extensions.ExtensionDtype):
        return column.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, copy=True)


@dataclass(frozen=True)
class TargetEncoder:
    """Labels to model targets and back: class indices for classification, floats otherwise."""

    task: str
    classes: list[Any] = field(default_factory=list)

    def encode(self, labels: pd.Series) -> np.ndarray:
        if self.task == "regression":
            return _as_float(labels, "float")
        lookup = {_label_key(c): i for i, c in enumerate(self.classes)}
        if labels.dtype == object:  # mixed types: 1 and True are equal, yet not the same label
            codes = np.array([lookup.get(_label_key(v), -1) for v in labels], dtype=np.int64)
        else:  # one type: one key per distinct value, not one Python call per row
            inverse, uniques = pd.factorize(labels, use_na_sentinel=False)
            known = np.array([lookup.get(_label_key(v), -1) for v in uniques], dtype=np.int64)
            codes = known[inverse]
        if (codes < 0).any():
            unknown = labels[codes < 0].iloc[0]
            raise ValueError(f"target value {unknown!r} was not seen in training")
        return codes

    def decode(self, codes: np.ndarray) -> list[Any]:
        if self.task == "regression":
            return [float(v) for v in codes]
        return [self.classes[int(i)] for i in codes]


def _label_key(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class _Encoding:
    name: str
    kind: str  # numeric | bool | category
    source_type: str
    mean: float = 0.0
    std: float = 1.0
    categories: list[str] = field(default_factory=list)
    other: bool = False
    missing_indicator: bool = False

    def output_names(self) -> list[str]:
        if self.kind == "category":
            names = [f"{self.name}={c}" for c in self.categories]
            names += [f"{self.name}={OTHER}"] if self.other else []
        else:
            names = [self.name]
        return names + ([f"{self.name}__missing"] if self.missing_indicator else [])


@dataclass(frozen=True)
class FeaturePipeline:
    """A fitted, immutable transform from typed rows to a float64 feature matrix."""

    encodings: list[_Encoding]
    target: TargetEncoder
    stats: dict[str, ColumnStats] = field(default_factory=dict)

    @classmethod
    def from_stats(
        cls, schema: Schema, stats: dict[str, ColumnStats], classes: list[Any] | None = None
    ) -> FeaturePipeline:
        """Build the pipeline for ``schema`` from fitted statistics of its feature columns."""
        encodings = []
        for name in schema.feature_columns:
            spec = schema.columns[name]
            column = stats[name]
            if spec.type == "category":
                if spec.categories:
                    categories, other = list(spec.categories), spec.unknown == "ignore"
                else:
                    ranked = sorted(
                        (column.frequencies or {}).items(), key=lambda kv: (-kv[1], kv[0])
                    )
                    categories = [k for k, _ in ranked[:MAX_LEARNED_CATEGORIES]]
                    other = True
                encodings.append(
                    _Encoding(
                        name,
                        "category",
                        spec.type,
                        categories=categories,
                        other=other,
                        missing_indicator=spec.nullable,
                    )
                )
                continue
            std = column.std if column.std and np.isfinite(column.std) and column.std > 0 else 1.0
            mean = column.mean if column.mean is not None and np.isfinite(column.mean) else 0.0
            kind = "bool" if spec.type == "bool" else "numeric"
            if kind == "bool":
                mean, std = 0.0, 1.0
            encodings.append(
                _Encoding(
                    name,
                    kind,
                    spec.type,
                    mean=float(mean),
                    std=float(std),
                    missing_indicator=spec.nullable,
                )
            )
        target = TargetEncoder(schema.task, list(classes or []))
        return cls(encodings=encodings, target=target, stats=dict(stats))

    @property
    def input_columns(self) -> list[str]:
        return [e.name for e in self.encodings]

    @property
    def feature_names(self) -> list[str]:
        return [name for e in self.encodings for name in e.output_names()]

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Typed rows (as validated) -> float64 features, one column per feature name."""
        blocks: list[np.ndarray] = []
        n = len(frame)
        for enc in self.encodings:
            column = frame[enc.name]
            if enc.kind == "category":
                labels = column.astype(object).where(column.notna(), None).to_numpy()
                missing = pd.isna(labels)
                for category in enc.categories:
                    blocks.append((labels == category).astype(np.float64))
                if enc.other:
                    known = np.isin(labels, np.asarray(enc.categories, dtype=object))
                    blocks.append((~known & ~missing).astype(np.float64))
            else:
                values = _as_float(column, enc.source_type)
                missing = np.isnan(values)
                scaled = (values - enc.mean) / enc.std
                blocks.append(np.where(missing, 0.0, scaled))
            if enc.missing_indicator:
                blocks.append(np.asarray(missing, dtype=np.float64))
        matrix = np.column_stack(blocks) if blocks else np.zeros((n, 0))
        return pd.DataFrame(matrix, columns=self.feature_names, index=frame.index)

    def compile(self) -> CompiledTransform:
        """The same transform over numpy columns (the online path: no pandas per request)."""
        return CompiledTransform(self)

    # -- persistence (JSON, never pickle) -------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": _FORMAT_VERSION,
            "encodings": [asdict(e) for e in self.encodings],
            "target": {"task": self.target.task, "classes": self.target.classes},
            "stats": {k: asdict(v) for k, v in self.stats.items()},
            "feature_names": self.feature_names,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=_json_default)

    @classmethod
    def from_json(cls, text: str | bytes) -> FeaturePipeline:
        payload = json.loads(text)
        if payload.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"unsupported features.json format {payload.get('format_version')}")
        return cls(
            encodings=[_Encoding(**e) for e in payload["encodings"]],
            target=TargetEncoder(payload["target"]["task"], payload["target"]["classes"]),
            stats={k: ColumnStats(**v) for k, v in payload["stats"].items()},
        )


class CompiledTransform:
    """:meth:`FeaturePipeline.transform` over numpy columns, with the same arithmetic.

    Input columns are those of :class:`raymlops.contract.Columns`: float64 with NaN for
    numbers and bools, ``datetime64[ns]`` for datetimes, object arrays of ``str``/``None`` for
    categories. Every standardised column is computed in one vectorised step over an
    ``(n, k)`` matrix, with the element-wise operations of the pandas transform (so the output
    is bit for bit the same), and written into a preallocated ``(n, features)`` matrix.
    """

    def __init__(self, pipeline: FeaturePipeline) -> None:
        self.feature_names = pipeline.feature_names
        numeric: list[tuple[str, str, int]] = []
        means, stds, indicators = [], [], []
        categories: list[tuple[str, int, list[str], bool, int | None]] = []
        position = 0
        for enc in pipeline.encodings:
            if enc.kind == "category":
                start = position
                position += len(enc.categories) + int(enc.other)
                indicator = position if enc.missing_indicator else None
                categories.append((enc.name, start, list(enc.categories), enc.other, indicator))
            else:
                numeric.append((enc.name, enc.source_type, position))
                means.append(enc.mean)
                stds.append(enc.std)
                position += 1
                indicators.append(position if enc.missing_indicator else -1)
            position += int(enc.missing_indicator)
        self._numeric = numeric
        self._numeric_at = np.array([p for _, _, p in numeric], dtype=np.intp)
        self._means = np.array(means, dtype=np.float64)
        self._stds = np.array(stds, dtype=np.float64)
        flagged = np.array(indicators, dtype=np.intp)
        self._flag_from = np.flatnonzero(flagged >= 0)
        self._flag_at = flagged[flagged >= 0]
        self._categories = [
            (name, start, np.asarray(cats, dtype=object), other, indicator)
            for name, start, cats, other, indicator in categories
        ]
        self.width = position

    def __call__(self, columns: dict[str, np.ndarray], n: int) -> np.ndarray:
        # built feature-major, (features, n), so every column is written and computed
        # contiguously, then turned into the row-major matrix the models read
        out = np.zeros((self.width, n), dtype=np.float64)
        if self._numeric:
            values = np.empty((len(self._numeric), n), dtype=np.float64)
            for j, (name, source, _) in enumerate(self._numeric):
                column = columns[name]
                if source == "datetime":
                    nanos = column.view(np.int64).astype(np.float64)
                    nanos[np.isnat(column)] = np.nan
                    values[j] = nanos / _NS_PER_DAY
                else:
                    values[j] = column
            missing = np.isnan(values)
            scaled = (values - self._means[:, None]) / self._stds[:, None]
            out[self._numeric_at] = np.where(missing, 0.0, scaled)
            if len(self._flag_at):
                out[self._flag_at] = missing[self._flag_from]
        for name, start, cats, other, indicator in self._categories:
            labels = columns[name]
            missing = np.equal(labels, None)
            for i, category in enumerate(cats):
                out[start + i] = labels == category
            if other:
                known = np.isin(labels, cats)
                out[start + len(cats)] = ~known & ~missing
            if indicator is not None:
                out[indicator] = missing
        return np.ascontiguousarray(out.T)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
