"""Per-trial overhead of raymlops's Ray Tune search (issue 3).

Runs :func:`raymlops.training.search.run_search` on generated rows (default: 16 XGBoost trials
of 200 boosting rounds on 100,000 x 30 rows, 2 at a time, 1 CPU each, FIFO so that no trial is
cut) and compares the wall time of ``tuner.fit()`` with the ideal::

    ideal = sum(trial fit_s) / parallel            goal: wall / ideal <= 1.3

``fit_s`` is what each trial spent inside the trainable, from its first line to its last report:
building the XGBoost DMatrix, boosting and scoring the validation rows every
``rounds_per_report`` rounds. That is the real work; what is not in it (actor start-up, handing
the data to the trial, Tune's bookkeeping between trials, the controller's polling and the
driver's own CPU time) is the overhead. Because trials are whole, ``sum / parallel`` is not
always reachable even with no overhead: the report also shows the makespan of the trials' own
``fit_s`` laid out in order on ``parallel`` workers (what a zero-overhead FIFO runner would take).

Usage::

    .venv/bin/python benchmarks/tune_overhead.py                 # the issue's setting
    .venv/bin/python benchmarks/tune_overhead.py --trials 8 --rounds 100 --rows 20000
    .venv/bin/python benchmarks/tune_overhead.py --models xgboost random_forest --scheduler asha

Writes ``benchmarks/results/tune_overhead.json`` and, when matplotlib can be imported,
``benchmarks/results/tune_overhead.png``. Exit status 0 when the ratio is within ``--goal``,
1 when it is not (so it can gate a CI job), 2 on a bad argument.
"""

from __future__ import annotations

import argparse
import heapq
import json
import multiprocessing
import os
import platform
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere, without installing
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("xgboost", "random_forest", "logistic_regression")  # binary classification


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tune_overhead",
        description="Wall time of raymlops's Tune search vs sum(trial fit time) / parallel.",
    )
    parser.add_argument("--trials", type=int, default=16, help="trials (num_samples): 16")
    parser.add_argument("--concurrent", type=int, default=2, help="max_concurrent: 2")
    parser.add_argument("--cpu", type=float, default=1.0, help="CPUs per trial: 1")
    parser.add_argument("--rows", type=int, default=100_000, help="generated rows: 100000")
    parser.add_argument("--cols", type=int, default=30, help="generated feature columns: 30")
    parser.add_argument(
        "--rounds", type=int, default=200, help="XGBoost boosting rounds per trial (>= 10): 200"
    )
    parser.add_argument(
        "--rounds-per-report", type=int, default=10, help="boosting rounds per Tune report: 10"
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=MODELS,
        default=["xgboost"],
        metavar="MODEL",
        help=f"model kinds, of {', '.join(MODELS)}: xgboost",
    )
    parser.add_argument("--scheduler", choices=("fifo", "asha"), default="fifo")
    parser.add_argument("--seed", type=int, default=0, help="data and search seed: 0")
    parser.add_argument("--goal", type=float, default=1.3, help="highest wall/ideal that passes")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="folder for the JSON and PNG: benchmarks/results"
    )
    parser.add_argument("--no-plot", action="store_true", help="do not draw the PNG")
    parser.add_argument(
        "--address",
        default=None,
        help="run the Tune searches on this running Ray cluster (the process pool stays here)",
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also run the same trials in a plain process pool (no Ray), as many at a time",
    )
    parser.add_argument(
        "--stock-asha",
        action="store_true",
        help="also run raymlops's ASHA search and a plain Tune script with Tune's stock "
        "ASHAScheduler on the same trials (xgboost only; benchmarks/tune_asha.py)",
    )
    parser.add_argument(
        "--asha-pairs", type=int, default=1, help="alternated pairs of the ASHA comparison: 1"
    )
    args = parser.parse_args(argv)
    if args.trials < 1 or args.concurrent < 1 or args.rows < 100 or args.cols < 2:
        parser.error("need --trials >= 1, --concurrent >= 1, --rows >= 100, --cols >= 2")
    if args.rounds < 10 or not 1 <= args.rounds_per_report <= args.rounds:
        # with more rounds per report than rounds, an XGBoost trial never reports a score
        parser.error(
            "need --rounds >= 10 (the config's minimum) and 1 <= --rounds-per-report <= --rounds"
        )
    if len(set(args.models)) != len(args.models):
        parser.error("--models lists a model twice")
    if args.stock_asha and (args.models != ["xgboost"] or args.asha_pairs < 1):
        parser.error("--stock-asha compares XGBoost trials only (--models xgboost), "
                     "--asha-pairs >= 1")  # fmt: skip
    return args


def make_data(
    rows: int, cols: int, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Seeded float64 rows and a binary label with signal (linear + a few interactions), 80/20."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols))
    weights = rng.normal(0.0, 1.0, cols) * (rng.random(cols) < 0.5)
    logit = x @ weights / np.sqrt(max(1.0, float(np.count_nonzero(weights))))
    logit += 0.8 * x[:, 0] * x[:, 1] - 0.5 * np.abs(x[:, 2]) + 0.4 * np.sin(2.0 * x[:, 3])
    y = (logit + rng.logistic(0.0, 0.5, rows) > 0).astype(np.int64)
    cut = int(rows * 0.8)
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def fifo_makespan(durations: list[float], workers: int) -> float:
    """Time to run ``durations`` in order on ``workers`` with no overhead (greedy list order)."""
    free = [0.0] * max(1, workers)
    for duration in durations:
        heapq.heappush(free, heapq.heappop(free) + duration)
    return max(free)


def driver_cpu_s() -> float:
    """CPU seconds (user + system) of this process so far, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def ray_daemons_cpu_s() -> dict[int, float]:
    """CPU seconds of this process's descendants other than Ray workers (raylet, GCS, agents),
    by pid, read from /proc: what Ray itself takes from the cores the trials run on. Linux only
    (empty elsewhere); trial workers are left out, their time is the trials'."""
    from benchmarks.report import descendants

    def worker(cmdline: bytes) -> bool:  # a Ray worker: its title is ray::<what it runs>
        argv = cmdline.split(b"\0")[:3]
        agent = cmdline.startswith((b"ray::DashboardAgent", b"ray::RuntimeEnvAgent"))
        return any(a.endswith(b"_worker.py") for a in argv) or (
            cmdline.startswith(b"ray::") and not agent
        )

    return {p.pid: p.cpu_s for p in descendants(os.getpid()).values() if not worker(p.cmdline)}


_BASELINE: dict[str, Any] = {}


def _baseline_trial(index: int) -> tuple[int, tuple[float, float]]:
    from raymlops.training.metrics import score
    from raymlops.training.models import fit_model

    spec, options = _BASELINE["specs"][index], _BASELINE["options"]
    (x, y), (x_valid, y_valid) = _BASELINE["train"], _BASELINE["valid"]
    start = time.perf_counter()
    last: list[float] = []  # the last report's score: what Tune keeps for a FIFO trial

    def report(step: int, predictions: np.ndarray) -> None:
        last[:] = [score(options.task, "roc_auc", y_valid, predictions, options.n_classes)]

    fit_model(spec, x, y, options, valid=(x_valid, y_valid), on_step=report)
    return index, (time.perf_counter() - start, last[0] if last else float("nan"))


def run_baseline(args: argparse.Namespace, train: Any, valid: Any) -> dict[str, Any]:
    """The same trials, same per-step scoring, in a forked process pool of ``--concurrent``
    workers that already imported everything: what a runner with no overhead would take."""
    import xgboost  # noqa: F401  (imported before the fork, as a warm worker would have it)

    from raymlops.training.models import FitOptions, sample_trials

    _BASELINE.update(
        specs=sample_trials(list(args.models), num_samples=args.trials, seed=args.seed),
        options=FitOptions(
            task="classification",
            n_classes=2,
            threads=max(1, int(args.cpu)),
            max_rounds=args.rounds,
            rounds_per_report=args.rounds_per_report,
        ),
        train=train,
        valid=valid,
    )
    context = multiprocessing.get_context("fork")
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.concurrent, mp_context=context) as pool:
        times = dict(pool.map(_baseline_trial, range(args.trials)))
    wall = time.perf_counter() - started
    _BASELINE.clear()
    durations = [times[i][0] for i in range(args.trials)]
    scores = [times[i][1] for i in range(args.trials)]
    return {"wall_s": wall, "sum_s": sum(durations), "trial_s": durations, "scores": scores}


def run_asha(args: argparse.Namespace, train: Any, valid: Any) -> dict[str, Any]:
    """raymlops's ASHA search next to stock Tune ASHA on the same trials (Ray must be up)."""
    from benchmarks.tune_asha import compare
    from raymlops.training.models import sample_trials

    config = training_config(argparse.Namespace(**{**vars(args), "scheduler": "asha"}))
    specs = sample_trials(list(args.models), num_samples=args.trials, seed=args.seed)
    return compare(config, specs, train, valid, pairs=args.asha_pairs)


def training_config(args: argparse.Namespace) -> Any:
    from raymlops.config import TrainingConfig

    return TrainingConfig.model_validate(
        {
            "task": "classification",
            "metric": "roc_auc",
            "models": list(args.models),
            "search": {
                "num_samples": args.trials,
                "max_concurrent": args.concurrent,
                "scheduler": args.scheduler,
                "seed": args.seed,
                "time_budget_s": None,  # no trial may be cut short by the budget
                "max_boosting_rounds": args.rounds,
                "rounds_per_report": args.rounds_per_report,
            },
            "resources_per_trial": {"cpu": float(args.cpu), "gpu": 0.0},
        }
    )


def summarize(
    result: Any, outer_s: float, ray_start_s: float, slots: int, cpu: dict[str, float]
) -> dict[str, Any]:
    trials = result.trials
    # max_concurrent, unless the cluster has room for fewer trials at once
    parallel = max(1, min(int(result.parallel), slots))
    fit = [t.fit_s for t in trials]
    tune_time = [t.time_s for t in trials]
    ideal = sum(fit) / parallel
    ideal_tune = sum(tune_time) / parallel
    makespan = fifo_makespan(fit, parallel)
    wall = float(result.wall_s)
    return {
        "wall_s": wall,
        "outer_s": outer_s,
        "ray_start_s": ray_start_s,
        "parallel": parallel,
        "max_concurrent": int(result.parallel),
        "driver_cpu_s": cpu["driver"],
        "ray_daemons_cpu_s": cpu["daemons"],
        "trials": len(trials),
        "sum_fit_s": sum(fit),
        "sum_time_s": sum(tune_time),
        "ideal_s": ideal,
        "ideal_tune_s": ideal_tune,
        "fifo_makespan_s": makespan,
        "ratio": wall / ideal if ideal > 0 else float("inf"),
        "ratio_tune": wall / ideal_tune if ideal_tune > 0 else float("inf"),
        "ratio_makespan": wall / makespan if makespan > 0 else float("inf"),
        "overhead_per_trial_s": (wall - ideal) * parallel / max(1, len(trials)),
        "mean_fit_s": float(np.mean(fit)) if fit else 0.0,
        "best": {
            "index": result.best.index,
            "model": result.best.model,
            "score": result.best.score,
        },
        "statuses": {s: sum(t.status == s for t in trials) for s in {t.status for t in trials}},
    }


def trial_rows(result: Any) -> list[dict[str, Any]]:
    return [
        {
            "index": t.index,
            "model": t.model,
            "status": t.status,
            "steps": t.steps,
            "fit_s": t.fit_s,
            "time_s": t.time_s,
            "score": t.score,
            "params": t.params,
            "error": t.error,
        }
        for t in result.trials
    ]


def print_report(
    summary: dict[str, Any], rows: list[dict[str, Any]], goal: float, console: Any
) -> None:
    from rich.table import Table

    table = Table(title="trials", pad_edge=False, box=None)
    for name in ("#", "model", "status", "steps", "fit_s", "Tune time_s", "roc_auc"):
        table.add_column(name, justify="left" if name in ("model", "status") else "right")
    for row in rows:
        table.add_row(
            str(row["index"]),
            row["model"],
            row["status"],
            str(row["steps"]),
            f"{row['fit_s']:.2f}",
            f"{row['time_s']:.2f}",
            f"{row['score']:.4f}",
        )
    console.print(table)
    s = summary
    verdict = "[green]within goal[/green]" if s["ratio"] <= goal else "[red]over goal[/red]"
    p = s["parallel"]
    console.print(
        f"wall (tuner.fit) [bold]{s['wall_s']:.2f}s[/bold]  "
        f"ideal sum(fit_s)/{p} [bold]{s['ideal_s']:.2f}s[/bold]\n"
        f"ratio [bold]{s['ratio']:.3f}x[/bold] (goal <= {goal}x: {verdict})"
    )
    console.print(
        f"with Tune's time_total_s: ideal {s['ideal_tune_s']:.2f}s, "
        f"ratio {s['ratio_tune']:.3f}x\n"
        f"in-order makespan of fit_s on {p}: {s['fifo_makespan_s']:.2f}s, "
        f"ratio {s['ratio_makespan']:.3f}x\n"
        f"wall - ideal {s['wall_s'] - s['ideal_s']:.2f}s, x {p} / {s['trials']} trials = "
        f"{s['overhead_per_trial_s']:.2f}s per trial (mean fit_s {s['mean_fit_s']:.2f}s)\n"
        f"CPU during the search: driver {s['driver_cpu_s']:.1f}s, "
        f"Ray daemons {s['ray_daemons_cpu_s']:.1f}s\n"
        f"run_search() outside {s['outer_s']:.2f}s; Ray start {s['ray_start_s']:.2f}s (not counted)"
    )
    base = s.get("baseline")
    if base:
        console.print(
            f"no-Ray process pool ({p} at a time): wall {base['wall_s']:.2f}s, "
            f"sum {base['sum_s']:.2f}s -> ideal {base['sum_s'] / p:.2f}s\n"
            f"Tune wall / pool wall [bold]{s['wall_s'] / base['wall_s']:.3f}x[/bold]; "
            f"wall / pool ideal {s['wall_s'] / (base['sum_s'] / p):.3f}x"
        )
    asha = s.get("asha")
    if asha:
        console.print(
            f"ASHA ({asha['pairs']} pair(s), median): raymlops {asha['raymlops_wall_s']:.2f}s, "
            f"stock Tune ASHA {asha['stock_wall_s']:.2f}s, ratio [bold]{asha['ratio']:.3f}x[/bold]"
        )
        for name, passed, detail in asha["checks"]:
            console.print(f"  {'passed' if passed else '[red]FAILED[/red]'}: {name}: {detail}")


def plot(summary: dict[str, Any], rows: list[dict[str, Any]], path: Path, goal: float) -> bool:
    """Per-trial bars and wall vs ideal; False when matplotlib cannot be imported."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 1.3]})
    index = np.array([r["index"] for r in rows])
    left.bar(index - 0.2, [r["fit_s"] for r in rows], 0.4, color="#4c72b0", label="fit_s")
    left.bar(
        index + 0.2, [r["time_s"] for r in rows], 0.4, color="#dd8452", label="Tune time_total_s"
    )
    base = summary.get("baseline")
    if base:
        left.scatter(index, base["trial_s"], color="black", marker="_", s=200, label="no-Ray pool")
    left.set_xlabel("trial")
    left.set_ylabel("seconds")
    left.set_xticks(index)
    left.set_title("time per trial")
    left.legend(fontsize=8)
    p = summary["parallel"]
    bars = [
        ("wall", summary["wall_s"], "#c44e52"),
        (f"sum(fit_s)\n/ {p}", summary["ideal_s"], "#4c72b0"),
        (f"sum(Tune)\n/ {p}", summary["ideal_tune_s"], "#dd8452"),
        ("in-order\nmakespan", summary["fifo_makespan_s"], "#55a868"),
    ]
    if base:
        bars.append(("no-Ray\npool wall", base["wall_s"], "#8172b3"))
    names, values, colors = zip(*bars, strict=True)
    drawn = right.bar(names, values, color=colors)
    right.axhline(summary["ideal_s"] * goal, color="black", ls="--", lw=1, label=f"{goal}x ideal")
    for bar, value in zip(drawn, values, strict=True):
        middle = bar.get_x() + bar.get_width() / 2
        right.text(middle, value, f"{value:.1f}", ha="center", va="bottom", fontsize=8)
    right.tick_params(axis="x", labelsize=8)
    right.set_ylim(0, max(max(values), summary["ideal_s"] * goal) * 1.15)
    right.set_title(f"wall / ideal = {summary['ratio']:.2f}x")
    right.legend(fontsize=8, loc="upper right")
    fig.suptitle(
        f"raymlops Tune search: {summary['trials']} trials, {p} at a time "
        f"(wall - ideal = {summary['wall_s'] - summary['ideal_s']:.1f}s)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ray
    import xgboost
    from rich.console import Console

    from raymlops.runtime import ensure_ray
    from raymlops.training.search import run_search

    console = Console()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    train, valid = make_data(args.rows, args.cols, args.seed)
    config = training_config(args)
    console.print(
        f"{args.trials} trials of {', '.join(args.models)} ({args.scheduler}), "
        f"{args.concurrent} at a time x {args.cpu:g} CPU, {args.rounds} rounds, "
        f"data {args.rows}x{args.cols} ({len(train[0])} train / {len(valid[0])} valid)"
    )
    baseline = None
    if args.baseline:  # before Ray starts: the pool forks this process
        console.print("no-Ray baseline: the same trials in a process pool ...")
        baseline = run_baseline(args, train, valid)
    started = time.perf_counter()
    ensure_ray(args.address)
    ray_start_s = time.perf_counter() - started
    try:
        cluster_cpus = float(ray.cluster_resources().get("CPU", 0))
        slots = int(cluster_cpus // args.cpu) if args.cpu > 0 else args.concurrent
        if args.address is not None:  # a cluster that cannot run the cell as asked: exit 2
            from benchmarks.report import require_cores

            require_cores(int(args.concurrent * args.cpu), f"{args.concurrent} trials at a time "
                          f"x {args.cpu:g} CPU", have=cluster_cpus,
                          where=f"the cluster at {args.address} has")  # fmt: skip
        node_ips = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}
        daemons_before, driver_before = ray_daemons_cpu_s(), driver_cpu_s()
        started = time.perf_counter()
        result = run_search(config, train, valid, n_classes=2, verbose=0)
        outer_s = time.perf_counter() - started
        driver = driver_cpu_s() - driver_before
        daemons_after = ray_daemons_cpu_s()
        daemons = sum(v - daemons_before.get(pid, 0.0) for pid, v in daemons_after.items())
        if args.stock_asha:
            console.print("ASHA: raymlops's search and stock Tune ASHA on the same trials ...")
            asha = run_asha(args, train, valid)
    finally:
        ray.shutdown()
    summary = summarize(result, outer_s, ray_start_s, slots, {"driver": driver, "daemons": daemons})
    if summary["parallel"] < summary["max_concurrent"]:
        console.print(
            f"[yellow]Ray has {cluster_cpus:g} CPUs: only {summary['parallel']} trials of "
            f"{args.cpu:g} CPU fit at once, not max_concurrent={args.concurrent}[/yellow]"
        )
    if baseline is not None:
        summary["baseline"] = baseline
    if args.stock_asha:
        summary["asha"] = asha
    # where the trials ran (per node on a cluster): node id -> trials, and each node's address
    per_node: dict[str, int] = {}
    for trial in result.trials:
        per_node[trial.node_id or "unknown"] = per_node.get(trial.node_id or "unknown", 0) + 1
    summary.update(trials_per_node=per_node, node_ips=node_ips, address=args.address)
    rows = trial_rows(result)
    print_report(summary, rows, args.goal, console)

    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "tune_overhead",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": {
            "python": platform.python_version(),
            "ray": ray.__version__,
            "xgboost": xgboost.__version__,
            "cpu_count": os.cpu_count(),
            "ray_cpus": cluster_cpus,
            "load_average_before": load_before,  # other work on the machine skews the numbers
            "platform": platform.platform(),
        },
        "summary": summary,
        "trials": rows,
    }
    json_path = args.out / "tune_overhead.json"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    console.print(f"wrote {json_path}")
    png_path = args.out / "tune_overhead.png"
    if args.no_plot:
        console.print("skipped the plot (--no-plot)")
    elif plot(summary, rows, png_path, args.goal):
        console.print(f"wrote {png_path}")
    else:
        console.print("skipped the plot: matplotlib is not installed (pip install matplotlib)")
    return 0 if summary["ratio"] <= args.goal else 1


if __name__ == "__main__":
    from benchmarks.report import UsageError

    try:
        sys.exit(main())
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
