"""Ray Data: block-parallel validation with global row numbers, aggregates, split, formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raymlops.config import ColumnSpec
from raymlops.data.dataset import ROW_ID, load_validated, split
from raymlops.errors import ConfigError, DataValidationError
from raymlops.examples import make_churn
from raymlops.features.fit import fit_pipeline, to_numpy
from raymlops.features.pipeline import FeaturePipeline
from raymlops.schema import Schema
from tests.helpers import CHURN_SCHEMA, assert_stats_match, pandas_stats

SCHEMA = CHURN_SCHEMA


@pytest.fixture
def three_files(tmp_path: Path) -> Path:
    """Three CSV files of 1000 rows each (so several blocks), all valid."""
    for part in range(3):
        make_churn(1000, seed=part).to_csv(tmp_path / f"part-{part}.csv", index=False)
    return tmp_path


def test_bad_cells_are_named_with_global_row_numbers(three_files: Path) -> None:
    second = pd.read_csv(three_files / "part-1.csv")
    second.loc[10, "tenure_months"] = -3
    second.loc[20, "plan"] = "platinum"
    second.to_csv(three_files / "part-1.csv", index=False)
    third = pd.read_csv(three_files / "part-2.csv")
    third["monthly_spend"] = third["monthly_spend"].astype(object)
    third.loc[5, "monthly_spend"] = "lots"
    third.to_csv(three_files / "part-2.csv", index=False)
    with pytest.raises(DataValidationError) as caught:
        load_validated(str(three_files / "*.csv"), SCHEMA)
    report = caught.value.report
    found = {(i.column, i.problem): i.examples for i in report.issues}
    assert found[("tenure_months", "out of range")] == [(1011, "'-3'")]
    assert found[("plan", "unknown category")] == [(1021, "'platinum'")]
    assert found[("monthly_spend", "wrong type")] == [(2006, "'lots'")]
    assert report.rows == 3000


def test_missing_column_and_empty_file_fail_clearly(tmp_path: Path) -> None:
    make_churn(50).drop(columns=["autopay"]).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(DataValidationError, match="column 'autopay': missing column"):
        load_validated(str(tmp_path / "a.csv"), SCHEMA)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataValidationError, match="empty"):
        load_validated(str(tmp_path / "empty.csv"), SCHEMA)
    (tmp_path / "header.csv").write_text(",".join(make_churn(1).columns) + "\n")
    with pytest.raises(DataValidationError, match="no data rows"):
        load_validated(str(tmp_path / "header.csv"), SCHEMA)
    with pytest.raises(ConfigError, match="no CSV or Parquet file matches"):
        load_validated(str(tmp_path / "*.parquet"), SCHEMA)


def test_ray_aggregates_match_pandas_and_map_batches_matches_in_process(three_files: Path) -> None:
    data = load_validated(str(three_files / "*.csv"), SCHEMA)
    pipeline = fit_pipeline(data.dataset, SCHEMA)
    typed = data.dataset.to_pandas()
    oracle = pandas_stats(typed, SCHEMA)
    for name, stats in oracle.items():
        fitted = pipeline.stats[name]
        assert (fitted.count, fitted.missing) == (stats.count, stats.missing), name
        if stats.frequencies is not None:
            assert fitted.frequencies == stats.frequencies, name
        else:
            assert fitted.mean == pytest.approx(stats.mean, rel=1e-9), name
            assert fitted.std == pytest.approx(stats.std, rel=1e-9), name
            assert (fitted.min, fitted.max) == (stats.min, stats.max), name
    assert pipeline.target.classes == ["no", "yes"]
    x, y, ids = to_numpy(data.dataset, pipeline, SCHEMA, with_ids=ROW_ID)
    assert ids.tolist() == list(range(3000)), "Ray Data keeps row order"
    in_process = pipeline.transform(typed).to_numpy()
    np.testing.assert_array_equal(x, in_process)
    again = FeaturePipeline.from_json(pipeline.to_json())
    np.testing.assert_array_equal(again.transform(typed).to_numpy(), x)


def test_split_is_seeded_and_stable_across_reads(three_files: Path) -> None:
    def holdout_ids(seed: int) -> list[int]:
        data = load_validated(str(three_files / "*.csv"), SCHEMA)
        train, holdout = split(data.dataset, fraction=0.25, seed=seed)
        ids = sorted(holdout.to_pandas()[ROW_ID].tolist())
        assert train.count() + len(ids) == 3000
        return ids

    first = holdout_ids(1)
    assert first == holdout_ids(1)
    assert first != holdout_ids(2)
    assert 600 < len(first) < 900


def test_parquet_and_bundled_sources(tmp_path: Path) -> None:
    make_churn(400, seed=9).astype({"signup_date": "datetime64[ns]"}).to_parquet(
        tmp_path / "d.parquet"
    )
    data = load_validated(str(tmp_path / "d.parquet"), SCHEMA)
    assert data.rows == 400
    assert len(data.digest) == 64
    iris = Schema.from_columns(
        {
            "sepal_length_cm": ColumnSpec(type="float", min=0),
            "petal_width_cm": ColumnSpec(type="float"),
        },
        target="target",
        task="classification",
        extra="ignore",
    )
    bundled = load_validated("sklearn:iris", iris)
    assert bundled.rows == 150
    assert bundled.digest == load_validated("sklearn:iris", iris).digest


def test_reference_sample_is_deterministic_and_sized(three_files: Path) -> None:
    from raymlops.data.dataset import sample_rows

    data = load_validated(str(three_files / "*.csv"), SCHEMA)
    first = sample_rows(data.dataset, 500, seed=3)
    assert len(first) == 500
    assert first[ROW_ID].is_monotonic_increasing
    pd.testing.assert_frame_equal(first, sample_rows(data.dataset, 500, seed=3))
    assert not first[ROW_ID].equals(sample_rows(data.dataset, 500, seed=4)[ROW_ID])
    assert len(sample_rows(data.dataset, 5000, seed=3)) == 3000, (
        "fewer rows than asked: all of them"
    )


def test_sources_given_as_uris_go_through_pyarrow_fs(three_files: Path) -> None:
    data = load_validated(f"file://{three_files}/part-*.csv", SCHEMA)
    assert data.rows == 3000
    assert [Path(f).name for f in data.files] == ["part-0.csv", "part-1.csv", "part-2.csv"]
    assert data.digest == load_validated(str(three_files / "part-*.csv"), SCHEMA).digest
    with pytest.raises(ConfigError, match="not found"):
        load_validated(f"file://{three_files}/missing/x.csv", SCHEMA)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_one_pass_split_statistics_and_sample_equal_the_separate_passes(
    three_files: Path, kind: str
) -> None:
    """Given the same files, the one-pass load_split gives the same split, statistics,
    reference sample and transformed rows as Ray Data's separate passes and pandas."""
    import ray

    from raymlops.data.dataset import RowSample, load_split, reference_sample, sample_rows
    from raymlops.features.fit import (
        BlockStats,
        block_stats,
        pipeline_from_blocks,
        transform_blocks,
    )

    if kind == "parquet":
        for part in range(3):
            make_churn(1000, seed=part).astype({"signup_date": "datetime64[ns]"}).to_parquet(
                three_files / f"part-{part}.parquet"
            )
    source = str(three_files / f"part-*.{kind}")

    def summarize(train: pd.DataFrame) -> BlockStats:
        return block_stats(train, SCHEMA)

    sample = RowSample(500, seed=7)
    one_pass = load_split(
        source, SCHEMA, fraction=0.25, seed=1, summarize=summarize, sample=sample
    )
    data = load_validated(source, SCHEMA)
    train_ds, holdout_ds = split(data.dataset, fraction=0.25, seed=1)
    train = pd.concat(ray.get(one_pass.train), ignore_index=True)
    holdout = pd.concat(ray.get(one_pass.holdout), ignore_index=True)
    assert train[ROW_ID].tolist() == train_ds.to_pandas()[ROW_ID].tolist()
    assert holdout[ROW_ID].tolist() == holdout_ds.to_pandas()[ROW_ID].tolist()
    assert (one_pass.rows, one_pass.train_rows, one_pass.holdout_rows) == (
        3000,
        len(train),
        len(holdout),
    )
    assert one_pass.digest == data.digest
    pipeline = pipeline_from_blocks(one_pass.summaries, SCHEMA)
    assert_stats_match(pipeline.stats, train, SCHEMA)
    assert pipeline.target.classes == ["no", "yes"]
    reference = reference_sample(one_pass, sample)
    # the same rows and values; Ray Data's own round trip types text as string[pyarrow]
    pd.testing.assert_frame_equal(reference, sample_rows(train_ds, 500, seed=7), check_dtype=False)
    arrays = transform_blocks(
        one_pass.train,
        one_pass.holdout,
        pipeline,
        SCHEMA,
        row_ids=ROW_ID,
        valid_fraction=0.2,
        valid_seed=2,
    )
    x_fit, x_valid, mask = ray.get([arrays.fit[0], arrays.valid[0], arrays.valid_mask])
    expected = pipeline.transform(train).to_numpy()
    np.testing.assert_array_equal(x_fit, expected[~mask])
    np.testing.assert_array_equal(x_valid, expected[mask])
    x_holdout = np.concatenate(ray.get([x for x, _ in arrays.holdout]))  # one pair per block
    np.testing.assert_array_equal(x_holdout, pipeline.transform(holdout).to_numpy())
    assert (arrays.fit_rows, arrays.valid_rows) == (int((~mask).sum()), int(mask.sum()))


def test_one_pass_reports_bad_cells_with_global_row_numbers(tmp_path: Path) -> None:
    """Given Parquet files (read by the validating tasks themselves) with a bad cell in the
    third, load_split names the column and the global row, as load_validated does."""
    from raymlops.data.dataset import load_split

    for part in range(3):
        frame = make_churn(1000, seed=part).astype({"signup_date": "datetime64[ns]"})
        if part == 2:
            frame.loc[10, "tenure_months"] = -3
        frame.to_parquet(tmp_path / f"part-{part}.parquet")
    with pytest.raises(DataValidationError) as caught:
        load_split(str(tmp_path / "*.parquet"), SCHEMA, fraction=0.2, seed=1)
    found = {(i.column, i.problem): i.examples for i in caught.value.report.issues}
    assert [row for row, _ in found[("tenure_months", "out of range")]] == [2011]
    assert caught.value.report.rows == 3000


def test_a_time_split_holds_out_the_latest_rows_in_one_read(three_files: Path) -> None:
    """Given three CSV files whose times interleave across files, split.by: time holds out
    about the latest fifth of all rows (by signup_date), every training time is at or before
    the cut, the digests carry the same sides, and rows without a time train."""
    import ray

    from raymlops.data.dataset import load_split

    second = pd.read_csv(three_files / "part-1.csv")
    second.loc[:9, "signup_date"] = None  # ten rows with no time: they train
    second.to_csv(three_files / "part-1.csv", index=False)
    schema = Schema.from_columns(
        {
            **SCHEMA.columns,
            "signup_date": ColumnSpec(type="datetime", role="timestamp", nullable=True),
        },
        target="churned",
        task="classification",
    )
    data = load_split(
        str(three_files / "*.csv"), schema, fraction=0.2, seed=1, time_column="signup_date"
    )
    train = pd.concat(ray.get(data.train), ignore_index=True)
    holdout = pd.concat(ray.get(data.holdout), ignore_index=True)
    cut = pd.Timestamp(data.time_cut, tz="UTC")
    stamps = pd.to_datetime(train["signup_date"], utc=True)
    assert (stamps.dropna() <= cut).all()
    assert (pd.to_datetime(holdout["signup_date"], utc=True) > cut).all()
    assert stamps.isna().sum() == 10
    # the latest fifth, up to ties at the cut (dates are whole days)
    assert 0.15 <= len(holdout) / 3000 <= 0.2
    assert (data.train_rows, data.holdout_rows) == (len(train), len(holdout))
    sides = pd.concat(ray.get(data.digests), ignore_index=True)
    assert sorted(sides.loc[sides["holdout"], "row"] - 1) == sorted(holdout[ROW_ID])
    (train_range, holdout_range) = data.time_ranges["signup_date"]
    assert train_range[1] < holdout_range[0]


def test_overlap_from_digests_equals_the_findings_of_the_whole_digest() -> None:
    """Given digests spread over blocks (duplicates, copies across the split and shared ids in
    different blocks), the task shuffle finds exactly what the pure functions find on all the
    rows at once."""
    import ray

    from raymlops.data.checks import overlap_findings
    from raymlops.data.dataset import overlap_from_digests

    rng = np.random.default_rng(5)
    rows = 4000
    features = rng.integers(0, 900, rows).astype(np.uint64) + np.uint64(1)  # collisions
    whole = pd.DataFrame(
        {
            "row": np.arange(1, rows + 1),
            "holdout": rng.random(rows) < 0.25,
            "row_hash": features * np.uint64(7) + rng.integers(0, 2, rows).astype(np.uint64),
            "feature_hash": features,
            "continuous": rng.random(rows) < 0.9,
            "id:customer": np.where(
                rng.random(rows) < 0.1, np.uint64(0), rng.integers(1, 3000, rows).astype(np.uint64)
            ),
        }
    )
    blocks = [ray.put(part) for part in np.array_split(whole, 5)]
    found = overlap_from_digests(blocks, ["customer"])
    expected = overlap_findings(whole)
    assert found.to_json() == expected.to_json()
    assert found.duplicates.count > 0
    assert found.cross_split.count > 0
    assert found.ids["customer"].count > 0
