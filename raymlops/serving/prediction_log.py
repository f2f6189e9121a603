"""The prediction log: every answered batch goes, without blocking the answer, to sinks.

:class:`PredictionLog` puts rows on a bounded queue; every ``tick_s`` :meth:`PredictionLog.drain`
(its own thread, or serving's event loop) joins all that is queued column by column
(:func:`join_batches`) and hands it to the sinks, which make one Arrow table of it (no pandas).
Serving only appends a reference to the batch's numpy columns (:class:`ServedBatch`), so the
table, the Parquet file and the monitor's feed cost the same for a thousand single-row requests
as for one (a frame per request cost serving 13-39% of its throughput).
When the queue is full the rows are dropped and counted (``dropped_rows``, logged and
reported by :meth:`PredictionLog.stats`), never silently lost. The default sink,
:class:`ParquetSink`, writes Parquet files under ``{storage}/predictions/{name}/date=YYYY-MM-DD/``;
the monitoring actor is another sink (issue 5).

Each logged row holds the input columns, ``prediction``, ``probability_<class>`` for
classification, ``model_version``, ``request_id`` and ``logged_at`` (UTC). The log holds raw
inputs: ``serving.prediction_log.log_ids: false`` leaves the schema's id columns out, and
``retention_days`` makes the sink delete partitions older than that many days.

Example:
    >>> log = PredictionLog([ParquetSink(storage, "churn")], max_queue_rows=100_000)  # doctest: +SKIP
    >>> log.offer(served_batch)  # returns at once; False if the rows were dropped  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import io
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raymlops.contract import Columns
from raymlops.storage import Storage

__all__ = [
    "LogStats",
    "LoggedRows",
    "ParquetSink",
    "PredictionLog",
    "PredictionSink",
    "ServedBatch",
    "flush_sinks",
    "join_batches",
    "log_tables",
    "sink_total",
    "write_to_sinks",
]

_log = logging.getLogger("raymlops.prediction_log")


class PredictionSink(Protocol):
    """Receives logged rows (called by whoever drains the log, one caller at a time):
    ``rows.table`` is them as one Arrow table, built once for all the sinks that ask."""

    def write(self, rows: LoggedRows) -> None: ...

    def flush(self, *, force: bool = False) -> None: ...


def write_to_sinks(sinks: Sequence[PredictionSink], rows: LoggedRows) -> None:
    """Hand ``rows`` to each sink; a failing sink is logged and must not stop the others."""
    for sink in sinks:
        try:
            sink.write(rows)
        except Exception:
            _log.exception("prediction sink %s failed", type(sink).__name__)


def flush_sinks(sinks: Sequence[PredictionSink], *, force: bool = False) -> None:
    """Let each sink flush what is due (all of it with ``force``); failures are logged."""
    for sink in sinks:
        try:
            sink.flush(force=force)
        except Exception:
            _log.exception("prediction sink %s failed to flush", type(sink).__name__)


def sink_total(sinks: Sequence[PredictionSink], count: str) -> int:
    """The sum of one count (``stored_rows``, ``dropped_rows``, ``buffered_rows``) over the
    sinks that keep it."""
    return sum(getattr(sink, count, 0) for sink in sinks)


#: a sink looks for partitions past the retention at most this often
_PRUNE_EVERY_S = 3600.0


class ParquetSink:
    """Buffers rows and writes a Parquet file every ``flush_rows`` rows or ``flush_s`` seconds.

    No silent loss: the buffer is cleared only after its file is written. A failed write is
    tried again ``retries`` times with exponential back-off (``backoff_s``, doubling); rows
    still not written then are given up and counted in ``dropped_rows``. A string Parquet
    cannot hold (a lone UTF-16 surrogate) is written escaped rather than failing the file.
    A file holds one table schema: rows with other columns (a swap to a version with other
    inputs or classes) start the next file.

    ``drop_columns`` are never written (the id columns, with ``log_ids: false``). With
    ``retention_days``, after a write (at most hourly) the ``date=`` partitions older than that
    many days (UTC, by ``clock``) are deleted and counted in ``pruned_partitions``.
    """

    def __init__(
        self,
        storage: Storage,
        name: str,
        *,
        flush_rows: int = 1000,
        flush_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        drop_columns: Sequence[str] = (),
        retention_days: int | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
    ) -> None:
        self.storage = storage
        self.name = name
        self.flush_rows = flush_rows
        self.flush_s = flush_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._sleep = sleep
        self.drop_columns = tuple(drop_columns)
        self.retention_days = retention_days
        self._clock = clock
        self._next_prune = 0.0
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._last_flush = time.monotonic()
        self.files_written = 0
        self.written_rows = 0
        self.dropped_rows = 0
        self.pruned_partitions = 0

    @classmethod
    def from_settings(
        cls,
        storage: Storage,
        name: str,
        settings: Mapping[str, Any],
        *,
        id_columns: Sequence[str] = (),
        **kwargs: Any,
    ) -> ParquetSink:
        """The sink ``serving.prediction_log`` describes (its ``model_dump()``); ``id_columns``
        are the schema's id columns, left out when ``log_ids`` is false."""
        return cls(
            storage,
            name,
            flush_rows=settings["flush_rows"],
            flush_s=settings["flush_s"],
            drop_columns=() if settings.get("log_ids", True) else id_columns,
            retention_days=settings.get("retention_days"),
            **kwargs,
        )

    @property
    def buffered_rows(self) -> int:
        """Rows waiting in the buffer for the next file."""
        return self._buffered

    @property
    def stored_rows(self) -> int:
        return self.written_rows

    def write(self, rows: LoggedRows) -> None:
        table = rows.table
        if self.drop_columns:
            table = table.drop_columns([c for c in self.drop_columns if c in table.column_names])
        if self._buffer and not table.schema.equals(self._buffer[0].schema):
            self.flush(force=True)  # one schema per file
        self._buffer.append(table)
        self._buffered += table.num_rows
        if self._buffered >= self.flush_rows:
            self.flush(force=True)
        else:
            self.flush()

    def flush(self, *, force: bool = False) -> None:
        """Write the buffer if ``flush_s`` has passed since the last write (or now, if forced)."""
        if not force and time.monotonic() - self._last_flush < self.flush_s:
            return
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        table = pa.concat_tables(self._buffer)
        rows = table.num_rows
        now = self._clock()
        path = (
            f"predictions/{self.name}/date={now:%Y-%m-%d}/"
            f"{now:%H%M%S}-{uuid.uuid4().hex[:12]}.parquet"
        )
        for attempt in range(self.retries + 1):
            try:
                self.storage.write_bytes(path, _parquet_bytes(table))
                break
            except Exception as exc:
                if attempt == self.retries:
                    self.dropped_rows += rows
                    self._buffer, self._buffered = [], 0  # memory stays bounded
                    _log.error(
                        "prediction log: %d rows given up after %d tries (%s); %d dropped in all",
                        rows, attempt + 1, exc, self.dropped_rows,
                    )
                    return
                delay = self.backoff_s * 2**attempt
                _log.warning("prediction log: write failed (%s); again in %.1fs", exc, delay)
                self._sleep(delay)
        self._buffer, self._buffered = [], 0  # only now: the rows are on storage
        self.files_written += 1
        self.written_rows += rows
        if self.retention_days is not None and time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + _PRUNE_EVERY_S
            try:
                self.prune()
            except Exception:  # the rows are written; retention is tried again later
                _log.exception("prediction log: deleting old partitions failed")

    def prune(self) -> list[str]:
        """Delete the ``date=`` partitions older than ``retention_days``; returns their names."""
        if self.retention_days is None:
            return []
        oldest_kept = (self._clock() - dt.timedelta(days=self.retention_days)).date()
        folder = f"predictions/{self.name}"
        removed = []
        for entry in sorted(self.storage.list_dir(folder)):
            try:
                day = dt.date.fromisoformat(entry.removeprefix("date="))
            except ValueError:
                continue  # not a partition of this log
            if entry.startswith("date=") and day < oldest_kept:
                self.storage.delete_dir(f"{folder}/{entry}")
                removed.append(entry)
        self.pruned_partitions += len(removed)
        if removed:
            _log.info(
                "prediction log: deleted %d partitions older than %d days (%s .. %s)",
                len(removed), self.retention_days, removed[0], removed[-1],
            )
        return removed


#: the columns the log adds to the inputs (and ``probability_<class>``)
_ANSWERS = ("prediction", "model_version", "request_id", "logged_at")


def _parquet_bytes(table: pa.Table) -> bytes:
    # dictionary encoding only for the string columns (versions, ids, categories): tried on
    # the float columns it gave up on each of them and cost 3/4 of the write's CPU
    strings = [f.name for f in table.schema if pa.types.is_string(f.type)]
    # min/max statistics for the columns people filter the log by, not for every input: they
    # were a third of the write's CPU
    stats = [name for name in _ANSWERS if name in table.column_names]
    buffer = io.BytesIO()
    pq.write_table(table, buffer, use_dictionary=strings, write_statistics=stats)
    return buffer.getvalue()


@dataclass(frozen=True)
class LogStats:
    """Counts of the log: rows offered, handed to the sinks, dropped on a full queue, waiting;
    rows a sink gave up after its retries (``sink_dropped_rows``), and rows the Parquet sink
    has on storage (``stored_rows``: the others wait in its buffer)."""

    offered_rows: int
    written_rows: int
    dropped_rows: int
    queued_rows: int
    sink_dropped_rows: int = 0
    stored_rows: int = 0


class PredictionLog:
    """A bounded, non-blocking queue in front of the sinks.

    With ``background`` (the default) a thread calls :meth:`drain` every ``tick_s``. Serving
    passes ``background=False`` and calls :meth:`drain` on its own event loop between requests:
    a thread of its own, however little it did, took the GIL from the event loop in the middle
    of requests (measured at c4 with 100-row requests: 7% of throughput with the thread, with
    only 2% of a core of work in it).
    """

    def __init__(
        self,
        sinks: list[PredictionSink],
        *,
        max_queue_rows: int = 100_000,
        tick_s: float = 0.5,
        background: bool = True,
    ) -> None:
        self.sinks = sinks
        self.max_queue_rows = max_queue_rows
        self.tick_s = tick_s
        # a deque, not a queue.Queue: the hot path appends without waking anyone (the log is
        # drained every tick_s, everything at once)
        self._queue: collections.deque[ServedBatch] = collections.deque()
        self._queued = 0
        self._lock = threading.Lock()
        self._offered = self._written = self._dropped = 0
        self._stop = threading.Event()
        self._draining = threading.Lock()  # a tick and close() never run the sinks at once
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(
                target=self._run, name="raymlops-prediction-log", daemon=True
            )
            self._thread.start()

    def offer(self, batch: ServedBatch) -> bool:
        """Queue ``batch`` for the sinks; returns False (and counts it) when the queue is full."""
        rows = batch.rows
        with self._lock:
            self._offered += rows
            if self._queued + rows > self.max_queue_rows:
                self._dropped += rows
                dropped = self._dropped
            else:
                self._queued += rows
                self._queue.append(batch)
                return True
        _log.warning("prediction log full: dropped %d rows (%d in all)", rows, dropped)
        return False

    def _run(self) -> None:
        while True:
            stopping = self._stop.wait(self.tick_s)
            self.drain()
            if stopping:
                return

    def drain(self) -> None:
        """Hand everything queued to the sinks and let them flush what is due (one tick)."""
        with self._draining:
            with self._lock:
                batches = list(self._queue)
                self._queue.clear()
            if batches:
                self._write(batches)
            flush_sinks(self.sinks)

    def _write(self, batches: list[ServedBatch]) -> None:
        rows = sum(b.rows for b in batches)
        lost = 0
        try:
            runs = join_batches(batches)
        except Exception:  # a batch that cannot be joined must not stop the log
            _log.exception("prediction log: %d rows could not be logged", rows)
            runs, lost = [], rows
        for run in runs:
            write_to_sinks(self.sinks, run)
        with self._lock:
            self._queued -= rows
            self._written += rows - lost
            self._dropped += lost

    def stats(self) -> LogStats:
        sink_dropped = sink_total(self.sinks, "dropped_rows")
        stored = sink_total(self.sinks, "stored_rows")
        with self._lock:
            return LogStats(
                self._offered, self._written, self._dropped, self._queued, sink_dropped, stored
            )

    def close(self, timeout_s: float = 10.0) -> LogStats:
        """Drain the queue, flush the sinks and stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        else:
            self.drain()
        with self._draining:
            flush_sinks(self.sinks, force=True)
        return self.stats()


@dataclass(frozen=True)
class ServedBatch:
    """An answered batch as serving hands it over: the rows, the answers, who asked, when."""

    records: Columns  # the input rows: the columns the batch was answered from
    predictions: Sequence[Any] | np.ndarray
    #: one row of class probabilities per input row (serving hands over its numpy array)
    probabilities: np.ndarray | Sequence[Sequence[float]] | None
    classes: Sequence[Any] | None
    model_version: str
    request_ids: list[str | None]
    logged_at: dt.datetime
    #: the rows of each request, when ``request_ids`` names each request once (serving's
    #: batches: no list of one id per row is built on the event loop)
    request_rows: list[int] | None = None

    @property
    def rows(self) -> int:
        return len(self.records)

    def row_request_ids(self) -> list[str | None]:
        """One request id per row."""
        if self.request_rows is None:
            return self.request_ids
        return [i for i, n in zip(self.request_ids, self.request_rows, strict=True) for _ in range(n)]

    def to_table(self) -> pa.Table:
        """The logged rows of this batch alone."""
        return join_batches([self])[0].table


@dataclass(frozen=True, eq=False)
class LoggedRows:
    """A run of served batches with the same input columns and classes, joined column by
    column in numpy: what the log hands to its sinks, and what crosses to the writer actor
    (:mod:`raymlops.serving.log_writer`). :attr:`table` is the Arrow table the sinks store.
    """

    columns: dict[str, np.ndarray]  # the input columns
    predictions: np.ndarray | list[Any]
    probabilities: np.ndarray | None  # (rows, classes)
    classes: tuple[Any, ...] | None
    batch_rows: list[int]  # the rows of each batch joined
    versions: list[str]  # one per batch
    logged_at: np.ndarray  # datetime64[ns] UTC, one per batch
    request_ids: list[str | None]
    request_rows: list[int]  # the rows of each request id

    @property
    def num_rows(self) -> int:
        return len(self.predictions)

    @functools.cached_property
    def table(self) -> pa.Table:
        """The logged rows as Arrow, without pandas: NaN and NaT are nulls, datetimes UTC,
        versions and request ids repeated by Arrow's take (no Python object per row)."""
        columns = {name: _arrow(values) for name, values in self.columns.items()}
        if isinstance(self.predictions, np.ndarray):
            columns["prediction"] = _arrow(self.predictions)
        else:
            columns["prediction"] = pa.array(self.predictions, from_pandas=True)
        if self.probabilities is not None and self.classes is not None:
            for i, label in enumerate(self.classes):
                columns[f"probability_{label}"] = pa.array(self.probabilities[:, i])
        columns["model_version"] = _repeated(self.versions, self.batch_rows)
        columns["request_id"] = _repeated(self.request_ids, self.request_rows)
        columns["logged_at"] = _arrow(np.repeat(self.logged_at, self.batch_rows))
        return pa.table(columns)


def join_batches(batches: Sequence[ServedBatch]) -> list[LoggedRows]:
    """``batches`` joined, in order: one :class:`LoggedRows` per run of batches with the same
    input columns and classes (a swap to a version with other columns starts a new run).

    Only numpy joins run here (on the replica's event loop, in serving); Arrow and Parquet wait
    for the sinks: a frame per tick cost as much of the replica's CPU as the Parquet file did.
    """
    return [_joined_run(list(run)) for _, run in itertools.groupby(batches, key=_layout)]


def log_tables(batches: Sequence[ServedBatch]) -> list[pa.Table]:
    """The Arrow tables the sinks get for ``batches`` (one per run, see :func:`join_batches`)."""
    return [run.table for run in join_batches(batches)]


def _layout(batch: ServedBatch) -> tuple[Any, ...]:
    # the digest names the schema the columns were checked against: their names and types
    classes = None if batch.probabilities is None or batch.classes is None else batch.classes
    return (batch.records.digest, None if classes is None else tuple(classes))


def _joined_run(group: list[ServedBatch]) -> LoggedRows:
    first = group[0]
    columns = {
        name: _joined([b.records.data[name] for b in group]) for name in first.records.data
    }
    predictions: np.ndarray | list[Any]
    if all(isinstance(b.predictions, np.ndarray) for b in group):
        predictions = _joined([b.predictions for b in group])  # type: ignore[misc]
    else:
        predictions = list(itertools.chain.from_iterable(b.predictions for b in group))
    probabilities = classes = None
    if first.probabilities is not None and first.classes is not None:
        probabilities = _joined(
            [np.asarray(b.probabilities, dtype=np.float64).reshape(b.rows, -1) for b in group]
        )
        classes = tuple(first.classes)
    ids: list[str | None] = []
    repeats: list[int] = []
    for b in group:
        ids += b.request_ids
        repeats += b.request_rows if b.request_rows is not None else [1] * len(b.request_ids)
    return LoggedRows(
        columns=columns,
        predictions=predictions,
        probabilities=probabilities,
        classes=classes,
        batch_rows=[b.rows for b in group],
        versions=[b.model_version for b in group],
        logged_at=np.array([_utc_naive(b.logged_at) for b in group], dtype="datetime64[ns]"),
        request_ids=ids,
        request_rows=repeats,
    )


def _repeated(values: list[str | None], counts: list[int]) -> pa.Array:
    """``values[i]`` ``counts[i]`` times, repeated by Arrow's take (no Python object per row)."""
    return _strings(np.array(values, dtype=object)).take(
        np.repeat(np.arange(len(values)), counts)
    )


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _utc_naive(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None)


def _arrow(values: np.ndarray) -> pa.Array:
    """A logged column as Arrow: NaN and NaT are nulls (as pandas writes them), datetimes UTC."""
    if values.dtype.kind == "M":
        return pa.array(values, type=pa.timestamp("ns", tz="UTC"), from_pandas=True)
    if values.dtype.kind in "OUS":
        return _strings(values.astype(object, copy=False))
    if values.dtype.kind == "f":
        # the NaN mask in numpy, and no mask at all without NaN (the common case): pyarrow's
        # from_pandas scan cost 25x that
        missing = np.isnan(values)
        return pa.array(values, mask=missing) if missing.any() else pa.array(values)
    return pa.array(values)


def _strings(values: np.ndarray) -> pa.Array:
    # typed, not inferred: a column of only None is still a string column (one file schema)
    try:
        return pa.array(values, type=pa.string(), from_pandas=True)
    except UnicodeEncodeError:  # a lone surrogate Parquet cannot hold: keep the row, escaped
        escaped = [
            v.encode("utf-8", "backslashreplace").decode() if isinstance(v, str) else v
            for v in values
        ]
        return pa.array(escaped, type=pa.string(), from_pandas=True)
