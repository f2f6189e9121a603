"""Shared fixtures. Tier markers come from the folder: tests/unit, tests/integration, tests/e2e."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raymlops.examples import make_churn

_TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        tiers = [t for t in _TIERS if t in parts]
        if not tiers:
            raise pytest.UsageError(f"{item.nodeid} is outside tests/unit|integration|e2e")
        item.add_marker(getattr(pytest.mark, tiers[0]))


CHURN_COLUMNS = """\
    customer_id:   {type: string, role: id}
    signup_date:   {type: datetime, role: timestamp}
    plan:          {type: category, categories: [basic, pro, enterprise]}
    region:        {type: category, nullable: true}
    tenure_months: {type: int, min: 0, max: 600}
    monthly_spend: {type: float, min: 0, nullable: true}
    support_calls: {type: int, min: 0, max: 100}
    autopay:       {type: bool}
    churned:       {type: category, categories: ["no", "yes"]}
"""


def write_project(
    root: Path,
    *,
    source: str = "./data/train.csv",
    columns: str = CHURN_COLUMNS,
    target: str = "churned",
    task: str = "classification",
    search: str = "{num_samples: 4, max_concurrent: 2, max_boosting_rounds: 30, time_budget_s: 120}",
    models: str = "[xgboost, logistic_regression]",
    extra: str = "",
) -> Path:
    """Write a project config into ``root`` and return its path."""
    root.mkdir(parents=True, exist_ok=True)
    text = f"""\
name: churn
storage: ./store
data:
  source: {source}
  target: {target}
  columns:
{textwrap.indent(textwrap.dedent(columns), "    ")}
training:
  task: {task}
  models: {models}
  search: {search}
{extra}"""
    path = root / "raymlops.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def churn_frame() -> pd.DataFrame:
    return make_churn(600, seed=1)


@pytest.fixture
def churn_project(tmp_path: Path) -> Path:
    """A project with 3000 rows of churn data as CSV; returns the config path."""
    (tmp_path / "data").mkdir()
    make_churn(3000, seed=3).to_csv(tmp_path / "data" / "train.csv", index=False)
    return write_project(tmp_path)


def xor_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """A target only trees can learn (an interaction), so linear models are clearly weaker."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=rows), rng.normal(size=rows)
    noise = rng.normal(size=rows)
    label = np.where((a * b > 0) ^ (rng.random(rows) < 0.05), "pos", "neg")
    return pd.DataFrame({"a": a, "b": b, "noise": noise, "label": label})


XOR_COLUMNS = """\
    a:     {type: float}
    b:     {type: float}
    noise: {type: float}
"""
