"""The tune suite's second baseline: Tune with its stock ASHA on the same trials as raymlops.

The baseline is the Tune script a user would write instead of raymlops: ``tune.Tuner`` over
the same sampled XGBoost parameters and seeds (a grid of them, so both sides run the same trials
in the same order), a function trainable with plain ``xgboost.train`` that reports
scikit-learn's validation ROC AUC every ``rounds_per_report`` rounds, and
``ASHAScheduler(max_t, grace_period, reduction_factor)`` with raymlops's grace period (3 reports)
and reduction factor (3); 1 CPU per trial, ``max_concurrent`` at a time, Tune's defaults for
the rest (loggers on, no actor reuse). raymlops is ``run_search`` with ``scheduler: asha``: the
same rule with its rung decisions taken in trial order (:mod:`raymlops.training.rungs`). Both
run on the same local Ray, in alternated pairs.

Stock ASHA decides by arrival order, so the two may stop different trials; what both must agree
on (:func:`checks`): every trial's score at a step both reached (the same model, so within
1e-9), and the best trial's final ROC AUC within :data:`BEST_TOLERANCE`.
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "BEST_TOLERANCE",
    "GRACE_REPORTS",
    "REDUCTION_FACTOR",
    "STEP_TOLERANCE",
    "AshaRun",
    "checks",
    "compare",
    "stock_asha",
]

STEP_TOLERANCE = 1e-9  # the same model at the same step: the same score
#: the best trial's final validation ROC AUC, raymlops vs stock; the trials each side keeps may
#: differ (stock ASHA cuts by arrival order), so the best of them may be a different trial
BEST_TOLERANCE = 0.01
GRACE_REPORTS = 3  # raymlops's grace period (reports) and reduction factor, given to both
REDUCTION_FACTOR = 3


@dataclass(frozen=True)
class AshaRun:
    """One side's search: its wall time (``tuner.fit()``) and each trial's reports."""

    side: str  # "raymlops" | "stock"
    wall_s: float
    scores: dict[int, dict[int, float]]  # trial index -> {step: validation ROC AUC}
    final: dict[int, tuple[int, float]]  # trial index -> (step it ended at, its score there)
    best: float
    best_index: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return sum(step for step, _ in self.final.values())


def _stock_trainable(config: dict[str, Any], data: tuple, rounds: int, every: int) -> None:
    """What a user writes: plain xgboost, a callback that reports the validation ROC AUC."""
    import xgboost as xgb
    from ray import tune
    from sklearn.metrics import roc_auc_score

    x, y, x_valid, y_valid = data
    dtrain = xgb.DMatrix(x, label=y, nthread=1)
    dvalid = xgb.DMatrix(x_valid, nthread=1)

    class Report(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):  # type: ignore[no-untyped-def]
            if (epoch + 1) % every == 0:
                proba = model.predict(dvalid, iteration_range=(0, epoch + 1))
                tune.report({"roc_auc": float(roc_auc_score(y_valid, proba)),
                             "step": (epoch + 1) // every})  # fmt: skip
            return False

    trial = config["trial"]
    params = {"tree_method": "hist", "objective": "binary:logistic", "nthread": 1,
              "seed": trial["seed"], **trial["params"]}  # fmt: skip
    xgb.train(params, dtrain, num_boost_round=rounds, callbacks=[Report()])


def stock_asha(
    specs: list[Any], train: tuple, valid: tuple, *, rounds: int, every: int, concurrent: int
) -> AshaRun:
    """The same trials through ``tune.Tuner`` with Tune's ``ASHAScheduler`` (Ray must be up)."""
    from ray import cloudpickle, tune
    from ray.tune.schedulers import ASHAScheduler

    # the trainable travels by value, as a user's script's would: a cluster's workers need not
    # have this checkout's benchmarks package
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    max_t = rounds // every
    trainable = tune.with_resources(
        tune.with_parameters(_stock_trainable, data=(*train, *valid), rounds=rounds, every=every),
        {"cpu": 1},
    )
    grid = [{"index": s.trial_index, "params": s.params, "seed": s.seed} for s in specs]
    with tempfile.TemporaryDirectory(prefix="raymlops-bench-asha-") as storage:
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(grid)},
            tune_config=tune.TuneConfig(
                metric="roc_auc", mode="max", max_concurrent_trials=concurrent,
                scheduler=ASHAScheduler(max_t=max_t, grace_period=min(GRACE_REPORTS, max_t),
                                        reduction_factor=REDUCTION_FACTOR),
            ),
            run_config=tune.RunConfig(storage_path=storage, verbose=0),
        )  # fmt: skip
        started = time.perf_counter()
        results = tuner.fit()
        wall = time.perf_counter() - started
        scores: dict[int, dict[int, float]] = {}
        for result in results:
            if result.error is not None or "step" not in (result.metrics or {}):
                continue  # a trial that failed before its first report: "on one side only"
            index = result.config["trial"]["index"]
            frame = result.metrics_dataframe
            if frame is not None and "step" in frame:
                scores[index] = dict(zip(frame["step"].astype(int), frame["roc_auc"], strict=True))
            else:  # no per-report log: the last report only
                scores[index] = {int(result.metrics["step"]): float(result.metrics["roc_auc"])}
    if not scores:
        error = next((str(r.error).splitlines()[-1] for r in results if r.error), "no reports")
        raise RuntimeError(f"stock Tune ASHA: no trial reported a score ({error})")
    final = {i: max(s.items()) for i, s in scores.items()}
    best_index = max(final, key=lambda i: (final[i][1], -i))
    return AshaRun("stock", wall, scores, final, final[best_index][1], best_index)


def _ours(config: Any, train: tuple, valid: tuple) -> AshaRun:
    from raymlops.training.search import run_search

    result = run_search(config, train, valid, n_classes=2, verbose=0)
    final = {t.index: (t.steps, t.score) for t in result.trials}
    scores = {i: {step: value} for i, (step, value) in final.items()}
    return AshaRun("raymlops", float(result.wall_s), scores, final, result.best.score,
                   result.best.index)  # fmt: skip


def checks(ours: AshaRun, stock: AshaRun) -> list[tuple[str, bool, str]]:
    """(name, passed, detail) of the two checks; pure, so a unit test can feed it."""
    compared, bad = 0, []
    for index, (step, value) in ours.final.items():
        theirs = stock.scores.get(index, {}).get(step)
        if theirs is None:  # stock cut this trial before raymlops's last step
            continue
        compared += 1
        if not math.isclose(value, theirs, abs_tol=STEP_TOLERANCE):
            bad.append(f"trial {index} step {step}: {value:.6f} vs {theirs:.6f}")
    missing = sorted(set(ours.final) ^ set(stock.final))
    same_steps = [
        (
            "tune asha: equal scores at the same step",
            compared > 0 and not bad and not missing,
            f"{compared} of {len(ours.final)} trials compared at raymlops's last step "
            f"(tolerance {STEP_TOLERANCE:g})"
            + (f"; disagree: {bad}" if bad else "")
            + (f"; trials on one side only: {missing}" if missing else ""),
        )
    ]
    gap = abs(ours.best - stock.best)
    return same_steps + [
        (
            "tune asha: best trial's ROC AUC",
            gap <= BEST_TOLERANCE,
            f"raymlops {ours.best:.4f} (trial {ours.best_index}) vs stock ASHA {stock.best:.4f} "
            f"(trial {stock.best_index}): |diff| {gap:.4f} (tolerance {BEST_TOLERANCE})",
        )
    ]


def compare(
    config: Any, specs: list[Any], train: tuple, valid: tuple, *, pairs: int
) -> dict[str, Any]:
    """``pairs`` alternated pairs (stock first in even pairs) on the running Ray: the median
    walls, every pair's runs and checks. ``config`` is raymlops's TrainingConfig (asha)."""
    search = config.search
    runs: list[tuple[AshaRun, AshaRun]] = []
    for pair in range(pairs):
        order = ("stock", "raymlops") if pair % 2 == 0 else ("raymlops", "stock")
        done: dict[str, AshaRun] = {}
        for side in order:
            if side == "stock":
                done[side] = stock_asha(specs, train, valid, rounds=search.max_boosting_rounds,
                                        every=search.rounds_per_report,
                                        concurrent=search.max_concurrent)  # fmt: skip
            else:
                done[side] = _ours(config, train, valid)
        runs.append((done["raymlops"], done["stock"]))
    # a check passes when it passed in every pair; its detail is the first pair's, and the
    # detail of each later pair where it failed
    per_pair = [checks(ours, stock) for ours, stock in runs]
    merged = []
    for i, (name, _, detail) in enumerate(per_pair[0]):
        failed = [(p, c[i][2]) for p, c in enumerate(per_pair) if not c[i][1]]
        later = "".join(f"; pair {p + 1}: {d}" for p, d in failed if p > 0)
        merged.append((name, not failed, detail + later))
    return {
        "pairs": pairs,
        "raymlops_wall_s": statistics.median(o.wall_s for o, _ in runs),
        "stock_wall_s": statistics.median(s.wall_s for _, s in runs),
        "ratio": statistics.median(o.wall_s / s.wall_s for o, s in runs),
        "max_steps": search.max_boosting_rounds // search.rounds_per_report,
        "checks": merged,
        "runs": [{"raymlops": _plain(o), "stock": _plain(s)} for o, s in runs],
    }


def _plain(run: AshaRun) -> dict[str, Any]:
    """JSON-ready: integer keys as they are, numpy floats as floats."""
    out = asdict(run)
    out["scores"] = {i: {k: float(v) for k, v in s.items()} for i, s in run.scores.items()}
    out["final"] = {i: [int(k), float(v)] for i, (k, v) in run.final.items()}
    out["best"], out["steps"] = float(np.float64(run.best)), run.steps
    return out
