"""Per-column drift, computed the way Evidently 0.7's ``DataDriftPreset`` does, but fast.

Evidently picks a statistical test per column (``_get_default_stattest`` in
``evidently/legacy/calculations/stattests/registry.py``) from the column type, the number of
reference rows (after dropping nulls and infinities) and the number of distinct values in
reference and current together:

============================  ==========================================  ================
reference rows (non-null)     numerical                                   categorical
============================  ==========================================  ================
<= 1000                       <= 2 values: Z-test; 3-5: chi-square;       <= 2 values: Z-test;
                              > 5: Kolmogorov-Smirnov (p-values, 0.05)     > 2: chi-square
> 1000                        <= 5 values: Jensen-Shannon;                Jensen-Shannon (0.1)
                              > 5: Wasserstein normed by the reference
                              std (distances, threshold 0.1)
============================  ==========================================  ================

A column drifts when a p-value is below its threshold (``<=`` for K-S, ``<`` for chi-square
and Z) or a distance is at or above it. This module replicates that choice and each test's
arithmetic, so the verdicts equal Evidently's, while doing the per-reference work once:
:class:`ReferenceProfile` keeps the sorted reference values, their distinct values and counts,
and the category frequencies. Each window then costs one sort (Wasserstein), one
``searchsorted`` (K-S) or one ``value_counts`` (categories) per column, instead of Evidently's
two passes over every column plus histograms, correlations and plots.

Pure: numpy, pandas and scipy only; :mod:`raymlops.monitoring.parallel` runs column groups on Ray.

Example:
    >>> profile = ReferenceProfile.build(reference, schema)  # doctest: +SKIP
    >>> result = compute_drift(profile, window, drift_share=0.5)  # doctest: +SKIP
    >>> result.dataset_drift, result.drifted_columns  # doctest: +SKIP
    (True, ['tenure_months', 'support_calls'])
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import distance

if TYPE_CHECKING:
    from raymlops.schema import Schema

__all__ = [
    "DRIFT_METHODS",
    "ColumnDrift",
    "ColumnProfile",
    "DriftResult",
    "ReferenceProfile",
    "compute_drift",
    "drift_columns",
    "select_columns",
]

Kind = Literal["num", "cat"]

# Evidently's display names (the ``method`` of its ValueDrift metric) and default thresholds.
KS = "K-S p_value"
WASSERSTEIN = "Wasserstein distance (normed)"
CHI2 = "chi-square p_value"
JENSEN_SHANNON = "Jensen-Shannon distance"
Z_TEST = "Z-test p_value"
EMPTY_CURRENT = "no values in current"
DRIFT_METHODS: dict[str, float] = {
    KS: 0.05,
    WASSERSTEIN: 0.1,
    CHI2: 0.05,
    JENSEN_SHANNON: 0.1,
    Z_TEST: 0.05,
}

# Evidently's cut-offs: reference rows for "small" tests, distinct values for "few values".
_SMALL_REFERENCE = 1000
_FEW_NUMERIC_VALUES = 5
_BINARY = 2
# scipy's ks_2samp switches from the exact distribution to Smirnov's asymptotic one above this.
_KS_EXACT_MAX_N = 10_000
_NORM_FLOOR = 0.001  # Evidently's floor on the reference std that normalises Wasserstein

_NUMERIC_TYPES = ("float", "int")
_CATEGORY_TYPES = ("category", "bool")


@dataclass(frozen=True)
class ColumnDrift:
    """One column's verdict: the test Evidently would choose, its score, threshold and result."""

    column: str
    kind: str  # "num" | "cat"
    method: str
    score: float
    threshold: float
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        score = None if math.isnan(self.score) else float(self.score)
        return {
            "column": self.column,
            "kind": self.kind,
            "method": self.method,
            "score": score,
            "threshold": float(self.threshold),
            "drifted": bool(self.drifted),
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> ColumnDrift:
        score = payload.get("score")
        return cls(
            column=payload["column"],
            kind=payload["kind"],
            method=payload["method"],
            score=float("nan") if score is None else float(score),
            threshold=float(payload["threshold"]),
            drifted=bool(payload["drifted"]),
        )


@dataclass(frozen=True)
class DriftResult:
    """Per-column verdicts of one window and the dataset verdict by Evidently's share rule."""

    columns: tuple[ColumnDrift, ...]
    rows: int
    reference_rows: int
    drift_share: float  # the configured threshold on the share of drifted columns

    @property
    def share(self) -> float:
        """Drifted columns / columns checked (0.0 when no column was checked)."""
        return sum(c.drifted for c in self.columns) / len(self.columns) if self.columns else 0.0

    @property
    def dataset_drift(self) -> bool:
        """Evidently's rule: the dataset drifts when ``share >= drift_share``."""
        return bool(self.columns) and self.share >= self.drift_share

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    def column(self, name: str) -> ColumnDrift:
        """The verdict of one column (KeyError naming it when it was not checked)."""
        for entry in self.columns:
            if entry.column == name:
                return entry
        raise KeyError(f"column {name!r} was not checked for drift")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; saved as ``drift.json`` beside each report."""
        return {
            "rows": self.rows,
            "reference_rows": self.reference_rows,
            "drift_share": self.drift_share,
            "share": self.share,
            "dataset_drift": self.dataset_drift,
            "drifted_columns": self.drifted_columns,
            "columns": [c.to_dict() for c in self.columns],
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> DriftResult:
        return cls(
            columns=tuple(ColumnDrift.from_dict(c) for c in payload["columns"]),
            rows=int(payload["rows"]),
            reference_rows=int(payload["reference_rows"]),
            drift_share=float(payload["drift_share"]),
        )


@dataclass(frozen=True)
class ColumnProfile:
    """What one reference column contributes to every window, prepared once.

    ``values``/``counts`` are the distinct non-null values and their counts (sorted for numbers);
    ``sorted`` holds every non-null value of a numerical column, in order, and ``std`` its
    population standard deviation (both only for Wasserstein and K-S).
    """

    name: str
    kind: Kind
    rows: int  # non-null, finite reference values
    values: np.ndarray
    counts: np.ndarray
    sorted: np.ndarray | None = None
    std: float = 0.0
    _index: dict[Any, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def small(self) -> bool:
        """Evidently's "small reference" branch (<= 1000 rows): p-value tests."""
        return self.rows <= _SMALL_REFERENCE

    def position(self, value: Any) -> int | None:
        """Index of a category in ``values`` (None for an unseen one)."""
        if not self._index:
            self._index.update({v: i for i, v in enumerate(self.values.tolist())})
        return self._index.get(value)


@dataclass(frozen=True)
class ReferenceProfile:
    """A reference sample reduced to what drift tests need; build once per model version.

    Small (a sorted float array per numerical column, value counts per categorical one) and
    picklable, so Ray puts it in the object store once and every window reuses it.

    Example:
        >>> profile = ReferenceProfile.build(reference, schema)  # doctest: +SKIP
        >>> profile.columns  # doctest: +SKIP
        ['plan', 'region', 'tenure_months', 'monthly_spend', 'support_calls', 'autopay', 'churned']
    """

    profiles: dict[str, ColumnProfile]
    reference_rows: int
    target: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # column -> why it is not checked

    @property
    def columns(self) -> list[str]:
        return list(self.profiles)

    @classmethod
    def build(
        cls, reference: pd.DataFrame, schema: Schema, *, columns: list[str] | None = None
    ) -> ReferenceProfile:
        """Profile ``reference`` for ``columns`` (default :func:`drift_columns` of the schema).

        A column with no non-null value in the reference cannot be compared (Evidently raises
        on it); it is left out and named in ``skipped``.

        Raises:
            ValueError: a column is not in the schema or the reference, or is not a numerical
                or categorical column (datetime and string columns have no drift test here).
        """
        names = columns if columns is not None else drift_columns(schema, reference.columns)
        profiles: dict[str, ColumnProfile] = {}
        skipped: dict[str, str] = {}
        for name in names:
            kind = _kind_of(schema, name)
            if name not in reference.columns:
                raise ValueError(f"column {name!r} is not in the reference data")
            column = _profile_column(name, kind, _clean(reference[name], kind, name, "reference"))
            if column.rows == 0:
                skipped[name] = "no non-null values in the reference"
                continue
            profiles[name] = column
        target = schema.target if schema.target in profiles else None
        return cls(profiles=profiles, reference_rows=len(reference), target=target, skipped=skipped)


def drift_columns(schema: Schema, available: Iterable[str] | None = None) -> list[str]:
    """The columns Evidently's drift preset checks for this schema.

    Numerical and categorical features (datetime ones have no drift test), plus the target
    when ``available`` (the reference's columns) holds it.
    """
    names = [
        n
        for n in schema.feature_columns
        if schema.columns[n].type in _NUMERIC_TYPES + _CATEGORY_TYPES
    ]
    if available is not None and schema.target in set(available):
        names.append(schema.target)
    return names


def compute_drift(
    profile: ReferenceProfile,
    current: pd.DataFrame,
    *,
    drift_share: float,
    columns: Sequence[str] | None = None,
) -> DriftResult:
    """Drift of ``current`` against the profiled reference, in one process.

    ``columns`` defaults to every profiled column; the target is left out when ``current``
    has no labels. Verdicts equal Evidently's ``DataDriftPreset`` with default methods.
    A column with no non-null value in ``current`` counts as drifted (method
    ``"no values in current"``): Evidently raises on it, and a feature that stops arriving is
    a change worth a retrain decision.

    Example:
        >>> compute_drift(profile, window, drift_share=0.5).share  # doctest: +SKIP
        0.2857142857142857

    Raises:
        ValueError: a requested column is missing from ``current`` or was not profiled, or a
            numerical column holds values that are not numbers.
    """
    names = select_columns(profile, current.columns, columns)
    verdicts = tuple(column_drift(profile.profiles[n], current[n]) for n in names)
    return DriftResult(
        columns=verdicts,
        rows=len(current),
        reference_rows=profile.reference_rows,
        drift_share=drift_share,
    )


def select_columns(
    profile: ReferenceProfile, available: Iterable[str], columns: Sequence[str] | None
) -> list[str]:
    """The columns a window is checked on: ``columns`` or every profiled one (the target only
    when the window carries labels), each checked to be profiled and present."""
    present = set(available)
    if columns is None:
        columns = [n for n in profile.columns if n != profile.target or n in present]
    for name in columns:
        if name not in profile.profiles:
            why = profile.skipped.get(name, "it is not in the reference profile")
            raise ValueError(f"column {name!r} cannot be checked for drift: {why}")
        if name not in present:
            raise ValueError(f"column {name!r} is missing from the current data")
    return list(columns)


def column_drift(ref: ColumnProfile, current: pd.Series) -> ColumnDrift:
    """One column's verdict with Evidently's default test for it."""
    if ref.kind == "num":
        values = _clean(current, "num", ref.name, "current")
        found = len(values) > 0
        if found:
            # values near the float limit (1e308 passes validation) overflow the distance:
            # it is then the largest float, and the column has drifted, without numpy warnings
            with np.errstate(over="ignore", invalid="ignore"):
                method, score = _numeric_drift(ref, values)
            if not math.isfinite(score):  # a p-value of 0 or the largest distance: drifted
                score = 0.0 if method in (KS, CHI2, Z_TEST) else sys.float_info.max
    else:
        union, ref_counts, cur_counts = _category_counts(ref, _clean(current, "cat", ref.name, ""))
        found = cur_counts.sum() > 0
        if found:
            method, score = _categorical_drift(ref, union, ref_counts, cur_counts)
    if not found:
        return ColumnDrift(ref.name, ref.kind, EMPTY_CURRENT, float("nan"), 0.0, True)
    threshold = DRIFT_METHODS[method]
    return ColumnDrift(ref.name, ref.kind, method, score, threshold, _drifted(method, score, threshold))


def _drifted(method: str, score: float, threshold: float) -> bool:
    # The comparisons differ per test in Evidently: K-S uses <=, chi-square and Z use <.
    if method == KS:
        return bool(score <= threshold)
    if method in (CHI2, Z_TEST):
        return bool(score < threshold)
    return bool(score >= threshold)


# -- preparation -----------------------------------------------------------------------------


def _kind_of(schema: Schema, name: str) -> Kind:
    spec = schema.columns.get(name)
    if spec is None:
        raise ValueError(f"column {name!r} is not declared in the schema")
    if spec.type in _NUMERIC_TYPES:
        return "num"
    if spec.type in _CATEGORY_TYPES:
        return "cat"
    raise ValueError(
        f"column {name!r} has type {spec.type!r}: drift is computed for float, int, category "
        "and bool columns only"
    )


def _clean(series: pd.Series, kind: Kind, name: str, side: str) -> Any:
    """Values as Evidently sees them: infinities count as missing.

    Numbers come back as a float array without nulls; categories as a Series whose nulls
    ``value_counts`` drops (dropping them here first would cost a second pass over strings).
    """
    if kind == "num":
        if series.dtype.kind in "biuf":  # plain numpy numbers: no null mask to fill, no copy
            array = np.asarray(series.to_numpy(), dtype="float64")
        else:
            try:
                array = pd.to_numeric(series, errors="raise").to_numpy(
                    dtype="float64", na_value=np.nan
                )
            except (ValueError, TypeError) as exc:
                raise ValueError(
                    f"column {name!r} in the {side} data must hold numbers: {exc}"
                ) from None
        finite = np.isfinite(array)
        return array if finite.all() else array[finite]
    if series.dtype.kind == "f":
        return series[np.isfinite(series.to_numpy())]
    return series


def _profile_column(name: str, kind: Kind, values: Any) -> ColumnProfile:
    if kind == "num":
        ordered = np.sort(values)
        if len(ordered) == 0:
            return ColumnProfile(name, "num", 0, ordered, np.empty(0, dtype="int64"), ordered)
        distinct, counts = np.unique(ordered, return_counts=True)
        return ColumnProfile(
            name=name,
            kind="num",
            rows=len(ordered),
            values=distinct,
            counts=counts,
            sorted=ordered,
            std=float(np.std(ordered)),
        )
    frequency = values.value_counts(sort=False, dropna=True)
    frequency = frequency[frequency > 0]  # a Categorical dtype lists unused categories too
    return ColumnProfile(
        name=name,
        kind="cat",
        rows=int(frequency.sum()),
        values=np.asarray(frequency.index.tolist(), dtype=object),
        counts=frequency.to_numpy(dtype="int64"),
    )


# -- numerical columns -----------------------------------------------------------------------


def _numeric_drift(ref: ColumnProfile, values: np.ndarray) -> tuple[str, float]:
    union_values, ref_counts, cur_counts = _few_value_counts(ref, values)
    if union_values is not None and len(union_values) <= _FEW_NUMERIC_VALUES:
        if not ref.small:
            return JENSEN_SHANNON, _jensen_shannon(ref_counts, cur_counts)
        if len(union_values) > _BINARY:
            return CHI2, _chi_square(ref_counts, cur_counts)
        return Z_TEST, _z_test(union_values, ref_counts, cur_counts)
    if ref.small:
        return KS, _ks_p_value(ref, values)
    assert ref.sorted is not None  # profiled numerical columns keep their sorted values
    return WASSERSTEIN, _wasserstein(ref.sorted, values) / max(ref.std, _NORM_FLOOR)


def _few_value_counts(
    ref: ColumnProfile, values: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Counts over the union of distinct values when it has at most 5 (Evidently's cut-off).

    Returns ``(None, ..)`` as soon as the union is known to be larger, without counting.
    """
    empty = np.empty(0, dtype="int64")
    if len(ref.values) > _FEW_NUMERIC_VALUES:
        return None, empty, empty
    unseen = values[~np.isin(values, ref.values)]
    extra = np.unique(unseen) if len(unseen) else np.empty(0)
    if len(ref.values) + len(extra) > _FEW_NUMERIC_VALUES:
        return None, empty, empty
    union = np.union1d(ref.values, extra)
    ref_counts = np.zeros(len(union), dtype="int64")
    ref_counts[np.searchsorted(union, ref.values)] = ref.counts
    cur_counts = np.bincount(np.searchsorted(union, values), minlength=len(union))
    return union, ref_counts, cur_counts


def _ks_p_value(ref: ColumnProfile, values: np.ndarray) -> float:
    """Two-sided two-sample K-S p-value as ``scipy.stats.ks_2samp`` computes it.

    For small windows scipy's exact distribution applies, so scipy itself is called; above
    10,000 values scipy uses Smirnov's asymptotic formula, reproduced here from the statistic
    D, which is computed from counts of current values between the sorted reference values
    (no sort of the window).
    """
    n_ref, n_cur = ref.rows, len(values)
    if max(n_ref, n_cur) <= _KS_EXACT_MAX_N:
        assert ref.sorted is not None  # profiled numerical columns keep their sorted values
        return float(stats.ks_2samp(ref.sorted, values).pvalue)
    d = _ks_statistic(ref.values, ref.counts, values)
    m, n = sorted([float(n_ref), float(n_cur)], reverse=True)
    return float(np.clip(stats.kstwo.sf(d, np.round(m * n / (m + n))), 0, 1))


def _ks_statistic(distinct: np.ndarray, counts: np.ndarray, values: np.ndarray) -> float:
    """sup |F_ref - F_cur| from counts alone.

    Between two distinct reference values F_ref is flat and F_cur only rises, so the supremum
    is reached at an end: at a reference value itself, or just before the next one.
    """
    k = len(distinct)
    left = np.searchsorted(distinct, values, side="left")
    equal = np.zeros(len(values), dtype=bool)
    inside = left < k
    equal[inside] = distinct[left[inside]] == values[inside]
    n = len(values)
    at = np.bincount(left[equal], minlength=k)  # current values equal to distinct[j]
    below = np.bincount(left[~equal], minlength=k + 1)  # values in (distinct[j-1], distinct[j])
    before = np.cumsum(below)[:k] + np.concatenate(([0], np.cumsum(at)[:-1]))  # #cur < d[j]
    cur_le = (before + at) / n  # F_cur at distinct[j]
    cur_lt = before / n  # F_cur just before distinct[j]
    ref_le = np.cumsum(counts) / counts.sum()
    ref_lt = np.concatenate(([0.0], ref_le[:-1]))
    return float(max(np.max(np.abs(ref_le - cur_le)), np.max(np.abs(ref_lt - cur_lt))))


def _wasserstein(ref_sorted: np.ndarray, values: np.ndarray) -> float:
    """``scipy.stats.wasserstein_distance``, with one sort of the window and no merge.

    W1 is the area between the two quantile functions, ``integral_0^1 |Q_a(p) - Q_b(p)| dp``,
    ``a`` the larger sample (n values), ``b`` the smaller (m). In units of ``1 / (n m)`` a's
    value ``i`` holds ``[i m, (i + 1) m)`` and b's value ``k`` holds ``[k n, (k + 1) n)``, so
    b's slot ``k`` covers a run of a's values: a partial one at each end and whole ones
    between. Over the whole ones ``sum |a_i - b_k|`` comes from prefix sums of ``a`` split
    where ``a`` crosses ``b_k`` (one ``searchsorted``), so the cost is one sort and one
    cumulative sum of the window plus O(m) work, with no temporaries of the window's length
    beyond those two.
    """
    current = np.sort(values)
    a, b = (current, ref_sorted) if len(current) >= len(ref_sorted) else (ref_sorted, current)
    n, m = len(a), len(b)
    # Shifting both samples leaves W1 unchanged and keeps the prefix sums small, so their
    # differences lose no precision on data far from zero (prices, timestamps).
    center = b[m // 2]
    prefix = np.empty(n + 1)
    prefix[0] = 0.0
    np.cumsum(a - center, out=prefix[1:])
    k = np.arange(m, dtype="int64")
    lo, hi = k * n, (k + 1) * n
    first, last = lo // m, (hi - 1) // m  # a's values under each end of b's slot k
    shifted = b - center
    head = np.minimum((first + 1) * m, hi) - lo
    tail = np.where(last > first, hi - last * m, 0)
    total = np.abs(a[first] - b) * head + np.abs(a[last] - b) * tail
    start, stop = first + 1, np.maximum(last, first + 1)  # whole values: a[start:stop]
    cross = np.clip(np.searchsorted(a, b, side="left"), start, stop)
    below = shifted * (cross - start) - (prefix[cross] - prefix[start])
    above = (prefix[stop] - prefix[cross]) - shifted * (stop - cross)
    total += (below + above) * m
    return float(total.sum() / (n * m))


# -- categorical columns ---------------------------------------------------------------------


def _categorical_drift(
    ref: ColumnProfile, union: list[Any], ref_counts: np.ndarray, cur_counts: np.ndarray
) -> tuple[str, float]:
    if not ref.small:
        return JENSEN_SHANNON, _jensen_shannon(ref_counts, cur_counts)
    if len(union) > _BINARY:
        return CHI2, _chi_square(ref_counts, cur_counts)
    return Z_TEST, _z_test(union, ref_counts, cur_counts)


def _category_counts(ref: ColumnProfile, values: pd.Series) -> tuple[list[Any], np.ndarray, np.ndarray]:
    frequency = values.value_counts(sort=False, dropna=True)
    frequency = frequency[frequency > 0]
    union = list(ref.values.tolist())
    ref_counts = list(ref.counts.tolist())
    cur_counts = [0] * len(union)
    for value, count in zip(frequency.index.tolist(), frequency.tolist(), strict=True):
        position = ref.position(value)
        if position is None:  # a category the reference never saw
            union.append(value)
            ref_counts.append(0)
            cur_counts.append(count)
        else:
            cur_counts[position] += count
    return union, np.asarray(ref_counts, dtype="int64"), np.asarray(cur_counts, dtype="int64")


# -- the tests on counts ---------------------------------------------------------------------


def _jensen_shannon(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Evidently's Jensen-Shannon distance on value shares (natural log, no zero filling)."""
    return float(distance.jensenshannon(ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum()))


def _chi_square(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Evidently's chi-square: current counts against reference counts scaled to its size."""
    expected = ref_counts * (cur_counts.sum() / ref_counts.sum())
    with np.errstate(divide="ignore", invalid="ignore"):  # an unseen category: p = 0, as there
        return float(stats.chisquare(cur_counts, expected)[1])


def _z_test(union: Sequence[Any], ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Evidently's two-proportion Z-test on "not the first value" (values in sorted order)."""
    if len(union) == 1:  # both sides hold the same single value
        return 1.0
    first = _first_sorted(union)
    n1, n2 = ref_counts.sum(), cur_counts.sum()
    p1 = (n1 - ref_counts[first]) / n1
    p2 = (n2 - cur_counts[first]) / n2
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    return float(2 * (1 - stats.norm.cdf(np.abs(z))))


def _first_sorted(union: Sequence[Any]) -> int:
    ordered = sorted(range(len(union)), key=lambda i: union[i])
    return ordered[0]
