"""Checks before Ray starts: the data's header against the schema, the retrain source, the model
and alias. Each runs here without Ray (the unit tier forbids it), so each is found before it."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from raymlops.cli import main
from raymlops.config import ColumnSpec, load_config
from raymlops.data.sources import resolve_source
from raymlops.errors import ConfigError, DataValidationError, RegistryError
from raymlops.pipeline import open_registry
from raymlops.preflight import check_columns, check_model, check_retrain_source, read_header
from raymlops.schema import Schema
from tests.helpers import random_rows, register_model

COLUMNS = {
    "customer_id": ColumnSpec(type="string", role="id"),
    "tenure": ColumnSpec(type="int"),
    "plan": ColumnSpec(type="category"),
}


def _schema(target: str = "churned", extra: str = "error") -> Schema:
    return Schema.from_columns(
        dict(COLUMNS), target=target, task="classification", extra=extra  # type: ignore[arg-type]
    )


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "train.csv"
    pd.DataFrame(
        {"customer_id": ["a", "b"], "tenure": [1, 2], "plan": ["x", "y"], "churned": ["no", "yes"]}
    ).to_csv(path, index=False)
    return path


def test_a_target_typo_names_the_column_and_the_close_match(data: Path) -> None:
    header = read_header(resolve_source(str(data)))
    assert header.columns == ["customer_id", "tenure", "plan", "churned"]
    with pytest.raises(ConfigError) as caught:
        check_columns(_schema(target="churn"), header, key="data.source")
    message = str(caught.value)
    assert "data.target: 'churn' is not a column of" in message
    assert "did you mean 'churned'?" in message


def test_a_declared_column_missing_from_the_data_is_named(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pd.DataFrame({"customer_id": ["a"], "tenur": [1], "plan": ["x"], "churned": ["no"]}).to_parquet(
        path
    )
    with pytest.raises(DataValidationError) as caught:  # the data breaks the schema: exit 3
        check_columns(_schema(), read_header(resolve_source(str(path))), key="data.source")
    assert "column 'tenure': missing column" in str(caught.value)
    assert "did you mean 'tenur'?" in str(caught.value)


def test_undeclared_columns_fail_unless_extra_is_ignore(tmp_path: Path) -> None:
    path = tmp_path / "d.csv.gz"
    frame = pd.DataFrame(
        {"customer_id": ["a"], "tenure": [1], "plan": ["x"], "churned": ["no"], "notes": ["n"]}
    )
    frame.to_csv(path, index=False)
    header = read_header(resolve_source(str(path)))
    with pytest.raises(DataValidationError, match="column 'notes': unexpected column"):
        check_columns(_schema(), header, key="data.source")
    assert check_columns(_schema(extra="ignore"), header, key="data.source").undeclared == [
        "notes"
    ]


def test_the_retrain_source_is_resolved_and_its_columns_checked(
    tmp_path: Path, data: Path
) -> None:
    assert "no file yet" in check_retrain_source(str(tmp_path / "fresh" / "*.csv"), _schema())
    assert "1 csv file(s)" in check_retrain_source(str(data), _schema())
    pd.DataFrame({"customer_id": ["a"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ConfigError, match=r"monitoring\.retrain_source"):  # no target there
        check_retrain_source(str(tmp_path / "bad.csv"), _schema())


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "raymlops.yaml"
    random_rows(50).to_csv(tmp_path / "rows.csv", index=False)
    path.write_text(
        "name: demo\nstorage: ./store\n"
        "data: {source: ./rows.csv, target: y, columns: {x: {type: float}}}\n"
        "training: {task: classification}\n"
    )
    return path


def test_an_empty_registry_says_no_model_not_no_alias(config: Path) -> None:
    registry = open_registry(load_config(config))
    with pytest.raises(RegistryError, match="no model 'demo' in .*nothing was trained"):
        check_model(registry, "champion", str(config))
    register_model(registry, random_rows(100), _xy())
    assert check_model(registry, "v1", str(config)) == "v1"
    with pytest.raises(RegistryError, match="no version v9"):
        check_model(registry, "v9", str(config))


def _xy() -> Schema:
    return Schema.from_columns({"x": ColumnSpec(type="float")}, target="y", task="classification")


def test_commands_fail_before_ray_starts(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve and predict check the model and alias, train the data's header, all before Ray
    (the unit tier's ray.init raises, so reaching Ray would fail the test differently)."""
    c = ["--config", str(config)]
    started = time.perf_counter()
    assert main(["serve", *c]) == 2
    assert "no model 'demo'" in capsys.readouterr().err
    register_model(open_registry(load_config(config)), random_rows(100), _xy())
    assert main(["serve", *c, "--alias", "v9"]) == 2
    assert "no version v9" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert main(["predict", *c, "--input", "missing.csv", "--output", "out"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "'missing.csv'" in err
    assert f"read from the current folder, {tmp_path}" in err
    config.write_text(config.read_text().replace("target: y", "target: why"))
    assert main(["train", *c]) == 2
    assert "'why' is not a column" in capsys.readouterr().err
    assert main(["config", "check", *c]) == 2
    assert time.perf_counter() - started < 20, "each check takes a second or two, not Ray's start"
