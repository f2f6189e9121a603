"""Example projects: generated data and a config a new user can edit (``raymlops init``).

The churn example is generated (seeded), with a learnable signal, a category column, nulls,
an id and a timestamp, so a first run shows every part of the schema. ``drift=True`` shifts the
covariates and the concept, for the monitoring demo.

Example:
    >>> frame = make_churn(100, seed=0)
    >>> sorted(frame.columns)[:3]
    ['churned', 'customer_id', 'monthly_spend']
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["EXAMPLES", "make_churn", "write_example"]

EXAMPLES = ("churn", "breast_cancer")

CHURN_CONFIG = """\
# raymlops project: one model. Every key is documented in the README ("The project config").
name: churn
storage: ./.raymlops              # a folder here, or s3://bucket/prefix on a cluster

data:
  source: ./data/train.csv        # CSV or Parquet: a path, a glob, a URI, or sklearn:<name>
  target: churned
  columns:                        # the one schema: validation, HTTP API, drift, features
    customer_id:   {type: string, role: id}
    signup_date:   {type: datetime, role: timestamp}
    plan:          {type: category, categories: [basic, pro, enterprise]}
    region:        {type: category, nullable: true}        # categories learned from the data
    tenure_months: {type: int, min: 0, max: 600}
    monthly_spend: {type: float, min: 0, nullable: true}
    support_calls: {type: int, min: 0, max: 100}
    autopay:       {type: bool}
    churned:       {type: category, categories: ["no", "yes"]}
  split: {test_fraction: 0.2, seed: 42}

training:
  task: classification
  metric: roc_auc
  models: [xgboost, random_forest, logistic_regression]
  search: {num_samples: 8, max_concurrent: 2, scheduler: asha, seed: 42, time_budget_s: 300,
           max_boosting_rounds: 100}
  resources_per_trial: {cpu: 1, gpu: 0}

gate: {min_improvement: 0.0, max_metric_drop: 0.05}

serving:
  host: 127.0.0.1                 # loopback only until an API key is set (api_key_env)
  port: 8000
  autoscaling: {min_replicas: 1, max_replicas: 2, target_ongoing_requests: 8}

monitoring:
  window_rows: 500                # served rows per drift check (Evidently's tests per column)
  drift_share: 0.5                # a window drifts when this share of columns drifts
  consecutive_windows: 2          # ... for this many windows in a row: then retrain
  cooldown_s: 600                 # at most one retrain per 10 minutes
  retrain_source: ./data/fresh/*.csv   # labelled data that arrived after deployment
"""


def make_churn(rows: int, *, seed: int = 0, drift: bool = False) -> pd.DataFrame:
    """A churn dataset: who leaves depends on tenure, plan, support calls and autopay."""
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "pro", "enterprise"], rows, p=[0.6, 0.3, 0.1])
    region = rng.choice(["north", "south", "east", "west"], rows).astype(object)
    region[rng.random(rows) < 0.05] = None
    tenure = rng.gamma(2.0, 12.0 if not drift else 5.0, rows).astype(int).clip(0, 600)
    base_spend = {"basic": 20.0, "pro": 60.0, "enterprise": 200.0}
    spend = np.array([base_spend[p] for p in plan]) * rng.lognormal(0, 0.3, rows)
    spend = spend * (1.6 if drift else 1.0)
    spend[rng.random(rows) < 0.08] = np.nan
    calls = rng.poisson(1.5 if not drift else 4.0, rows).clip(0, 100)
    autopay = rng.random(rows) < 0.55
    logit = (
        -0.8
        - 0.05 * tenure
        + 0.45 * calls
        - 0.9 * autopay
        + np.where(plan == "basic", 0.6, np.where(plan == "pro", 0.0, -0.8))
    )
    if drift:  # the concept changes too: autopay stops protecting, calls matter less
        logit = logit + 0.9 * autopay - 0.3 * calls + 0.8
    churned = np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "yes", "no")
    start = np.datetime64("2022-01-01")
    signup = start + rng.integers(0, 3 * 365, rows).astype("timedelta64[D]")
    return pd.DataFrame(
        {
            "customer_id": [f"c{seed:03d}-{i:06d}" for i in range(rows)],
            "signup_date": pd.to_datetime(signup).strftime("%Y-%m-%d"),
            "plan": plan,
            "region": region,
            "tenure_months": tenure,
            "monthly_spend": np.round(spend, 2),
            "support_calls": calls,
            "autopay": autopay,
            "churned": churned,
        }
    )


def _breast_cancer_config() -> str:
    from raymlops.data.sources import load_sklearn_frame

    frame = load_sklearn_frame("sklearn:breast_cancer")
    lines = [
        "# raymlops project on scikit-learn's bundled breast cancer data (no file needed).",
        "name: breast-cancer",
        "storage: ./.raymlops",
        "data:",
        "  source: sklearn:breast_cancer",
        "  target: target",
        "  columns:",
    ]
    for column in frame.columns:
        if column == "target":
            lines.append("    target: {type: int, min: 0, max: 1}")
        else:
            lines.append(f"    {column}: {{type: float, min: 0}}")
    lines += [
        "  split: {test_fraction: 0.2, seed: 42}",
        "training:",
        "  task: classification",
        "  metric: roc_auc",
        "  search: {num_samples: 8, max_concurrent: 2, seed: 42, time_budget_s: 300,",
        "           max_boosting_rounds: 100}",
    ]
    return "\n".join(lines) + "\n"


def write_example(directory: str | Path, example: str = "churn", *, rows: int = 5000) -> Path:
    """Write an example project (config, and data where it is not bundled) into ``directory``.

    Returns the path of the config file.
    """
    if example not in EXAMPLES:
        raise ValueError(f"unknown example {example!r}; choose one of {', '.join(EXAMPLES)}")
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    config = root / "raymlops.yaml"
    if example == "churn":
        (root / "data").mkdir(exist_ok=True)
        make_churn(rows, seed=0).to_csv(root / "data" / "train.csv", index=False)
        config.write_text(CHURN_CONFIG, encoding="utf-8")
    else:
        config.write_text(_breast_cancer_config(), encoding="utf-8")
    return config
