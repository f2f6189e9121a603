"""Batch inference on Ray: one pass of tasks that read, validate and predict, then Parquet out.

The input is cut into pieces (Parquet: row groups or slices of them, planned from the files'
footers, about one piece per core; CSV: one per file). One Ray task per piece reads it, checks
it against the version's schema and predicts it with the same
:class:`~raymlops.predictor.Predictor` and numpy kernels as serving
(:func:`raymlops.serving.blocks.predict_block`), so a row gets the same answer from the batch
job, over HTTP and in-process. The outputs wait in the object store until every piece has
passed: if any row breaks the schema, the merged report (column, row, value) is raised and
nothing is written. Then one task per piece writes its Parquet file.

Example:
    >>> result = batch_predict(config, "new_rows.csv", "predictions/")  # doctest: +SKIP
    >>> result.rows, result.version
    (10000, 'v3')
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray

from raymlops.config import ProjectConfig
from raymlops.data.sources import load_sklearn_frame, resolve_source
from raymlops.data.validation import ValidationReport
from raymlops.errors import DataValidationError, RaymlopsError, StorageError
from raymlops.predictor import Predictor, load_predictor
from raymlops.registry import Registry
from raymlops.registry.bundle import VersionBundle
from raymlops.schema import Schema
from raymlops.serving.blocks import (
    ROW,
    CsvFile,
    plan_parquet,
    predict_block,
    shift_report,
)
from raymlops.storage import Storage

__all__ = ["BatchResult", "batch_predict", "read_predictions"]

#: a piece has at least this many rows (fewer, larger tasks: each has a fixed cost) ...
_MIN_PIECE_ROWS = 100_000
#: ... and at most this many (each task holds its piece, features and output in memory)
_MAX_PIECE_ROWS = 1_048_576
#: rows of a bundled scikit-learn dataset per piece
_FRAME_PIECE_ROWS = 100_000


@dataclass(frozen=True)
class BatchResult:
    """What a batch job did: rows in and out, the version used, where the output went."""

    rows: int
    version: str
    output: str
    seconds: float


#: versions loaded in this worker process: (storage, name, version) -> predictor
_LOADED: dict[tuple[str, str, str], Predictor] = {}


def _predictor(storage: str, name: str, version: str) -> Predictor:
    """The version, loaded once per worker process (every file sha256-verified first)."""
    key = (storage, name, version)
    if key not in _LOADED:
        predictor = load_predictor(Registry(Storage.from_uri(storage, create=False), name), version)
        if predictor.kind == "xgboost":  # one core per task: the tasks fill the cores
            predictor.model.set_param({"nthread": 1})
        _LOADED[key] = predictor
    return _LOADED[key]


@ray.remote(num_cpus=1, num_returns=2)
def _predict_piece(
    piece: Any, storage: str, name: str, version: str
) -> tuple[pa.Table | None, ValidationReport]:
    predictor = _predictor(storage, name, version)
    if isinstance(piece, pd.DataFrame):
        block: pa.Table | pd.DataFrame = piece
    else:
        try:
            block = piece.read()
        except (pa.ArrowInvalid, OSError, ValueError) as exc:
            return None, ValidationReport(problems=[f"cannot read {piece.name}: {exc}"])
    return predict_block(block, predictor)


@ray.remote(num_cpus=1)
def _write_piece(table: pa.Table, offset: int, filesystem: Any, path: str) -> int:
    # the piece's local row numbers become the input's (1-based, as in every message)
    index = table.schema.get_field_index(ROW)
    rows = pc.add(table.column(index), pa.scalar(offset, pa.int64()))
    table = table.set_column(index, ROW, rows)
    # dictionary pages only where values repeat (labels, the version): floats are rarely equal,
    # and building their dictionary before giving up on it doubled the time of a write
    repeating = [f.name for f in table.schema if not pa.types.is_floating(f.type)]
    pq.write_table(table, path, filesystem=filesystem, use_dictionary=repeating)
    return table.num_rows


def _pieces(source: str, schema: Schema, cpus: int) -> list[Any]:
    """The input cut into pieces for the tasks: Parquet slices of about rows / cores (within
    bounds), one CSV file each, or chunks of a bundled scikit-learn dataset."""
    resolved = resolve_source(source)
    if resolved.kind == "sklearn":
        frame = load_sklearn_frame(source)
        return [
            frame.iloc[start : start + _FRAME_PIECE_ROWS].reset_index(drop=True)
            for start in range(0, len(frame), _FRAME_PIECE_ROWS)
        ]
    if resolved.kind == "csv":
        return [CsvFile(resolved.filesystem, path, schema.names) for path in resolved.files]
    try:
        rows = sum(
            pq.ParquetFile(path, filesystem=resolved.filesystem).metadata.num_rows
            for path in resolved.files
        )
        target = min(_MAX_PIECE_ROWS, max(_MIN_PIECE_ROWS, math.ceil(rows / max(1, cpus))))
        pieces, _ = plan_parquet(resolved.filesystem, resolved.files, target)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataValidationError(f"cannot read {source}: {exc}") from None
    return pieces


def _output_location(output: str) -> tuple[Any, str]:
    """The output folder's filesystem and path (a local path is made absolute here: the
    writing tasks may run in another folder)."""
    try:
        if "://" in output:
            filesystem, path = pafs.FileSystem.from_uri(output)
        else:
            filesystem, path = pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(output))
    except (ValueError, OSError) as exc:
        raise StorageError(f"--output {output!r} cannot be opened: {exc}") from None
    return filesystem, path.rstrip("/") or "/"


def batch_predict(
    config: ProjectConfig, source: str, output: str, *, alias: str = "champion"
) -> BatchResult:
    """Predict every row of ``source`` with the version behind ``alias``; write Parquet.

    Raises:
        ConfigError: the input does not exist.
        DataValidationError: rows break the version's schema, or the input cannot be read
            (nothing is written).
        StorageError: the output location cannot be opened.
    """
    started = time.perf_counter()
    registry = Registry(Storage.from_uri(config.storage, create=False), config.name)
    # the version is fixed here (an alias may move while the job runs); the tasks load it,
    # each worker once, while this process plans: the model is never loaded in the driver
    manifest = registry.manifest(alias)
    version = manifest["version"]
    schema = Schema.from_dict(
        json.loads(registry.read_verified(version, VersionBundle.SCHEMA, manifest))
    )
    filesystem, folder = _output_location(output)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    pieces = _pieces(source, schema, cpus)
    outputs = [
        _predict_piece.remote(piece, config.storage, config.name, version) for piece in pieces
    ]
    try:
        reports = ray.get([report for _, report in outputs])
    except ray.exceptions.RayTaskError as exc:  # the version did not load (IntegrityError ...)
        if isinstance(exc.cause, RaymlopsError):
            raise exc.cause from None
        raise
    unreadable = [p for r in reports for p in r.problems if p.startswith("cannot read ")]
    if unreadable:
        raise DataValidationError(unreadable[0])
    offsets, before = [], 0  # rows of the input before each piece
    for report in reports:
        offsets.append(before)
        before += report.rows
    merged = ValidationReport.merge(
        shift_report(report, offset) for report, offset in zip(reports, offsets, strict=True)
    )
    if not merged.ok:
        raise DataValidationError(merged.render(), report=merged)
    filesystem.create_dir(folder, recursive=True)
    run = uuid.uuid4().hex[:12]  # new files next to any earlier run's, never over them
    ray.get(
        [
            _write_piece.remote(table, offset, filesystem, f"{folder}/{run}_{i:06d}.parquet")
            for i, ((table, _), offset, report) in enumerate(
                zip(outputs, offsets, reports, strict=True)
            )
            if report.rows
        ]
    )
    return BatchResult(
        rows=merged.rows,
        version=version,
        output=output,
        seconds=time.perf_counter() - started,
    )


def read_predictions(output: str) -> pd.DataFrame:
    """All Parquet files of a batch output, in input row order (for tests and notebooks)."""
    # plain numpy dtypes, whatever pandas dtypes the writing blocks had
    frame = pq.read_table(output).to_pandas(ignore_metadata=True)
    return frame.sort_values("row").reset_index(drop=True)
