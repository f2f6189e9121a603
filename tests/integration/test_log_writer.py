"""The prediction log's writer actor: rows written in another process, every row accounted for."""

from __future__ import annotations

import datetime as dt
import functools
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from raymlops.config import PredictionLogConfig
from raymlops.contract import Columns
from raymlops.serving.log_writer import ActorSink, log_sinks
from raymlops.serving.prediction_log import PredictionLog, ServedBatch, join_batches
from tests.helpers import wait_for_condition


def _batch(rows: int, start: int = 0) -> ServedBatch:
    return ServedBatch(
        records=Columns(rows, {"x": np.arange(start, start + rows, dtype=np.float64)}, "d"),
        predictions=np.array(["yes"] * rows, dtype=object),
        probabilities=np.full((rows, 2), 0.5),
        classes=["no", "yes"],
        model_version="v1",
        request_ids=[f"r{start}"],
        logged_at=dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc),
        request_rows=[rows],
    )


def _sinks(root: Path, **settings: object) -> functools.partial:
    return functools.partial(
        log_sinks, str(root), "churn", PredictionLogConfig(**settings).model_dump()
    )


def _stored(root: Path) -> pd.DataFrame:
    files = sorted((root / "predictions" / "churn").rglob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def test_the_writer_actor_stores_every_row_and_the_log_sees_its_counts(tmp_path: Path) -> None:
    import ray

    sink = ActorSink(_sinks(tmp_path, flush_rows=50, flush_s=60))
    log = PredictionLog([sink], tick_s=0.05)
    for i in range(30):
        assert log.offer(_batch(3, start=3 * i))
    # 90 rows under flush_rows: they wait in the writer, which the log's stats say
    wait_for_condition(
        lambda: log.stats().written_rows == 90
        and sink._counts.buffered_rows + sink.stored_rows == 90,
        message="the rows handed to the writer",
    )
    stats = log.close()  # the replica's close: the writer's buffer is forced to storage
    assert (stats.offered_rows, stats.written_rows, stats.stored_rows) == (90, 90, 90), stats
    assert (stats.dropped_rows, stats.sink_dropped_rows) == (0, 0), stats
    stored = _stored(tmp_path)
    assert sorted(stored["x"].tolist()) == [float(x) for x in range(90)]
    assert set(stored["request_id"]) == {f"r{3 * i}" for i in range(30)}
    writer_pid = ray.get(sink._actor.__ray_call__.remote(lambda self: os.getpid()))
    assert writer_pid != os.getpid(), "the Parquet files are written in another process"


def test_a_writer_that_dies_drops_only_what_it_had_not_stored_and_counts_it(tmp_path: Path) -> None:
    import ray

    sink = ActorSink(_sinks(tmp_path, flush_rows=20, flush_s=60))
    sink.write(join_batches([_batch(25)])[0])  # 25 rows: one file of 25 (over flush_rows)
    sink.write(join_batches([_batch(7, start=25)])[0])  # 7 rows wait in the writer's buffer
    wait_for_condition(
        lambda: (sink.flush(), sink.stored_rows == 25 and sink._counts.buffered_rows == 7)[1],
        message="25 rows stored, 7 buffered",
    )
    ray.kill(sink._actor, no_restart=True)
    wait_for_condition(
        lambda: (sink.flush(), sink.dropped_rows == 7)[1], message="the 7 buffered rows counted"
    )
    assert sink.stored_rows == 25
    sink.write(join_batches([_batch(4, start=32)])[0])  # a new writer takes the next rows
    sink.flush(force=True)
    assert (sink.stored_rows, sink.dropped_rows) == (29, 7)
    assert sorted(_stored(tmp_path)["x"].tolist()) == [float(x) for x in [*range(25), *range(32, 36)]]


def test_a_writer_that_falls_behind_gets_no_more_rows_and_they_are_counted() -> None:
    """The writer answers nothing for 30 s (its sinks take that long to start): after
    max_pending calls, rows are dropped and counted at once, the log never waits."""
    import ray

    sink = ActorSink(functools.partial(time.sleep, 30), max_pending=2)
    started = time.perf_counter()
    for i in range(5):
        sink.write(join_batches([_batch(10, start=10 * i)])[0])
    assert time.perf_counter() - started < 5, "write never waits for the writer"
    assert sink.dropped_rows == 30, "3 of 5 calls refused: the writer was 2 calls behind"
    ray.kill(sink._actor, no_restart=True)
