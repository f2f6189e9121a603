"""A seeded, deterministic split by row number (pure).

Each row's side depends only on its global row number and the seed, never on how the data is
cut into blocks or on the order blocks finish, so the same data and seed give the same split
on one core or a hundred.

Example:
    >>> holdout_mask(np.arange(5), fraction=0.4, seed=42).tolist()
    [True, True, True, False, True]
"""

from __future__ import annotations

import numpy as np

__all__ = ["holdout_mask", "time_cut", "unit_hash"]

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def unit_hash(row_ids: np.ndarray, seed: int) -> np.ndarray:
    """Map row numbers to floats in [0, 1) with splitmix64, keyed by ``seed``."""
    with np.errstate(over="ignore"):
        x = row_ids.astype(np.uint64) + np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def holdout_mask(row_ids: np.ndarray, *, fraction: float, seed: int) -> np.ndarray:
    """True for the rows that go to the holdout side (about ``fraction`` of them)."""
    return unit_hash(np.asarray(row_ids), seed) < fraction


def time_cut(sketches: list[tuple[np.ndarray, int] | None], fraction: float) -> int:
    """The time at which ``1 - fraction`` of all known times lie at or before it, from the
    blocks' quantile sketches (each point stands for its block's rows / points)."""
    known = [s for s in sketches if s is not None]
    if not known:
        raise ValueError("no row has a time")
    points = np.concatenate([points for points, _ in known])
    weights = np.concatenate([np.full(len(points), n / len(points)) for points, n in known])
    order = np.argsort(points, kind="stable")
    cumulative = np.cumsum(weights[order])
    at = np.searchsorted(cumulative, (1.0 - fraction) * cumulative[-1], side="left")
    return int(points[order][min(at, len(points) - 1)])
