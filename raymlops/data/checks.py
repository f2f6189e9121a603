"""Dataset checks: what row-by-row validation cannot see (pure; the Ray shell feeds it).

Row validation (:mod:`raymlops.data.validation`) checks each value against the schema. The
checks here look at the dataset as a whole, over summaries that are computed beside validation
(no second read of the data):

* **digests** (:func:`digest_block`): per row, a 64-bit hash of the whole row, of its feature
  values and of each ``role: id`` value, with the row number and its side of the split. Equal
  rows have equal hashes, so digests partitioned by hash can be checked partition by partition
  and the partial findings added up (:meth:`OverlapFindings.merge`): exact duplicates,
  identical feature rows on both sides of the split, and id values on both sides.
* **feature statistics** (the :class:`~raymlops.features.pipeline.ColumnStats` the feature fit
  computes anyway): constant and all-null columns, and the missing share or category set moved
  far from the previous version's training profile (TFDV-style anomalies).
* **the reference sample** (the seeded training rows every version keeps): single-feature
  target leakage (ROC AUC of one feature alone, or its correlation with a regression target),
  and label problems.

Each check yields :class:`Finding` objects with a severity from the config (``data.checks``):
``block`` stops training (exit 3, nothing registered), ``warn`` is recorded, ``off`` skips it.
A check that cannot run on this data (AUC with one class) is recorded as ``skipped`` with the
reason, never a crash.

Example:
    >>> report = run_checks(inputs, rules)  # doctest: +SKIP
    >>> report.blocked, print(report.render())  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from raymlops.config import DataChecksConfig
from raymlops.features.pipeline import ColumnStats, numeric_view
from raymlops.schema import Schema

__all__ = [
    "CheckInputs",
    "ChecksReport",
    "Finding",
    "OverlapFindings",
    "check_column_profile",
    "check_labels",
    "check_leakage",
    "check_overlap",
    "check_time_ranges",
    "check_time_split",
    "digest_block",
    "id_findings",
    "overlap_findings",
    "row_findings",
    "run_checks",
]

Severity = Literal["block", "warn", "skipped", "ok"]
#: first row numbers kept per finding (a person reads them, a program reads the counts)
MAX_ROWS = 5


@dataclass(frozen=True)
class Finding:
    """One check's result on one column (or the whole dataset when ``column`` is None)."""

    check: str
    severity: Severity
    message: str
    column: str | None = None
    value: float | None = None
    threshold: float | None = None
    rows: tuple[int, ...] = ()

    def line(self) -> str:
        where = f"column {self.column!r}: " if self.column else ""
        limit = f" (threshold {self.threshold:g})" if self.threshold is not None else ""
        first = f"; first rows: {', '.join(map(str, self.rows))}" if self.rows else ""
        return f"{self.severity.upper():7} {self.check}: {where}{self.message}{limit}{first}"


@dataclass(frozen=True)
class ChecksReport:
    """Every finding of a run; ``blocked`` when any has severity ``block``."""

    findings: tuple[Finding, ...]
    rows: int

    @property
    def blocked(self) -> bool:
        return any(f.severity == "block" for f in self.findings)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.severity in ("block", "warn")]

    def render(self) -> str:
        """One line per finding that is not ok, worst first; a single line when all passed."""
        shown = sorted(
            (f for f in self.findings if f.severity != "ok"),
            key=lambda f: ("block", "warn", "skipped").index(f.severity),
        )
        passed = sum(f.severity == "ok" for f in self.findings)
        head = f"dataset checks on {self.rows} rows: {passed} passed"
        if self.blocked:
            head += ", training blocked"
        return "\n".join([head, *(f"  {f.line()}" for f in shown)])

    def to_dict(self) -> dict[str, Any]:
        """The form saved as ``checks.json`` in the version (and under ``runs/`` when blocked)."""
        return {
            "rows": self.rows,
            "blocked": self.blocked,
            "findings": [{**asdict(f), "rows": list(f.rows)} for f in self.findings],
        }


# -- digests: duplicates and leakage across the split -------------------------------------------


def _hash_rows(frame: pd.DataFrame) -> np.ndarray:
    if frame.shape[1] == 0:
        return np.zeros(len(frame), dtype=np.uint64)
    return pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)


def digest_block(
    typed: pd.DataFrame, schema: Schema, *, row_offset: int, holdout: np.ndarray
) -> pd.DataFrame:
    """Per-row hashes of a validated block, with its 1-based row numbers and split side.

    ``row_offset`` is the number of rows before this block (as for
    :func:`~raymlops.data.validation.validate_frame`); ``holdout`` is the block's side of the
    training split (True: held out), e.g. :func:`~raymlops.data.split.holdout_mask`.
    """
    row_ids = np.arange(row_offset, row_offset + len(typed), dtype=np.int64)
    digest = pd.DataFrame(
        {
            "row": row_ids + 1,
            "holdout": np.asarray(holdout, dtype=bool),
            "row_hash": _hash_rows(typed[[c for c in schema.names if c in typed]]),
            "feature_hash": _hash_rows(typed[schema.feature_columns]),
            # a row with a float value: equal features then mean a copy, not a common pattern
            "continuous": _has_float_value(typed, schema),
        }
    )
    for column in _id_columns(schema):
        if column in typed:
            values = typed[column]
            hashes = pd.util.hash_pandas_object(values, index=False).to_numpy(dtype=np.uint64)
            # a missing id is no id: it cannot leak, so it never matches another row
            digest[f"id:{column}"] = np.where(values.isna().to_numpy(), np.uint64(0), hashes)
    return digest


def _has_float_value(typed: pd.DataFrame, schema: Schema) -> np.ndarray:
    floats = [c for c in schema.feature_columns if schema.columns[c].type == "float" and c in typed]
    if not floats:
        return np.zeros(len(typed), dtype=bool)
    return typed[floats].notna().any(axis=1).to_numpy(dtype=bool)


def _id_columns(schema: Schema) -> list[str]:
    return [c for c in schema.input_columns if schema.columns[c].effective_role == "id"]


@dataclass
class _Overlap:
    count: int = 0
    rows: list[int] = field(default_factory=list)

    def add(self, count: int, rows: Iterable[int]) -> None:
        self.count += count
        self.rows = sorted([*self.rows, *rows])[:MAX_ROWS]


@dataclass
class OverlapFindings:
    """Counts from digests: rows that repeat an earlier row, train rows whose features also
    appear in the holdout, and rows whose id value appears on both sides (per id column).

    Partial findings of hash partitions add up with :meth:`merge`."""

    rows: int = 0
    train_rows: int = 0
    duplicates: _Overlap = field(default_factory=_Overlap)
    cross_split: _Overlap = field(default_factory=_Overlap)
    ids: dict[str, _Overlap] = field(default_factory=dict)

    def to_json(self) -> str:
        """A plain form that travels through Ray Data's columns."""
        import json

        def one(found: _Overlap) -> list[Any]:
            return [found.count, [int(r) for r in found.rows]]

        return json.dumps(
            {
                "rows": self.rows,
                "train_rows": self.train_rows,
                "duplicates": one(self.duplicates),
                "cross_split": one(self.cross_split),
                "ids": {c: one(f) for c, f in self.ids.items()},
            }
        )

    @classmethod
    def from_json(cls, text: str) -> OverlapFindings:
        import json

        payload = json.loads(text)

        def one(pair: list[Any]) -> _Overlap:
            return _Overlap(int(pair[0]), [int(r) for r in pair[1]])

        return cls(
            rows=payload["rows"],
            train_rows=payload["train_rows"],
            duplicates=one(payload["duplicates"]),
            cross_split=one(payload["cross_split"]),
            ids={c: one(p) for c, p in payload["ids"].items()},
        )

    @classmethod
    def merge(cls, parts: Iterable[OverlapFindings]) -> OverlapFindings:
        total = cls()
        for part in parts:
            total.rows += part.rows
            total.train_rows += part.train_rows
            total.duplicates.add(part.duplicates.count, part.duplicates.rows)
            total.cross_split.add(part.cross_split.count, part.cross_split.rows)
            for column, found in part.ids.items():
                total.ids.setdefault(column, _Overlap()).add(found.count, found.rows)
        return total


def row_findings(digest: pd.DataFrame) -> OverlapFindings:
    """Duplicates and feature rows on both sides, in one digest partition: rows with equal
    features must fall in the same partition (partition by ``feature_hash``; equal rows have
    equal features, so exact duplicates fall together too)."""
    found = OverlapFindings(rows=len(digest), train_rows=int((~digest["holdout"]).sum()))
    if digest.empty:
        return found
    ordered = digest.sort_values("row", kind="stable")
    repeated = pd.Series(ordered["row_hash"].to_numpy(dtype=np.uint64)).duplicated().to_numpy()
    rows = ordered["row"].to_numpy(dtype=np.int64)
    found.duplicates.add(int(repeated.sum()), rows[repeated][:MAX_ROWS])
    # only rows with a float value count: equal discrete rows are the nature of such data
    continuous = ordered["continuous"].to_numpy(dtype=bool)
    found.cross_split = _both_sides(ordered[continuous], "feature_hash")
    return found


def id_findings(digest: pd.DataFrame, column: str) -> OverlapFindings:
    """Ids of ``column`` on both sides, in one partition by that id's hash (``id:<column>``)."""
    key = f"id:{column}"
    ordered = digest[digest[key].to_numpy(dtype=np.uint64) != 0].sort_values("row", kind="stable")
    return OverlapFindings(ids={column: _both_sides(ordered, key)})


def overlap_findings(digest: pd.DataFrame) -> OverlapFindings:
    """All findings of a digest held whole (small data, tests): rows and every id column."""
    parts = [row_findings(digest)]
    parts += [id_findings(digest, c[3:]) for c in digest.columns if c.startswith("id:")]
    return OverlapFindings.merge(parts)


def _both_sides(digest: pd.DataFrame, key: str) -> _Overlap:
    """Holdout rows whose ``key`` also appears among training rows (they inflate the metric)."""
    # numpy arrays: through Ray Data the hashes may arrive as Arrow-backed uint64 columns
    keys = digest[key].to_numpy(dtype=np.uint64)
    holdout = digest["holdout"].to_numpy(dtype=bool)
    leaked = holdout & np.isin(keys, keys[~holdout])
    found = _Overlap()
    found.add(int(leaked.sum()), digest["row"].to_numpy(dtype=np.int64)[leaked][:MAX_ROWS])
    return found


def check_overlap(
    found: OverlapFindings, rules: DataChecksConfig, *, continuous: bool = True
) -> list[Finding]:
    """Duplicates, feature rows on both sides of the split, ids on both sides.

    ``continuous``: some feature is a float. When every feature is discrete (int, bool,
    category) equal feature rows on both sides are what such data looks like, not copies, so
    the split-overlap check is recorded as skipped with that reason (duplicates and ids are
    still checked). For the same reason, rows whose float features are all null never count
    (:func:`row_findings`)."""
    out: list[Finding] = []
    rows = max(found.rows, 1)
    holdout = max(found.rows - found.train_rows, 1)
    rule = rules.duplicates
    share = found.duplicates.count / rows
    mostly = rule.severity != "off" and share > rule.block_share  # mostly copies: always blocks
    out.append(
        _against(
            "duplicates",
            "block" if mostly else rule.severity,
            share > rule.max_share,
            f"{found.duplicates.count} of {found.rows} rows ({share:.2%}) repeat an earlier row"
            + (f", more than data.checks.duplicates.block_share ({rule.block_share:g})" if mostly else ""),
            value=share,
            threshold=rule.block_share if mostly else rule.max_share,
            rows=found.duplicates.rows,
        )
    )
    rule = rules.split_overlap
    share = found.cross_split.count / holdout
    if not continuous:
        why = (
            "every feature is discrete (int, bool, category): equal feature rows on both sides "
            "of the split are the nature of such data, not copies"
        )
        out.append(Finding("split_overlap", "skipped", why))
    else:
        out.append(
            _against(
                "split_overlap",
                rule.severity,
                share > rule.max_share,
                f"{found.cross_split.count} holdout rows ({share:.2%} of the holdout) have the "
                "same feature values as a training row",
                value=share,
                threshold=rule.max_share,
                rows=found.cross_split.rows,
            )
        )
    rule = rules.id_overlap
    for column, leaked in found.ids.items():
        share = leaked.count / holdout
        out.append(
            _against(
                "id_overlap",
                rule.severity,
                share > rule.max_share,
                f"{leaked.count} holdout rows ({share:.2%}) carry an id also found in training",
                column=column,
                value=share,
                threshold=rule.max_share,
                rows=leaked.rows,
            )
        )
    return out


def _against(
    check: str,
    severity: str,
    failed: bool,
    message: str,
    *,
    column: str | None = None,
    value: float | None = None,
    threshold: float | None = None,
    rows: Iterable[int] = (),
) -> Finding:
    level: Severity = severity if failed else "ok"  # type: ignore[assignment]
    return Finding(
        check, level, message, column, value, threshold, tuple(int(r) for r in rows)[:MAX_ROWS]
    )


# -- feature statistics: constant and empty columns, anomalies against the previous version -----


def check_column_profile(
    stats: Mapping[str, ColumnStats],
    rules: DataChecksConfig,
    previous: Mapping[str, ColumnStats] | None = None,
) -> list[Finding]:
    """Constant or all-null features; missing share or categories moved from ``previous``."""
    out: list[Finding] = []
    severity = rules.constant.severity
    for column, s in stats.items():
        rows = s.count + s.missing
        if s.count == 0:
            out.append(Finding("constant", severity, f"all {rows} values are null", column))
            continue
        distinct = len(s.frequencies) if s.frequencies is not None else None
        constant = distinct == 1 if distinct is not None else s.min == s.max
        message = "has a single value" if constant else "varies"
        out.append(_against("constant", severity, constant, message, column=column))
    if previous is None:
        why = "no previous version's training profile to compare with (no champion)"
        return [*out, Finding("profile_shift", "skipped", why)]
    rule = rules.profile_shift
    for column, s in stats.items():
        before = previous.get(column)
        if before is None:
            continue
        now_missing = s.missing / max(s.count + s.missing, 1)
        was_missing = before.missing / max(before.count + before.missing, 1)
        moved = abs(now_missing - was_missing)
        out.append(
            _against(
                "profile_shift",
                rule.severity,
                moved > rule.max_missing_change,
                f"missing share {now_missing:.1%} (previous version {was_missing:.1%})",
                column=column,
                value=moved,
                threshold=rule.max_missing_change,
            )
        )
        if s.frequencies is not None and before.frequencies is not None:
            new = sorted(set(s.frequencies) - set(before.frequencies))
            gone = sorted(set(before.frequencies) - set(s.frequencies))
            changed = bool(new or gone)
            what = "; ".join(
                part
                for part in (
                    f"new categories {new[:5]}" if new else "",
                    f"categories gone {gone[:5]}" if gone else "",
                )
                if part
            )
            out.append(
                _against(
                    "profile_shift",
                    rule.severity,
                    changed,
                    what or "same categories as the previous version",
                    column=column,
                )
            )
    return out


# -- the reference sample: single-feature leakage and labels -------------------------------------


def _roc_auc(score: np.ndarray, positive: np.ndarray) -> float:
    """scikit-learn's ROC AUC, symmetric: max(auc, 1 - auc) (a feature that predicts the
    target backwards leaks as much)."""
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(positive, score))
    return max(auc, 1.0 - auc)


def check_leakage(sample: pd.DataFrame, schema: Schema, rules: DataChecksConfig) -> list[Finding]:
    """A feature that predicts the target almost perfectly on its own is the label in disguise.

    Classification: the ROC AUC of the feature alone (a category scores by its rate of the
    positive class, the last class in sorted order) against ``leakage.auc``; for more than two
    classes, one class against the rest for each. Regression: |Pearson correlation| against
    ``leakage.correlation``. Computed on the reference sample (seeded training rows).
    """
    rule = rules.leakage
    target = sample[schema.target]
    known = target.notna().to_numpy()
    if not known.any():
        return [Finding("leakage", "skipped", "no labelled rows in the sample")]
    view = numeric_view(sample[known], schema)
    y = target[known]
    out: list[Finding] = []
    if schema.task == "regression":
        values = pd.to_numeric(y, errors="coerce").to_numpy(dtype=np.float64)
        for column in schema.feature_columns:
            feature = view[column]
            if schema.columns[column].type == "category":
                feature = feature.map(pd.Series(values, index=feature.index).groupby(feature).mean())
            x = pd.to_numeric(feature, errors="coerce").to_numpy(dtype=np.float64)
            ok = np.isfinite(x) & np.isfinite(values)
            if ok.sum() < 3 or np.std(x[ok]) == 0 or np.std(values[ok]) == 0:
                out.append(Finding("leakage", "skipped", "constant on the sample", column))
                continue
            corr = float(abs(np.corrcoef(x[ok], values[ok])[0, 1]))
            out.append(
                _against(
                    "leakage",
                    rule.severity,
                    corr >= rule.correlation,
                    f"|correlation| with the target is {corr:.3f} on its own",
                    column=column,
                    value=corr,
                    threshold=rule.correlation,
                )
            )
        return out
    classes = sorted(y.unique().tolist(), key=lambda v: (not isinstance(v, (int, float)), v))
    if len(classes) < 2:
        return [Finding("leakage", "skipped", f"one class only ({classes[0]!r}): no AUC")]
    targets = classes[-1:] if len(classes) == 2 else classes
    for column in schema.feature_columns:
        feature = view[column]
        worst = 0.0
        for positive_class in targets:
            positive = (y == positive_class).to_numpy()
            if schema.columns[column].type == "category":
                score = feature.map(
                    pd.Series(positive, index=feature.index).groupby(feature.fillna("")).mean()
                ).fillna(positive.mean())
            else:
                score = feature.fillna(np.nanmean(feature) if feature.notna().any() else 0.0)
            worst = max(worst, _roc_auc(score.to_numpy(dtype=np.float64), positive))
        out.append(
            _against(
                "leakage",
                rule.severity,
                worst >= rule.auc,
                f"ROC AUC of this feature alone is {worst:.3f}",
                column=column,
                value=worst,
                threshold=rule.auc,
            )
        )
    return out


def check_labels(
    class_counts: Mapping[Any, int] | None,
    target_stats: ColumnStats | None,
    schema: Schema,
    rules: DataChecksConfig,
) -> list[Finding]:
    """A class under ``labels.min_class_share``; a regression target with infinities or none."""
    rule = rules.labels
    if schema.task == "classification":
        counts = dict(class_counts or {})
        total = sum(counts.values())
        if total == 0:
            return [Finding("labels", "skipped", "no labelled rows", schema.target)]
        if len(counts) < 2:
            only = next(iter(counts))
            return [
                Finding(
                    "labels", "block", f"one class only ({only!r}): nothing to learn", schema.target
                )
            ]
        label, count = min(counts.items(), key=lambda kv: kv[1])
        share = count / total
        return [
            _against(
                "labels",
                rule.severity,
                share < rule.min_class_share,
                f"the rarest class {label!r} has {count} of {total} rows ({share:.2%})",
                column=schema.target,
                value=share,
                threshold=rule.min_class_share,
            )
        ]
    stats = target_stats
    bad = stats is None or stats.count == 0 or not all(
        v is not None and np.isfinite(v) for v in (stats.min, stats.max, stats.mean)
    )
    message = "the target has infinite or no values" if bad else "the target is finite"
    return [_against("labels", "block", bad, message, column=schema.target)]


def check_time_split(
    column: str,
    train_range: tuple[int, int] | None,
    holdout_range: tuple[int, int] | None,
    rules: DataChecksConfig,
) -> list[Finding]:
    """For a time-based split, every timestamp column's training range (ns since the epoch)
    must end before its holdout range begins: a later time in training is the future leaking
    into what the model learned from."""
    if train_range is None or holdout_range is None:
        return [Finding("time_split", "skipped", "one side of the split has no timestamps", column)]
    overlap = train_range[1] >= holdout_range[0]
    end, start = _when(train_range[1]), _when(holdout_range[0])
    message = (
        f"training runs to {end}, after the holdout starts at {start}"
        if overlap
        else f"training ends {end}, before the holdout starts {start}"
    )
    return [_against("time_split", rules.leakage.severity, overlap, message, column=column)]


def _when(ns: int) -> str:
    return pd.Timestamp(ns, tz="UTC").isoformat()


def check_time_ranges(
    ranges: Mapping[str, tuple[tuple[int, int] | None, tuple[int, int] | None]] | None,
    schema: Schema,
    rules: DataChecksConfig,
) -> list[Finding]:
    """:func:`check_time_split` for each timestamp column of a ``by: time`` split; for a row
    split, one skipped entry that says why."""
    if ranges is None:
        stamps = [c for c in schema.input_columns if schema.columns[c].effective_role == "timestamp"]
        why = (
            "the split is by row (data.split.by: row): set by: time to hold out the latest rows"
            if stamps
            else "no timestamp column to split on"
        )
        return [Finding("time_split", "skipped", why)]
    out: list[Finding] = []
    for column, (train_range, holdout_range) in ranges.items():
        out += check_time_split(column, train_range, holdout_range, rules)
    return out


# -- all together -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckInputs:
    """What the Ray shell gathers for the checks (small: counts, statistics and a sample)."""

    overlap: OverlapFindings
    stats: Mapping[str, ColumnStats]
    sample: pd.DataFrame
    class_counts: Mapping[Any, int] | None = None
    target_stats: ColumnStats | None = None
    previous_stats: Mapping[str, ColumnStats] | None = None
    #: a ``by: time`` split's timestamp ranges per column (train, holdout); None for a row split
    time_ranges: Mapping[str, tuple[tuple[int, int] | None, tuple[int, int] | None]] | None = None


def run_checks(inputs: CheckInputs, schema: Schema, rules: DataChecksConfig) -> ChecksReport:
    """Every enabled check over ``inputs``; checks whose severity is ``off`` are left out."""
    findings: list[Finding] = []
    continuous = any(schema.columns[c].type == "float" for c in schema.feature_columns)
    findings += check_overlap(inputs.overlap, rules, continuous=continuous)
    findings += check_column_profile(inputs.stats, rules, inputs.previous_stats)
    findings += check_leakage(inputs.sample, schema, rules)
    findings += check_labels(inputs.class_counts, inputs.target_stats, schema, rules)
    findings += check_time_ranges(inputs.time_ranges, schema, rules)
    enabled = [f for f in findings if rules.severity_of(f.check) != "off"]
    return ChecksReport(tuple(enabled), inputs.overlap.rows)
