"""Validate and type a pandas frame against the schema (pure; run per block by Ray Data).

:func:`validate_frame` parses every column into its declared type and reports, per column and
problem, how many rows are bad and the first row numbers with their values. Reports of blocks
merge into one (:meth:`ValidationReport.merge`), so validation runs block-parallel and still
names global row numbers.

Example:
    >>> typed, report = validate_frame(df, schema, row_offset=0)  # doctest: +SKIP
    >>> report.ok
    False
    >>> print(report.render())  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from raymlops.config import ColumnSpec
from raymlops.schema import Schema

__all__ = ["ColumnIssue", "ValidationReport", "expected_text", "validate_frame"]

MAX_EXAMPLES = 5
#: columns pandas adds to Parquet files for a non-default index; they are not data
_PANDAS_INDEX = re.compile(r"^__index_level_\d+__$")
# The one coercion policy, shared with the HTTP contract (raymlops.contract): a typed value must
# have the declared type; text (a CSV cell) is parsed by the same rules: a float is a number, an
# int a whole number (32 or 32.0, as JSON Schema's integer; 32.5 is refused), a bool is true or
# false (any case), never 1, "yes" or "t"; a number is never a bool nor a bool a number.
_TRUE = {"true"}
_FALSE = {"false"}


@dataclass
class ColumnIssue:
    """One problem in one column: how many rows have it and the first of them."""

    column: str
    problem: str
    expected: str
    count: int
    examples: list[tuple[int, str]] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (self.column, self.problem)


@dataclass
class ValidationReport:
    """The findings of a validation run. Row numbers are 1-based data rows (header excluded)."""

    rows: int = 0
    issues: list[ColumnIssue] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.issues and not self.problems and self.rows > 0

    @classmethod
    def merge(cls, reports: Iterable[ValidationReport]) -> ValidationReport:
        """Combine block reports: counts add up, the earliest examples are kept."""
        merged = cls()
        by_key: dict[tuple[str, str], ColumnIssue] = {}
        for report in reports:
            merged.rows += report.rows
            for problem in report.problems:
                if problem not in merged.problems:
                    merged.problems.append(problem)
            for issue in report.issues:
                known = by_key.get(issue.key)
                if known is None:
                    known = ColumnIssue(issue.column, issue.problem, issue.expected, 0, [])
                    by_key[issue.key] = known
                    merged.issues.append(known)
                known.count += issue.count
                known.examples = sorted(known.examples + issue.examples)[:MAX_EXAMPLES]
        if merged.rows == 0 and "no data rows" not in merged.problems:
            merged.problems.append("no data rows")
        return merged

    def to_dict(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "ok": self.ok,
            "problems": list(self.problems),
            "issues": [
                {
                    "column": i.column,
                    "problem": i.problem,
                    "expected": i.expected,
                    "bad_rows": i.count,
                    "first_rows": [{"row": r, "value": v} for r, v in i.examples],
                }
                for i in self.issues
            ],
        }

    def render(self) -> str:
        """A plain-text report: one line per column problem, with the first rows and values."""
        if self.ok:
            return f"data ok: {self.rows} rows"
        lines = [f"data validation failed ({self.rows} rows read):"]
        lines += [f"  {p}" for p in self.problems]
        for issue in self.issues:
            shown = ", ".join(f"row {r}: {v}" for r, v in issue.examples)
            lines.append(
                f"  column {issue.column!r}: {issue.problem} in {issue.count} row(s)"
                f" (expected {issue.expected})" + (f"; first: {shown}" if shown else "")
            )
        return "\n".join(lines)


def _show(value: object) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Collector:
    """Gathers issues of one block, turning masks into counts and examples."""

    def __init__(self, raw: pd.DataFrame, row_offset: int) -> None:
        self.raw = raw
        self.row_offset = row_offset
        self.issues: list[ColumnIssue] = []

    def add(self, column: str, problem: str, expected: str, mask: np.ndarray) -> None:
        count = int(mask.sum())
        if not count:
            return
        positions = np.flatnonzero(mask)[:MAX_EXAMPLES]
        values = (
            self.raw[column].to_numpy()[positions]
            if column in self.raw
            else [None] * len(positions)
        )
        examples = [
            (self.row_offset + int(p) + 1, _show(v)) for p, v in zip(positions, values, strict=True)
        ]
        self.issues.append(ColumnIssue(column, problem, expected, count, examples))


def _present(series: pd.Series) -> np.ndarray:
    """Which cells hold a value: not null, and not an empty or blank string."""
    present = series.notna().to_numpy()
    if series.dtype == object or pd.api.types.is_string_dtype(series):
        blank = series.astype("string").str.strip().eq("").fillna(False).to_numpy(dtype=bool)
        present &= ~blank
    return present


def expected_text(spec: ColumnSpec) -> str:
    """What a column's values must be, as reports say it (shared with the request contract)."""
    if spec.type in ("float", "int"):
        low = "-inf" if spec.min is None else f"{spec.min:g}"
        high = "inf" if spec.max is None else f"{spec.max:g}"
        return f"{spec.type} in [{low}, {high}]"
    if spec.type == "category" and spec.categories:
        return "one of " + ", ".join(spec.categories)
    if spec.type == "datetime":
        return f"datetime ({spec.format or 'ISO 8601'})"
    return spec.type


def _typed_value(value: object) -> bool:
    """A present cell that is not text (a Python or NumPy value of a dict row)."""
    if value is None or value is pd.NA or value is pd.NaT or isinstance(value, str):
        return False
    return not (isinstance(value, (float, np.floating)) and value != value)


def _parse_numbers(
    series: pd.Series, present: np.ndarray, kind: str = "float"
) -> tuple[np.ndarray, np.ndarray]:
    """Numbers as float64, and the mask of present cells that are not numbers (of ``kind``)."""
    if pd.api.types.is_bool_dtype(series):
        return np.full(len(series), np.nan), present.copy()
    if pd.api.types.is_numeric_dtype(series):
        values = series.astype("float64").to_numpy(copy=True)
        return values, np.zeros(len(series), dtype=bool)
    if series.dtype == object:
        typed_cells = np.array([_typed_value(v) for v in series.to_numpy()], dtype=bool)
    else:
        typed_cells = np.zeros(len(series), dtype=bool)
    if typed_cells.any():
        # Python values in an object column (rows from dicts): typed, so no text parsing
        values = np.full(len(series), np.nan)
        raw = series.to_numpy()
        wrong = np.zeros(len(series), dtype=bool)
        for i in np.flatnonzero(typed_cells):
            v = raw[i]
            ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
                v, (bool, np.bool_)
            )
            if ok:
                values[i] = float(v)
            wrong[i] = not ok
        text_cells = present & ~typed_cells
    else:
        values = np.full(len(series), np.nan)
        wrong = np.zeros(len(series), dtype=bool)
        text_cells = present
    text = series.astype("string").str.strip().where(text_cells)
    parsed = pd.to_numeric(text, errors="coerce").astype("float64").to_numpy()
    bad_text = text_cells & np.isnan(parsed)
    values = np.where(text_cells, parsed, values)
    return values, wrong | bad_text


def _coerce_column(series: pd.Series, spec: ColumnSpec, name: str, out: _Collector) -> pd.Series:
    present = _present(series)
    expected = expected_text(spec)
    index = series.index
    if spec.type in ("float", "int"):
        values, wrong = _parse_numbers(series, present, spec.type)
        finite = np.isfinite(values)
        not_finite = present & ~wrong & ~np.isnan(values) & ~finite
        if spec.type == "int":
            fractional = present & finite & (np.floor(values) != values)
            wrong |= fractional
        out.add(name, "wrong type", expected, wrong)
        out.add(name, "not a finite number", expected, not_finite)
        ok = present & ~wrong & finite
        if spec.min is not None:
            out.add(name, "out of range", expected, ok & (values < spec.min))
        if spec.max is not None:
            out.add(name, "out of range", expected, ok & (values > spec.max))
        values = np.where(ok, values, np.nan)
        if spec.type == "int":
            return pd.Series(
                pd.array(np.where(ok, values, 0).astype("int64"), dtype="Int64"), index=index
            ).mask(~ok)
        return pd.Series(values, index=index, dtype="float64")
    if spec.type == "bool":
        if pd.api.types.is_bool_dtype(series):
            parsed = series.astype("boolean")
        else:
            text = series.astype("string").str.strip().str.lower()
            parsed = pd.Series(pd.NA, index=index, dtype="boolean")
            parsed[text.isin(_TRUE).fillna(False).to_numpy(dtype=bool)] = True
            parsed[text.isin(_FALSE).fillna(False).to_numpy(dtype=bool)] = False
        wrong = present & parsed.isna().to_numpy()
        out.add(name, "wrong type", expected, wrong)
        return parsed.mask(~present | wrong)
    if spec.type == "category":
        if pd.api.types.is_float_dtype(series):
            # 1.0 read from a numeric column means the category "1"
            text = series.map(lambda v: f"{v:g}" if pd.notna(v) else None)
        else:
            text = series.astype("string").str.strip()
        labels = text.astype(object).where(present, None)
        if spec.categories and spec.unknown == "error":
            unknown = present & ~labels.isin(spec.categories).to_numpy(dtype=bool)
            out.add(name, "unknown category", expected, unknown)
        return labels
    if spec.type == "datetime":
        if pd.api.types.is_datetime64_any_dtype(series):
            parsed = pd.to_datetime(series, utc=True)
        else:
            text = series.astype("string").str.strip().where(present)
            parsed = pd.to_datetime(
                text, errors="coerce", utc=True, format=spec.format or "ISO8601"
            )
        wrong = present & parsed.isna().to_numpy()
        out.add(name, "wrong type", expected, wrong)
        return parsed
    text = series.astype("string").astype(object)
    return text.where(present, None)


def validate_frame(
    frame: pd.DataFrame, schema: Schema, *, row_offset: int = 0, require_target: bool = True
) -> tuple[pd.DataFrame, ValidationReport]:
    """Parse ``frame`` into the schema's types and report what does not fit.

    Args:
        frame: raw rows (strings from CSV, or typed columns from Parquet).
        schema: the project schema.
        row_offset: rows before this block, so reported row numbers are global.
        require_target: whether the target column must be present (not for serving requests).

    Returns:
        The typed frame (declared columns only, in declaration order) and the block's report.
    """
    out = _Collector(frame, row_offset)
    n = len(frame)
    expected_columns = schema.names if require_target else schema.input_columns
    if schema.extra == "error":
        for column in frame.columns:
            if column not in schema.columns and not _PANDAS_INDEX.match(str(column)):
                out.issues.append(
                    ColumnIssue(
                        str(column),
                        "unexpected column",
                        "only declared columns (or set data.extra: ignore)",
                        n,
                        [],
                    )
                )
    typed: dict[str, pd.Series] = {}
    for name in expected_columns:
        spec = schema.columns[name]
        # id, timestamp and ignored columns are not features: rows to predict may leave them out
        optional = not require_target and spec.effective_role in ("id", "timestamp", "ignore")
        if name not in frame.columns and optional:
            typed[name] = pd.Series([None] * n, dtype=object)
            continue
        if name not in frame.columns:
            out.issues.append(
                ColumnIssue(name, "missing column", f"a column {name!r} ({spec.type})", n, [])
            )
            continue
        is_target = name == schema.target
        column = _coerce_column(frame[name], spec, name, out)
        if (not spec.nullable and not optional) or is_target:
            nulls = ~_present(frame[name])
            expected = "a value (the target)" if is_target else "a value (or set nullable: true)"
            out.add(name, "null in non-nullable column", expected, nulls)
        typed[name] = column.reset_index(drop=True)
    result = pd.DataFrame(typed, columns=[c for c in expected_columns if c in typed])
    return result, ValidationReport(rows=n, issues=out.issues)
