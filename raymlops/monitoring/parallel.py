"""Drift of a large window on Ray: column groups as tasks, the reference profile put once.

The statistics are those of :func:`raymlops.monitoring.drift.compute_drift` (so the verdicts are
Evidently's); this module only splits the columns into groups of about equal cost, ships each
group's columns to a task, and puts the verdicts back in order. A window of 1M rows x 50
columns takes about a second per core here, against ~90 s for one Evidently run
(``benchmarks/drift.py``).

Example:
    >>> profile_ref = ray.put(ReferenceProfile.build(reference, schema))  # doctest: +SKIP
    >>> result = parallel_drift(profile_ref, window, drift_share=0.5)  # doctest: +SKIP
    >>> result.drifted_columns  # doctest: +SKIP
    ['tenure_months', 'support_calls']
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from raymlops.monitoring.drift import (
    ColumnDrift,
    DriftResult,
    ReferenceProfile,
    column_drift,
    compute_drift,
    select_columns,
)

if TYPE_CHECKING:
    import ray
    import ray.data

__all__ = ["parallel_drift"]

# Relative cost of a column in a task: a numerical one sorts the window, a categorical one
# counts it (value_counts is ~3x cheaper than a sort of the same rows).
_COST = {"num": 3, "cat": 1}


def parallel_drift(
    profile: ReferenceProfile | ray.ObjectRef,
    current: pd.DataFrame | ray.data.Dataset | ray.ObjectRef,
    *,
    drift_share: float,
    groups: int | None = None,
    columns: Sequence[str] | None = None,
) -> DriftResult:
    """:func:`compute_drift` with column groups as Ray tasks (needs a connected Ray).

    Args:
        profile: the reference profile, or an ObjectRef to it: put it once per model version
            (``ray.put(profile)``) and pass the ref, so windows do not ship it again.
        current: the window: a pandas DataFrame (each task receives only its columns, numpy
            ones without a copy beyond the object store's; string columns are checked in this
            process while the tasks run, since pickling them costs more than checking them), an
            ObjectRef to one, or a ``ray.data.Dataset`` (its blocks stay in the object store;
            each task reads its columns from them).
        drift_share: dataset drift when this share of the columns drifts.
        groups: number of tasks; default the cluster's CPUs, at most one per column.
        columns: columns to check; default every profiled column (the target only when the
            window carries it).

    Example:
        >>> parallel_drift(profile, window, drift_share=0.5, groups=2).share  # doctest: +SKIP
        0.25
    """
    import ray

    if isinstance(profile, ray.ObjectRef):
        profile_ref, local = profile, ray.get(profile)
    else:
        profile_ref, local = ray.put(profile), profile
    names, rows, frames = _window(local, current, columns)
    task = _remote_group_drift()
    pending, here = [], []
    if isinstance(current, pd.DataFrame):
        here = [n for n in names if _held_here(current[n])]
        shipped = [n for n in names if n not in set(here)]
        for group in _plan(local, shipped, groups or _cpus()):
            # One object per group, numpy arrays as they are: one copy into the object store,
            # read in place by the task, no DataFrame built on either side.
            arrays = {n: _as_array(current[n]) for n in group}
            pending.append(task.remote(profile_ref, group, ray.put(arrays)))
    else:
        for group in _plan(local, names, groups or _cpus()):
            pending.append(task.remote(profile_ref, group, *frames))
    # Columns of Python objects (strings) cost more to pickle than to count: they are checked
    # here, while the tasks run.
    verdicts = {n: column_drift(local.profiles[n], current[n]) for n in here}
    for part in ray.get(pending):
        verdicts.update({c.column: c for c in part})
    return DriftResult(
        columns=tuple(verdicts[n] for n in names),
        rows=rows,
        reference_rows=local.reference_rows,
        drift_share=drift_share,
    )


def _window(
    profile: ReferenceProfile, current: Any, columns: Sequence[str] | None
) -> tuple[list[str], int, list[Any]]:
    """Columns to check, the window's row count, and the object refs that hold its rows."""
    import ray
    import ray.data

    if isinstance(current, pd.DataFrame):
        available, rows, frames = list(current.columns), len(current), []
    elif isinstance(current, ray.data.Dataset):
        frames = current.to_pandas_refs()
        available = current.schema().names
        rows = sum(r for _, r in ray.get([_shape_remote().remote(f) for f in frames]))
    elif isinstance(current, ray.ObjectRef):
        frames = [current]
        available, rows = ray.get(_shape_remote().remote(current))
    else:
        raise TypeError(
            "current must be a pandas DataFrame, a ray.data.Dataset or an ObjectRef to a "
            f"DataFrame, not {type(current).__name__}"
        )
    names = select_columns(profile, available, columns)
    return names, rows, frames


def _plan(profile: ReferenceProfile, names: list[str], groups: int) -> list[list[str]]:
    """Greedy longest-first packing of columns into ``groups`` groups of about equal cost."""
    count = max(1, min(groups, len(names)))
    bins: list[list[str]] = [[] for _ in range(count)]
    load = [0] * count
    for name in sorted(names, key=lambda n: -_COST[profile.profiles[n].kind]):
        smallest = load.index(min(load))
        bins[smallest].append(name)
        load[smallest] += _COST[profile.profiles[name].kind]
    return [b for b in bins if b]


def _cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _held_here(column: pd.Series) -> bool:
    """Whether a column is checked in the caller: one of Python objects (strings), which the
    object store can only take pickled element by element."""
    return column.dtype == object or isinstance(column.dtype, pd.StringDtype)


def _as_array(column: pd.Series) -> Any:
    """A plain numpy column as its array (no copy: Ray stores the buffer as it is and a task
    maps it read-only); any other kind (categorical, nullable) as the Series itself."""
    if isinstance(column.dtype, np.dtype) and column.dtype.kind in "biuf":
        return column.to_numpy()
    return column


def _group_drift(profile: ReferenceProfile, group: list[str], *frames: Any) -> list[ColumnDrift]:
    """One task: the verdicts of ``group`` over the window's rows: a mapping of column arrays
    (a DataFrame window), one frame (an ObjectRef) or the blocks of a Dataset."""
    if len(frames) == 1 and isinstance(frames[0], dict):
        columns = frames[0]
        return [column_drift(profile.profiles[n], _series(columns[n])) for n in group]
    blocks = [f[group] for f in frames]
    window = blocks[0] if len(blocks) == 1 else pd.concat(blocks, ignore_index=True)
    return list(compute_drift(profile, window, drift_share=1.0, columns=group).columns)


def _series(column: Any) -> pd.Series:
    return column if isinstance(column, pd.Series) else pd.Series(column, copy=False)


@functools.cache
def _remote_group_drift() -> Any:
    # Built on first use, so importing this module registers nothing with Ray.
    import ray

    return ray.remote(num_cpus=1)(_group_drift)


@functools.cache
def _shape_remote() -> Any:
    import ray

    return ray.remote(num_cpus=0)(_shape)


def _shape(frame: pd.DataFrame) -> tuple[list[str], int]:
    """Columns and rows of a frame, read where it lives instead of fetching it."""
    return list(frame.columns), len(frame)
