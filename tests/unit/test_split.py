"""The split depends on row numbers and the seed only, not on blocks or order."""

from __future__ import annotations

import numpy as np
import pytest

from raymlops.data.split import holdout_mask, time_cut


def test_split_is_deterministic_and_close_to_the_fraction() -> None:
    ids = np.arange(200_000)
    mask = holdout_mask(ids, fraction=0.2, seed=42)
    assert abs(mask.mean() - 0.2) < 0.005
    assert np.array_equal(mask, holdout_mask(ids, fraction=0.2, seed=42))


def test_split_does_not_depend_on_blocking() -> None:
    ids = np.arange(10_000)
    whole = holdout_mask(ids, fraction=0.3, seed=7)
    pieces = np.concatenate(
        [holdout_mask(chunk, fraction=0.3, seed=7) for chunk in np.array_split(ids, 13)]
    )
    assert np.array_equal(whole, pieces)
    shuffled = np.random.default_rng(0).permutation(ids)
    assert np.array_equal(holdout_mask(shuffled, fraction=0.3, seed=7), whole[shuffled])


def test_another_seed_gives_another_split() -> None:
    ids = np.arange(10_000)
    assert not np.array_equal(
        holdout_mask(ids, fraction=0.2, seed=1), holdout_mask(ids, fraction=0.2, seed=2)
    )


def test_time_cut_holds_out_the_latest_fraction_from_block_sketches() -> None:
    rng = np.random.default_rng(3)
    times = rng.integers(0, 10**15, size=50_000)
    blocks = np.array_split(times, 7)
    sketches = [(np.quantile(b, np.linspace(0, 1, 201), method="lower"), len(b)) for b in blocks]
    cut = time_cut([*sketches, None], 0.2)  # a block without times counts for nothing
    held = (times > cut).mean()
    assert abs(held - 0.2) < 0.01  # the sketch's error, far below one percent here
    with pytest.raises(ValueError, match="no row has a time"):
        time_cut([None], 0.2)


@pytest.mark.parametrize("rows", [0, 5, 50, 500])
def test_sample_candidates_are_the_rows_nsmallest_picks(rows: int) -> None:
    """Given a block with a tie in its keys' order, the candidates are the rows (and keys) of
    DataFrame.nsmallest on the keyed block: the reference sample does not change."""
    import pandas as pd

    from raymlops.data.dataset import ROW_ID, sample_candidates
    from raymlops.data.split import unit_hash

    ids = np.r_[np.arange(1000, 1200), np.arange(1000, 1100)]  # repeated ids: equal keys
    frame = pd.DataFrame({ROW_ID: ids, "x": np.arange(len(ids)) * 0.5, "c": ["a", "b"] * 150})
    keyed = frame.assign(__key=unit_hash(ids, 9))
    expected = keyed.nsmallest(rows, "__key") if len(keyed) > rows else keyed
    got = sample_candidates(frame, rows, seed=9)
    pd.testing.assert_frame_equal(got, expected)
