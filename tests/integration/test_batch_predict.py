"""Batch inference on Ray over Parquet: a row group cut into pieces predicts every row once, in
input order, with the in-process answers; a bad cell in any piece is named with the input's row
number and nothing is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raymlops.config import ProjectConfig, load_config
from raymlops.errors import DataValidationError, IntegrityError
from raymlops.predictor import load_predictor
from raymlops.registry import Registry
from raymlops.schema import Schema
from raymlops.serving import batch
from raymlops.storage import Storage
from tests.helpers import register_model

ROWS = 1_200
COLUMNS = ["a", "b", "c"]


def _frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, len(COLUMNS))), columns=COLUMNS)
    frame["n"] = rng.integers(0, 10, rows)
    return frame


def _project(root: Path) -> ProjectConfig:
    (root / "raymlops.yaml").write_text(
        f"name: numbers\nstorage: {root / 'store'}\ndata:\n  source: {root / 'train.parquet'}\n"
        "  target: y\n  columns:\n"
        + "".join(f"    {c}: {{type: float}}\n" for c in COLUMNS)
        + "    n: {type: int, min: 0, max: 9}\n    y: {type: int}\n"
        "training:\n  task: classification\n"
    )
    config = load_config(root / "raymlops.yaml")
    train = _frame(400, 1)
    train["y"] = (train["a"] - train["b"] > 0).astype(int)
    registry = Registry(Storage.from_uri(config.storage), config.name)
    registry.promote(register_model(registry, train, Schema.from_config(config)))
    return config


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> ProjectConfig:
    return _project(tmp_path_factory.mktemp("batch"))


@pytest.fixture
def pieces_of_500(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces of at most 500 rows: the file's one row group of 1,200 is cut in three."""
    monkeypatch.setattr(batch, "_MIN_PIECE_ROWS", 100)
    monkeypatch.setattr(batch, "_MAX_PIECE_ROWS", 500)


def _write(frame: pd.DataFrame, path: Path) -> None:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)  # one row group
    assert pq.ParquetFile(path).metadata.num_row_groups == 1


def test_pieces_of_a_row_group_predict_every_row_once_as_in_process(
    project: ProjectConfig, pieces_of_500: None, tmp_path: Path
) -> None:
    rows = _frame(ROWS, 2)
    _write(rows, tmp_path / "rows.parquet")
    result = batch.batch_predict(project, str(tmp_path / "rows.parquet"), str(tmp_path / "out"))
    assert result.rows == ROWS
    assert len(list((tmp_path / "out").glob("*.parquet"))) == 3
    out = batch.read_predictions(str(tmp_path / "out"))
    assert out["row"].tolist() == list(range(1, ROWS + 1))
    np.testing.assert_array_equal(out[COLUMNS].to_numpy(), rows[COLUMNS].to_numpy())
    registry = Registry(Storage.from_uri(project.storage, create=False), project.name)
    predictor = load_predictor(registry)
    expected = predictor.predict(predictor.validate(rows))
    np.testing.assert_allclose(
        out[["probability_0", "probability_1"]].to_numpy(), expected.probabilities, atol=1e-12
    )
    assert out["prediction"].tolist() == expected.labels
    assert set(out["model_version"]) == {result.version}


def test_a_bad_cell_in_a_later_piece_names_its_input_row_and_writes_nothing(
    project: ProjectConfig, pieces_of_500: None, tmp_path: Path
) -> None:
    rows = _frame(ROWS, 3)
    rows.loc[449, "a"] = np.nan  # row 450, in the first piece
    rows.loc[999, "n"] = 12  # row 1,000, in the third
    _write(rows, tmp_path / "rows.parquet")
    with pytest.raises(DataValidationError) as refused:
        batch.batch_predict(project, str(tmp_path / "rows.parquet"), str(tmp_path / "out"))
    message = str(refused.value)
    assert "column 'a': null in non-nullable column in 1 row(s)" in message
    assert "row 450: nan" in message
    assert (
        "column 'n': out of range in 1 row(s) (expected int in [0, 9]); first: row 1000: 12"
        in message
    )
    assert not (tmp_path / "out").exists()


def test_a_tampered_model_is_refused_by_name_not_as_a_task_traceback(tmp_path: Path) -> None:
    """The tasks load the version (sha256 first): the driver raises their IntegrityError."""
    config = _project(tmp_path)
    [model] = (Path(config.storage) / "models" / "numbers" / "versions" / "v1").glob("model.*")
    model.write_bytes(model.read_bytes() + b"x")
    _write(_frame(50, 4), tmp_path / "rows.parquet")
    with pytest.raises(IntegrityError, match="does not match its sha256") as refused:
        batch.batch_predict(config, str(tmp_path / "rows.parquet"), str(tmp_path / "out"))
    assert type(refused.value) is IntegrityError
    assert not (tmp_path / "out").exists()


def test_a_file_without_rows_is_refused_and_nothing_is_written(
    project: ProjectConfig, tmp_path: Path
) -> None:
    _write(_frame(0, 5), tmp_path / "empty.parquet")
    with pytest.raises(DataValidationError, match="no data rows"):
        batch.batch_predict(project, str(tmp_path / "empty.parquet"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
