"""The prediction log's sinks in their own process: one Ray actor beside each replica.

A replica's event loop only joins each tick's batches in numpy (:func:`join_batches`) and
hands them to :class:`ActorSink`, one call per tick. The actor builds the Arrow table, writes
the Parquet files (:class:`ParquetSink`) and feeds the drift monitor (:class:`MonitorSink`).
With the sinks in the replica's log thread, their work took the GIL from the replica's event
loop: at c4 with 100-row requests the log cost 7-8% of serving's throughput, though the thread
used only 5% of a core.

The actor is started on first use on the replica's node (``num_cpus=0``) and is owned by the
replica, so it stops with it; :meth:`ActorSink.flush` with ``force`` (the replica's close)
waits until everything sent is on storage. No row is lost silently: rows the actor could not
take (``max_pending`` calls unanswered) or that were in a writer that died are counted in
``dropped_rows``, and the next tick starts a new writer.

Example:
    >>> sink = ActorSink(functools.partial(log_sinks, "s3://b/root", "churn", settings))  # doctest: +SKIP
    >>> PredictionLog([sink])  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ray

from raymlops.serving.monitor_sink import MonitorSink
from raymlops.serving.prediction_log import (
    LoggedRows,
    ParquetSink,
    PredictionSink,
    flush_sinks,
    sink_total,
    write_to_sinks,
)
from raymlops.storage import Storage

__all__ = ["ActorSink", "SinkCounts", "log_sinks"]

_log = logging.getLogger("raymlops.prediction_log")


def log_sinks(
    storage: str, name: str, settings: Mapping[str, Any], id_columns: Sequence[str] = ()
) -> list[PredictionSink]:
    """The sinks ``serving.prediction_log`` describes: Parquet on ``storage``, and the drift
    monitor's feed. Built inside the writer from the storage URI: no storage client or key
    crosses to it."""
    storage_client = Storage.from_uri(storage, create=False)
    parquet = ParquetSink.from_settings(storage_client, name, settings, id_columns=id_columns)
    return [parquet, MonitorSink(name)]


@dataclass(frozen=True)
class SinkCounts:
    """The writer's counts after its ``calls``-th call: rows on storage, rows its sinks gave
    up, rows waiting in its buffer."""

    calls: int = 0
    stored_rows: int = 0
    dropped_rows: int = 0
    buffered_rows: int = 0


class _Writer:
    """The actor's body: the sinks, called in the order the replica sent the rows."""

    def __init__(self, make_sinks: Callable[[], list[PredictionSink]]) -> None:
        self._sinks = make_sinks()
        self._calls = 0

    def write(self, rows: LoggedRows) -> SinkCounts:
        write_to_sinks(self._sinks, rows)
        return self.flush(False)

    def flush(self, force: bool) -> SinkCounts:
        flush_sinks(self._sinks, force=force)
        self._calls += 1
        return SinkCounts(
            self._calls,
            sink_total(self._sinks, "stored_rows"),
            sink_total(self._sinks, "dropped_rows"),
            sink_total(self._sinks, "buffered_rows"),
        )


_WriterActor = ray.remote(_Writer)


class ActorSink:
    """A prediction sink that hands rows to a writer actor (see the module's docstring).

    Called by one drainer at a time (the replica's event loop; ``PredictionLog`` holds its
    drain lock). ``make_sinks`` (picklable) builds the sinks inside the actor;
    ``max_pending`` unanswered calls are the most it queues.
    """

    def __init__(
        self,
        make_sinks: Callable[[], list[PredictionSink]],
        *,
        max_pending: int = 16,
        flush_timeout_s: float = 30.0,
    ) -> None:
        self._make_sinks = make_sinks
        self.max_pending = max_pending
        self.flush_timeout_s = flush_timeout_s
        self._actor: Any = None
        self._pending: collections.deque[tuple[Any, int]] = collections.deque()  # (ref, rows)
        self._counts = SinkCounts()  # the current writer's latest answer
        self._sent = 0  # rows sent to the current writer
        self._earlier_stored = self._earlier_dropped = 0  # writers before the current one
        self._refused = 0  # rows the writer never took: max_pending calls behind, or an error

    @property
    def stored_rows(self) -> int:
        return self._earlier_stored + self._counts.stored_rows

    @property
    def dropped_rows(self) -> int:
        return self._earlier_dropped + self._counts.dropped_rows + self._refused

    def write(self, rows: LoggedRows) -> None:
        self._collect()
        if len(self._pending) >= self.max_pending:
            self._refused += rows.num_rows
            _log.warning(
                "prediction log writer is %d calls behind: dropped %d rows (%d in all)",
                len(self._pending), rows.num_rows, self.dropped_rows,
            )
            return
        self._pending.append((self._writer().write.remote(rows), rows.num_rows))
        self._sent += rows.num_rows

    def flush(self, *, force: bool = False) -> None:
        self._collect()
        if self._actor is None:
            return
        if force:
            self._pending.append((self._actor.flush.remote(True), 0))
            self._collect(timeout_s=self.flush_timeout_s)
        elif not self._pending and self._counts.buffered_rows:
            # nothing sent this tick, rows wait in the writer: let its time-based flush run
            self._pending.append((self._actor.flush.remote(False), 0))

    def _writer(self) -> Any:
        if self._actor is None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            here = ray.get_runtime_context().get_node_id()
            self._actor = _WriterActor.options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=True)
            ).remote(self._make_sinks)
        return self._actor

    def _collect(self, timeout_s: float = 0.0) -> None:
        """Take the writer's answers that have come (all of them, waiting up to ``timeout_s``)."""
        if not self._pending:
            return
        refs = [ref for ref, _ in self._pending]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        done = set(ready)
        waiting: collections.deque[tuple[Any, int]] = collections.deque()
        for ref, rows in self._pending:
            if ref not in done:
                waiting.append((ref, rows))
                continue
            try:
                counts = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError):
                self._writer_lost()
                return
            except ray.exceptions.RayTaskError:  # these rows never reached the sinks
                _log.exception("prediction log writer: %d rows failed", rows)
                self._sent -= rows
                self._refused += rows
                continue
            if counts.calls > self._counts.calls:
                self._counts = counts
        self._pending = waiting
        if timeout_s and waiting:
            _log.error(
                "prediction log writer: %d calls unanswered after %.0fs", len(waiting), timeout_s
            )

    def _writer_lost(self) -> None:
        """The writer died: what it had not confirmed (buffered or in flight) is dropped."""
        confirmed = self._counts.stored_rows + self._counts.dropped_rows
        lost = self._sent - confirmed
        self._earlier_stored += self._counts.stored_rows
        self._earlier_dropped += self._counts.dropped_rows + lost
        _log.error("prediction log writer died: %d rows not confirmed are dropped", lost)
        self._actor, self._pending = None, collections.deque()
        self._counts, self._sent = SinkCounts(), 0
