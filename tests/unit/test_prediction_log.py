"""The prediction log: non-blocking, bounded, dropped rows counted, Parquet files readable."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from raymlops.config import PredictionLogConfig
from raymlops.contract import Columns
from raymlops.serving.prediction_log import (
    LoggedRows,
    ParquetSink,
    PredictionLog,
    ServedBatch,
    join_batches,
    log_tables,
)
from raymlops.storage import Storage
from tests.helpers import wait_for_condition


def batch(rows: int, version: str = "v1") -> ServedBatch:
    columns = Columns(
        rows,
        {"x": np.arange(rows, dtype=np.float64), "plan": np.array(["pro"] * rows, dtype=object)},
        "digest",
    )
    return ServedBatch(
        records=columns,
        predictions=["yes"] * rows,
        probabilities=[[0.25, 0.75]] * rows,
        classes=["no", "yes"],
        model_version=version,
        request_ids=[f"r{i}" for i in range(rows)],
        logged_at=dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc),
    )


def test_batches_become_parquet_files_with_inputs_predictions_and_ids(tmp_path: Path) -> None:
    storage = Storage.from_uri(str(tmp_path))
    log = PredictionLog([ParquetSink(storage, "churn", flush_rows=10, flush_s=60)])
    for _ in range(3):
        assert log.offer(batch(4))
    stats = log.close()
    assert (stats.offered_rows, stats.written_rows, stats.dropped_rows) == (12, 12, 0)
    assert stats.stored_rows == 12, "the Parquet sink's own count of rows on storage"
    files = sorted((tmp_path / "predictions" / "churn").rglob("*.parquet"))
    assert files, "files are written under predictions/<name>/date=.../"
    assert all(f.parent.name.startswith("date=") for f in files)
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    assert len(frame) == 12
    assert list(frame.columns) == [
        "x",
        "plan",
        "prediction",
        "probability_no",
        "probability_yes",
        "model_version",
        "request_id",
        "logged_at",
    ]
    assert set(frame["model_version"]) == {"v1"}


class _SlowSink:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.rows = 0

    def write(self, rows: LoggedRows) -> None:
        self.release.wait(10)
        self.rows += rows.num_rows

    def flush(self, *, force: bool = False) -> None:
        pass


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    sink = _SlowSink()
    log = PredictionLog([sink], max_queue_rows=10)
    started = time.perf_counter()
    results = [log.offer(batch(4)) for _ in range(6)]
    assert time.perf_counter() - started < 0.5, "offer never waits for the sinks"
    assert results.count(False) >= 2
    stats = log.stats()
    assert stats.dropped_rows == 4 * results.count(False)
    sink.release.set()
    final = log.close()
    assert final.written_rows + final.dropped_rows == final.offered_rows == 24
    assert sink.rows == final.written_rows


class _BrokenSink:
    def write(self, rows: LoggedRows) -> None:
        raise OSError("disk full")

    def flush(self, *, force: bool = False) -> None:
        raise OSError("disk full")


def test_a_failing_sink_does_not_stop_the_others(tmp_path: Path) -> None:
    good = ParquetSink(Storage.from_uri(str(tmp_path)), "churn", flush_rows=1)
    log = PredictionLog([_BrokenSink(), good])
    log.offer(batch(2))
    log.close()
    assert good.files_written == 1


class _FlakyStorage:
    """Local storage whose first ``failures`` writes fail (a storage that fails once)."""

    def __init__(self, root: Path, failures: int) -> None:
        self.inner = Storage.from_uri(str(root))
        self.failures = failures
        self.attempts = 0

    def write_bytes(self, path: str, data: bytes) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise OSError("storage unavailable")
        self.inner.write_bytes(path, data)


def _rows_on_disk(root: Path) -> int:
    files = list((root / "predictions" / "churn").rglob("*.parquet"))
    return sum(len(pd.read_parquet(f)) for f in files)


def test_a_storage_that_fails_once_loses_no_row(tmp_path: Path) -> None:
    """Given a storage whose first write fails, when the sink flushes, then it retries with
    back-off and every offered row is on disk; nothing is counted as dropped."""
    storage = _FlakyStorage(tmp_path, failures=1)
    waits: list[float] = []
    sink = ParquetSink(storage, "churn", flush_rows=5, flush_s=60, sleep=waits.append)  # type: ignore[arg-type]
    log = PredictionLog([sink])
    for _ in range(3):
        log.offer(batch(4))
    stats = log.close()
    assert storage.attempts >= 2, "the failed write was tried again"
    assert waits == [0.5], "after a pause"
    assert _rows_on_disk(tmp_path) == 12 == stats.offered_rows
    assert (sink.written_rows, sink.dropped_rows, stats.sink_dropped_rows) == (12, 0, 0)


def test_rows_given_up_after_the_retries_are_counted_as_dropped(tmp_path: Path) -> None:
    storage = _FlakyStorage(tmp_path, failures=10**6)
    waits: list[float] = []
    sink = ParquetSink(storage, "churn", flush_rows=4, retries=2, sleep=waits.append)  # type: ignore[arg-type]
    log = PredictionLog([sink], tick_s=0.05)
    log.offer(batch(4))
    # the log hands over what is queued at each tick in one frame: two flushes need two ticks
    wait_for_condition(lambda: log.stats().written_rows == 4, timeout_s=10, message="a write")
    log.offer(batch(4))
    stats = log.close()
    assert waits == [0.5, 1.0, 0.5, 1.0], "exponential back-off between the tries"
    assert (sink.written_rows, sink.dropped_rows, stats.sink_dropped_rows) == (0, 8, 8)
    assert sink._buffered == 0, "what was given up does not stay in memory"


def test_a_lone_surrogate_is_written_escaped_not_lost(tmp_path: Path) -> None:
    sink = ParquetSink(Storage.from_uri(str(tmp_path)), "churn", flush_rows=1)
    served = batch(2)
    served.records.data["plan"][1] = "bad\ud800"
    (rows,) = join_batches([served])
    sink.write(rows)
    written = pd.concat(
        [pd.read_parquet(f) for f in (tmp_path / "predictions" / "churn").rglob("*.parquet")]
    )
    assert written["plan"].tolist() == ["pro", "bad\\ud800"]
    assert sink.dropped_rows == 0


def test_columns_from_serving_become_an_arrow_table_in_the_background() -> None:
    columns = Columns(
        2,
        {
            "x": np.array([1.5, np.nan]),
            "plan": np.array(["pro", None], dtype=object),
            "at": np.array(["2024-01-02T03:04:05", "NaT"], dtype="datetime64[ns]"),
        },
        "digest",
    )
    served = ServedBatch(
        columns,
        ["yes", "no"],
        None,
        None,
        "v1",
        ["a", "b"],
        dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc),
    )
    frame = served.to_table().to_pandas()
    assert frame["x"].isna().tolist() == [False, True]
    assert frame["plan"].tolist() == ["pro", None]
    assert str(frame["at"].dt.tz) == "UTC"
    assert frame["request_id"].tolist() == ["a", "b"]


def test_partitions_past_the_retention_are_deleted_by_the_sink(tmp_path: Path) -> None:
    """serving.prediction_log.retention_days: the log holds raw inputs, so old days go."""
    storage = Storage.from_uri(str(tmp_path))
    root = tmp_path / "predictions" / "churn"
    for day in ("date=2026-01-01", "date=2026-01-02", "date=2026-01-03", "notes"):
        (root / day).mkdir(parents=True)
        (root / day / "rows.parquet").write_bytes(b"old")
    settings = PredictionLogConfig(retention_days=7, flush_rows=4).model_dump()
    today = dt.datetime(2026, 1, 10, 12, tzinfo=dt.timezone.utc)
    sink = ParquetSink.from_settings(storage, "churn", settings, clock=lambda: today)
    sink.write(join_batches([batch(4)])[0])
    assert sorted(p.name for p in root.iterdir()) == [
        "date=2026-01-03",  # exactly 7 days old: kept
        "date=2026-01-10",  # today's rows
        "notes",  # not a partition: never touched
    ]
    assert sink.pruned_partitions == 2
    assert ParquetSink(storage, "churn").prune() == [], "no retention: nothing is deleted"


def test_id_columns_are_left_out_of_the_log_with_log_ids_false(tmp_path: Path) -> None:
    storage = Storage.from_uri(str(tmp_path))
    served = batch(4)
    served.records.data["customer_id"] = np.array(["a", "b", "c", "d"], dtype=object)
    (rows,) = join_batches([served])
    for log_ids, expected in ((True, True), (False, False)):
        settings = PredictionLogConfig(log_ids=log_ids, flush_rows=4).model_dump()
        sink = ParquetSink.from_settings(
            storage, f"m{int(log_ids)}", settings, id_columns=["customer_id"]
        )
        sink.write(rows)
        (file,) = (tmp_path / "predictions" / f"m{int(log_ids)}").rglob("*.parquet")
        written = pd.read_parquet(file)
        assert ("customer_id" in written.columns) is expected, list(written.columns)
        assert len(written) == 4
        assert "x" in written.columns


def _served(
    rows: int, start: int, version: str = "v1", classes: tuple = ("no", "yes")
) -> ServedBatch:
    x = np.arange(start, start + rows, dtype=np.float64)
    columns = Columns(
        rows,
        {
            "x": x,
            "plan": np.array(["pro" if i % 2 else None for i in range(rows)], dtype=object),
            "at": np.array(["2024-01-02T03:04:05"] * rows, dtype="datetime64[ns]"),
        },
        "digest",
    )
    return ServedBatch(
        columns,
        [classes[i % 2] for i in range(rows)],
        [[0.25, 0.75]] * rows,
        list(classes),
        version,
        [f"r{start}"] * rows,
        dt.datetime(2026, 1, 2, 0, 0, start, tzinfo=dt.timezone.utc),
    )


def test_batches_queued_together_become_one_table_per_layout_equal_to_theirs_one_by_one() -> None:
    """The background thread joins a tick's batches column by column: the same rows, values,
    types and order as a table per batch; a swap to a version with other classes starts a new
    table (and the Parquet sink a new file)."""
    batches = [_served(1, 0), _served(3, 1), _served(2, 4, "v2"), _served(2, 6, classes=("a", "b"))]
    # serving names each request once, with its rows: requests "a" (2 rows) and "b" (1 row)
    by_request = dataclasses.replace(
        _served(3, 8, classes=("a", "b")), request_ids=["a", "b"], request_rows=[2, 1]
    )
    batches.append(by_request)
    tables = log_tables(batches)
    assert [t.num_rows for t in tables] == [6, 5], "one table per run of the same classes"
    for table, run in ((tables[0], batches[:3]), (tables[1], batches[3:])):
        assert table.equals(pa.concat_tables([b.to_table() for b in run]))
    first, second = (t.to_pandas() for t in tables)
    assert list(first.columns) == [
        "x", "plan", "at", "prediction", "probability_no", "probability_yes",
        "model_version", "request_id", "logged_at",
    ]  # fmt: skip
    assert "probability_a" in second.columns
    assert "probability_no" not in second.columns
    assert second["request_id"].iloc[-3:].tolist() == ["a", "a", "b"]
    assert by_request.to_table()["request_id"].to_pylist() == ["a", "a", "b"]
    assert first["x"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert first["plan"].tolist() == [None, None, "pro", None, None, "pro"], "None is null"
    assert first["request_id"].iloc[:4].tolist() == ["r0", "r1", "r1", "r1"]
    assert first["model_version"].tolist() == ["v1"] * 4 + ["v2"] * 2
    assert first["probability_yes"].tolist() == [0.75] * 6
    assert str(first["logged_at"].dt.tz) == "UTC"
    assert str(first["at"].dt.tz) == "UTC"
    assert first["logged_at"].dt.second.tolist() == [0, 1, 1, 1, 4, 4]


def test_numpy_answers_log_the_same_as_lists() -> None:
    """Serving hands over its numpy probabilities: the table is the same as from lists."""
    served = _served(4, 0)
    as_numpy = dataclasses.replace(
        served, probabilities=np.array(served.probabilities), predictions=np.array(served.predictions, dtype=object)
    )
    assert as_numpy.to_table().equals(served.to_table())


def test_a_swap_to_other_columns_starts_a_new_file(tmp_path: Path) -> None:
    storage = Storage.from_uri(str(tmp_path))
    log = PredictionLog([ParquetSink(storage, "churn", flush_rows=1000, flush_s=60)])
    log.offer(_served(2, 0))
    log.offer(_served(3, 2, classes=("a", "b")))
    stats = log.close()
    assert stats.stored_rows == 5
    files = sorted((tmp_path / "predictions" / "churn").rglob("*.parquet"))
    assert sorted(len(pd.read_parquet(f)) for f in files) == [2, 3], "one schema per file"


class _CountingSink:
    def __init__(self) -> None:
        self.frames: list[LoggedRows] = []

    def write(self, rows: LoggedRows) -> None:
        self.frames.append(rows)

    def flush(self, *, force: bool = False) -> None:
        pass


def test_the_sinks_get_one_frame_per_tick_not_one_per_request() -> None:
    sink = _CountingSink()
    log = PredictionLog([sink], tick_s=60)  # no tick before close: everything queued waits
    for i in range(200):
        assert log.offer(_served(1, i % 50))
    assert log.stats().queued_rows == 200
    assert sink.frames == []
    stats = log.close()
    assert (stats.written_rows, stats.queued_rows) == (200, 0)
    assert [f.num_rows for f in sink.frames] == [200]


def test_without_a_thread_the_owner_drains_and_close_drains_the_rest() -> None:
    """Serving's mode: no thread of the log's own (background=False); rows wait until the
    owner calls drain() (the replica's event loop, every tick), and close() drains the rest."""
    sink = _CountingSink()
    threads = set(threading.enumerate())
    log = PredictionLog([sink], background=False)
    assert set(threading.enumerate()) == threads, "no thread started"
    log.offer(_served(2, 0))
    assert sink.frames == [], "nothing moves by itself"
    assert log.stats().queued_rows == 2
    log.drain()
    assert [f.num_rows for f in sink.frames] == [2]
    log.offer(_served(3, 2))
    stats = log.close()
    assert [f.num_rows for f in sink.frames] == [2, 3]
    assert (stats.written_rows, stats.queued_rows) == (5, 0)
