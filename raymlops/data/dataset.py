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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import ray

from raymlops.data.checks import OverlapFindings, digest_block, id_findings, row_findings
from raymlops.data.sources import file_digest, load_sklearn_frame, resolve_source
from raymlops.data.split import holdout_mask, time_cut, unit_hash
from raymlops.data.validation import ValidationReport, validate_frame
from raymlops.errors import DataValidationError
from raymlops.schema import Schema

__all__ = [
    "ROW_ID",
    "RowSample",
    "SplitBlocks",
    "ValidatedData",
    "load_split",
    "overlap_from_digests",
    "load_validated",
    "merge_samples",
    "reference_sample",
    "sample_candidates",
    "sample_rows",
    "split",
]

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


def _read_blocks(source: str, schema: Schema) -> tuple[list[Any], list[int], list[str], str]:
    """The source's blocks as ObjectRefs, each block's first global row number, the files and
    their digest (Ray Data's read, then one cheap row-count task per block)."""
    try:
        dataset, files, digest = _read(source, schema)
        refs = dataset.to_arrow_refs()
    except (pa.ArrowInvalid, ValueError) as exc:
        raise DataValidationError(f"cannot read {source}: {exc}") from None
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if hasattr(exc, "cause") else exc
        raise DataValidationError(f"cannot read {source}: {cause}") from None
    sizes = ray.get([_num_rows.remote(ref) for ref in refs])
    return refs, _offsets(sizes), files, digest


def _offsets(sizes: list[int]) -> list[int]:
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist() if sizes else []


@dataclass(frozen=True)
class _Piece:
    """Row groups of one Parquet file, read by the task that validates them."""

    filesystem: Any
    path: str
    row_groups: list[int]

    def read(self) -> pa.Table:
        return pq.ParquetFile(self.path, filesystem=self.filesystem).read_row_groups(
            self.row_groups
        )


#: consecutive row groups of a file are read together up to this many rows
_PIECE_ROWS = 250_000


def _parquet_pieces(source: str) -> tuple[list[Any], list[int], list[str], list[Any]]:
    """Parquet row groups as pieces for the validating tasks to read themselves: row counts
    come from the files' footers, so nothing is read twice and no rows pass the driver."""
    resolved = resolve_source(source)
    pieces: list[Any] = []
    sizes: list[int] = []
    try:
        for path in resolved.files:
            meta = pq.ParquetFile(path, filesystem=resolved.filesystem).metadata
            group: list[int] = []
            rows = 0
            for index in range(meta.num_row_groups):
                group.append(index)
                rows += meta.row_group(index).num_rows
                if rows >= _PIECE_ROWS or index == meta.num_row_groups - 1:
                    pieces.append(_Piece(resolved.filesystem, path, group))
                    sizes.append(rows)
                    group, rows = [], 0
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataValidationError(f"cannot read {source}: {exc}") from None
    fs = resolved.filesystem
    # the files' digest tasks run beside the validating ones (hashing 1 GB takes ~1 s); the
    # caller reads them with _combined_digest once its own tasks are under way
    digests = [_file_digest.remote(fs, path) for path in resolved.files]
    return pieces, _offsets(sizes), resolved.files, digests


def _combined_digest(digests: str | list[Any]) -> str:
    """One digest of all files, from their digests (or their digest tasks' refs)."""
    if isinstance(digests, str):
        return digests
    return hashlib.sha256("".join(ray.get(digests)).encode()).hexdigest()


def load_validated(source: str, schema: Schema, *, require_target: bool = True) -> ValidatedData:
    """Read ``source`` and validate every block in parallel against ``schema``.

    ``require_target=False`` validates rows to predict (the target may be absent).

    Raises:
        ConfigError: the source does not exist or has an unknown format.
        DataValidationError: a file is empty or a block breaks the schema; the error's
            ``report`` holds the per-column findings. Nothing downstream runs.
    """
    block_refs, offsets, files, digest = _read_blocks(source, schema)
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


#: a function of one block's typed training rows whose (small) result comes back to the driver
BlockSummary = Callable[[pd.DataFrame], Any]


@dataclass(frozen=True)
class RowSample:
    """A deterministic sample of ``rows`` training rows: the smallest hashes of their row
    numbers with ``seed`` (the drift reference; equal to :func:`sample_rows`)."""

    rows: int
    seed: int


#: a timestamp column's [min, max] on each side of the split, as ns since the epoch (UTC)
TimeRange = tuple[int, int]


@dataclass
class SplitBlocks:
    """Typed rows validated and split in one pass, as blocks in the object store.

    ``train`` and ``holdout`` are ObjectRefs of typed frames (with :data:`ROW_ID`);
    ``summaries`` holds what ``summarize`` returned for each block's training rows;
    ``candidates``, each block's candidates for the :class:`RowSample` (ObjectRefs: they are
    merged in a task by :func:`reference_sample`, never in the driver).
    """

    train: list[Any]
    holdout: list[Any]
    summaries: list[Any]
    candidates: list[Any]
    #: per-row hashes of each block (raymlops.data.checks.digest_block), in the object store
    digests: list[Any]
    report: ValidationReport
    source: str
    files: list[str]
    digest: str
    rows: int
    train_rows: int
    holdout_rows: int
    #: for a ``by: time`` split, each timestamp column's (train, holdout) ranges (None: no times)
    time_ranges: dict[str, tuple[TimeRange | None, TimeRange | None]] = field(default_factory=dict)
    #: for a ``by: time`` split, the cut (ns since the epoch): rows after it are held out
    time_cut: int | None = None


#: points of one block's quantile sketch of the split's time column
_SKETCH_POINTS = 201


def _nanoseconds(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """A datetime column as int64 ns since the epoch (UTC), and where it has a value."""
    stamps = pd.DatetimeIndex(values)
    return stamps.asi8, ~np.asarray(stamps.isna())


def _range(ns: np.ndarray) -> TimeRange | None:
    return (int(ns.min()), int(ns.max())) if len(ns) else None


def _split_side(
    typed: pd.DataFrame,
    holdout: np.ndarray,
    schema: Schema,
    offset: int,
    summarize: BlockSummary | None,
    sample: RowSample | None,
    time_columns: list[str],
) -> tuple[Any, ...]:
    """One validated block cut by ``holdout``: the two sides, counts and summary, digests and
    sample candidates."""
    digest = digest_block(typed, schema, row_offset=offset, holdout=holdout)
    train, held = typed[~holdout], typed[holdout]
    summary = summarize(train) if summarize is not None else None
    candidates = sample_candidates(train, sample.rows, seed=sample.seed) if sample else None
    ranges = {}
    for column in time_columns:
        ns, known = _nanoseconds(typed[column])
        ranges[column] = (_range(ns[known & ~holdout]), _range(ns[known & holdout]))
    return train, held, (len(train), len(held), summary, ranges), digest, candidates


def _typed_block(block: Any, schema: Schema, offset: int) -> tuple[pd.DataFrame, ValidationReport]:
    if isinstance(block, _Piece):
        block = block.read()
    frame = block.to_pandas() if isinstance(block, pa.Table) else block
    typed, report = validate_frame(frame, schema, row_offset=offset, require_target=True)
    typed[ROW_ID] = np.arange(offset, offset + len(typed), dtype=np.int64)
    return typed, report


@ray.remote(num_returns=6)
def _validate_split_block(  # type: ignore[no-untyped-def]
    block, schema_dict: dict, offset: int, fraction: float, seed: int, summarize, sample
):
    schema = Schema.from_dict(schema_dict)
    typed, report = _typed_block(block, schema, offset)
    if not report.ok:  # the run stops at the merged report: no rows travel further
        return None, None, report, (0, 0, None, {}), None, None
    mask = holdout_mask(typed[ROW_ID].to_numpy(), fraction=fraction, seed=seed)
    train, held, counts, digest, candidates = _split_side(
        typed, mask, schema, offset, summarize, sample, []
    )
    return train, held, report, counts, digest, candidates


@ray.remote(num_returns=3)
def _validate_sketch_block(block, schema_dict: dict, offset: int, column: str):  # type: ignore[no-untyped-def]
    """Pass one of a time split: the typed block stays in the object store, and a quantile
    sketch of its times comes back."""
    typed, report = _typed_block(block, Schema.from_dict(schema_dict), offset)
    if not report.ok:
        return None, report, None
    ns, known = _nanoseconds(typed[column])
    ns = ns[known]
    sketch = (
        (np.quantile(ns, np.linspace(0, 1, _SKETCH_POINTS), method="lower"), len(ns))
        if len(ns)
        else None
    )
    return typed, report, sketch


@ray.remote(num_returns=5)
def _cut_block(  # type: ignore[no-untyped-def]
    typed,
    schema_dict: dict,
    offset: int,
    column: str,
    cut: int,
    summarize,
    sample,
    time_columns: list,
):
    """Pass two of a time split, on the typed block (no second read): after ``cut`` is held out."""
    ns, known = _nanoseconds(typed[column])
    holdout = known & (ns > cut)
    return _split_side(
        typed, holdout, Schema.from_dict(schema_dict), offset, summarize, sample, time_columns
    )


def load_split(
    source: str,
    schema: Schema,
    *,
    fraction: float,
    seed: int,
    summarize: BlockSummary | None = None,
    sample: RowSample | None = None,
    time_column: str | None = None,
) -> SplitBlocks:
    """Read, validate and split ``source`` in one pass over its blocks, in Ray tasks.

    Each task validates one block (global row numbers in the report), splits it by
    :func:`~raymlops.data.split.holdout_mask` exactly like :func:`split`, and applies
    ``summarize`` to its training rows (statistics, sample candidates): the rows stay in the
    object store, only reports, counts and summaries come back. With ``sample``, each task
    also keeps its block's candidates for that sample in the object store
    (:func:`reference_sample` merges them).

    With ``time_column`` (``split.by: time``) the file is still read once: the validating tasks
    also return a quantile sketch of the column, the driver picks the cut from the sketches
    (:func:`time_cut`), and a second task per typed block holds out the rows after the cut.

    Raises:
        ConfigError: the source does not exist or has an unknown format.
        DataValidationError: a file is empty or a block breaks the schema (merged report), or
            no row has a time to split on.
    """
    digest: str | list[Any]
    if resolve_source(source).kind == "parquet":
        block_refs, offsets, files, digest = _parquet_pieces(source)
    else:
        block_refs, offsets, files, digest = _read_blocks(source, schema)
    schema_dict = schema.to_dict()
    summarize_ref = ray.put(summarize)
    cut = None
    if time_column is None:
        outputs = [
            _validate_split_block.remote(
                ref, schema_dict, offset, fraction, seed, summarize_ref, sample
            )
            for ref, offset in zip(block_refs, offsets, strict=True)
        ]
        del block_refs  # the raw blocks are freed once their tasks are done
        report = ValidationReport.merge(ray.get([out[2] for out in outputs]))
        if not report.ok:
            raise DataValidationError(report.render(), report=report)
        counts = ray.get([out[3] for out in outputs])
        train, holdout, digests, candidates = (
            [out[0] for out in outputs],
            [out[1] for out in outputs],
            [out[4] for out in outputs],
            [out[5] for out in outputs],
        )
    else:
        typed = [
            _validate_sketch_block.remote(ref, schema_dict, offset, time_column)
            for ref, offset in zip(block_refs, offsets, strict=True)
        ]
        del block_refs
        report = ValidationReport.merge(ray.get([out[1] for out in typed]))
        if not report.ok:
            raise DataValidationError(report.render(), report=report)
        try:
            cut = time_cut(ray.get([out[2] for out in typed]), fraction)
        except ValueError:
            raise DataValidationError(
                f"split.by is 'time' but column {time_column!r} has no value in any row: fill "
                "it, or split by row (data.split.by: row)"
            ) from None
        # every timestamp column's ranges, for the check that no other time leaks the future
        stamps = [
            c
            for c in schema.input_columns
            if schema.columns[c].effective_role == "timestamp"
            and schema.columns[c].type == "datetime"
        ]
        outputs = [
            _cut_block.remote(
                out[0], schema_dict, offset, time_column, cut, summarize_ref, sample, stamps
            )
            for out, offset in zip(typed, offsets, strict=True)
        ]
        del typed
        counts = ray.get([out[2] for out in outputs])
        train, holdout, digests, candidates = (
            [out[0] for out in outputs],
            [out[1] for out in outputs],
            [out[3] for out in outputs],
            [out[4] for out in outputs],
        )
    ranges: dict[str, tuple[TimeRange | None, TimeRange | None]] = {}
    for *_, block_ranges in counts:
        for column, (train_range, holdout_range) in block_ranges.items():
            before = ranges.get(column, (None, None))
            ranges[column] = (_union(before[0], train_range), _union(before[1], holdout_range))
    return SplitBlocks(
        train=train,
        holdout=holdout,
        summaries=[summary for _, _, summary, _ in counts],
        candidates=candidates if sample is not None else [],
        digests=digests,
        report=report,
        source=source,
        files=files,
        digest=_combined_digest(digest),
        rows=report.rows,
        train_rows=sum(n for n, _, _, _ in counts),
        holdout_rows=sum(n for _, n, _, _ in counts),
        time_ranges=ranges,
        time_cut=cut,
    )


def _union(a: TimeRange | None, b: TimeRange | None) -> TimeRange | None:
    if a is None or b is None:
        return a or b
    return (min(a[0], b[0]), max(a[1], b[1]))


def sample_candidates(frame: pd.DataFrame, rows: int, *, seed: int) -> pd.DataFrame:
    """The ``rows`` rows of one block with the smallest hash of their row number.

    The global sample (:func:`merge_samples`) is drawn from these, so it equals
    :func:`sample_rows` on the whole data while each block sends at most ``rows`` rows.
    """
    keys = unit_hash(frame[ROW_ID].to_numpy(), seed)
    if len(frame) <= rows:
        return frame.assign(__key=keys)
    # the rows of DataFrame.nsmallest(rows, key) (ties: the first row wins), taken by position:
    # nsmallest on the whole block first consolidated all its columns, a copy of the block
    chosen = np.argsort(keys, kind="stable")[:rows]
    return frame.iloc[chosen].assign(__key=keys[chosen])


def merge_samples(candidates: list[pd.DataFrame], rows: int) -> pd.DataFrame:
    """The ``rows`` smallest-hash rows of all blocks' candidates, in row order, keys dropped."""
    frame = pd.concat(candidates, ignore_index=True)
    if len(frame) > rows:
        frame = frame.nsmallest(rows, "__key")
    return frame.drop(columns="__key").sort_values(ROW_ID).reset_index(drop=True)


@ray.remote
def _merge_samples(rows: int, *candidates: pd.DataFrame) -> pd.DataFrame:
    return merge_samples(list(candidates), rows)


def reference_sample(data: SplitBlocks, sample: RowSample) -> pd.DataFrame:
    """The :class:`RowSample` of ``data``'s training rows, merged in a Ray task from the
    blocks' candidates: the driver receives ``sample.rows`` rows, not ``rows`` per block
    (at 20M rows the candidates are ~400,000 rows, a few hundred MB once concatenated)."""
    if not data.candidates:
        raise ValueError("load_split ran without a sample")
    return ray.get(_merge_samples.remote(sample.rows, *data.candidates))


@ray.remote
def _partition_digest(digest: pd.DataFrame, keys: list[str], buckets: int):  # type: ignore[no-untyped-def]
    """One block's digests cut by each key's hash into ``buckets`` parts (key-major order)."""
    parts = []
    for key in keys:
        columns = (
            ["row", "holdout", "row_hash", "feature_hash", "continuous"]
            if key == "feature_hash"
            else ["row", "holdout", key]
        )
        bucket = digest[key].to_numpy(dtype=np.uint64) % np.uint64(buckets)
        parts += [digest.loc[bucket == b, columns] for b in range(buckets)]
    return parts[0] if len(parts) == 1 else tuple(parts)


@ray.remote
def _bucket_findings(key: str, *parts: pd.DataFrame) -> OverlapFindings:
    """The findings of one bucket of one key, from its part of every block."""
    group = pd.concat(parts, ignore_index=True)
    if key == "feature_hash":
        return row_findings(group)
    return id_findings(group, key.removeprefix("id:"))


def overlap_from_digests(digests: list[Any], id_columns: list[str]) -> OverlapFindings:
    """Duplicates and leakage across the split from the blocks' row digests, in Ray tasks.

    A hash shuffle with plain tasks: each block's digests are cut by feature hash (and, for
    each id column, by the id's hash) into buckets, so rows that can match land in the same
    bucket wherever their blocks were; one task per bucket applies the pure
    :mod:`raymlops.data.checks` functions and only counts and first rows come back. (Ray Data's
    groupby did the same with about 7 s of fixed cost per training run.)
    """
    if not digests:
        return OverlapFindings()
    keys = ["feature_hash", *(f"id:{c}" for c in id_columns)]
    buckets = max(1, min(len(digests), int(ray.cluster_resources().get("CPU", 1))))
    returns = len(keys) * buckets
    split = [
        _partition_digest.options(num_returns=returns).remote(ref, keys, buckets) for ref in digests
    ]
    if returns == 1:
        split = [[ref] for ref in split]
    found = [
        _bucket_findings.remote(key, *[parts[k * buckets + b] for parts in split])
        for k, key in enumerate(keys)
        for b in range(buckets)
    ]
    return OverlapFindings.merge(ray.get(found))
