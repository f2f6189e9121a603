"""Predict suite: ``raymlops predict`` against the pandas script a user would write instead.

Both sides predict every row of the same generated Parquet file (30 float columns, normal
values) with the same registered XGBoost version (100 rounds, depth 6, fitted on rows of the
same distribution) and write Parquet: the input columns, the label and the class probabilities.

- **raymlops**: ``raymlops predict --config ... --input ... --output ...`` as the user runs it
  (:func:`raymlops.cli.main`), in a fresh process per run: imports, then Ray's start
  (:func:`raymlops.runtime.ensure_ray`, or joining ``--address``, until Ray's workers answer an
  empty task), both reported apart, then the command on the clock (its work: the workers'
  imports and model load, read, validate, predict, write). The driver's peak RSS
  is sampled during the work.
- **pandas** (no raymlops import; a fresh process per run, imports before the clock):
  ``pandas.read_parquet``, the standardisation read from the version's ``features.json`` and
  applied in numpy, ``xgboost.Booster.inplace_predict`` (xgboost's default threads: every core),
  the label and probabilities added to the frame, ``DataFrame.to_parquet``. Its peak RSS is
  the child's.

Check before the timings count: both outputs hold every input row once, the probabilities agree
within 1e-6 (max abs diff) and the labels are equal, row by row (raymlops's ``row`` column
joins its output back to the input order).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.report import Check, Figure, SuiteResult, require_cores

__all__ = ["SIZES", "TOLERANCE", "run"]

ROOT = Path(__file__).resolve().parent.parent
FEATURES = [f"f{i:02d}" for i in range(30)]
TARGET = "label"
TOLERANCE = 1e-6
#: rows of each size of the scale curve, and the pairs (alternated) at each size
SIZES = {
    "quick": ([20_000], 1),
    "standard": ([250_000, 1_000_000], 3),
    "full": ([1_000_000, 4_000_000], 3),
}
#: rows the model is fitted on (the version both sides load)
TRAIN_ROWS = 20_000
BASELINE = "pandas + xgboost script"
OURS = "raymlops predict"
START = "Ray's start s"


# -- the data and the model ----------------------------------------------------------------------


def make_rows(path: Path, rows: int, seed: int) -> None:
    """``rows`` rows of 30 normal float columns (no label), written as pandas writes them:
    pyarrow's default row groups (1,048,576 rows), so a 1M-row file is one row group."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    pq.write_table(pa.table({f: rng.normal(size=rows) for f in FEATURES}), path)


def register(root: Path) -> tuple[Path, Path]:
    """A project folder with an XGBoost champion on the 30 columns (registered in-process, no
    Ray); its config and the folder with the pandas script's copy of its files."""
    import numpy as np
    import pandas as pd

    from benchmarks.champion import register_champion
    from raymlops.config import load_config

    columns = "".join(f"    {name}: {{type: float}}\n" for name in FEATURES)
    config_path = root / "raymlops.yaml"
    config_path.write_text(
        f"name: bench\nstorage: {root / 'store'}\ndata:\n  source: {root / 'train.parquet'}\n"
        f"  target: {TARGET}\n  columns:\n{columns}    {TARGET}: {{type: int}}\n"
        "training:\n  task: classification\n  models: [xgboost]\n"
    )
    config = load_config(config_path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(TRAIN_ROWS, len(FEATURES)))
    logit = 1.5 * x[:, 0] - x[:, 1] + 0.8 * x[:, 2] * x[:, 3] + np.sin(2 * x[:, 4])
    frame = pd.DataFrame(x, columns=FEATURES)
    frame[TARGET] = (logit + rng.logistic(size=TRAIN_ROWS) > 0).astype(np.int64)
    model_dir = root / "baseline-model"  # the pandas script's copy of the model's files
    register_champion(config, frame, model_dir, reason="predict benchmark")
    return config_path, model_dir


# -- the two sides, each in a child process of its own -------------------------------------------


def _baseline(source: str, version_dir: str, output: str) -> dict[str, Any]:
    """The script a user would write instead (no raymlops import)."""
    started = time.perf_counter()
    import numpy as np
    import pandas as pd
    import xgboost as xgb

    imported = time.perf_counter()
    features = json.loads((Path(version_dir) / "features.json").read_text())
    booster = xgb.Booster()
    booster.load_model(str(Path(version_dir) / "model.ubj"))
    frame = pd.read_parquet(source)
    columns = []
    for enc in features["encodings"]:
        x = frame[enc["name"]].to_numpy(dtype=np.float64)
        columns.append(np.where(np.isnan(x), 0.0, (x - enc["mean"]) / enc["std"]))
    p = booster.inplace_predict(np.column_stack(columns))
    proba = np.column_stack([1 - p, p]) if p.ndim == 1 else p
    classes = features["target"]["classes"]
    frame["prediction"] = np.asarray(classes)[proba.argmax(axis=1)]
    for i, label in enumerate(classes):
        frame[f"probability_{label}"] = proba[:, i]
    frame.to_parquet(output, index=False)
    done = time.perf_counter()
    return {
        "imports_s": imported - started,
        "seconds": done - imported,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def _ready() -> int:
    return os.getpid()


def _raymlops(config: str, source: str, output: str, address: str | None) -> dict[str, Any]:
    """``raymlops predict`` as the user runs it, with Ray started (or joined) before the clock;
    then once more in the same process (warm: Ray's workers have imported the code and loaded
    the model), for the table only."""
    started = time.perf_counter()
    import ray

    import raymlops.serving.batch  # noqa: F401  (the command's module: imported, as pandas is)
    from benchmarks.train import PeakRss
    from raymlops.cli import main
    from raymlops.runtime import ensure_ray

    imported = time.perf_counter()
    ensure_ray(address)
    initialised = time.perf_counter()
    # Ray's start ends when its workers answer: one empty task per CPU (they import nothing of
    # raymlops or xgboost; the command's tasks, on the same workers, do that on the clock)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    ready = ray.remote(num_cpus=1)(_ready)
    ray.get([ready.remote() for _ in range(cpus)])
    ray_started = time.perf_counter()
    command = ["predict", "--config", config, "--input", source]
    with PeakRss() as rss:
        code = main([*command, "--output", output])
        done = time.perf_counter()
    warm = main([*command, "--output", f"{output}-warm"]) if code == 0 else code
    warm_done = time.perf_counter()
    ray.shutdown()
    return {
        "imports_s": imported - started,
        "ray_start_s": ray_started - imported,
        "ray_init_s": initialised - imported,
        "seconds": done - ray_started,
        "warm_s": warm_done - done,
        "peak_rss": rss.peak,
        "exit_code": code or warm,
    }


def child(side: str, spec_path: str, out_path: str) -> int:
    """``python -m benchmarks.predict SIDE SPEC OUT``: one timed run in a fresh process."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    if side == "baseline":
        result = _baseline(spec["source"], spec["version_dir"], spec["output"])
    else:
        result = _raymlops(spec["config"], spec["source"], spec["output"], spec["address"])
    Path(out_path).write_text(json.dumps(result), encoding="utf-8")
    return 0


def _run_child(side: str, spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    spec_path, out_path = workdir / f"spec-{side}.json", workdir / f"result-{side}.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    out_path.unlink(missing_ok=True)
    for output in (Path(spec["output"]), Path(f"{spec['output']}-warm")):
        if output.is_dir():  # the last run's output: the command writes a new one
            shutil.rmtree(output)
        output.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.predict", side, str(spec_path), str(out_path)],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    if done.returncode != 0 or not out_path.exists():
        raise RuntimeError(
            f"the {side} run failed (exit {done.returncode}):\n{done.stdout[-3000:]}"
            f"\n{done.stderr[-3000:]}"
        )
    result = json.loads(out_path.read_text(encoding="utf-8"))
    if result.get("exit_code", 0) != 0:
        raise RuntimeError(
            f"raymlops predict exited {result['exit_code']}:\n{done.stdout[-3000:]}"
            f"\n{done.stderr[-3000:]}"
        )
    return result


# -- the check -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    rows: tuple[int, int]  # (raymlops, baseline)
    max_abs_diff: float
    labels_equal: bool
    rows_in_order: bool

    def passed(self, expected_rows: int) -> bool:
        return (
            self.rows == (expected_rows, expected_rows)
            and self.rows_in_order
            and self.labels_equal
            and self.max_abs_diff <= TOLERANCE
        )


def compare(ours: str, theirs: str, classes: list[Any]) -> Agreement:
    """raymlops's output folder against the baseline's file, row by row."""
    import numpy as np
    import pyarrow.parquet as pq

    probabilities = [f"probability_{c}" for c in classes]
    mine = pq.read_table(ours, columns=["row", "prediction", *probabilities]).to_pandas()
    mine = mine.sort_values("row", kind="stable").reset_index(drop=True)
    base = pq.read_table(theirs, columns=["prediction", *probabilities]).to_pandas()
    in_order = bool(np.array_equal(mine["row"].to_numpy(), np.arange(1, len(base) + 1)))
    same_length = len(mine) == len(base)
    diff = (
        float(np.abs(mine[probabilities].to_numpy() - base[probabilities].to_numpy()).max())
        if same_length and len(base)
        else float("inf")
    )
    labels = same_length and bool(
        np.array_equal(mine["prediction"].to_numpy(), base["prediction"].to_numpy())
    )
    return Agreement((len(mine), len(base)), diff, labels, in_order and same_length)


# -- the suite -----------------------------------------------------------------------------------


def run(mode: str, address: str | None = None) -> SuiteResult:
    if address is None:
        require_cores(2, "the predict suite (Ray's tasks next to the driver)")
    sizes, pairs = SIZES[mode]
    figures: list[Figure] = []
    checks: list[Check] = []
    table: list[dict[str, str]] = []
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="raymlops-bench-predict-") as tmp:
        root = Path(tmp)
        config, version_dir = register(root)
        classes = json.loads((version_dir / "features.json").read_text())["target"]["classes"]
        for rows in sizes:
            source = root / f"rows-{rows}.parquet"
            make_rows(source, rows, seed=rows % 1000 + 1)
            spec = {
                "config": str(config), "source": str(source), "version_dir": str(version_dir),
                "address": address,
            }  # fmt: skip
            outputs = {
                "raymlops": str(root / "out-raymlops"),
                "baseline": str(root / "out.parquet"),
            }
            cell = f"{rows:,} rows x {len(FEATURES)} floats"
            measured: dict[str, list[dict[str, Any]]] = {"raymlops": [], "baseline": []}
            for pair in range(pairs):
                # alternate which side goes first, so neither always meets a warm page cache
                order = ("baseline", "raymlops") if pair % 2 == 0 else ("raymlops", "baseline")
                for side in order:
                    result = _run_child(side, {**spec, "output": outputs[side]}, root)
                    result.update(pair=pair, first=side == order[0])
                    measured[side].append(result)
                    print(f"  predict {cell} pair {pair} {side:<9} {result['seconds']:6.2f} s "
                          f"work, peak RSS {result['peak_rss'] / 2**20:,.0f} MiB", flush=True)  # fmt: skip
                if pair == 0:
                    agreement = compare(outputs["raymlops"], outputs["baseline"], classes)
                    checks.append(
                        Check(
                            f"predict {cell}: equal predictions",
                            agreement.passed(rows),
                            f"rows raymlops {agreement.rows[0]:,}, pandas {agreement.rows[1]:,} "
                            f"(expected {rows:,}), in input order {agreement.rows_in_order}; "
                            f"probabilities max abs diff {agreement.max_abs_diff:.3g} "
                            f"(tolerance {TOLERANCE:g}); labels equal {agreement.labels_equal}",
                        )
                    )
                    if not agreement.passed(rows):
                        break  # nothing to time: the two sides disagree
            runs[cell] = [dict(r, side=s) for s, rs in measured.items() for r in rs]
            if not checks[-1].passed:
                continue
            figures += _figures(cell, rows, measured)
            table.append(_row(cell, rows, measured))
    return _result(mode, pairs, figures, checks, table, runs)


def _median(results: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in results)


def _ratio(rows: int, measured: dict[str, list[dict[str, Any]]]) -> float:
    """The median over pairs of raymlops's rows/s over the baseline's (work only)."""
    return statistics.median(
        b["seconds"] / r["seconds"]
        for r, b in zip(measured["raymlops"], measured["baseline"], strict=True)
    )


def _figures(cell: str, rows: int, measured: dict[str, list[dict[str, Any]]]) -> list[Figure]:
    ours, theirs = measured["raymlops"], measured["baseline"]
    start_ours = _median(ours, "ray_start_s") + _median(ours, "imports_s")
    return [
        Figure(cell, "baseline", BASELINE, "rows_per_s", rows / _median(theirs, "seconds"),
               "rows/s", rows),
        Figure(cell, "raymlops", OURS, "rows_per_s", rows / _median(ours, "seconds"), "rows/s",
               rows),
        Figure(cell, "baseline", BASELINE, "seconds", _median(theirs, "seconds"), "s", rows),
        Figure(cell, "raymlops", OURS, "seconds", _median(ours, "seconds"), "s", rows),
        Figure(cell, "baseline", f"{BASELINE} (imports)", "start_s",
               _median(theirs, "imports_s"), "s", rows),
        Figure(cell, "raymlops", f"{OURS} (imports + Ray's start)", "start_s", start_ours, "s",
               rows),
        Figure(cell, "baseline", BASELINE, "peak_rss", max(r["peak_rss"] for r in theirs) / 2**30,
               "GiB", rows),
        Figure(cell, "raymlops", f"{OURS} (driver)", "peak_rss",
               max(r["peak_rss"] for r in ours) / 2**30, "GiB", rows),
    ]  # fmt: skip


def _row(cell: str, rows: int, measured: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    ours, theirs = measured["raymlops"], measured["baseline"]
    return {
        "cell": cell,
        "pandas s": f"{_median(theirs, 'seconds'):.2f}",
        "raymlops s": f"{_median(ours, 'seconds'):.2f}",
        "pandas rows/s": f"{rows / _median(theirs, 'seconds'):,.0f}",
        "raymlops rows/s": f"{rows / _median(ours, 'seconds'):,.0f}",
        "ratio (rows/s)": f"**{_ratio(rows, measured):.2f}x**",
        START: f"{_median(ours, 'ray_start_s'):.2f}",
        "raymlops warm s": f"{_median(ours, 'warm_s'):.2f}",
        "imports s (pandas / raymlops)": (
            f"{_median(theirs, 'imports_s'):.2f} / {_median(ours, 'imports_s'):.2f}"
        ),
        "all in s (pandas / raymlops)": (
            f"{_median(theirs, 'imports_s') + _median(theirs, 'seconds'):.2f} / "
            f"{sum(_median(ours, k) for k in ('imports_s', 'ray_start_s', 'seconds')):.2f}"
        ),
        "peak RSS MiB (pandas / raymlops driver)": (
            f"{max(r['peak_rss'] for r in theirs) / 2**20:,.0f} / "
            f"{max(r['peak_rss'] for r in ours) / 2**20:,.0f}"
        ),
    }


def _result(
    mode: str,
    pairs: int,
    figures: list[Figure],
    checks: list[Check],
    table: list[dict[str, str]],
    runs: dict[str, list[dict[str, Any]]],
) -> SuiteResult:
    largest = table[-1] if table else None
    headline = (
        f"raymlops predict / pandas script at {largest['cell']}: {largest['ratio (rows/s)']} "
        "rows/s of work (issue 16's goal: at least 0.5x); Ray's start "
        f"{largest[START]} s apart; medians of {pairs} "
        "alternated pair(s)."
        if largest
        else "raymlops predict and the pandas script disagree: nothing was timed."
    )
    return SuiteResult(
        suite="predict",
        title=f"Batch inference: raymlops predict vs a pandas + xgboost script ({mode})",
        figures=figures,
        checks=checks,
        table=table,
        headline=headline,
        notes=[
            "Work: from the command's start to its Parquet output written (raymlops: the CLI "
            "with Ray already up, i.e. ray.init returned and its worker processes answered an "
            "empty task; pandas: after its imports). Each run is a fresh process, as a user "
            "runs it; Ray's start and the imports are reported apart. raymlops's work includes "
            "its workers importing raymlops, pandas and xgboost and loading the model.",
            "raymlops validates every cell against the version's schema (types, nulls, ranges) "
            "and refuses the file, writing nothing, if a row breaks it; the pandas script "
            "checks nothing.",
            "The driver's peak RSS is the CLI process's (Ray's workers hold the blocks); the "
            "pandas script's is its whole process.",
            "raymlops warm: the same command run again in the same process, once Ray's workers "
            "have imported raymlops and xgboost and loaded the model (a long-lived driver, or "
            "a file large enough to amortise them); not in the ratio.",
        ],
        extra={"runs": runs},
    )


if __name__ == "__main__":
    sys.exit(child(*sys.argv[1:4]))
