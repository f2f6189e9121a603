"""Batch inference's block kernel: the numpy check of numeric Parquet blocks gives exactly what
the pandas validator gives (the same refusals with the same messages, the same typed output
and the same predictions), and the Parquet plan covers every row once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from raymlops.config import ColumnSpec
from raymlops.data.validation import ColumnIssue, ValidationReport, validate_frame
from raymlops.predictor import Predictor
from raymlops.schema import Schema
from raymlops.serving.blocks import (
    ROW,
    ParquetSlice,
    numeric_columns,
    plan_parquet,
    predict_block,
    shift_report,
)
from tests.helpers import mixed_frame, registered_predictor

SCHEMA = Schema.from_columns(
    {
        "spend": ColumnSpec(type="float", min=0, max=1000, nullable=True),
        "score": ColumnSpec(type="float"),
        "tenure": ColumnSpec(type="int", min=0, max=600),
        "visits": ColumnSpec(type="int", nullable=True),
        "autopay": ColumnSpec(type="bool"),
        "promo": ColumnSpec(type="bool", nullable=True),
    },
    target="churned",
    task="classification",
)
INPUTS = SCHEMA.input_columns


@pytest.fixture(scope="module", params=["logistic_regression", "xgboost"])
def predictor(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    return registered_predictor(str(tmp_path_factory.mktemp("blocks")), SCHEMA, request.param)


def _reference(table: pa.Table, predictor):  # type: ignore[no-untyped-def]
    """What the pandas path gives: validate_frame's report, and for valid rows the typed
    columns as Arrow writes them and the pandas transform's predictions."""
    # the version's own schema, as stored (its columns in the stored order)
    typed, report = validate_frame(table.to_pandas(), predictor.schema, require_target=False)
    if not report.ok:
        return None, None, report
    return pa.Table.from_pandas(typed, preserve_index=False), predictor.predict(typed), report


# a value of a number column: in range, out of range, fractional, missing, not finite
_NUMBER = st.one_of(
    st.integers(-5, 700).map(float),
    st.floats(-10, 1100, width=32),
    st.sampled_from([None, float("nan"), float("inf"), -float("inf")]),
)
_BOOL = st.one_of(st.booleans(), st.none())


def _valid(spec: ColumnSpec) -> st.SearchStrategy:
    """Values that keep the column's rules."""
    if spec.type == "bool":
        values: st.SearchStrategy = st.booleans()
    else:
        low = -1e6 if spec.min is None else spec.min
        high = 1e6 if spec.max is None else spec.max
        values = (
            st.integers(int(low), int(high)).map(float)
            if spec.type == "int"
            else st.floats(low, high, width=32)
        )
    return st.one_of(values, st.sampled_from([None, float("nan")])) if spec.nullable else values


@st.composite
def _blocks(draw: st.DrawFn) -> pa.Table:
    """Blocks that keep the schema (half of them) or may break it anywhere."""
    rows = draw(st.integers(1, 6))
    valid = draw(st.booleans())
    columns: dict[str, pa.Array] = {}
    for name in INPUTS:
        spec = SCHEMA.columns[name]
        if spec.type == "bool":
            values = draw(st.lists(_valid(spec) if valid else _BOOL, min_size=rows, max_size=rows))
            arrow = draw(st.sampled_from(["bool"] if valid else ["bool", "int64", "string"]))
            values = [None if v is None or v != v else v for v in values]
            if arrow == "int64":
                values = [None if v is None else int(v) for v in values]
        else:
            values = draw(
                st.lists(_valid(spec) if valid else _NUMBER, min_size=rows, max_size=rows)
            )
            kinds = ["float64", "float32", "int64"] + ([] if valid else ["string"])
            arrow = draw(st.sampled_from(kinds))
            whole = all(v is None or (np.isfinite(v) and float(v).is_integer()) for v in values)
            if arrow == "int64" and whole:
                values = [None if v is None else int(v) for v in values]
            elif arrow == "int64":
                arrow = "float64"
        if arrow == "string":
            values = [None if v is None else str(v) for v in values]
        columns[name] = pa.array(values, type=pa.type_for_alias(arrow), from_pandas=False)
    if not valid and draw(st.booleans()):  # a column out of the schema (extra: error)
        columns = {**columns, "extra": pa.array([1.0] * rows)}
    if not valid and draw(st.integers(0, 9)) == 0:  # a missing column
        columns.pop(draw(st.sampled_from(INPUTS)))
    return pa.table(columns)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(table=_blocks())
def test_numpy_check_equals_the_pandas_path(predictor, table: pa.Table) -> None:  # type: ignore[no-untyped-def]
    """Given numeric blocks as Parquet may hold them (nulls, NaN, infinities, out of range,
    fractional ints, wrong types, an extra or a missing column), when a block goes through
    batch inference's kernel, then it is refused with the pandas validator's exact report, or
    accepted with the same typed columns and the same predictions, to the bit."""
    fast = numeric_columns(table, SCHEMA, predictor.contract.digest)
    event("numpy check" if fast is not None else "pandas path")
    output, report = predict_block(table, predictor)
    typed, expected, expected_report = _reference(table, predictor)
    assert report.to_dict() == expected_report.to_dict()
    if expected is None:
        assert output is None
        assert fast is None, "a block that breaks the schema never passes the numpy check"
        return
    assert output is not None
    inputs = predictor.schema.input_columns
    assert output.select(inputs).equals(typed, check_metadata=False), (
        output.select(inputs).schema,
        typed.schema,
    )
    assert output.column("prediction").to_pylist() == expected.labels
    for i, label in enumerate(predictor.pipeline.target.classes):
        got = output.column(f"probability_{label}").to_numpy()
        np.testing.assert_array_equal(got, expected.probabilities[:, i])
    assert output.column(ROW).to_pylist() == list(range(1, table.num_rows + 1))
    assert set(output.column("model_version").to_pylist()) == {predictor.version}


def test_a_clean_numeric_block_takes_the_numpy_check(predictor) -> None:  # type: ignore[no-untyped-def]
    block = pa.Table.from_pandas(mixed_frame(50, 2)[INPUTS])
    assert numeric_columns(block, SCHEMA, predictor.contract.digest) is not None
    output, report = predict_block(block, predictor)
    assert report.ok
    assert output is not None
    assert output.num_rows == 50
    assert output.column_names == [
        *predictor.schema.input_columns,
        ROW,
        "prediction",
        "probability_no",
        "probability_yes",
        "model_version",
    ]


def test_a_bad_cell_is_named_by_the_pandas_validator(predictor) -> None:  # type: ignore[no-untyped-def]
    frame = mixed_frame(20, 3)[INPUTS]
    frame.loc[7, "tenure"] = 900
    output, report = predict_block(pa.Table.from_pandas(frame), predictor)
    assert output is None
    assert (
        "column 'tenure': out of range in 1 row(s) (expected int in [0, 600]); first: row 8: "
        "900" in report.render()
    )


def test_shift_report_counts_rows_from_the_input_start() -> None:
    report = ValidationReport(
        rows=10, issues=[ColumnIssue("a", "wrong type", "float", 2, [(3, "'x'"), (9, "'y'")])]
    )
    shifted = shift_report(report, 250)
    assert shifted.issues[0].examples == [(253, "'x'"), (259, "'y'")]
    assert shifted.issues[0].count == 2
    assert shifted.rows == 10
    assert report.issues[0].examples == [(3, "'x'"), (9, "'y'")], "the block's own is kept"


def test_parquet_plan_reads_every_row_once_and_cuts_big_row_groups(tmp_path: Path) -> None:
    """Row groups of 300, 300, 50 and 1,000 rows, pieces of about 400: the small groups are read
    together, the big one is cut into three slices, and the pieces read back the whole file."""
    path = tmp_path / "rows.parquet"
    with pq.ParquetWriter(path, pa.schema([("x", pa.int64())])) as writer:
        start = 0
        for size in (300, 300, 50, 1000):
            writer.write_table(pa.table({"x": np.arange(start, start + size)}))
            start += size
    fs = pa.fs.LocalFileSystem()
    pieces, sizes = plan_parquet(fs, [str(path)], 400)
    assert [(p.row_groups, p.start, p.rows, p.whole) for p in pieces] == [
        ([0, 1], 0, 600, True),
        ([2], 0, 50, True),
        ([3], 0, 333, False),
        ([3], 333, 333, False),
        ([3], 666, 334, False),
    ]
    assert sizes == [p.rows for p in pieces]
    read = pa.concat_tables([p.read() for p in pieces])
    assert read.column("x").to_pylist() == list(range(1650))
    assert isinstance(pieces[0], ParquetSlice)
