"""The drift engine: verdicts equal Evidently 0.7's DataDriftPreset, edge cases, reports on disk.

No Ray here: ``compute_drift`` is pure; ``parallel_drift`` is covered in tests/integration.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raymlops.config import ColumnSpec
from raymlops.monitoring.drift import (
    CHI2,
    DRIFT_METHODS,
    EMPTY_CURRENT,
    JENSEN_SHANNON,
    KS,
    WASSERSTEIN,
    Z_TEST,
    ColumnDrift,
    DriftResult,
    ReferenceProfile,
    compute_drift,
)
from raymlops.monitoring.reports import (
    add_to_workspace,
    evidently_report,
    evidently_verdicts,
    save_report,
)
from raymlops.schema import Schema
from raymlops.storage import Storage

DRIFTED = {"shifted", "few_shifted", "plan", "flag"}  # what `known_drift` changes


def known_drift(rows: int, seed: int, *, drift: bool) -> pd.DataFrame:
    """Numeric, few-valued numeric, categorical and binary columns; four of them drift."""
    rng = np.random.default_rng(seed)
    shift = 1.0 if drift else 0.0
    plan_p = [0.2, 0.3, 0.5] if drift else [0.5, 0.3, 0.2]
    return pd.DataFrame(
        {
            "shifted": rng.normal(shift, 1.0, rows),
            "steady": rng.normal(0.0, 1.0, rows),
            "few_shifted": rng.integers(0, 3 if drift else 2, rows).astype(float),
            "count": rng.poisson(3.0, rows),
            "plan": rng.choice(["basic", "pro", "enterprise"], rows, p=plan_p),
            "region": rng.choice(["north", "south", "east", "west"], rows),
            "flag": rng.random(rows) < (0.8 if drift else 0.5),
            "label": rng.choice(["no", "yes"], rows),
        }
    )


def known_schema() -> Schema:
    specs = {
        "shifted": ColumnSpec(type="float"),
        "steady": ColumnSpec(type="float"),
        "few_shifted": ColumnSpec(type="float"),
        "count": ColumnSpec(type="int"),
        "plan": ColumnSpec(type="category"),
        "region": ColumnSpec(type="category"),
        "flag": ColumnSpec(type="bool"),
    }
    return Schema.from_columns(specs, target="label", task="classification")


def assert_same_as_evidently(reference: pd.DataFrame, current: pd.DataFrame, schema: Schema) -> DriftResult:
    ours = compute_drift(ReferenceProfile.build(reference, schema), current, drift_share=0.5)
    snapshot, _ = evidently_report(reference, current, schema, drift_share=0.5)
    theirs = evidently_verdicts(snapshot)
    assert set(theirs) == {c.column for c in ours.columns}, "both should check the same columns"
    for column in ours.columns:
        other = theirs[column.column]
        assert (column.method, column.drifted) == (other.method, other.drifted), (
            f"{column.column}: ours {column}, Evidently {other}"
        )
        assert column.score == pytest.approx(other.score, rel=1e-9, abs=1e-12), column.column
    return ours


@pytest.mark.parametrize(
    ("reference_rows", "current_rows", "methods"),
    [
        # > 1000 reference rows: distances (Wasserstein for many values, Jensen-Shannon else)
        (3000, 4000, {"shifted": WASSERSTEIN, "few_shifted": JENSEN_SHANNON, "plan": JENSEN_SHANNON}),
        # <= 1000: p-values (K-S; chi-square for 3-5 values; Z-test for binary ones)
        (800, 3000, {"shifted": KS, "few_shifted": CHI2, "plan": CHI2, "flag": Z_TEST}),
        # a window over 10,000 rows: K-S through Smirnov's asymptotic formula, as scipy does
        (800, 12_000, {"shifted": KS, "count": KS}),
    ],
)
def test_verdicts_equal_evidently_on_known_drift(
    reference_rows: int, current_rows: int, methods: dict[str, str]
) -> None:
    """Given four drifted columns, Evidently's default method is chosen and its verdict matched."""
    reference = known_drift(reference_rows, seed=0, drift=False)
    current = known_drift(current_rows, seed=1, drift=True)

    result = assert_same_as_evidently(reference, current, known_schema())

    assert set(result.drifted_columns) >= DRIFTED, f"drift should be found in {DRIFTED}"
    for column, method in methods.items():
        assert result.column(column).method == method


@pytest.mark.parametrize("reference_rows", [3000, 600])
def test_no_drift_on_the_same_distribution(reference_rows: int) -> None:
    """Given windows from the reference's distribution, no dataset drift, as in Evidently."""
    schema = known_schema()
    reference = known_drift(reference_rows, seed=0, drift=False)
    current = known_drift(2000, seed=5, drift=False)

    result = assert_same_as_evidently(reference, current, schema)

    assert not result.dataset_drift, result.to_dict()
    assert result.share < 0.5


@pytest.mark.parametrize("reference_rows", [3000, 700])
def test_edge_cases_equal_evidently(reference_rows: int) -> None:
    """A constant column, a new category, nulls and infinities, a few-valued column that
    gains values (which switches the test): all as Evidently decides them."""
    rng = np.random.default_rng(7)
    n = 4000
    reference = pd.DataFrame(
        {
            "constant": np.full(reference_rows, 2.0),
            "few": rng.integers(0, 3, reference_rows).astype(float),
            "gappy": np.where(rng.random(reference_rows) < 0.2, np.nan, rng.normal(size=reference_rows)),
            "binary": rng.choice(["a", "b"], reference_rows),
            "same": ["x"] * reference_rows,
        }
    )
    current = pd.DataFrame(
        {
            "constant": np.full(n, 3.0),
            "few": rng.normal(size=n),  # many values now: Wasserstein / K-S instead
            "gappy": np.where(rng.random(n) < 0.1, np.inf, rng.normal(size=n)),
            "binary": rng.choice(["a", "b", "unseen"], n, p=[0.49, 0.49, 0.02]),
            "same": ["x"] * n,
        }
    )
    specs = {
        "constant": ColumnSpec(type="float"),
        "few": ColumnSpec(type="float"),
        "gappy": ColumnSpec(type="float", nullable=True),
        "binary": ColumnSpec(type="category", nullable=True),
        "same": ColumnSpec(type="category"),
    }
    schema = Schema.from_columns(specs, target="label", task="classification")

    result = assert_same_as_evidently(reference, current, schema)

    assert {"constant", "few"} <= set(result.drifted_columns)
    assert not result.column("same").drifted


def test_all_null_current_column_counts_as_drifted() -> None:
    """Evidently raises on a column with no values; the monitor should not crash on one, and a
    feature that stops arriving is a change, so it counts as drifted."""
    schema = known_schema()
    reference = known_drift(2000, seed=0, drift=False)
    current = known_drift(500, seed=1, drift=False)
    current["steady"] = np.nan
    current["region"] = None

    result = compute_drift(ReferenceProfile.build(reference, schema), current, drift_share=0.5)

    for column in ("steady", "region"):
        verdict = result.column(column)
        assert verdict.method == EMPTY_CURRENT
        assert verdict.drifted
        assert math.isnan(verdict.score)


def test_all_null_reference_column_is_skipped_and_named() -> None:
    schema = known_schema()
    reference = known_drift(2000, seed=0, drift=False)
    reference["steady"] = np.nan

    profile = ReferenceProfile.build(reference, schema)

    assert "steady" not in profile.columns
    assert "reference" in profile.skipped["steady"]
    with pytest.raises(ValueError, match="'steady'"):
        compute_drift(profile, known_drift(100, seed=1, drift=False), drift_share=0.5, columns=["steady"])


def test_target_is_checked_only_when_the_window_has_labels() -> None:
    schema = known_schema()
    profile = ReferenceProfile.build(known_drift(2000, seed=0, drift=False), schema)
    window = known_drift(500, seed=1, drift=False)

    with_labels = compute_drift(profile, window, drift_share=0.5)
    without = compute_drift(profile, window.drop(columns=["label"]), drift_share=0.5)

    assert profile.target == "label"
    assert "label" in {c.column for c in with_labels.columns}
    assert "label" not in {c.column for c in without.columns}


def test_errors_name_the_column() -> None:
    schema = known_schema()
    profile = ReferenceProfile.build(known_drift(2000, seed=0, drift=False), schema)
    window = known_drift(100, seed=1, drift=False)

    with pytest.raises(ValueError, match="'steady' is missing"):
        compute_drift(profile, window.drop(columns=["steady"]), drift_share=0.5)
    window["count"] = "many"
    with pytest.raises(ValueError, match="'count'.*numbers"):
        compute_drift(profile, window, drift_share=0.5)
    with pytest.raises(ValueError, match="'nope'"):
        ReferenceProfile.build(window, schema, columns=["nope"])


def test_drift_result_round_trips_through_json() -> None:
    result = DriftResult(
        columns=(
            ColumnDrift("a", "num", WASSERSTEIN, 0.4, 0.1, True),
            ColumnDrift("b", "cat", JENSEN_SHANNON, 0.01, 0.1, False),
            ColumnDrift("c", "num", EMPTY_CURRENT, float("nan"), 0.0, True),
        ),
        rows=10,
        reference_rows=20,
        drift_share=0.5,
    )

    payload = json.loads(json.dumps(result.to_dict()))  # strict JSON: no NaN
    again = DriftResult.from_dict(payload)

    assert payload["dataset_drift"] is True
    assert payload["drifted_columns"] == ["a", "c"]
    assert again.to_dict() == result.to_dict()
    assert again.share == pytest.approx(2 / 3)


def test_dataset_drift_follows_evidently_share_rule() -> None:
    """share >= drift_share drifts (Evidently's rule); no columns never drift."""
    cols = tuple(ColumnDrift(str(i), "num", KS, 0.5, 0.05, i < 2) for i in range(4))
    assert DriftResult(cols, 1, 1, drift_share=0.5).dataset_drift
    assert not DriftResult(cols, 1, 1, drift_share=0.51).dataset_drift
    assert not DriftResult((), 1, 1, drift_share=0.5).dataset_drift


def test_every_drift_method_has_a_case_here() -> None:
    """Completeness guard: a method added to DRIFT_METHODS needs a case in this file."""
    covered = {KS, WASSERSTEIN, CHI2, JENSEN_SHANNON, Z_TEST}
    assert set(DRIFT_METHODS) == covered


def test_report_files_and_workspace(tmp_path: Path) -> None:
    """A window's report is saved as HTML + JSON + drift.json and lands in the workspace;
    a window over max_rows is reported on a sample that the info records."""
    schema = known_schema()
    reference = known_drift(1500, seed=0, drift=False)
    current = known_drift(3000, seed=1, drift=True)
    drift = compute_drift(ReferenceProfile.build(reference, schema), current, drift_share=0.5)

    snapshot, info = evidently_report(reference, current, schema, drift_share=0.5, max_rows=1000)
    storage = Storage.from_uri(str(tmp_path / "store"))
    paths = save_report(storage, "churn", 12, snapshot, drift)
    add_to_workspace(str(tmp_path / "workspace"), "churn", snapshot)
    add_to_workspace(str(tmp_path / "workspace"), "churn", snapshot)

    assert info.sampled_from == 3000
    assert info.rows == 1000
    assert paths.html.endswith("reports/churn/window-000012.html")
    assert "<html" in Path(paths.html).read_text().lower()
    assert json.loads(Path(paths.json).read_text())["metrics"]
    assert json.loads(Path(paths.drift).read_text())["drifted_columns"] == drift.drifted_columns

    from evidently.ui.workspace import Workspace

    workspace = Workspace(str(tmp_path / "workspace"))
    projects = workspace.search_project("churn")
    assert len(projects) == 1, "the project should be created once and reused"
    assert len(workspace.list_runs(projects[0].id)) == 2


def test_report_with_labels_adds_quality(tmp_path: Path) -> None:
    schema = known_schema()
    reference = known_drift(1500, seed=0, drift=False)
    current = known_drift(800, seed=1, drift=False)
    reference["prediction"] = reference["label"]
    current["prediction"] = np.where(current.index % 3 == 0, "yes", current["label"])

    snapshot, info = evidently_report(reference, current, schema, drift_share=0.5, labels=True)

    assert info.quality == "classification"
    assert "label" in info.columns, "target drift is part of a labelled window's report"
    names = [m["metric_name"] for m in snapshot.dict()["metrics"]]
    assert any("Accuracy" in n for n in names), names


@pytest.mark.parametrize("reference_rows", [2000, 500], ids=["wasserstein", "ks"])
def test_values_near_the_float_limit_drift_without_numpy_warnings(reference_rows: int) -> None:
    """1e308 is a valid float (the API accepts it); the distance to it overflows. The column
    then drifts, with the largest float (or a p-value of 0) as score, and numpy stays quiet."""
    import warnings

    from raymlops.monitoring.drift import ReferenceProfile, compute_drift
    from raymlops.schema import Schema

    schema = Schema.from_columns({"x": ColumnSpec(type="float")}, target="y", task="classification")
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"x": rng.normal(size=reference_rows), "y": ["a"] * reference_rows})
    profile = ReferenceProfile.build(reference, schema, columns=["x"])
    huge = np.r_[np.full(250, 1e308), np.full(250, -1e308)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning fails the test
        verdict = compute_drift(profile, pd.DataFrame({"x": huge}), drift_share=0.5).columns[0]
    assert verdict.drifted, verdict
    assert math.isfinite(verdict.score), "a finite score: JSON and Prometheus take it"
