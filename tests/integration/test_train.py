"""The training pipeline through the CLI, on one shared Ray: register, gate, lineage, bad data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raymlops.cli import main
from raymlops.config import ProjectConfig, load_config
from raymlops.data.dataset import ROW_ID, load_split
from raymlops.examples import make_churn
from raymlops.pipeline import open_registry
from raymlops.predictor import load_predictor, read_reference
from raymlops.registry.bundle import BundleReader
from raymlops.schema import Schema
from raymlops.training.metrics import compute_metrics
from tests.conftest import XOR_COLUMNS, write_project, xor_frame


def test_unseen_csv_with_categories_and_nulls_becomes_a_verified_champion(
    churn_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--config", str(churn_project), "--promote"]) == 0
    out = capsys.readouterr().out
    assert "churn v1 registered and promoted to champion" in out
    assert "no champion yet" in out
    registry = open_registry(load_config(churn_project))
    assert registry.champion() == "v1"
    assert registry.verify("v1").ok
    lineage = BundleReader(registry, "v1").lineage()
    assert lineage["data"]["rows"]["total"] == 3000
    assert len(lineage["data"]["digest"]) == 64
    assert lineage["parent"] is None
    assert lineage["trial"]["model"] in ("xgboost", "logistic_regression")
    assert set(lineage["seeds"]) == {"split", "search", "trial"}
    assert {"ray", "xgboost", "scikit-learn", "pandas"} <= set(lineage["packages"])
    assert len(lineage["config_hash"]) == 64
    reference = read_reference(registry, "v1")
    assert len(reference) == lineage["data"]["rows"]["train"], (
        "under reference_rows, all train rows"
    )
    assert reference["region"].isna().any(), "nulls reach the reference"
    predictor = load_predictor(registry)
    rows = predictor.validate(make_churn(5, seed=99).drop(columns=["churned"]))
    prediction = predictor.predict(rows)
    assert set(prediction.labels) <= {"no", "yes"}
    assert prediction.probabilities.shape == (5, 2)


def test_a_weaker_model_is_registered_but_not_promoted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given a champion, when a weaker model trains on data in three files (several holdout
    blocks), then it is registered but not promoted, and both holdout scores, taken per block
    in one pass, equal the metrics of each model on the whole holdout joined here."""
    (tmp_path / "data").mkdir()
    for part, frame in enumerate(np.array_split(xor_frame(2000), 3)):
        frame.to_csv(tmp_path / "data" / f"train-{part}.csv", index=False)
    source = "./data/train-*.csv"
    strong = write_project(
        tmp_path, source=source, columns=XOR_COLUMNS, target="label", models="[xgboost]"
    )
    assert main(["train", "--config", str(strong), "--promote"]) == 0
    weak = write_project(
        tmp_path,
        source=source,
        columns=XOR_COLUMNS,
        target="label",
        models="[logistic_regression]",
    )
    capsys.readouterr()
    assert main(["train", "--config", str(weak), "--promote"]) == 0
    out = capsys.readouterr().out
    assert "churn v2 registered, not promoted: the gate failed" in out
    assert "gate FAILED" in out
    assert "vs champion" in out
    registry = open_registry(load_config(weak))
    assert registry.champion() == "v1"
    gate = BundleReader(registry, "v2").gate()
    assert gate["passed"] is False
    assert gate["champion_version"] == "v1"
    lineage = BundleReader(registry, "v2").lineage()
    assert lineage["parent"] == "v1"
    assert [e.version for e in registry.audit()] == ["v1"]
    scored = BundleReader(registry, "v2").metrics()
    holdout = _holdout_rows(load_config(weak))
    assert holdout[ROW_ID].is_monotonic_increasing, "several blocks, in row order"
    assert scored["champion"]["version"] == "v1"
    for version, metrics in (("v2", scored["holdout"]), ("v1", scored["champion"]["holdout"])):
        predictor = load_predictor(registry, version)
        rows = predictor.validate(holdout[predictor.schema.names], require_target=True)
        expected = compute_metrics(
            "classification",
            predictor.pipeline.target.encode(rows["label"]),
            predictor.scores(rows),
            n_classes=predictor.n_classes,
        )
        assert metrics == pytest.approx(expected, rel=1e-12), version


def _holdout_rows(config: ProjectConfig) -> pd.DataFrame:
    """The run's holdout rows, joined in this test (training never joins them)."""
    import ray

    split = config.data.split
    data = load_split(
        config.data.source,
        Schema.from_config(config),
        fraction=split.test_fraction,
        seed=split.seed,
    )
    assert len(data.holdout) > 1, "the holdout spans several blocks"
    return pd.concat(ray.get(data.holdout), ignore_index=True)


def test_a_broken_csv_names_column_and_rows_and_registers_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data").mkdir()
    frame = make_churn(500, seed=4).astype({"tenure_months": object, "plan": object})
    frame.loc[7, "tenure_months"] = "seven"
    frame.loc[42, "plan"] = "gold"
    frame.to_csv(tmp_path / "data" / "train.csv", index=False)
    config = write_project(tmp_path)
    assert main(["train", "--config", str(config), "--promote"]) == 3
    err = capsys.readouterr().err
    assert "column 'tenure_months': wrong type in 1 row(s)" in err
    assert "row 8: 'seven'" in err
    assert "column 'plan': unknown category in 1 row(s)" in err
    assert "row 43: 'gold'" in err
    assert open_registry(load_config(config)).versions() == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns=["autopay"]), "column 'autopay': missing column"),
        (lambda f: f.assign(extra=1), "column 'extra': unexpected column"),
        (
            lambda f: f.assign(
                support_calls=f.support_calls.astype(object).where(f.index != 3, "x")
            ),
            "column 'support_calls': wrong type",
        ),
        (
            lambda f: f.assign(tenure_months=f.tenure_months.where(f.index != 9, 9999)),
            "column 'tenure_months': out of range",
        ),
        (
            lambda f: f.assign(plan=f.plan.where(f.index != 5, None)),
            "column 'plan': null in non-nullable column",
        ),
    ],
    ids=["missing-column", "extra-column", "wrong-dtype", "out-of-range", "null"],
)
def test_bad_data_exits_non_zero_with_the_report(
    tmp_path: Path, change, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data").mkdir()
    change(make_churn(300, seed=6)).to_csv(tmp_path / "data" / "train.csv", index=False)
    config = write_project(tmp_path)
    assert main(["train", "--config", str(config)]) == 3
    assert message in capsys.readouterr().err
    assert open_registry(load_config(config)).versions() == []


def test_empty_file_exits_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("")
    config = write_project(tmp_path)
    assert main(["train", "--config", str(config)]) == 3
    assert "empty" in capsys.readouterr().err


def test_regression_task_on_parquet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = make_churn(1500, seed=8)
    (tmp_path / "data").mkdir()
    frame.drop(columns=["churned"]).to_parquet(tmp_path / "data" / "d.parquet")
    config = write_project(
        tmp_path,
        source="./data/*.parquet",
        target="monthly_spend",
        task="regression",
        models="[xgboost, ridge]",
        search="{num_samples: 4, max_concurrent: 2, max_boosting_rounds: 30, refit: true}",
        columns="""\
    plan:          {type: category, categories: [basic, pro, enterprise]}
    region:        {type: category, nullable: true}
    tenure_months: {type: int, min: 0}
    support_calls: {type: int, min: 0}
    autopay:       {type: bool}
    customer_id:   {type: string, role: id}
    signup_date:   {type: datetime, role: timestamp}
""",
    )
    # the target has nulls: training rows need one, and the report says which
    assert main(["train", "--config", str(config)]) == 3
    assert "column 'monthly_spend': null in non-nullable column" in capsys.readouterr().err
    frame.dropna(subset=["monthly_spend"]).drop(columns=["churned"]).to_parquet(
        tmp_path / "data" / "d.parquet"
    )
    assert main(["train", "--config", str(config), "--promote"]) == 0
    registry = open_registry(load_config(config))
    metrics = BundleReader(registry, "v1").metrics()
    assert metrics["metric"] == "rmse"
    assert metrics["holdout"]["r2"] > 0.5, "plan explains most of the spend"
    assert BundleReader(registry, "v1").lineage()["refit"] is True, "search.refit: true refits"
    assert isinstance(pd.read_parquet(tmp_path / "data" / "d.parquet"), pd.DataFrame)


def test_the_driver_never_collects_rows_and_refit_off_registers_the_trials_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given Parquet data, when training with every driver-side collect of Ray Data made to
    fail, training still succeeds (the rows stay in the object store); with search.refit off
    the best trial's own model is registered and no refit stage runs."""
    import ray.data

    from raymlops.training.run import train

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the driver collected rows")

    for name in ("to_pandas", "count", "take", "take_all", "iter_batches", "to_numpy_refs"):
        monkeypatch.setattr(ray.data.Dataset, name, refuse)
    (tmp_path / "data").mkdir()
    xor_frame(3000).to_parquet(tmp_path / "data" / "d.parquet")
    config = write_project(
        tmp_path,
        source="./data/d.parquet",
        columns=XOR_COLUMNS,
        target="label",
        models="[xgboost]",
        search="{num_samples: 2, max_concurrent: 2, max_boosting_rounds: 30, refit: false}",
    )
    result = train(load_config(config), promote=True, verbose=0)
    assert result.promoted
    assert "refit best on all training rows" not in result.stages
    assert result.rows == {
        "total": 3000,
        "train": result.rows["train"],
        "holdout": 3000 - result.rows["train"],
    }
    lineage = BundleReader(open_registry(load_config(config)), result.version).lineage()
    assert lineage["refit"] is False
    assert result.metrics["roc_auc"] > 0.9, "xgboost learns the interaction"
    assert all(
        "model_path" not in t
        for t in BundleReader(open_registry(load_config(config)), "v1").trials()
    )
