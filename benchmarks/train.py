"""``raymlops train`` against what a user would write instead: pandas + xgboost (issue 11).

Both sides train the same XGBoost trials (parameters and seeds drawn by raymlops's seeded
search; ``hist``, 1 thread per trial, the same number of boosting rounds) on the same
generated Parquet file (30 float columns, a binary label):

* **raymlops**: :func:`raymlops.training.run.train` in this process (the driver), Ray started
  beforehand; Tune runs the trials ``--concurrent`` at a time, 1 CPU each.
* **pandas + xgboost**: ``pandas.read_parquet``, ``train_test_split``, one ``DMatrix``, then
  ``xgboost.train`` for each trial one after another, the best by validation AUC; run in a
  fresh process so its time and memory are its own.

Before a timing counts, both best models are scored on an independent test file (rows neither
side trained on): their AUCs must agree within ``--auc-tolerance`` (default 0.01), else the
benchmark exits 1. Reported: wall time of each side, raymlops's stage times, the peak RSS
of each driver (``VmRSS`` of ``/proc/<pid>/status`` sampled every 20 ms) and raymlops's peak
RSS on each Ray node (its raylet and every process it started, sampled every 100 ms).

Usage::

    .venv/bin/python benchmarks/train.py --quick          # 50,000 rows: CI, well under a minute
    .venv/bin/python benchmarks/train.py                  # 1M rows
    .venv/bin/python benchmarks/train.py --full           # 1M, 2M (4 trials), 4M and 20M rows

Writes ``train.json`` and ``train.md`` (and ``train.png`` when matplotlib imports) to
``--out`` (default ``benchmarks/results``). Exit 0, or 1 when the two sides' AUCs disagree.
A cell whose baseline needs more memory than the machine has available (``MemAvailable``)
runs raymlops alone and says so in the table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from queue import Empty
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere, without installing
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
FEATURES = [f"f{i:02d}" for i in range(30)]
TARGET = "label"
#: raymlops's stages that make up data preparation (read, validate, statistics, transform)
PREP_STAGES = ("read and validate", "fit features", "transform")
#: the issue's goals: driver peak RSS, the 2M-row 4-trial cell's ratio, data preparation
GOAL_DRIVER_RSS = 1e9
GOAL_RATIO = 1.0
GOAL_PREP_RATIO = 2.0
ROW_GROUP = 250_000
#: the baseline's peak memory per byte of float64 data (rows x 31 x 8): the Arrow table and
#: the frame while read_parquet converts, then the frame's numpy copy, the split's copies and
#: the DMatrix; it runs only where the machine has that much available. Measured peaks: 5.8
#: GB at 4M rows (5.9x), 3.1 GB at 2M (6.2x); at 20M rows (~30 GB) it was killed on 24 GiB
BASELINE_MEMORY_FACTOR = 6.0


# -- data ----------------------------------------------------------------------------------------


def make_data(path: Path, rows: int, seed: int) -> None:
    """``rows`` rows of 30 float columns and a 0/1 label that depends on a few of them, written
    one row group at a time (a row group's rows drawn from ``(seed, group)``), so that 20M
    rows never sit in this process's memory at once."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for group, start in enumerate(range(0, rows, ROW_GROUP)):
            n = min(ROW_GROUP, rows - start)
            rng = np.random.default_rng([seed, group])
            x = rng.normal(size=(n, len(FEATURES)))
            logit = 1.5 * x[:, 0] - x[:, 1] + 0.8 * x[:, 2] * x[:, 3] + np.sin(2 * x[:, 4])
            label = (logit + rng.logistic(size=n) > 0).astype(np.int64)
            frame = pd.DataFrame(x, columns=FEATURES).assign(**{TARGET: label})
            table = pa.Table.from_pandas(frame, preserve_index=False)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=ROW_GROUP)
    finally:
        if writer is not None:
            writer.close()


def write_config(
    root: Path, source: Path, args: argparse.Namespace, trials: int, workers: int | None = None
) -> Path:
    columns = "".join(f"    {name}: {{type: float}}\n" for name in FEATURES)
    text = (
        "name: bench\n"
        f"storage: {root / 'store'}\n"
        "data:\n"
        f"  source: {source}\n"
        f"  target: {TARGET}\n"
        "  columns:\n"
        f"{columns}"
        f"    {TARGET}: {{type: int}}\n"
        "training:\n"
        "  task: classification\n"
        "  metric: roc_auc\n"
        "  models: [xgboost]\n"
        f"  search: {{num_samples: {trials}, max_concurrent: {args.concurrent}, "
        f"scheduler: fifo, max_boosting_rounds: {args.rounds}, "
        f"rounds_per_report: {args.rounds_per_report}, time_budget_s: 3600, "
        f"refit: {'true' if args.refit else 'false'}}}\n"
        + (f"  workers_per_trial: {workers}\n" if workers is not None else "")
    )
    path = root / "raymlops.yaml"
    path.write_text(text)
    return path


# -- measuring -----------------------------------------------------------------------------------


def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakRss:
    """The peak RSS of this process while the block runs, sampled every ``every_s``."""

    def __init__(self, every_s: float = 0.02) -> None:
        self.every_s = every_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.every_s)

    def __enter__(self) -> PeakRss:
        self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


class NodePeakRss:
    """The peak RSS on each Ray node while the block runs: one sampler actor per node sums the
    RSS of its raylet and every process the raylet started (workers, actors, the object
    store's shared pages they touched), every ``every_s``. Only this cluster's processes count,
    even on a machine that runs other Ray clusters."""

    def __init__(self, every_s: float = 0.1) -> None:
        self.every_s = every_s
        self.peaks: dict[str, int] = {}
        self._actors: list[Any] = []

    def __enter__(self) -> NodePeakRss:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        sampler = ray.remote(num_cpus=0)(_NodeSampler)
        for node in ray.nodes():
            if node.get("Alive"):
                strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
                self._actors.append(
                    sampler.options(scheduling_strategy=strategy).remote(self.every_s)
                )
        ray.get([a.start.remote() for a in self._actors])
        return self

    def __exit__(self, *exc: object) -> None:
        import ray

        for node_id, peak in ray.get([a.stop.remote() for a in self._actors]):
            self.peaks[node_id] = peak
        for actor in self._actors:
            ray.kill(actor)


class _NodeSampler:
    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        raylet = psutil.Process(os.getpid()).parent()
        total = 0
        for process in [raylet, *raylet.children(recursive=True)]:
            try:
                total += process.memory_info().rss
            except psutil.Error:  # a process that ended meanwhile
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.every_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> tuple[str, int]:
        import ray

        self._stop.set()
        self._thread.join()
        return ray.get_runtime_context().get_node_id(), self.peak


def auc_on(test_path: Path, predict: Any) -> float:
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    test = pd.read_parquet(test_path)
    return float(roc_auc_score(test[TARGET].to_numpy(), predict(test)))


def cell_data(folder: Path, rows: int) -> tuple[Path, Path]:
    """The cell's training and test files in ``folder``, generated unless they are there
    (``--data-dir`` keeps them between runs: 20M rows take minutes to write)."""
    paths = folder / f"train-{rows}.parquet", folder / f"test-{rows}.parquet"
    for path, size, seed in zip(paths, (rows, min(rows, 200_000)), (1, 2), strict=True):
        if not path.exists():
            partial = path.with_suffix(".partial")
            make_data(partial, size, seed=seed)
            partial.rename(path)  # a run stopped while writing leaves no file that looks whole
    return paths


# -- the two sides -------------------------------------------------------------------------------


def trial_params(args: argparse.Namespace, trials: int) -> list[tuple[dict[str, Any], int]]:
    """The trials raymlops's search draws for this config: (parameters, seed) each."""
    from raymlops.training.models import sample_trials

    specs = sample_trials(["xgboost"], num_samples=trials, seed=args.search_seed)
    return [(spec.params, spec.seed) for spec in specs]


def baseline(
    source: str, test: str, trials: list[tuple[dict[str, Any], int]], rounds: int, queue: Any
) -> None:
    """What a user writes: read, split, train each trial one after another, keep the best."""
    with PeakRss() as rss:
        started = time.perf_counter()
        import pandas as pd
        import xgboost as xgb
        from sklearn.metrics import roc_auc_score
        from sklearn.model_selection import train_test_split

        frame = pd.read_parquet(source)
        read_s = time.perf_counter() - started
        x, y = frame[FEATURES].to_numpy(), frame[TARGET].to_numpy()
        del frame
        x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=0.2, random_state=0)
        dtrain = xgb.DMatrix(x_tr, label=y_tr, nthread=1)
        dvalid = xgb.DMatrix(x_va, nthread=1)
        best, best_auc = None, -1.0
        for params, seed in trials:
            booster = xgb.train(
                {
                    "tree_method": "hist",
                    "nthread": 1,
                    "seed": seed,
                    "objective": "binary:logistic",
                    **params,
                },
                dtrain,
                num_boost_round=rounds,
            )
            auc = roc_auc_score(y_va, booster.predict(dvalid))
            if auc > best_auc:
                best, best_auc = booster, auc
        wall = time.perf_counter() - started
    test_auc = auc_on(Path(test), lambda t: best.inplace_predict(t[FEATURES].to_numpy()))
    prep_s = pandas_prep(source)
    queue.put(
        {
            "wall_s": wall,
            "read_s": read_s,
            "prep_s": prep_s,
            "peak_rss": rss.peak,
            "test_auc": test_auc,
        }
    )


def pandas_prep(source: str) -> float:
    """Seconds for the data preparation a user writes in pandas, raymlops's transform of these
    columns: read, then each feature standardised with its mean and std, a missing value as
    0, into one float64 matrix (timed apart from the trials; not part of ``wall_s``)."""
    import pandas as pd

    started = time.perf_counter()
    frame = pd.read_parquet(source)
    features = frame[FEATURES]
    scaled = (features - features.mean()) / features.std(ddof=0)
    x = scaled.fillna(0.0).to_numpy(dtype=np.float64)
    y = frame[TARGET].to_numpy()
    seconds = time.perf_counter() - started
    assert x.shape == (len(frame), len(FEATURES))
    assert len(y) == len(frame)
    return seconds


def run_baseline(
    source: Path, test: Path, trials: list[tuple[dict[str, Any], int]], rounds: int
) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=baseline, args=(str(source), str(test), trials, rounds, queue))
    process.start()
    while True:  # a child killed (out of memory) never puts its result: do not wait forever
        try:
            result = queue.get(timeout=5)
            break
        except Empty:
            if not process.is_alive():
                raise BaselineDied(process.exitcode) from None
    process.join()
    return result


class BaselineDied(RuntimeError):
    """The pandas + xgboost process ended without a result."""

    def __init__(self, exitcode: int | None) -> None:
        killed = exitcode is not None and exitcode < 0
        super().__init__(
            f"pandas + xgboost died (exit {exitcode}"
            + (": killed, most likely by the kernel for lack of memory)" if killed else ")")
        )


def run_raymlops(config_path: Path, test: Path) -> dict[str, Any]:
    from raymlops.config import load_config
    from raymlops.predictor import load_predictor
    from raymlops.training.run import open_registry, train
    from raymlops.training.stages import StageLog

    config = load_config(config_path)
    stages = StageLog()
    with PeakRss() as rss, NodePeakRss() as nodes:
        started = time.perf_counter()
        result = train(config, stages=stages, verbose=0)
        wall = time.perf_counter() - started
    predictor = load_predictor(open_registry(config), result.version)
    test_auc = auc_on(test, lambda t: predictor.scores(predictor.validate(t))[:, 1])
    return {
        "wall_s": wall,
        "peak_rss": rss.peak,
        "node_peak_rss": nodes.peaks,
        "workers_per_trial": result.lineage["workers_per_trial"]["workers"],
        "test_auc": test_auc,
        "holdout_auc": result.metrics["roc_auc"],
        "stages": {k: v for k, v in result.stages.items() if k != "start Ray"},
        "prep_s": sum(v for k, v in result.stages.items() if k.startswith(PREP_STAGES)),
        "version": result.version,
        # rank, node, fit rows and peak RSS of each worker of the best trial
        "trial_nodes": result.lineage["trial"]["nodes"],
    }


def baseline_skipped(rows: int) -> str | None:
    """Why the pandas baseline cannot run at ``rows`` on this machine now, or None: it needs
    about ``BASELINE_MEMORY_FACTOR`` times the float64 data, and the memory is shared."""
    need = rows * (len(FEATURES) + 1) * 8 * BASELINE_MEMORY_FACTOR
    free = available_memory()
    if free >= need:
        return None
    return (
        f"pandas + xgboost not run: it needs ~{need / 1e9:.0f} GB "
        f"({BASELINE_MEMORY_FACTOR:g}x the float64 data), {free / 1e9:.0f} GB was available"
    )


def available_memory() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def cell_row(
    rows: int,
    trials: int,
    ours: dict[str, Any],
    theirs: dict[str, Any] | None,
    tolerance: float,
    skipped: str | None = None,
) -> dict[str, Any]:
    """One cell's results; without a baseline its ratios and AUC check are None."""
    gap = None if theirs is None else abs(ours["test_auc"] - theirs["test_auc"])
    return {
        "rows": rows,
        "trials": trials,
        "raymlops": ours,
        "baseline": theirs,
        "baseline_skipped": skipped,
        "ratio": None if theirs is None else ours["wall_s"] / theirs["wall_s"],
        "prep_ratio": None if theirs is None else ours["prep_s"] / theirs["prep_s"],
        "auc_gap": gap,
        "auc_agree": None if gap is None else gap <= tolerance,
    }


def cell_line(row: dict[str, Any], tolerance: float) -> str:
    ours, theirs = row["raymlops"], row["baseline"]
    line = (
        f"{row['rows']:>10,} rows: raymlops {ours['wall_s']:.1f}s "
        f"(driver peak {ours['peak_rss'] / 1e9:.2f} GB), "
    )
    if theirs is None:
        return line + str(row["baseline_skipped"])
    line += (
        f"pandas+xgboost {theirs['wall_s']:.1f}s ({theirs['peak_rss'] / 1e9:.2f} GB), "
        f"ratio {row['ratio']:.2f}x; test AUC {ours['test_auc']:.4f} vs {theirs['test_auc']:.4f}"
    )
    if not row["auc_agree"]:
        line += f"  DISAGREE by {row['auc_gap']:.4f} > {tolerance}"
    return line


# -- the data-parallel cell on two nodes ---------------------------------------------------------


def two_node_cell(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """One XGBoost trial with 1 worker, then with 2 workers, on the same data and config, on
    a cluster of two 1-CPU worker nodes: each worker of the 2-worker trial must sit on its own
    node and hold only its share of the rows, and the holdout AUC must match the 1-worker
    trial's within ``--dp-tolerance``."""
    rows = args.cluster_rows
    data, test = root / f"train-{rows}.parquet", root / f"test-{rows}.parquet"
    make_data(data, rows, seed=1)
    make_data(test, min(rows, 200_000), seed=2)
    runs = {}
    for workers in (1, 2):
        project = root / f"project-{rows}-w{workers}"
        project.mkdir()
        runs[workers] = run_raymlops(write_config(project, data, args, 1, workers), test)
    gap = abs(runs[2]["holdout_auc"] - runs[1]["holdout_auc"])
    problems = two_node_problems(runs[1], runs[2], args.dp_tolerance)
    return {"rows": rows, "runs": runs, "auc_gap": gap, "problems": problems}


def two_node_problems(one: dict[str, Any], two: dict[str, Any], tolerance: float) -> list[str]:
    """What the 2-worker run must show: its 2 workers on 2 different nodes, each holding part
    of the fit rows (none all of them), and a holdout AUC within ``tolerance`` of 1 worker's."""
    nodes = two["trial_nodes"]
    fit_rows = sum(n["fit_rows"] for n in nodes)
    problems = []
    if len(nodes) != 2 or len({n["node_id"] for n in nodes}) != 2:
        problems.append(f"the 2-worker trial did not run on 2 nodes: {nodes}")
    if any(not 0 < n["fit_rows"] < fit_rows for n in nodes):
        problems.append(f"a worker held every fit row: {[n['fit_rows'] for n in nodes]}")
    gap = abs(two["holdout_auc"] - one["holdout_auc"])
    if gap > tolerance:
        problems.append(f"holdout AUC 2 workers vs 1 differs by {gap:.4f} > {tolerance}")
    return problems


def cluster_markdown(cell: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"# One XGBoost trial on a local 2-node cluster ({cell['rows']:,} rows, "
        f"{args.rounds} rounds; head 0 CPU, two 1-CPU worker nodes)",
        "",
        "| workers | node of each worker | fit rows per worker | worker peak RSS "
        "| peak RSS per node | holdout AUC | test AUC | wall |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for workers, run in cell["runs"].items():
        nodes = run["trial_nodes"]
        per_node = ", ".join(f"{p / 1e9:.2f}" for p in run["node_peak_rss"].values())
        fit_rows = ", ".join(f"{n['fit_rows']:,}" for n in nodes)
        worker_rss = ", ".join(f"{n.get('peak_rss', 0) / 1e9:.2f}" for n in nodes)
        lines.append(
            f"| {workers} | {', '.join(n['node_id'][:8] for n in nodes)} "
            f"| {fit_rows} | {worker_rss} GB "
            f"| {per_node} GB | {run['holdout_auc']:.4f} | {run['test_auc']:.4f} "
            f"| {run['wall_s']:.1f} s |"
        )
    verdict = "; ".join(cell["problems"]) or (
        f"each worker on its own node with part of the rows; holdout AUC within "
        f"{args.dp_tolerance} of 1 worker ({cell['auc_gap']:.4f})"
    )
    return "\n".join([*lines, "", verdict]) + "\n"


def run_two_nodes(args: argparse.Namespace) -> int:
    """``--two-nodes``: the cluster cell alone; its report in train-cluster.json/.md."""
    cell = cluster_cell(args)
    for line in cell["problems"]:
        print(f"two nodes: {line}", flush=True)
    write_cluster_report(cell, args)
    return 1 if cell["problems"] else 0


def write_cluster_report(cell: dict[str, Any], args: argparse.Namespace) -> None:
    report = {"settings": {k: v for k, v in vars(args).items() if k != "out"}, "cell": cell}
    (args.out / "train-cluster.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (args.out / "train-cluster.md").write_text(cluster_markdown(cell, args))
    print(f"wrote {args.out / 'train-cluster.json'} and train-cluster.md")


def cluster_cell_in_child(args: argparse.Namespace) -> dict[str, Any]:
    """The cluster cell run by ``--two-nodes`` in a fresh process: Ray's client keeps the first
    cluster token it read for the life of a process, so after the local cells' Ray this
    process could not join the new cluster."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="bench-train-2n-out-") as tmp:
        command = [
            sys.executable, "-m", "benchmarks.train", "--two-nodes", "--out", tmp,
            "--rows", str(args.cluster_rows), "--rounds", str(args.rounds),
            "--rounds-per-report", str(args.rounds_per_report),
            "--dp-tolerance", str(args.dp_tolerance),
            "--object-store-mb", str(args.object_store_mb),
            *(["--address", args.address] if args.address else []),
        ]  # fmt: skip
        root = Path(__file__).resolve().parent.parent
        done = subprocess.run(command, cwd=root, check=False)
        report = Path(tmp, "train-cluster.json")
        if not report.exists():
            return {"rows": args.cluster_rows, "runs": {}, "auc_gap": None,
                    "problems": [f"the 2-node cell did not run (exit {done.returncode})"]}  # fmt: skip
        for name in ("train-cluster.json", "train-cluster.md"):
            (args.out / name).write_bytes(Path(tmp, name).read_bytes())
        cell = json.loads(report.read_text())["cell"]
    cell["runs"] = {int(k): v for k, v in cell["runs"].items()}  # JSON keys are strings
    return cell


def cluster_cell(args: argparse.Namespace) -> dict[str, Any]:
    """The cluster cell on ``--address``, else on a cluster this run starts and stops
    (``raymlops cluster up --workers 2`` in a raymlops folder of its own)."""
    import ray

    from raymlops import cluster
    from raymlops.runtime import ensure_ray

    with tempfile.TemporaryDirectory(prefix="bench-train-2n-") as tmp:
        root = Path(tmp)
        home = None
        address = args.address
        if address is None:
            home = root / "raymlops-home"
            os.environ["RAYMLOPS_HOME"] = str(home)  # its token, not the user's cluster's
            state = cluster.up(
                2, cpus_per_worker=1, head_cpus=0, object_store_mb=args.object_store_mb, home=home
            )
            address = state.gcs_address
        try:
            ensure_ray(address)
            return two_node_cell(args, root)
        finally:
            ray.shutdown()
            if home is not None:
                cluster.down(home)


# -- report --------------------------------------------------------------------------------------


def markdown(
    rows: list[dict[str, Any]], args: argparse.Namespace, cell: dict[str, Any] | None = None
) -> str:
    lines = [
        f"## raymlops train vs pandas + xgboost ({args.rounds} rounds, "
        f"hist, 1 thread per trial, {os.cpu_count()} cores)",
        "",
        "| rows | trials | raymlops train | pandas + xgboost | ratio | driver peak RSS "
        "(raymlops) | peak RSS per node (raymlops) | peak RSS (pandas) "
        "| test AUC raymlops / pandas | data prep raymlops / pandas |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ours, theirs = r["raymlops"], r["baseline"]
        per_node = ", ".join(f"{peak / 1e9:.2f}" for peak in ours["node_peak_rss"].values())
        start = f"| {r['rows']:,} | {r['trials']} | {ours['wall_s']:.1f} s "
        end = f"| {ours['peak_rss'] / 1e9:.2f} GB | {per_node} GB "
        if theirs is None:
            lines.append(
                f"{start}| - | - {end}| - | {ours['test_auc']:.4f} / - "
                f"| {ours['prep_s']:.1f} s / - |"
            )
            continue
        lines.append(
            f"{start}| {theirs['wall_s']:.1f} s | {r['ratio']:.2f}x {end}"
            f"| {theirs['peak_rss'] / 1e9:.2f} GB "
            f"| {ours['test_auc']:.4f} / {theirs['test_auc']:.4f} "
            f"| {ours['prep_s']:.1f} s / {theirs['prep_s']:.1f} s "
            f"({r['prep_ratio']:.2f}x) |"
        )
    skipped = [
        f"- {r['rows']:,} rows: {r['baseline_skipped']}." for r in rows if r.get("baseline_skipped")
    ]
    if skipped:
        lines += ["", *skipped]
    measured = goals(rows, cell)
    if measured:
        lines += ["", "Goals (issue 11):", "", "| goal | measured | met |", "|---|---|---|"]
        lines += [
            f"| {g['goal']} | {g['measured']} | {'yes' if g['met'] else 'no'} |" for g in measured
        ]
    else:  # a table with no rows says nothing: say which run measures them
        lines += ["", "Issue 11's goals are measured at 2M rows x 4 trials, 4M and 20M rows: `--full`."]
    for r in rows:
        lines += [
            "",
            f"raymlops stages at {r['rows']:,} rows (s):",
            "",
            "| stage | s |",
            "|---|---|",
        ]
        lines += [f"| {name} | {s:.2f} |" for name, s in r["raymlops"]["stages"].items()]
        if r["baseline"] is not None:
            lines.append(f"| (pandas read_parquet) | {r['baseline']['read_s']:.2f} |")
            lines.append(f"| (pandas read_parquet + transform) | {r['baseline']['prep_s']:.2f} |")
    if cell is not None and cell["runs"]:  # --full: the data-parallel cell, after the others
        # its title in bold, not a heading: the README keeps one heading per suite
        title, rest = cluster_markdown(cell, args).split("\n", 1)
        lines += ["", f"**{title.removeprefix('# ')}**", rest]
    return "\n".join(lines) + "\n"


def goals(rows: list[dict[str, Any]], cell: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The issue's goals that this run's cells measure (a goal whose cell did not run is left
    out): driver RSS at 4M rows and more, the 2M-row 4-trial ratio, data preparation at 4M,
    and (the cluster ``cell``) a data-parallel trial on 2 nodes with no worker holding all."""
    out = []
    if cell is not None:
        measured = "; ".join(cell["problems"])
        if cell["runs"]:
            nodes = cell["runs"][2]["trial_nodes"]
            shares = ", ".join(f"{n['fit_rows']:,}" for n in nodes)
            measured = (
                f"fit rows per worker {shares} on {len({n['node_id'] for n in nodes})} nodes; "
                f"holdout AUC gap {cell['auc_gap']:.4f}"
            )
        out.append(
            {
                "goal": "a data-parallel trial on 2 nodes trains on data no worker holds in full",
                "measured": measured,
                "met": not cell["problems"],
            }
        )
    for r in rows:
        rss = r["raymlops"]["peak_rss"]
        if r["rows"] >= 4_000_000:
            out.append(
                {
                    "goal": f"driver peak RSS < 1 GB at {r['rows']:,} rows",
                    "measured": f"{rss / 1e9:.2f} GB",
                    "met": rss < GOAL_DRIVER_RSS,
                }
            )
        if r["rows"] >= 4_000_000 and r["prep_ratio"] is not None:
            out.append(
                {
                    "goal": f"data prep < {GOAL_PREP_RATIO:g}x pandas at {r['rows']:,} rows",
                    "measured": f"{r['prep_ratio']:.2f}x",
                    "met": r["prep_ratio"] < GOAL_PREP_RATIO,
                }
            )
        if r["rows"] == 2_000_000 and r["trials"] == 4 and r["ratio"] is not None:
            out.append(
                {
                    "goal": f"wall <= {GOAL_RATIO:g}x pandas + xgboost at 2M rows, 4 trials",
                    "measured": f"{r['ratio']:.2f}x",
                    "met": r["ratio"] <= GOAL_RATIO,
                }
            )
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = [f"{r['rows']:,}" for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    at = np.arange(len(rows))
    left.bar(at - 0.2, [r["raymlops"]["wall_s"] for r in rows], 0.4, label="raymlops train")
    left.bar(at + 0.2, [_base(r, "wall_s") for r in rows], 0.4, label="pandas + xgboost")
    left.set(xticks=at, xticklabels=labels, xlabel="rows", ylabel="wall time (s)")
    left.legend()
    right.bar(
        at - 0.2, [r["raymlops"]["peak_rss"] / 1e9 for r in rows], 0.4, label="raymlops driver"
    )
    right.bar(at + 0.2, [_base(r, "peak_rss") / 1e9 for r in rows], 0.4, label="pandas process")
    right.set(xticks=at, xticklabels=labels, xlabel="rows", ylabel="peak RSS (GB)")
    right.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _base(row: dict[str, Any], key: str) -> float:
    """The baseline's figure, 0 (no bar) where it did not run."""
    return row["baseline"][key] if row["baseline"] is not None else 0.0


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/train.py", description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="50,000 rows (CI)")
    size.add_argument(
        "--full",
        action="store_true",
        help="1M, 4M and 20M rows (--trials each), 2M rows with 4 trials, then the 2-node "
        "data-parallel cell (1M rows)",
    )
    size.add_argument("--rows", type=int, nargs="+", help="row counts to run")
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--concurrent", type=int, default=2, help="raymlops trials at once")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--rounds-per-report", type=int, default=10)
    parser.add_argument("--search-seed", type=int, default=42)
    parser.add_argument(
        "--refit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="raymlops search.refit (default: the config's default)",
    )
    parser.add_argument("--auc-tolerance", type=float, default=0.01)
    parser.add_argument(
        "--workers-per-trial",
        type=int,
        default=None,
        help="raymlops training.workers_per_trial (default: auto, which follows the memory "
        "Ray saw free at its start, so on a shared machine it can ask for more workers than "
        "the cores place)",
    )
    parser.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run pandas + xgboost too (--no-baseline: raymlops's figures alone)",
    )
    parser.add_argument(
        "--two-nodes",
        action="store_true",
        help="instead of the cells: one trial with 1, then 2 workers on a local 2-node cluster "
        "(started and stopped here, or --address)",
    )
    parser.add_argument(
        "--dp-tolerance",
        type=float,
        default=0.005,
        help="largest holdout AUC gap between the 2-worker and the 1-worker trial",
    )
    parser.add_argument("--object-store-mb", type=int, default=1024, help="per node (--two-nodes)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep the generated Parquet files here and reuse them (default: a temp folder)",
    )
    parser.add_argument("--address", default=None, help="Ray address (default: a local Ray)")
    args = parser.parse_args(argv)
    if args.refit is None:
        from raymlops.config import SearchConfig

        args.refit = SearchConfig().refit
    args.cluster_rows = (args.rows or [20_000 if args.quick else 1_000_000])[0]
    sizes = args.rows or ([50_000] if args.quick else [1_000_000])
    args.cells = [(rows, args.trials) for rows in sizes]
    if args.full:  # the cells: 1M, 4M and 20M rows, and 2M rows with 4 trials
        args.cells = [
            (1_000_000, args.trials),
            (2_000_000, 4),
            (4_000_000, args.trials),
            (20_000_000, args.trials),
        ]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from raymlops.runtime import ensure_ray

    args.out.mkdir(parents=True, exist_ok=True)
    if args.two_nodes:
        return run_two_nodes(args)
    import ray

    rows_out: list[dict[str, Any]] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        root = Path(tmp)
        for rows, cell_trials in args.cells:
            trials = trial_params(args, cell_trials)
            data, test = cell_data(args.data_dir or root, rows)
            project = root / f"project-{rows}"
            project.mkdir()
            config = write_config(project, data, args, cell_trials, args.workers_per_trial)
            # the baseline first, while no local Ray holds memory: Ray's object store keeps
            # the shared-memory pages it touched, and at 20M rows the baseline, started after
            # raymlops, was killed for lack of memory
            skipped = "pandas + xgboost not run (--no-baseline)" if not args.baseline else None
            skipped = skipped or baseline_skipped(rows)
            theirs = None
            if skipped is None:
                try:
                    theirs = run_baseline(data, test, trials, args.rounds)
                except BaselineDied as exc:
                    skipped = str(exc)
            # a fresh local Ray per cell (not timed: both sides start with their libraries
            # ready), so no cell inherits another's object store
            ensure_ray(args.address)
            ours = run_raymlops(config, test)
            if args.address is None:
                ray.shutdown()
            row = cell_row(rows, cell_trials, ours, theirs, args.auc_tolerance, skipped)
            failed |= row["auc_agree"] is False
            rows_out.append(row)
            print(cell_line(row, args.auc_tolerance), flush=True)
    cell = None
    if args.full:  # the last goal in the same run: a data-parallel trial on 2 nodes
        ray.shutdown()
        cell = cluster_cell_in_child(args)
        for line in cell["problems"]:
            print(f"two nodes: {line}", flush=True)
        failed |= bool(cell["problems"])
    report = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "results": rows_out,
        "cluster": cell,
        "goals": goals(rows_out, cell),
    }
    (args.out / "train.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (args.out / "train.md").write_text(markdown(rows_out, args, cell))
    plot(rows_out, args.out / "train.png")
    print(f"wrote {args.out / 'train.json'} and train.md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
