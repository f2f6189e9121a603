"""The prediction log: every answered batch goes, without blocking the answer, to sinks.

:class:`PredictionLog` puts rows on a bounded queue and a background thread hands them to the
sinks. Serving only appends a reference to the batch's numpy columns (:class:`ServedBatch`);
every ``tick_s`` the thread takes all that is queued and builds one frame from it, so the
frame, the Parquet file and the monitor's feed cost the same for a thousand single-row
requests as for one (a frame per request cost serving 13-39% of its throughput).
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
    >>> log.offer(frame)  # returns at once; False if the rows were dropped  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import datetime as dt
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
import pandas as pd

from raymlops.contract import Columns
from raymlops.storage import Storage

__all__ = [
    "LogBatch",
    "LogStats",
    "ParquetSink",
    "PredictionLog",
    "PredictionSink",
    "ServedBatch",
    "merge_batches",
]

_log = logging.getLogger("raymlops.prediction_log")


class PredictionSink(Protocol):
    """Receives logged rows (called from the log's background thread)."""

    def write(self, rows: pd.DataFrame) -> None: ...

    def flush(self, *, force: bool = False) -> None: ...


class LogBatch(Protocol):
    """What serving offers: cheap to queue, turned into a frame in the background."""

    rows: int

    def to_frame(self) -> pd.DataFrame: ...


#: a sink looks for partitions past the retention at most this often
_PRUNE_EVERY_S = 3600.0


class ParquetSink:
    """Buffers rows and writes a Parquet file every ``flush_rows`` rows or ``flush_s`` seconds.

    No silent loss: the buffer is cleared only after its file is written. A failed write is
    tried again ``retries`` times with exponential back-off (``backoff_s``, doubling); rows
    still not written then are given up and counted in ``dropped_rows``. A string Parquet
    cannot hold (a lone UTF-16 surrogate) is written escaped rather than failing the file.

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
        self._buffer: list[pd.DataFrame] = []
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

    def write(self, rows: pd.DataFrame) -> None:
        if self.drop_columns:
            rows = rows.drop(columns=[c for c in self.drop_columns if c in rows.columns])
        self._buffer.append(rows)
        self._buffered += len(rows)
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
        frame = pd.concat(self._buffer, ignore_index=True)
        rows = len(frame)
        now = self._clock()
        path = (
            f"predictions/{self.name}/date={now:%Y-%m-%d}/"
            f"{now:%H%M%S}-{uuid.uuid4().hex[:12]}.parquet"
        )
        for attempt in range(self.retries + 1):
            try:
                self.storage.write_bytes(path, _parquet_bytes(frame))
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


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    # dictionary encoding only for the string columns (versions, ids, categories): tried on
    # the float columns it gave up on each of them and cost 3/4 of the write's CPU
    options = {"index": False, "use_dictionary": [str(c) for c in _object_columns(frame)]}
    buffer = io.BytesIO()
    try:
        frame.to_parquet(buffer, **options)
    except UnicodeEncodeError:  # a lone surrogate: write it escaped, keep the row
        safe = frame.copy()
        for column in _object_columns(safe):
            safe[column] = safe[column].map(
                lambda v: v.encode("utf-8", "backslashreplace").decode() if isinstance(v, str) else v
            )
        buffer = io.BytesIO()
        safe.to_parquet(buffer, **options)
    return buffer.getvalue()


def _object_columns(frame: pd.DataFrame) -> list[Any]:
    return list(frame.select_dtypes(include=["object", "string", "category"]).columns)


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
    """A bounded, non-blocking queue in front of the sinks."""

    def __init__(
        self, sinks: list[PredictionSink], *, max_queue_rows: int = 100_000, tick_s: float = 0.5
    ) -> None:
        self.sinks = sinks
        self.max_queue_rows = max_queue_rows
        # a deque, not a queue.Queue: the hot path appends without waking the thread (which
        # wakes every tick_s and takes everything at once)
        self._queue: collections.deque[LogBatch] = collections.deque()
        self._queued = 0
        self._lock = threading.Lock()
        self._offered = self._written = self._dropped = 0
        self._tick_s = tick_s
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._drain, name="raymlops-prediction-log", daemon=True
        )
        self._thread.start()

    def offer(self, batch: LogBatch) -> bool:
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

    def _drain(self) -> None:
        while True:
            stopping = self._stop.wait(self._tick_s)
            with self._lock:
                batches = list(self._queue)
                self._queue.clear()
            if batches:
                self._write(batches)
            self._flush_sinks()
            if stopping:
                return

    def _write(self, batches: list[LogBatch]) -> None:
        rows = sum(b.rows for b in batches)
        try:
            frame = merge_batches(batches)
        except Exception:  # a batch that cannot become a frame must not stop the log
            _log.exception("prediction log: %d rows could not be logged", rows)
            frame = None
        if frame is not None:
            for sink in self.sinks:
                try:
                    sink.write(frame)
                except Exception:  # a failing sink must not stop the others, nor serving
                    _log.exception("prediction sink %s failed", type(sink).__name__)
        with self._lock:
            self._queued -= rows
            self._written += rows

    def _flush_sinks(self, *, force: bool = False) -> None:
        for sink in self.sinks:
            try:
                sink.flush(force=force)
            except Exception:
                _log.exception("prediction sink %s failed to flush", type(sink).__name__)

    def stats(self) -> LogStats:
        sink_dropped = sum(getattr(sink, "dropped_rows", 0) for sink in self.sinks)
        stored = sum(s.written_rows for s in self.sinks if isinstance(s, ParquetSink))
        with self._lock:
            return LogStats(
                self._offered, self._written, self._dropped, self._queued, sink_dropped, stored
            )

    def close(self, timeout_s: float = 10.0) -> LogStats:
        """Drain the queue, flush the sinks and stop the thread."""
        self._stop.set()
        self._thread.join(timeout_s)
        self._flush_sinks(force=True)
        return self.stats()


@dataclass(frozen=True)
class ServedBatch:
    """An answered batch as serving hands it over: the rows, the answers, who asked, when."""

    records: Columns | list[dict] | pd.DataFrame  # the input rows: the columns answered
    predictions: list
    probabilities: list[list[float]] | None
    classes: list | None
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

    def to_frame(self) -> pd.DataFrame:
        if isinstance(self.records, Columns):
            return _columns_frame([self])
        answers: dict[str, Any] = {"prediction": self.predictions}
        if self.probabilities is not None and self.classes is not None:
            probabilities = np.asarray(self.probabilities, dtype=np.float64).reshape(self.rows, -1)
            for i, label in enumerate(self.classes):
                answers[f"probability_{label}"] = probabilities[:, i]
        answers["model_version"] = self.model_version
        answers["request_id"] = self.row_request_ids()
        answers["logged_at"] = pd.Timestamp(self.logged_at)
        if isinstance(self.records, pd.DataFrame):
            frame = self.records.reset_index(drop=True).copy(deep=False)
        else:
            frame = pd.DataFrame.from_records(self.records)
        for name, values in answers.items():
            frame[name] = values
        return frame


def merge_batches(batches: Sequence[LogBatch]) -> pd.DataFrame:
    """One frame of the logged rows of ``batches``, in order.

    Runs of served batches with the same input columns and classes are joined column by column
    in numpy and become one frame; only other batches (records, frames) go through
    ``to_frame`` one by one.
    """
    frames: list[pd.DataFrame] = []
    for _, run in itertools.groupby(batches, key=_layout):
        group = list(run)
        first = group[0]
        if isinstance(first, ServedBatch) and isinstance(first.records, Columns):
            frames.append(_columns_frame(group))  # type: ignore[arg-type]
        else:
            frames.extend(b.to_frame() for b in group)
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _layout(batch: LogBatch) -> tuple[Any, ...] | int:
    """Batches with the same layout become one frame; others keep their own (by identity)."""
    if isinstance(batch, ServedBatch) and isinstance(batch.records, Columns):
        classes = None if batch.probabilities is None or batch.classes is None else batch.classes
        return (tuple(batch.records.data), None if classes is None else tuple(classes))
    return id(batch)


def _columns_frame(group: list[ServedBatch]) -> pd.DataFrame:
    first = group[0]
    counts = [b.rows for b in group]
    inputs: dict[str, Any] = {}
    for name in first.records.data:  # type: ignore[union-attr]
        values = np.concatenate([b.records.data[name] for b in group])  # type: ignore[union-attr]
        inputs[name] = (
            pd.DatetimeIndex(values).tz_localize("UTC") if values.dtype.kind == "M" else values
        )
    # numpy arrays, not lists: pandas makes a list an object array first, row by row
    answers: dict[str, Any] = {
        "prediction": np.asarray(list(itertools.chain.from_iterable(b.predictions for b in group)))
    }
    if first.probabilities is not None and first.classes is not None:
        # flattened in C, without a list per row: the log thread's largest hold of the GIL
        flat = itertools.chain.from_iterable(
            itertools.chain.from_iterable(b.probabilities for b in group)  # type: ignore[arg-type]
        )
        probabilities = np.fromiter(flat, dtype=np.float64).reshape(sum(counts), -1)
        for i, label in enumerate(first.classes):
            answers[f"probability_{label}"] = probabilities[:, i]
    answers["model_version"] = np.repeat(
        np.array([b.model_version for b in group], dtype=object), counts
    )
    ids: list[str | None] = []
    repeats: list[int] = []
    for b in group:
        ids += b.request_ids
        repeats += b.request_rows if b.request_rows is not None else [1] * len(b.request_ids)
    answers["request_id"] = np.repeat(np.array(ids, dtype=object), repeats)
    logged = pd.DatetimeIndex([pd.Timestamp(b.logged_at) for b in group])
    logged = logged.tz_localize("UTC") if logged.tz is None else logged.tz_convert("UTC")
    answers["logged_at"] = logged.repeat(counts)
    # one frame from all the columns at once: adding them one by one cost as much CPU as the
    # batch's prediction
    return pd.DataFrame({**inputs, **answers}, copy=False)
