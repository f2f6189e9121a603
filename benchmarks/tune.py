"""Tune suite: raymlops's Tune search against the same trials in a plain process pool.

Runs ``benchmarks/tune_overhead.py`` with ``--baseline``: the same sampled XGBoost trials (same
seeds, same per-step validation scoring, FIFO, two at a time) once in a forked
``ProcessPoolExecutor`` with everything imported (what a user would script instead) and once
through :func:`raymlops.training.search.run_search` on a local Ray. Before the wall times count,
every trial's final validation ROC AUC must be equal on both sides (within 1e-9).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from benchmarks import tune_overhead
from benchmarks.report import Check, Figure, SuiteResult, UsageError, require_cores

__all__ = ["run"]

TOLERANCE = 1e-9
SIZES = {  # trials, rounds, rows
    "quick": (4, 20, 4000),
    "standard": (16, 200, 100_000),
    "full": (32, 200, 400_000),
}


def run(mode: str, address: str | None = None) -> SuiteResult:
    if address is not None:
        raise UsageError("the tune suite runs on a local Ray; run it without --address")
    require_cores(2, "the tune suite (2 trials at a time, 1 CPU each)")
    trials, rounds, rows = SIZES[mode]
    with tempfile.TemporaryDirectory(prefix="raymlops-bench-tune-") as out:
        argv = ["--baseline", "--no-plot", "--trials", str(trials), "--rounds", str(rounds),
                "--rows", str(rows), "--out", out, "--goal", "1000"]  # fmt: skip
        tune_overhead.main(argv)
        report = json.loads((Path(out) / "tune_overhead.json").read_text(encoding="utf-8"))
    summary, pool = report["summary"], report["summary"]["baseline"]
    ours = {t["index"]: t["score"] for t in report["trials"]}
    diffs = [abs(ours[i] - s) for i, s in enumerate(pool["scores"]) if i in ours]
    bad = [i for i, s in enumerate(pool["scores"])
           if i not in ours or not math.isclose(ours[i], s, abs_tol=TOLERANCE)]  # fmt: skip
    check = Check(
        "tune: equal trial scores",
        not bad and len(ours) == len(pool["scores"]),
        f"{len(ours)} Tune trials vs {len(pool['scores'])} pool trials; max abs diff of the final "
        f"validation ROC AUC {max(diffs, default=float('nan')):.3g} (tolerance {TOLERANCE:g})"
        + (f"; trials that disagree: {bad}" if bad else ""),
    )
    cell = f"{trials} trials x {rounds} rounds, {rows:,} rows"
    pool_s, tune_s, ideal = pool["wall_s"], summary["wall_s"], summary["ideal_s"]
    figures = [
        Figure(cell, "baseline", "process pool (no Ray)", "wall_s", pool_s, "s"),
        Figure(cell, "raymlops", "raymlops run_search (Tune)", "wall_s", tune_s, "s"),
        Figure(cell, "raymlops", "ideal: sum(fit) / parallel", "wall_s", ideal, "s"),
    ]
    table = [
        {"cell": cell, "process pool s": f"{pool_s:.2f}", "Tune s": f"{tune_s:.2f}",
         "ideal s": f"{ideal:.2f}", "Tune / pool": f"**{tune_s / pool_s:.3f}x**",
         "Tune / ideal": f"{summary['ratio']:.3f}x", "Ray start s": f"{summary['ray_start_s']:.1f}"}
    ]  # fmt: skip
    return SuiteResult(
        suite="tune", title=f"Tune: raymlops search vs a process pool ({mode})",
        figures=figures, checks=[check], table=table,
        headline=f"Tune search wall / process pool wall: {tune_s / pool_s:.3f}x ({cell}; "
                 "Ray's start not counted).",
        notes=["Stock ASHA is not compared yet: FIFO keeps every trial whole, so both sides run "
               "the same work.", "The machine is shared with other jobs."],
        extra={"tune_overhead": report},
    )  # fmt: skip
