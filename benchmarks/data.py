"""Data suite: raymlops's data preparation against the pandas script a user would write instead.

Both sides start from the same Parquet file (30 float columns and a 0/1 label, the training
suite's generator) and end with standardised float32 arrays for the training and holdout rows:

- **raymlops**: :func:`raymlops.training.prepare.prepare`, the training pipeline's first stage:
  one pass of Ray tasks over the file's row groups that validates every cell against the
  schema, splits, gathers the feature statistics and the reference sample, then transforms the
  blocks into the arrays Tune reads (timed until they exist in the object store). Ray is
  started before the clock; the driver's peak RSS is sampled.
- **pandas** (a fresh process per run, imports before the clock): ``pandas.read_parquet``, a
  null/finite check, ``train_test_split``, ``StandardScaler`` fitted on the training rows,
  both sides transformed to float32. Its peak RSS is the child's.

Check before the timings count: raymlops's fitted statistics equal numpy's on the very training
rows raymlops chose (mean within 1e-9 relative, min and max exactly), and both holdouts are the
configured fifth of the rows (within 1 percentage point).
"""

from __future__ import annotations

import math
import multiprocessing
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import Check, Figure, SuiteResult, UsageError, require_cores
from benchmarks.train import FEATURES, TARGET, PeakRss, make_data

__all__ = ["run"]

#: rows of each size of the scale curve, and the pairs (alternated) at each size
SIZES = {
    "quick": ([20_000, 50_000], 1),
    "standard": ([250_000, 1_000_000], 3),
    "full": ([1_000_000, 4_000_000], 3),
}
TEST_FRACTION = 0.2


def _pandas_prepare(path: str) -> tuple[float, int, int]:
    """The baseline, in its own process: seconds, peak RSS bytes, holdout rows."""
    import numpy as np
    import pandas as pd
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    frame = pd.read_parquet(path)
    x = frame[FEATURES].to_numpy()
    y = frame[TARGET].to_numpy()
    if frame.isna().to_numpy().any() or not np.isfinite(x).all():
        raise ValueError("the generated data has nulls or infinities")
    x_train, x_hold, _y_train, _y_hold = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=42
    )
    scaler = StandardScaler().fit(x_train)
    train = scaler.transform(x_train).astype(np.float32)
    hold = scaler.transform(x_hold).astype(np.float32)
    seconds = time.perf_counter() - start
    assert train.shape[1] == hold.shape[1] == len(FEATURES)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return seconds, peak, len(hold)


def _baseline(path: Path) -> tuple[float, int, int]:
    # spawn: a clean process with no Ray in it, one per run so its peak RSS is this run's
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(_pandas_prepare, (str(path),))


def _config(root: Path, source: Path) -> Any:
    from raymlops.config import load_config

    columns = "".join(f"    {name}: {{type: float}}\n" for name in FEATURES)
    (root / "raymlops.yaml").write_text(
        f"name: bench\nstorage: {root / 'store'}\ndata:\n  source: {source}\n"
        f"  target: {TARGET}\n  columns:\n{columns}    {TARGET}: {{type: int}}\n"
        f"  split: {{test_fraction: {TEST_FRACTION}, seed: 42}}\n"
        "training:\n  task: classification\n  models: [xgboost]\n"
    )
    return load_config(root / "raymlops.yaml")


def _raymlops(config: Any, source: Path) -> tuple[float, int, dict[str, float], Any]:
    import ray

    from raymlops.schema import Schema
    from raymlops.training.prepare import prepare
    from raymlops.training.stages import StageLog

    schema = Schema.from_config(config)
    stages = StageLog()
    with PeakRss() as rss:
        start = time.perf_counter()
        prepared = prepare(config, schema, str(source), stages)
        arrays = prepared.arrays
        refs = [
            *arrays.fit,
            *arrays.valid,
            arrays.valid_mask,
            *(r for p in arrays.holdout for r in p),
        ]
        ray.wait(refs, num_returns=len(refs), fetch_local=False)  # the arrays exist
        seconds = time.perf_counter() - start
    return seconds, rss.peak, dict(stages.seconds), prepared


def _check(prepared: Any, rows: int, baseline_holdout: int) -> Check:
    """raymlops's statistics against numpy's on raymlops's own training rows."""
    import numpy as np
    import pandas as pd
    import ray

    train = pd.concat(ray.get(prepared.data.train), ignore_index=True)
    bad = []
    for name in FEATURES:
        stats, values = prepared.pipeline.stats[name], train[name].to_numpy()
        if not (
            math.isclose(stats.mean, float(values.mean()), rel_tol=1e-9, abs_tol=1e-12)
            and stats.min == float(values.min())
            and stats.max == float(values.max())
        ):
            bad.append(name)
    ours = prepared.rows.holdout / rows
    theirs = baseline_holdout / rows
    shares_ok = abs(ours - TEST_FRACTION) < 0.01 and abs(theirs - TEST_FRACTION) < 0.01
    del train
    return Check(
        f"data {rows:,} rows: statistics and split",
        not bad and shares_ok and prepared.rows.total == rows and np.isfinite(ours),
        f"mean/min/max of {len(FEATURES)} features equal numpy's on raymlops's training rows"
        + (f" except {bad}" if bad else "")
        + f"; holdout share raymlops {ours:.4f}, pandas {theirs:.4f} (configured {TEST_FRACTION})",
    )


def run(mode: str, address: str | None = None) -> SuiteResult:
    if address is not None:
        raise UsageError("the data suite runs on a local Ray; run it without --address")
    require_cores(2, "the data suite (Ray's tasks next to the driver)")
    from raymlops.runtime import ensure_ray

    sizes, pairs = SIZES[mode]
    ensure_ray()
    figures: list[Figure] = []
    checks: list[Check] = []
    table: list[dict[str, str]] = []
    stage_rows: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="raymlops-bench-data-") as tmp:
        root = Path(tmp)
        warm = root / "warm-up.parquet"
        make_data(warm, 5_000, seed=0)
        _raymlops(_config(root, warm), warm)  # untimed: Ray's task workers start here
        for rows in sizes:
            source = root / f"data-{rows}.parquet"
            make_data(source, rows, seed=rows % 1000)
            config = _config(root, source)
            ours: list[tuple[float, int]] = []
            theirs: list[tuple[float, int]] = []
            for pair in range(pairs):
                # alternate which side goes first, so neither always meets a warm page cache
                order = ("baseline", "raymlops") if pair % 2 == 0 else ("raymlops", "baseline")
                for side in order:
                    if side == "baseline":
                        seconds, peak, holdout = _baseline(source)
                        theirs.append((seconds, peak))
                    else:
                        seconds, peak, stages, prepared = _raymlops(config, source)
                        ours.append((seconds, peak))
                if pair == 0:
                    checks.append(_check(prepared, rows, holdout))
                stage_rows[rows] = stages
                del prepared
            cell = f"{rows:,} rows x {len(FEATURES)} floats"
            our_s = statistics.median(s for s, _ in ours)
            their_s = statistics.median(s for s, _ in theirs)
            our_rss = max(p for _, p in ours) / 2**30
            their_rss = max(p for _, p in theirs) / 2**30
            figures += [
                Figure(cell, "baseline", "pandas + scikit-learn", "seconds", their_s, "s", rows),
                Figure(cell, "raymlops", "raymlops prepare (Ray)", "seconds", our_s, "s", rows),
                Figure(
                    cell, "baseline", "pandas + scikit-learn", "peak_rss", their_rss, "GiB", rows
                ),
                Figure(cell, "raymlops", "raymlops driver", "peak_rss", our_rss, "GiB", rows),
            ]
            table.append(
                {
                    "cell": cell,
                    "pandas s": f"{their_s:.2f}",
                    "raymlops s": f"{our_s:.2f}",
                    "raymlops / pandas": f"**{our_s / their_s:.2f}x**",
                    "pandas peak GiB": f"{their_rss:.2f}",
                    "raymlops driver peak GiB": f"{our_rss:.2f}",
                    "stages s": ", ".join(f"{k.split(' (')[0]} {v:.1f}" for k, v in stages.items()),
                }
            )
    largest = table[-1]
    return SuiteResult(
        suite="data",
        title=f"Data preparation: raymlops vs pandas + scikit-learn ({mode})",
        figures=figures,
        checks=checks,
        table=table,
        headline=(
            f"data preparation at {largest['cell']}: raymlops / pandas wall "
            f"{largest['raymlops / pandas']} (goal at 4M rows: under 2x); medians of {pairs} "
            "alternated pair(s), Ray's start not counted."
        ),
        notes=[
            "raymlops validates every cell against the schema, gathers the statistics, the "
            "reference sample and the dataset checks' row digests in the same pass; the pandas "
            "script checks for nulls and infinities only.",
            "The driver's peak RSS is the benchmark process's (Ray's workers hold the blocks).",
        ],
        extra={"stage_seconds": {str(k): v for k, v in stage_rows.items()}},
    )
