"""Read, validate and split the data with Ray Data (the Ray shell around the pure validator).

:func:`load_validated` reads the source into a Ray Dataset, validates every block in parallel
with :func:`raymlops.data.validation.validate_frame` (global row numbers included), and returns
typed blocks, or raises :class:`~raymlops.errors.DataValidationError` with the merged report.
:func:`split` cuts the typed data into train and holdout by a hash of the row number.

Example:
    >>> data = load_validated(config.data.source, schema)  # doctest: +SKIP
    >>> train, holdout = split(data.dataset, fraction=0.2, seed=42)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import ray

from raymlops.data.sources import file_digest, load_sklearn_frame, resolve_source
from raymlops.data.split import holdout_mask, unit_hash
from raymlops.data.validation import ValidationReport, validate_frame
from raymlops.errors import DataValidationError
from raymlops.schema import Schema

__all__ = ["ROW_ID", "ValidatedData", "load_validated", "sample_rows", "split"]

#: the global row number (0-based) carried through the typed dataset for the split
ROW_ID = "__row_id"


@dataclass
class ValidatedData:
    """Typed rows in Ray's object store, with what was learned while reading them."""

    dataset: ray.data.Dataset
    report: ValidationReport
    source: str
    files: list[str]
    digest: str
    rows: int


def _read(source: str, schema: Schema) -> tuple[ray.data.Dataset, list[str], str]:
    resolved = resolve_source(source)
    if resolved.kind == "sklearn":
        frame = load_sklearn_frame(source)
        row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
        digest = hashlib.sha256(row_hashes.tobytes()).hexdigest()
        blocks = max(1, min(8, len(frame) // 1000))
        return ray.data.from_pandas(frame, override_num_blocks=blocks), [], digest
    if resolved.kind == "csv":
        # Every declared column is read as text: the validator parses it and can then name the
        # row and value of a bad cell, instead of pyarrow failing the whole read.
        convert = pacsv.ConvertOptions(
            column_types={name: pa.string() for name in schema.names},
            strings_can_be_null=True,
        )
        dataset = ray.data.read_csv(
            resolved.files, filesystem=resolved.filesystem, convert_options=convert
        )
    else:
        dataset = ray.data.read_parquet(resolved.files, filesystem=resolved.filesystem)
    digests = ray.get([_file_digest.remote(resolved.filesystem, path) for path in resolved.files])
    combined = hashlib.sha256("".join(digests).encode()).hexdigest()
    return dataset, resolved.files, combined


@ray.remote(num_cpus=0.25)
def _file_digest(filesystem, path: str) -> str:  # type: ignore[no-untyped-def]
    return file_digest(filesystem, path)


@ray.remote(num_cpus=0.25)
def _num_rows(block: pa.Table | pd.DataFrame) -> int:
    return block.num_rows if isinstance(block, pa.Table) else len(block)


@ray.remote(num_returns=2)
def _validate_block(
    block: pa.Table | pd.DataFrame, schema_dict: dict, offset: int, require_target: bool
) -> tuple[pd.DataFrame, ValidationReport]:
    frame = block.to_pandas() if isinstance(block, pa.Table) else block
    schema = Schema.from_dict(schema_dict)
    typed, report = validate_frame(frame, schema, row_offset=offset, require_target=require_target)
    typed[ROW_ID] = np.arange(offset, offset + len(typed), dtype=np.int64)
    return typed, report


def load_validated(source: str, schema: Schema, *, require_target: bool = True) -> ValidatedData:
    """Read ``source`` and validate every block in parallel against ``schema``.

    ``require_target=False`` validates rows to predict (the target may be absent).

    Raises:
        ConfigError: the source does not exist or has an unknown format.
        DataValidationError: a file is empty or a block breaks the schema; the error's
            ``report`` holds the per-column findings. Nothing downstream runs.
    """
    try:
        dataset, files, digest = _read(source, schema)
        block_refs = dataset.to_arrow_refs()
    except (pa.ArrowInvalid, ValueError) as exc:
        raise DataValidationError(f"cannot read {source}: {exc}") from None
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if hasattr(exc, "cause") else exc
        raise DataValidationError(f"cannot read {source}: {cause}") from None
    sizes = ray.get([_num_rows.remote(ref) for ref in block_refs])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int) if sizes else []
    typed_refs, report_refs = [], []
    schema_dict = schema.to_dict()
    for ref, offset in zip(block_refs, offsets, strict=True):
        typed_ref, report_ref = _validate_block.remote(
            ref, schema_dict, int(offset), require_target
        )
        typed_refs.append(typed_ref)
        report_refs.append(report_ref)
    report = ValidationReport.merge(ray.get(report_refs))
    if not report.ok:
        raise DataValidationError(report.render(), report=report)
    return ValidatedData(
        dataset=ray.data.from_pandas_refs(typed_refs),
        report=report,
        source=source,
        files=files,
        digest=digest,
        rows=report.rows,
    )


def split(
    dataset: ray.data.Dataset, *, fraction: float, seed: int
) -> tuple[ray.data.Dataset, ray.data.Dataset]:
    """(train, holdout): a row goes to holdout when the hash of its row number says so."""

    def _side(batch: pd.DataFrame, holdout: bool) -> pd.DataFrame:
        mask = holdout_mask(batch[ROW_ID].to_numpy(), fraction=fraction, seed=seed)
        return batch[mask if holdout else ~mask]

    train = dataset.map_batches(_side, fn_kwargs={"holdout": False}, batch_format="pandas")
    holdout = dataset.map_batches(_side, fn_kwargs={"holdout": True}, batch_format="pandas")
    return train.materialize(), holdout.materialize()


def sample_rows(dataset: ray.data.Dataset, rows: int, *, seed: int) -> pd.DataFrame:
    """A deterministic sample of ``rows`` rows (all of them if fewer), in row order.

    The rows with the smallest hash of their row number are kept: blocks filter in parallel
    with a margin, and only the survivors come to the driver.
    """
    total = dataset.count()
    keep = 1.0 if total <= rows else min(1.0, 1.5 * rows / total + 1e-3)

    def _candidates(batch: pd.DataFrame) -> pd.DataFrame:
        keys = unit_hash(batch[ROW_ID].to_numpy(), seed)
        return batch.assign(__key=keys)[keys < keep]

    frame = dataset.map_batches(_candidates, batch_format="pandas").to_pandas()
    if len(frame) > rows:
        frame = frame.nsmallest(rows, "__key")
    return frame.drop(columns="__key").sort_values(ROW_ID).reset_index(drop=True)
