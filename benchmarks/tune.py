"""Tune suite: raymlops's Tune search against the same trials in a plain process pool, and its
ASHA against Tune's stock ASHA.

Runs ``benchmarks/tune_overhead.py`` with ``--baseline --stock-asha``. Cell one: the same sampled
XGBoost trials (same seeds, same per-step validation scoring, FIFO, two at a time) once in a
forked ``ProcessPoolExecutor`` with everything imported (what a user would script instead) and
once through :func:`raymlops.training.search.run_search` on a local Ray; before the wall times
count, every trial's final validation ROC AUC must be equal on both sides (within 1e-9). Cell
two (:mod:`benchmarks.tune_asha`): ``run_search`` with ``scheduler: asha`` next to a plain Tune
script with ``ASHAScheduler`` on the same trials, in alternated pairs; scores at the same step
equal, and the best trial's ROC AUC within 0.01.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from benchmarks import tune_overhead
from benchmarks.report import Check, Figure, SuiteResult, require_cores

__all__ = ["run"]

TOLERANCE = 1e-9
SIZES = {  # trials, rounds, rows, rounds per report (ASHA's step), ASHA pairs
    "quick": (4, 20, 4000, 2, 1),  # 10 reports: ASHA's rungs at 3 and 9
    "standard": (16, 200, 100_000, 10, 3),
    "full": (32, 200, 400_000, 10, 3),
}


def run(mode: str, address: str | None = None) -> SuiteResult:
    if address is None:  # with --address, the cluster's CPUs are checked once joined
        require_cores(2, "the tune suite (2 trials at a time, 1 CPU each)")
    trials, rounds, rows, every, pairs = SIZES[mode]
    with tempfile.TemporaryDirectory(prefix="raymlops-bench-tune-") as out:
        argv = ["--baseline", "--stock-asha", "--asha-pairs", str(pairs), "--no-plot",
                "--trials", str(trials), "--rounds", str(rounds), "--rounds-per-report",
                str(every), "--rows", str(rows), "--out", out, "--goal", "1000"]  # fmt: skip
        argv += ["--address", address] if address else []
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
    cell = f"FIFO: {trials} trials x {rounds} rounds, {rows:,} rows"
    pool_s, tune_s, ideal = pool["wall_s"], summary["wall_s"], summary["ideal_s"]
    asha = summary["asha"]
    asha_cell = f"ASHA: {trials} trials x {rounds} rounds, a report every {every}"
    ours_s, stock_s = asha["raymlops_wall_s"], asha["stock_wall_s"]
    first = asha["runs"][0]
    figures = [
        Figure(cell, "baseline", "process pool (no Ray)", "wall_s", pool_s, "s"),
        Figure(cell, "raymlops", "raymlops run_search", "wall_s", tune_s, "s"),
        Figure(cell, "raymlops", "ideal: sum(fit) / parallel", "wall_s", ideal, "s"),
        Figure(asha_cell, "baseline", "Tune, stock ASHA", "wall_s", stock_s, "s"),
        Figure(asha_cell, "raymlops", "raymlops run_search", "wall_s", ours_s, "s"),
        Figure(asha_cell, "baseline", "Tune, stock ASHA", "reports_run",
               first["stock"]["steps"], "reports"),
        Figure(asha_cell, "raymlops", "raymlops run_search", "reports_run",
               first["raymlops"]["steps"], "reports"),
    ]  # fmt: skip
    whole = {side: [int(i) for i, (step, _) in first[side]["final"].items()
                     if step == asha["max_steps"]] for side in ("raymlops", "stock")}  # fmt: skip
    start = "Ray start" if address is None else "joining the cluster"
    ips = summary["node_ips"]
    per_node = ", ".join(f"{ips.get(node, '?')} ({node[:8]}) {count}"
                         for node, count in summary["trials_per_node"].items())  # fmt: skip
    table = [
        {"cell": cell, "baseline": "process pool (no Ray)", "baseline s": f"{pool_s:.2f}",
         "raymlops s": f"{tune_s:.2f}", "raymlops / baseline": f"**{tune_s / pool_s:.3f}x**",
         "detail": f"ideal sum(fit) / {summary['parallel']} {ideal:.2f} s (Tune / ideal "
                   f"{summary['ratio']:.2f}x); {start} {summary['ray_start_s']:.1f} s; trials per "
                   f"node: {per_node}"},
        {"cell": asha_cell, "baseline": "Tune, stock ASHAScheduler", "baseline s": f"{stock_s:.2f}",
         "raymlops s": f"{ours_s:.2f}", "raymlops / baseline": f"**{asha['ratio']:.3f}x**",
         "detail": f"median of {asha['pairs']} pair(s); reports run {first['raymlops']['steps']} / "
                   f"{first['stock']['steps']} (stock); trials run whole {whole['raymlops']} / "
                   f"{whole['stock']}; best ROC AUC {first['raymlops']['best']:.4f} / "
                   f"{first['stock']['best']:.4f}"},
    ]  # fmt: skip
    checks = [check] + [Check(name, passed, detail) for name, passed, detail in asha["checks"]]
    return SuiteResult(
        suite="tune", title=f"Tune: raymlops search vs a process pool and stock Tune ASHA ({mode})",
        figures=figures, checks=checks, table=table,
        headline=f"Tune search wall / process pool wall: {tune_s / pool_s:.3f}x (FIFO); raymlops "
                 f"ASHA / stock Tune ASHA: {asha['ratio']:.3f}x ({trials} trials x {rounds} "
                 f"rounds, {rows:,} rows; Ray's start not counted).",
        notes=["FIFO keeps every trial whole, so the process pool and Tune run the same work.",
               "ASHA: both sides get grace period 3 reports, reduction factor 3 and max_t the "
               "trial's reports; stock ASHA decides by arrival order and raymlops in trial "
               "order, so they may stop different trials (reports run: raymlops / stock). The "
               "stock script keeps Tune's defaults (loggers on, no actor reuse)."]
              + ([f"--address {address}: both Tune searches ran on that cluster; the process "
                  "pool on this machine."] if address else []),
        extra={"tune_overhead": report},
    )  # fmt: skip
