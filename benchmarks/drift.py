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

As a suite: ``python -m benchmarks --suite drift [--quick|--full]`` (see benchmarks/README.md).

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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from raymlops.config import ColumnSpec
from raymlops.monitoring.drift import ReferenceProfile, compute_drift
from raymlops.schema import Schema

if TYPE_CHECKING:
    from benchmarks.report import SuiteResult

RESULTS = Path(__file__).parent / "results"
LABELS = np.array(["a", "b", "c", "d", "e"], dtype=object)
GOAL_RATIO = 5.0
GOAL_AGREEMENT = 0.98


def make_frame(
    rows: int, seed: int, *, drift: bool, columns: int = 50, compact: bool = False
) -> pd.DataFrame:
    """``columns`` columns in the proportions of the 50-column frame (30 normal floats, 5
    Poisson ints, 12 categoricals, 3 bools); with ``drift`` the same share of each group shifts
    (4 floats, 2 ints, 2 categoricals, 2 bools of 50). 50 columns give the frame of old.

    ``compact`` (the window): floats as float32 and ints as int32, as a user holding 1M x 1,000
    would keep them (the schema's ``float``/``int`` allow it; each side reads the same values),
    and each column kept as its own array (no consolidation copy), so the frame costs about
    half of float64 blocks and is built without a second copy."""
    rng = np.random.default_rng(seed)
    n_num, n_int, n_cat = round(columns * 0.6), round(columns * 0.1), round(columns * 0.24)
    n_flag = columns - n_num - n_int - n_cat
    shifted = {k: round(n * f) for k, n, f in (("num", n_num, 4 / 30), ("int", n_int, 2 / 5),
               ("cat", n_cat, 2 / 12), ("flag", n_flag, 2 / 3))}  # fmt: skip
    data: dict[str, object] = {}
    floats, ints = ("float32", "int32") if compact else ("float64", "int64")
    for i in range(n_num):
        shift = 0.25 if drift and i < shifted["num"] else 0.0
        column = rng.standard_normal(rows, dtype=floats)
        column += shift
        data[f"num{i:02d}"] = column
    for i in range(n_int):
        lam = 3.0 if drift and i < shifted["int"] else 2.0
        data[f"int{i}"] = rng.poisson(lam, rows).astype(ints, copy=False)
    base = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
    for i in range(n_cat):
        p = base[::-1] if drift and i < shifted["cat"] else base
        data[f"cat{i:02d}"] = LABELS[rng.choice(5, rows, p=p)]
    for i in range(n_flag):
        data[f"flag{i}"] = rng.random(rows) < (0.7 if drift and i < shifted["flag"] else 0.5)
    return pd.DataFrame(data, copy=not compact)


def schema_for(frame: pd.DataFrame) -> Schema:
    kinds = {"num": "float", "int": "int", "cat": "category", "fla": "bool"}
    specs = {c: ColumnSpec(type=kinds[c[:3]]) for c in frame.columns}
    return Schema.from_columns(specs, target="label", task="classification")


def run_evidently(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str] | None = None
) -> tuple[float, dict]:
    """One timed Evidently run on ``columns`` of both frames (default all). Called in a forked
    child: the sub-frames are built there, so the parent never holds a copy of them."""
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset

    from raymlops.monitoring.reports import evidently_verdicts

    if columns is not None and len(columns) < current.shape[1]:
        reference, current = reference[columns], current[columns]
    definition = schema_for(current).evidently_definition()
    started = time.perf_counter()
    snapshot = Report([DataDriftPreset(drift_share=0.5)], include_tests=True).run(
        current_data=Dataset.from_pandas(current, data_definition=definition),
        reference_data=Dataset.from_pandas(reference, data_definition=definition),
    )
    return time.perf_counter() - started, evidently_verdicts(snapshot)


SIZES = {  # (window rows, reference rows, columns) per mode
    "quick": [(10_000, 800, 50), (10_000, 800, 200)],
    "standard": [(1_000_000, 5000, 50)],
    "full": [(100_000, 5000, 50), (1_000_000, 5000, 50), (1_000_000, 5000, 1000),
             (10_000_000, 5000, 50)],
}  # fmt: skip
#: Evidently runs whole on windows of at most this many cells (about 10 min on 2 cores at the
#: full sizes); on a larger one it runs on an evenly spaced sample of the columns with the same
#: rows, and its time is scaled by columns / sampled columns (the table says "estimated")
EVIDENTLY_CELLS = {"quick": 1_000_000, "standard": 60_000_000, "full": 60_000_000}
#: issue 15's goal for the widest window: 1M rows x 1,000 columns within this, on 2 cores
GOAL_WIDE_S = 60.0


def evidently_columns(frame: pd.DataFrame, budget_cells: int) -> list[str]:
    """Every column when the window fits the budget, else an evenly spaced sample (each kind
    of column keeps its share)."""
    rows, columns = frame.shape
    if rows * columns <= budget_cells:
        return list(frame.columns)
    keep = max(4, budget_cells // max(rows, 1))
    step = columns / keep
    return [frame.columns[int(i * step)] for i in range(keep)]


class WorkerMemory:
    """The peak of the summed resident memory of this process's Ray workers (``ray::*``
    processes under the local Ray it started; other Rays on the machine do not count) while
    the block runs, and the sum just before it. 0 on a cluster joined with --address.

    Also ``cpu_s``: the CPU seconds this process and every process of its local Ray (workers,
    raylet with the object store, GCS) used during the block. On a shared machine the wall time
    stretches with the others' load; the CPU seconds hardly do, and divided by the cores they
    bound what the block takes on the same machine idle."""

    def __init__(self, every_s: float = 0.05) -> None:
        import threading

        self.every_s, self.before, self.peak, self.cpu_s = every_s, 0, 0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def total() -> int:
        from benchmarks.report import descendants

        workers = descendants(os.getpid()).values()
        return sum(p.rss_bytes for p in workers if p.cmdline.startswith(b"ray::"))

    @staticmethod
    def cpu() -> float:
        from benchmarks.report import descendants

        return time.process_time() + sum(p.cpu_s for p in descendants(os.getpid()).values())

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, self.total())

    def __enter__(self) -> WorkerMemory:
        self.before = self.peak = self.total()
        self._cpu_before = self.cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.total())
        self.cpu_s = self.cpu() - self._cpu_before


def measure(
    rows: int,
    reference_rows: int,
    seed: int = 0,
    address: str | None = None,
    *,
    columns: int = 50,
    evidently_cells: int = EVIDENTLY_CELLS["full"],
) -> dict:
    """One window: raymlops's drift (parallel on Ray, and in one process) and one Evidently run
    (on a sample of the columns when the window is over ``evidently_cells``)."""
    import ray

    from benchmarks.report import ray_nodes
    from raymlops.monitoring.parallel import parallel_drift
    from raymlops.runtime import ensure_ray

    reference = make_frame(reference_rows, seed, drift=False, columns=columns)
    current = make_frame(rows, seed + 1, drift=True, columns=columns, compact=True)
    schema = schema_for(current)
    print(f"drift: window {len(current):,} rows x {current.shape[1]} columns, reference "
          f"{len(reference):,} rows", flush=True)  # fmt: skip

    started = time.perf_counter()
    profile = ReferenceProfile.build(reference, schema)
    profile_s = time.perf_counter() - started

    # each side in a forked child, before Ray starts: its own peak memory, the cores to itself
    sampled = evidently_columns(current, evidently_cells)
    window_mib = round(_rss() / 2**20, 1)  # what both children inherit: the frames, the imports
    (sample_s, theirs), evidently_mib = in_child(run_evidently, reference, current, sampled)
    evidently_s = sample_s * current.shape[1] / len(sampled)
    (single_s, single), single_mib = in_child(_timed_compute_drift, profile, current)

    ensure_ray(address)
    nodes = ray_nodes()
    profile_ref = ray.put(profile)
    times, cpu = [], []
    for _ in range(2):
        with WorkerMemory() as workers:
            started = time.perf_counter()
            result = parallel_drift(profile_ref, current, drift_share=0.5)
            times.append(time.perf_counter() - started)
        cpu.append(workers.cpu_s)
    ray.shutdown()

    agree = [c.column for c in result.columns if c.column in theirs
             and theirs[c.column].drifted == c.drifted and theirs[c.column].method == c.method]  # fmt: skip
    compared = [c.column for c in result.columns if c.column in theirs]
    return {
        "rows": len(current),
        "columns": current.shape[1],
        "reference_rows": len(reference),
        "evidently_s": evidently_s,
        "evidently_estimated": len(sampled) < current.shape[1],
        "evidently_columns": len(sampled),
        "workers_peak_mib": round(workers.peak / 2**20, 1),
        "workers_before_mib": round(workers.before / 2**20, 1),
        "parallel_first_s": times[0],
        "parallel_next_s": times[1],
        "parallel_next_cpu_s": cpu[1],
        "cores": os.cpu_count(),
        "single_process_s": single_s,
        "profile_s": profile_s,
        "agreement": len(agree) / max(len(compared), 1),
        "single_equals_parallel": single == result,
        "methods": sorted({c.method for c in result.columns}),
        "drifted_columns": result.drifted_columns,
        "disagreements": [c for c in compared if c not in agree],
        "nodes": nodes,
        "evidently_peak_mib": evidently_mib,
        "single_process_peak_mib": single_mib,
        "parent_before_fork_mib": window_mib,
        "load_average": os.getloadavg(),
    }


def _rss() -> int:
    """This process's resident memory now (VmRSS)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _timed_compute_drift(profile: ReferenceProfile, current: pd.DataFrame) -> tuple[float, Any]:
    started = time.perf_counter()
    result = compute_drift(profile, current, drift_share=0.5)
    return time.perf_counter() - started, result


def in_child(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """``fn(*args)`` in a forked child: its result and the child's peak resident memory (MiB;
    the inputs it inherited and touched included, so both sides carry the same data)."""
    import multiprocessing
    import resource

    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)

    def target() -> None:
        out = fn(*args)
        writer.send((out, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))  # KiB on Linux

    child = context.Process(target=target)
    child.start()
    writer.close()  # the child holds the only writer: a child that dies ends recv with EOFError
    try:
        out, peak_kib = reader.recv()
    except EOFError:
        child.join()
        raise RuntimeError(f"{fn.__name__} failed in its child (exit {child.exitcode})") from None
    child.join()
    return out, round(peak_kib / 1024, 1)


def run(mode: str, address: str | None = None) -> SuiteResult:
    from benchmarks.report import Check, Figure, SuiteResult

    points = [
        measure(rows, ref, address=address, columns=cols, evidently_cells=EVIDENTLY_CELLS[mode])
        for rows, ref, cols in SIZES[mode]
    ]
    figures, checks, table = [], [], []
    for p in points:
        cell = f"{p['rows']:,} x {p['columns']}"
        size = float(p["rows"] * p["columns"])  # cells: the curve's x
        ev_mib, rm_mib = p["evidently_peak_mib"], p["single_process_peak_mib"]
        estimated = p["evidently_estimated"]
        figures += [
            Figure(cell, "baseline", "Evidently DataDriftPreset", "seconds", p["evidently_s"], "s", size),
            Figure(cell, "raymlops", "parallel_drift, next call", "seconds", p["parallel_next_s"], "s", size),
            Figure(cell, "raymlops", "compute_drift, one process", "seconds", p["single_process_s"], "s", size),
            Figure(cell, "raymlops", "parallel_drift, next call", "cpu_seconds", p["parallel_next_cpu_s"], "s", size),
            Figure(cell, "baseline", "Evidently DataDriftPreset", "peak_memory", ev_mib, "MiB", size),
            Figure(cell, "raymlops", "compute_drift, one process", "peak_memory", rm_mib, "MiB", size),
        ]  # fmt: skip
        if p["workers_peak_mib"] > 0:  # a local Ray (its workers are this process's children)
            figures.append(Figure(cell, "raymlops", "parallel_drift workers (sum)",
                                  "peak_memory", p["workers_peak_mib"], "MiB", size))  # fmt: skip
        on = f" ({p['evidently_columns']} sampled columns)" if estimated else ""
        checks.append(Check(
            f"drift {cell}: verdicts agree with Evidently",
            p["agreement"] >= GOAL_AGREEMENT and p["single_equals_parallel"],
            f"{p['agreement']:.0%} of columns{on} have Evidently's method and verdict (goal "
            f">= {GOAL_AGREEMENT:.0%}); disagree: {p['disagreements'] or 'none'}; one-process "
            f"result equals the parallel one: {p['single_equals_parallel']}",
        ))  # fmt: skip
        table.append({
            "window": cell, "reference rows": f"{p['reference_rows']:,}",
            "Evidently s": f"{p['evidently_s']:.2f}" + (
                f" (estimated from {p['evidently_columns']} columns)" if estimated else ""),
            "parallel_drift first s": f"{p['parallel_first_s']:.2f}",
            "parallel_drift next s": f"{p['parallel_next_s']:.2f}",
            "parallel_drift next CPU s (/ cores)":
                f"{p['parallel_next_cpu_s']:.1f} ({p['parallel_next_cpu_s'] / p['cores']:.1f})",
            "compute_drift s": f"{p['single_process_s']:.2f}",
            "x faster (first call)": f"**{p['evidently_s'] / p['parallel_first_s']:.1f}x**",
            "x faster (next call)": f"{p['evidently_s'] / p['parallel_next_s']:.1f}x",
            "verdicts agree": f"{p['agreement']:.0%}",
            "peak MiB (Evidently / compute_drift)": f"{ev_mib:,.0f} / {rm_mib:,.0f}",
            "parent MiB at fork (inherited)": f"{p['parent_before_fork_mib']:,.0f}",
            "parallel_drift workers peak MiB (idle before)":
                f"{p['workers_peak_mib']:,.0f} ({p['workers_before_mib']:,.0f})",
        })  # fmt: skip
    top = points[-1]
    return SuiteResult(
        suite="drift", title=f"Drift: raymlops vs one Evidently DataDriftPreset run ({mode})",
        figures=figures, checks=checks, table=table,
        headline=f"{top['rows']:,} x {top['columns']}: raymlops parallel_drift is "
                 f"{top['evidently_s'] / top['parallel_first_s']:.1f}x faster than Evidently on "
                 f"its first call (starts Ray's workers), {top['evidently_s'] / top['parallel_next_s']:.1f}x "
                 "on the next; verdicts agree on "
                 f"{top['agreement']:.0%} of the columns.",
        notes=["Not timed: Ray's start and the reference profile (once per model version).",
               "The window's floats are float32 and its ints int32 (each column its own array); "
               "the reference is float64/int64. Both sides read the same values.",
               "parallel_drift ships the numpy columns to its tasks through the object store and "
               "checks the string columns in the driver while the tasks run.",
               f"Evidently runs whole on windows up to {EVIDENTLY_CELLS[mode]:,} cells; on a "
               "larger one it runs on an evenly spaced sample of the columns (same rows) and its "
               "time is scaled by columns / sampled columns: marked estimated. Its verdicts are "
               "compared on the sampled columns.",
               f"Goal (issue 15): 1M rows x 1,000 columns in under {GOAL_WIDE_S:.0f} s on 2 "
               "cores (the --full sizes).",
               "parallel_drift next CPU s: the CPU seconds of the driver and its local Ray during "
               "the call; divided by the cores, what the call takes here when nothing else runs.",
               "parallel_drift workers: the summed resident memory of Ray's worker processes "
               "during the call, sampled every 50 ms (idle workers' memory before it in brackets).",
               "Evidently and compute_drift each run in a forked child before Ray starts, alone "
               "on the cores. Peak MiB: the child's peak resident memory, the window and "
               "reference it inherited included (the parent's resident memory at the fork is "
               "given beside it; Evidently's sampled sub-frames are built in its child)."],
        extra={"points": points, "goals": {"ratio": GOAL_RATIO, "agreement": GOAL_AGREEMENT},
               "packages": _versions(), "python": platform.python_version()},
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """The script of old: one window, the issue-5 goals as the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reference-rows", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    p = measure(args.rows, args.reference_rows, args.seed)
    p["load_average_before"], p["cpus"] = os.getloadavg(), os.cpu_count()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "drift.json").write_text(json.dumps(p, indent=2))
    ratio = p["evidently_s"] / p["parallel_first_s"]
    print(f"Evidently {p['evidently_s']:.2f} s, parallel_drift {p['parallel_first_s']:.2f} s "
          f"(first) / {p['parallel_next_s']:.2f} s (next): {ratio:.1f}x; verdicts agree on "
          f"{p['agreement']:.0%} of the columns")  # fmt: skip
    return 0 if ratio >= GOAL_RATIO and p["agreement"] >= GOAL_AGREEMENT else 1


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("ray", "evidently", "pandas", "numpy", "scipy")}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # as a script: benchmarks.*
    sys.exit(main())
