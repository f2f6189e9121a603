"""The prediction log: non-blocking, bounded, dropped rows counted, Parquet files readable."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

import pandas as pd

from raymlops.serving.prediction_log import ParquetSink, PredictionLog, ServedBatch
from raymlops.storage import Storage


def batch(rows: int, version: str = "v1") -> ServedBatch:
    return ServedBatch(
        records=[{"x": float(i), "plan": "pro"} for i in range(rows)],
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

    def write(self, rows: pd.DataFrame) -> None:
        self.release.wait(10)
        self.rows += len(rows)

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
    def write(self, rows: pd.DataFrame) -> None:
        raise OSError("disk full")

    def flush(self, *, force: bool = False) -> None:
        raise OSError("disk full")


def test_a_failing_sink_does_not_stop_the_others(tmp_path: Path) -> None:
    good = ParquetSink(Storage.from_uri(str(tmp_path)), "churn", flush_rows=1)
    log = PredictionLog([_BrokenSink(), good])
    log.offer(batch(2))
    log.close()
    assert good.files_written == 1
