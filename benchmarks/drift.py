"""Drift of one 1M-row x 50-column window: Evidently's DataDriftPreset vs raymlops, side by side.

Issue 5: a window of 1M rows x 50 columns must be checked >= 5x faster than one Evidently
``DataDriftPreset`` run on the same data and machine, with the per-column verdicts equal to
Evidently's (>= 98% of columns agree).

The data (seeded): 30 normal float columns, 5 Poisson integer columns, 12 categorical
columns of 5 string labels (object dtype, as ``pd.read_parquet`` gives for the prediction
log) and 3 booleans; 10 of the 50 drift in the window.

The reference has 5,000 rows: ``data.reference_rows``' default, the sample every registered
version keeps (``reference.parquet``). Above 1,000 reference rows Evidently picks Wasserstein
for numerical columns and Jensen-Shannon for categorical ones; ``--reference-rows 800`` measures
the other branch (K-S, chi-square, Z-test).

Timed: one ``Report([DataDriftPreset(drift_share=0.5)], include_tests=True).run(...)`` (tests on,
to read Evidently's verdicts; they cost nothing measurable), and ``parallel_drift`` on a local
Ray with the profile already in the object store, twice: the first call starts the task
workers, the second is what a monitor pays per window. Not timed: Ray's start and building the
reference profile (once per model version; its time is printed). Writes
``benchmarks/results/drift.json``; exit status 1 when a goal is missed.

Example:
    .venv/bin/python benchmarks/drift.py
    .venv/bin/python benchmarks/drift.py --rows 200000 --reference-rows 800
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from raymlops.config import ColumnSpec
from raymlops.monitoring.drift import ReferenceProfile, compute_drift
from raymlops.schema import Schema

RESULTS = Path(__file__).parent / "results"
LABELS = np.array(["a", "b", "c", "d", "e"], dtype=object)
GOAL_RATIO = 5.0
GOAL_AGREEMENT = 0.98


def make_frame(rows: int, seed: int, *, drift: bool) -> pd.DataFrame:
    """50 columns; with ``drift`` the first two of each group (and 2 floats more) shift."""
    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {}
    for i in range(30):
        shift = 0.25 if drift and i < 4 else 0.0
        columns[f"num{i:02d}"] = rng.normal(shift, 1.0, rows)
    for i in range(5):
        columns[f"int{i}"] = rng.poisson(3.0 if drift and i < 2 else 2.0, rows)
    base = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
    for i in range(12):
        p = base[::-1] if drift and i < 2 else base
        columns[f"cat{i:02d}"] = LABELS[rng.choice(5, rows, p=p)]
    for i in range(3):
        columns[f"flag{i}"] = rng.random(rows) < (0.7 if drift and i < 2 else 0.5)
    return pd.DataFrame(columns)


def schema_for(frame: pd.DataFrame) -> Schema:
    kinds = {"num": "float", "int": "int", "cat": "category", "fla": "bool"}
    specs = {c: ColumnSpec(type=kinds[c[:3]]) for c in frame.columns}
    return Schema.from_columns(specs, target="label", task="classification")


def run_evidently(reference: pd.DataFrame, current: pd.DataFrame, schema: Schema) -> tuple[float, dict]:
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset

    from raymlops.monitoring.reports import evidently_verdicts

    definition = schema.evidently_definition()
    started = time.perf_counter()
    snapshot = Report([DataDriftPreset(drift_share=0.5)], include_tests=True).run(
        current_data=Dataset.from_pandas(current, data_definition=definition),
        reference_data=Dataset.from_pandas(reference, data_definition=definition),
    )
    return time.perf_counter() - started, evidently_verdicts(snapshot)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reference-rows", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import ray

    from raymlops.monitoring.parallel import parallel_drift
    from raymlops.runtime import ensure_ray

    load_before = os.getloadavg()
    reference = make_frame(args.reference_rows, args.seed, drift=False)
    current = make_frame(args.rows, args.seed + 1, drift=True)
    schema = schema_for(current)
    print(f"window {len(current):,} rows x {current.shape[1]} columns, reference {len(reference):,} rows")

    started = time.perf_counter()
    profile = ReferenceProfile.build(reference, schema)
    profile_s = time.perf_counter() - started

    started = time.perf_counter()
    single = compute_drift(profile, current, drift_share=0.5)
    single_s = time.perf_counter() - started

    ensure_ray()
    profile_ref = ray.put(profile)
    times = []
    for _ in range(2):
        started = time.perf_counter()
        result = parallel_drift(profile_ref, current, drift_share=0.5)
        times.append(time.perf_counter() - started)
    ray.shutdown()  # Evidently runs alone, with both cores

    evidently_s, theirs = run_evidently(reference, current, schema)

    agree = [c.column for c in result.columns if c.column in theirs and theirs[c.column].drifted == c.drifted
             and theirs[c.column].method == c.method]
    agreement = len(agree) / len(result.columns)
    ratio_first, ratio_warm = evidently_s / times[0], evidently_s / times[1]
    rows = [
        ("Evidently DataDriftPreset (one run)", evidently_s, 1.0),
        ("raymlops parallel_drift, first call (starts workers)", times[0], ratio_first),
        ("raymlops parallel_drift, next call", times[1], ratio_warm),
        ("raymlops compute_drift, one process", single_s, evidently_s / single_s),
    ]
    print(f"\n{'path':<55} {'seconds':>8} {'x faster':>9}")
    for name, seconds, ratio in rows:
        print(f"{name:<55} {seconds:>8.2f} {ratio:>8.1f}x")
    print(f"reference profile (once per version): {profile_s:.3f} s")
    print(f"verdicts equal to Evidently's: {len(agree)}/{len(result.columns)} columns ({agreement:.0%}); "
          f"drifted: {len(result.drifted_columns)} ({', '.join(result.drifted_columns)})")
    print(f"single-process verdicts equal to parallel: {single == result}")

    payload = {
        "rows": len(current),
        "columns": current.shape[1],
        "reference_rows": len(reference),
        "evidently_s": evidently_s,
        "parallel_first_s": times[0],
        "parallel_next_s": times[1],
        "single_process_s": single_s,
        "profile_s": profile_s,
        "ratio_first": ratio_first,
        "ratio_next": ratio_warm,
        "agreement": agreement,
        "methods": sorted({c.method for c in result.columns}),
        "drifted_columns": result.drifted_columns,
        "disagreements": [c.column for c in result.columns if c.column not in agree],
        "goals": {"ratio": GOAL_RATIO, "agreement": GOAL_AGREEMENT},
        "load_average_before": load_before,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "packages": _versions(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "drift.json").write_text(json.dumps(payload, indent=2))
    print(f"results: {RESULTS / 'drift.json'}")
    ok = ratio_first >= GOAL_RATIO and agreement >= GOAL_AGREEMENT
    if not ok:
        print(f"goal missed: ratio >= {GOAL_RATIO}x and agreement >= {GOAL_AGREEMENT:.0%}")
    return 0 if ok else 1


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("ray", "evidently", "pandas", "numpy", "scipy")}


if __name__ == "__main__":
    sys.exit(main())
