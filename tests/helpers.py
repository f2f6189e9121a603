"""Test helpers that need no Ray: a pandas oracle for feature statistics, and registering a
real (small) model version in-process, so registry and loading tests run in milliseconds."""

from __future__ import annotations

import numpy as np
import pandas as pd

from raymlops.config import ColumnSpec
from raymlops.data.validation import validate_frame
from raymlops.features.pipeline import ColumnStats, FeaturePipeline, numeric_view
from raymlops.predictor import Predictor, load_predictor
from raymlops.registry import Registry
from raymlops.registry.bundle import VersionBundle
from raymlops.schema import Schema
from raymlops.storage import Storage
from raymlops.training.metrics import compute_metrics
from raymlops.training.models import FitOptions, TrialSpec, dump_model, fit_model, predict_scores

#: the churn example's schema (ids, datetimes, nullable categories and floats, ints, bools)
CHURN_SCHEMA = Schema.from_columns(
    {
        "customer_id": ColumnSpec(type="string", role="id"),
        "signup_date": ColumnSpec(type="datetime", role="timestamp"),
        "plan": ColumnSpec(type="category", categories=["basic", "pro", "enterprise"]),
        "region": ColumnSpec(type="category", nullable=True),
        "tenure_months": ColumnSpec(type="int", min=0, max=600),
        "monthly_spend": ColumnSpec(type="float", min=0, nullable=True),
        "support_calls": ColumnSpec(type="int", min=0, max=100),
        "autopay": ColumnSpec(type="bool"),
    },
    target="churned",
    task="classification",
)


def pandas_stats(frame: pd.DataFrame, schema: Schema) -> dict[str, ColumnStats]:
    """What the Ray Data aggregates must compute, in plain pandas."""
    view = numeric_view(frame, schema)
    out = {}
    for name in schema.feature_columns:
        column = view[name]
        if schema.columns[name].type == "category":
            counts = column.dropna().value_counts()
            out[name] = ColumnStats(
                int(column.notna().sum()),
                int(column.isna().sum()),
                frequencies={str(k): int(v) for k, v in counts.items()},
            )
        else:
            out[name] = ColumnStats(
                int(column.notna().sum()),
                int(column.isna().sum()),
                float(column.mean()),
                float(column.std(ddof=0)),
                float(column.min()),
                float(column.max()),
            )
    return out


def assert_stats_match(stats: dict[str, ColumnStats], frame: pd.DataFrame, schema: Schema) -> None:
    """``stats`` (fitted on Ray) equal :func:`pandas_stats` of ``frame``, column by column."""
    import pytest

    for name, expected in pandas_stats(frame, schema).items():
        got = stats[name]
        assert (got.count, got.missing) == (expected.count, expected.missing), name
        if expected.frequencies is not None:
            assert got.frequencies == expected.frequencies, name
        else:
            assert got.mean == pytest.approx(expected.mean, rel=1e-9), name
            assert got.std == pytest.approx(expected.std, rel=1e-9, abs=1e-12), name
            assert (got.min, got.max) == (expected.min, expected.max), name


def register_model(
    registry: Registry,
    raw: pd.DataFrame,
    schema: Schema,
    *,
    model: str = "logistic_regression",
    params: dict | None = None,
    seed: int = 0,
    max_rounds: int = FitOptions.max_rounds,
) -> str:
    """Fit ``model`` on ``raw`` without Ray and register it like the pipeline does."""
    typed, report = validate_frame(raw, schema)
    assert report.ok, report.render()
    classes = sorted(typed[schema.target].dropna().unique().tolist())
    pipeline = FeaturePipeline.from_stats(schema, pandas_stats(typed, schema), classes)
    x = pipeline.transform(typed).to_numpy()
    y = pipeline.target.encode(typed[schema.target])
    spec = TrialSpec(0, model, params or {"C": 1.0}, seed)
    options = FitOptions(task=schema.task, n_classes=len(classes), max_rounds=max_rounds)
    fitted, _ = fit_model(spec, x, y, options)
    filename, data = dump_model(fitted, model)
    metrics = compute_metrics(
        schema.task,
        y,
        predict_scores(fitted, model, schema.task, x, len(classes)),
        n_classes=len(classes),
    )
    bundle = VersionBundle(
        model_kind=model,
        model_file=filename,
        model=data,
        features_json=pipeline.to_json(),
        schema=schema.to_dict(),
        reference=typed,
        metrics={"metric": "roc_auc", "holdout": metrics},
        gate={},
        lineage={},
    )
    return bundle.register(registry, metric="roc_auc", score=metrics["roc_auc"], gate_passed=True)


def mixed_frame(rows: int, seed: int) -> pd.DataFrame:
    """Churn-like rows with every column type, nulls where the type allows them, and a target
    ``churned`` a model can learn (the numeric columns drive it)."""
    rng = np.random.default_rng(seed)
    spend = rng.uniform(0, 1000, rows)
    spend[rng.random(rows) < 0.1] = np.nan
    visits = pd.array(rng.integers(0, 50, rows), dtype="Int64")
    visits[rng.random(rows) < 0.1] = pd.NA
    signup = pd.Series(
        pd.to_datetime("2020-01-01", utc=True)
        + pd.to_timedelta(rng.integers(0, 2000, rows), unit="D")
    )
    signup[rng.random(rows) < 0.1] = pd.NaT
    tenure = rng.integers(0, 600, rows)
    return pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(rows)],
            "seen_at": signup.fillna(pd.Timestamp("2021-01-01", tz="UTC")),
            "spend": spend,
            "score": rng.normal(0, 3, rows),
            "tenure": tenure,
            "visits": visits,
            "autopay": rng.random(rows) < 0.5,
            "promo": pd.array(rng.random(rows) < 0.3, dtype="boolean"),
            "plan": rng.choice(["basic", "pro", "enterprise"], rows),
            "region": rng.choice(["north", "south", None], rows),
            "channel": rng.choice(["web", "shop"], rows),
            "signup": signup,
            "churned": np.where(tenure + rng.normal(0, 100, rows) > 300, "no", "yes"),
        }
    )


def registered_predictor(root: str, schema: Schema, model: str) -> Predictor:
    """``model`` (logistic_regression or xgboost) fitted on 300 :func:`mixed_frame` rows of
    ``schema``'s columns, registered as v1 of "churn" under ``root`` and loaded."""
    registry = Registry(Storage.from_uri(root), "churn")
    params = {"C": 1.0} if model == "logistic_regression" else {"max_depth": 3}
    frame = mixed_frame(300, 1)[schema.names]
    register_model(registry, frame, schema, model=model, params=params, max_rounds=20)
    return load_predictor(registry, "v1")


def random_rows(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    return pd.DataFrame(
        {"x": x, "y": np.where(x + rng.normal(scale=0.5, size=rows) > 0, "pos", "neg")}
    )


def promote_series(root: str, versions: list[str], delay: float) -> None:
    """Promote each version in turn (run in a child process), slowing every storage write so
    that promoters without a lock would interleave their read-modify-writes."""
    import os
    import time

    from raymlops.storage import Storage

    original = Storage.write_bytes

    def slow(self: Storage, relpath: str, data: bytes) -> None:
        time.sleep(delay)
        original(self, relpath, data)

    Storage.write_bytes = slow  # type: ignore[method-assign]
    # the lock is under test here; loading each model in a child (the probe) is tested elsewhere
    registry = Registry(Storage.from_uri(root), "demo", probe=None)
    for version in versions:
        registry.promote(version, reason=f"pid {os.getpid()}")


def wait_for_condition(
    condition,  # type: ignore[no-untyped-def]
    *,
    timeout_s: float = 30.0,
    interval_s: float = 0.1,
    message: str = "condition",
):  # type: ignore[no-untyped-def]
    """Poll ``condition()`` until it returns something truthy, and return that value.

    The one way tests wait for something to happen (as Ray's own tests do): never sleep and
    hope. An exception raised by ``condition`` counts as "not yet"; on timeout the last value
    or exception is part of the AssertionError.

    Example:
        >>> wait_for_condition(lambda: client.get("/readyz").status_code == 200)  # doctest: +SKIP
    """
    import time

    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            value = condition()
        except Exception as exc:  # not ready yet: keep the error for the timeout message
            value, last = None, exc
        else:
            last = value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} not met within {timeout_s}s (last: {last!r})")
        time.sleep(interval_s)
