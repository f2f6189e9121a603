"""One block of batch inference, pure: read a piece of the input, validate it, predict, build the
output table (no Ray; :mod:`raymlops.serving.batch` runs these in Ray tasks).

A block of numeric columns read from Parquet is checked in numpy (:func:`numeric_columns`):
nulls, finiteness, whole numbers for ints and the declared range, one vectorised pass per
column, and the columns go to the serving kernels (:meth:`Predictor.predict_columns`) as they
are. Any other block, and any block that breaks a rule, goes through
:func:`~raymlops.data.validation.validate_frame`, so a bad row gets exactly the message it
always got (column, row, value); the numpy check only decides that a block is clean.

Row numbers inside a block are local (1-based); :func:`shift_report` and the writer turn them
into the input's row numbers once the sizes of the blocks before it are known.

Example:
    >>> table, report = predict_block(piece.read(), predictor)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raymlops.contract import Columns
from raymlops.data.validation import ValidationReport, validate_frame
from raymlops.predictor import Prediction, Predictor
from raymlops.schema import Schema

__all__ = [
    "CsvFile",
    "ParquetSlice",
    "ROW",
    "numeric_columns",
    "output_table",
    "plan_parquet",
    "predict_block",
    "shift_report",
]

#: the output column holding the input's row number (1-based, as in every message)
ROW = "row"
#: columns pandas adds to Parquet files for a non-default index (not data; see validation)
_PANDAS_INDEX = re.compile(r"^__index_level_\d+__$")
#: roles a row to predict may leave empty (not features), as in validate_frame
_OPTIONAL_ROLES = ("id", "timestamp", "ignore")
#: rows read per batch when a task reads part of a row group
_READ_BATCH = 65_536


# -- pieces of the input -------------------------------------------------------------------------


@dataclass(frozen=True)
class ParquetSlice:
    """Rows ``[start, start + rows)`` of consecutive row groups of one Parquet file (``start``
    counted from the first of them), read by the task that predicts them."""

    filesystem: Any
    path: str
    row_groups: list[int]
    start: int
    rows: int
    whole: bool  # the slice is all rows of its row groups

    @property
    def name(self) -> str:
        return self.path

    def read(self) -> pa.Table:
        file = pq.ParquetFile(self.path, filesystem=self.filesystem)
        if self.whole:
            return file.read_row_groups(self.row_groups, use_threads=False)
        # part of a row group: batches up to the slice's end are decoded, the rest are not
        batches, seen, stop = [], 0, self.start + self.rows
        for batch in file.iter_batches(
            batch_size=_READ_BATCH, row_groups=self.row_groups, use_threads=False
        ):
            low, high = max(self.start - seen, 0), min(stop - seen, batch.num_rows)
            if high > low:
                batches.append(batch.slice(low, high - low))
            seen += batch.num_rows
            if seen >= stop:
                break
        return pa.Table.from_batches(batches, schema=file.schema_arrow)


@dataclass(frozen=True)
class CsvFile:
    """One CSV file, every declared column read as text: the validator parses it and names the
    row and value of a bad cell (as training reads CSV)."""

    filesystem: Any
    path: str
    columns: list[str]

    @property
    def name(self) -> str:
        return self.path

    def read(self) -> pa.Table:
        convert = pacsv.ConvertOptions(
            column_types={name: pa.string() for name in self.columns},
            strings_can_be_null=True,
        )
        filesystem = self.filesystem or pafs.LocalFileSystem()
        with filesystem.open_input_stream(self.path) as stream:
            return pacsv.read_csv(stream, convert_options=convert)


def plan_parquet(
    filesystem: Any, files: list[str], target_rows: int
) -> tuple[list[ParquetSlice], list[int]]:
    """Pieces of about ``target_rows`` rows from the files' footers (nothing else is read), and
    each piece's row count. Small consecutive row groups of a file are read together; a row
    group larger than ``target_rows`` is cut into slices, so one big row group (what pandas
    writes) still keeps every core busy."""
    pieces: list[ParquetSlice] = []
    sizes: list[int] = []
    for path in files:
        meta = pq.ParquetFile(path, filesystem=filesystem).metadata
        group: list[int] = []
        rows = 0
        for index in range(meta.num_row_groups):
            count = meta.row_group(index).num_rows
            if count > target_rows:
                if group:
                    pieces.append(ParquetSlice(filesystem, path, group, 0, rows, True))
                    sizes.append(rows)
                    group, rows = [], 0
                parts = math.ceil(count / target_rows)
                bounds = np.linspace(0, count, parts + 1).astype(int)
                for low, high in zip(bounds[:-1], bounds[1:], strict=True):
                    pieces.append(
                        ParquetSlice(filesystem, path, [index], int(low), int(high - low), False)
                    )
                    sizes.append(int(high - low))
                continue
            group.append(index)
            rows += count
            if rows >= target_rows:
                pieces.append(ParquetSlice(filesystem, path, group, 0, rows, True))
                sizes.append(rows)
                group, rows = [], 0
        if group:
            pieces.append(ParquetSlice(filesystem, path, group, 0, rows, True))
            sizes.append(rows)
    return pieces, sizes


# -- validate and predict one block --------------------------------------------------------------


def _arrow_numeric(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def numeric_columns(
    table: pa.Table, schema: Schema, digest: str
) -> tuple[Columns, dict[str, pa.Array]] | None:
    """A block of float, int and bool columns that keeps every rule of ``schema``, as the
    serving path's columns and the typed output columns; None when the block has another
    kind of column, or a row breaks a rule (then :func:`validate_frame` reports it).

    The typed values are those :func:`validate_frame` gives: float64 (NaN where missing), ints
    as int64 and bools as bool with nulls where missing. The rules are the request contract's
    for these types, so the columns carry its ``digest`` (checked: not checked again).
    """
    present = set(table.column_names)
    if schema.extra == "error" and any(
        c not in schema.columns and not _PANDAS_INDEX.match(c) for c in table.column_names
    ):
        return None
    data: dict[str, np.ndarray] = {}
    typed: dict[str, pa.Array] = {}
    for name in schema.input_columns:
        spec = schema.columns[name]
        if name not in present:
            return None
        column = table.column(name)
        if spec.type in ("float", "int") and _arrow_numeric(column.type):
            values = column.cast(pa.float64(), safe=False).to_numpy()
        elif spec.type == "bool" and pa.types.is_boolean(column.type):
            values = column.cast(pa.float64()).to_numpy()
        else:
            return None
        missing = np.isnan(values)
        required = not spec.nullable and spec.effective_role not in _OPTIONAL_ROLES
        if required and missing.any():
            return None
        if spec.type != "bool":
            with np.errstate(invalid="ignore"):
                if np.isinf(values).any():
                    return None
                if spec.type == "int" and (~missing & (np.floor(values) != values)).any():
                    return None
                if spec.min is not None and (values < spec.min).any():
                    return None
                if spec.max is not None and (values > spec.max).any():
                    return None
        data[name] = values
        mask = missing if missing.any() else None
        if spec.type == "float":
            typed[name] = pa.array(values, mask=mask)
        elif spec.type == "int":
            typed[name] = pa.array(np.where(missing, 0, values).astype(np.int64), mask=mask)
        else:
            typed[name] = pa.array(values == 1.0, mask=mask)
    return Columns(table.num_rows, data, digest), typed


def predict_block(
    block: pa.Table | pd.DataFrame, predictor: Predictor
) -> tuple[pa.Table | None, ValidationReport]:
    """Validate one block against the version's schema and predict it: the output table (None
    when the block breaks the schema or is empty) and the block's report (local row numbers)."""
    schema = predictor.schema
    digest = predictor.contract.digest
    fast = numeric_columns(block, schema, digest) if isinstance(block, pa.Table) else None
    if fast is not None:
        columns, typed = fast
        report = ValidationReport(rows=columns.n)
    else:
        frame = block.to_pandas() if isinstance(block, pa.Table) else block
        frame_typed, report = validate_frame(frame, schema, require_target=False)
        if report.issues or report.problems or not report.rows:
            return None, report
        columns = predictor.typed_columns(frame_typed)
        converted = pa.Table.from_pandas(frame_typed, preserve_index=False)
        typed = {name: converted.column(name) for name in converted.column_names}
    if not columns.n:
        return None, report
    return output_table(typed, predictor.predict_columns(columns), predictor), report


def output_table(typed: dict[str, Any], prediction: Prediction, predictor: Predictor) -> pa.Table:
    """The input columns, ``row`` (local, 1-based), ``prediction``, ``probability_<class>`` and
    ``model_version``, in that order."""
    n = len(prediction.scores)
    out: dict[str, Any] = dict(typed)
    out[ROW] = pa.array(np.arange(1, n + 1, dtype=np.int64))
    out["prediction"] = pa.array(prediction.labels)
    if prediction.probabilities is not None:
        for i, label in enumerate(predictor.pipeline.target.classes):
            out[f"probability_{label}"] = pa.array(prediction.probabilities[:, i])
    out["model_version"] = pa.array([predictor.version] * n, type=pa.string())
    return pa.table(out)


def shift_report(report: ValidationReport, offset: int) -> ValidationReport:
    """A block's report with its row numbers counted from the input's start (``offset`` rows
    before the block)."""
    if not offset:
        return report
    issues = [
        replace(issue, examples=[(row + offset, value) for row, value in issue.examples])
        for issue in report.issues
    ]
    return ValidationReport(rows=report.rows, issues=issues, problems=list(report.problems))
