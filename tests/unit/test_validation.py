"""Data validation: each kind of bad input is named with its column, row numbers and values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raymlops.config import ColumnSpec
from raymlops.data.validation import ValidationReport, validate_frame
from raymlops.schema import Schema

SCHEMA = Schema.from_columns(
    {
        "age": ColumnSpec(type="int", min=0, max=120),
        "spend": ColumnSpec(type="float", nullable=True),
        "plan": ColumnSpec(type="category", categories=["basic", "pro"]),
        "autopay": ColumnSpec(type="bool"),
        "signup": ColumnSpec(type="datetime", role="timestamp"),
    },
    target="y",
    task="classification",
)


def good(rows: int = 4) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": ["30"] * rows,
            "spend": ["1.5"] * rows,
            "plan": ["pro"] * rows,
            "autopay": ["true"] * rows,
            "signup": ["2024-01-02"] * rows,
            "y": ["a", "b"] * (rows // 2),
        }
    )


def issues(frame: pd.DataFrame, offset: int = 0) -> dict[tuple[str, str], list[tuple[int, str]]]:
    _, report = validate_frame(frame, SCHEMA, row_offset=offset)
    return {(i.column, i.problem): i.examples for i in report.issues}


def test_good_rows_are_typed() -> None:
    typed, report = validate_frame(good(), SCHEMA)
    assert report.ok, report.render()
    assert str(typed["age"].dtype) == "Int64"
    assert typed["spend"].dtype == np.float64
    assert str(typed["autopay"].dtype) == "boolean"
    assert str(typed["signup"].dtype) == "datetime64[ns, UTC]"


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("age", "abc", "wrong type"),
        ("age", "2.5", "wrong type"),
        ("age", "121", "out of range"),
        ("age", None, "null in non-nullable column"),
        ("spend", "inf", "not a finite number"),
        ("plan", "gold", "unknown category"),
        ("autopay", "maybe", "wrong type"),
        ("signup", "yesterday", "wrong type"),
        ("y", None, "null in non-nullable column"),
    ],
)
def test_each_bad_value_is_reported_with_row_and_value(
    column: str, value: object, problem: str
) -> None:
    frame = good()
    frame.loc[2, column] = value
    found = issues(frame, offset=100)
    assert (column, problem) in found, found
    assert found[(column, problem)][0][0] == 103, "row numbers are 1-based and global"
    assert len(found) == 1, f"only the bad cell is reported: {found}"


def test_nan_in_a_non_nullable_numeric_column() -> None:
    frame = good().assign(age=[30.0, np.nan, 40.0, 50.0])
    assert ("age", "null in non-nullable column") in issues(frame)


def test_missing_and_extra_columns() -> None:
    frame = good().drop(columns=["plan"]).assign(surprise=1)
    found = issues(frame)
    assert ("plan", "missing column") in found
    assert ("surprise", "unexpected column") in found


def test_extra_columns_can_be_ignored() -> None:
    schema = Schema.from_columns(
        dict(SCHEMA.columns), target="y", task="classification", extra="ignore"
    )
    typed, report = validate_frame(good().assign(surprise=1), schema)
    assert report.ok
    assert "surprise" not in typed


def test_typed_parquet_input_is_accepted() -> None:
    frame = pd.DataFrame(
        {
            "age": [30, 40],
            "spend": [1.0, np.nan],
            "plan": ["pro", "basic"],
            "autopay": [True, False],
            "signup": pd.to_datetime(["2024-01-01", "2024-01-02"]),
            "y": ["a", "b"],
        }
    )
    _, report = validate_frame(frame, SCHEMA)
    assert report.ok, report.render()


def test_reports_merge_counts_and_keep_first_rows() -> None:
    a, b = good(), good()
    a.loc[[1, 3], "age"] = "x"
    b.loc[0, "age"] = "y"
    _, first = validate_frame(a, SCHEMA, row_offset=0)
    _, second = validate_frame(b, SCHEMA, row_offset=4)
    merged = ValidationReport.merge([second, first])
    (issue,) = merged.issues
    assert issue.count == 3
    assert merged.rows == 8
    assert [r for r, _ in issue.examples] == [2, 4, 5]
    assert "column 'age': wrong type in 3 row(s)" in merged.render()


def test_empty_data_is_not_ok() -> None:
    merged = ValidationReport.merge([validate_frame(good(0), SCHEMA)[1]])
    assert not merged.ok
    assert "no data rows" in merged.problems
