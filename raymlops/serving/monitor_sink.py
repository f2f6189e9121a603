"""The prediction-log sink that feeds the drift monitor, and the name the monitor runs under.

It lives with the prediction log, below :mod:`raymlops.monitoring`: serving hands rows to the
monitor's actor by name and never imports monitoring (the import-linter ``layers`` contract in
``pyproject.toml`` keeps it so). :mod:`raymlops.monitoring.monitor` starts its actor under
:func:`monitor_name` in :data:`NAMESPACE`.

Example:
    >>> PredictionLog([ParquetSink(storage, "churn"), MonitorSink("churn")])  # doctest: +SKIP
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raymlops.serving.prediction_log import LoggedRows

__all__ = ["NAMESPACE", "MonitorSink", "find_monitor", "monitor_name"]

#: the Ray namespace of the detached monitor actors
NAMESPACE = "raymlops"


def monitor_name(model: str) -> str:
    """The actor name of ``model``'s drift monitor."""
    return f"monitor:{model}"


def find_monitor(model: str) -> Any | None:
    """The running monitor of ``model`` on the connected Ray, or None."""
    import ray

    try:
        return ray.get_actor(monitor_name(model), namespace=NAMESPACE)
    except ValueError:
        return None


class MonitorSink:
    """A prediction-log sink (see :mod:`raymlops.serving.prediction_log`) feeding the monitor.

    Rows go to the actor as Arrow tables, without waiting for it (the actor, not the replica,
    makes them a frame). While no monitor runs, rows are counted as
    ``unmonitored_rows`` (the Parquet sink still keeps them); the actor is looked up again
    every ``lookup_s`` seconds.
    """

    def __init__(self, model: str, *, lookup_s: float = 5.0) -> None:
        self.model = model
        self.lookup_s = lookup_s
        self.unmonitored_rows = 0
        self._monitor: Any | None = None
        self._looked_up = float("-inf")

    def write(self, rows: LoggedRows) -> None:
        if self._monitor is None and time.monotonic() - self._looked_up >= self.lookup_s:
            self._looked_up = time.monotonic()
            self._monitor = find_monitor(self.model)
        if self._monitor is None:
            self.unmonitored_rows += rows.num_rows
            return
        try:
            self._monitor.ingest.remote(rows.table)
        except Exception:  # the actor is gone for good: look it up again later
            self._monitor = None
            self.unmonitored_rows += rows.num_rows

    def flush(self, *, force: bool = False) -> None:
        return None
