"""The split depends on row numbers and the seed only, not on blocks or order."""

from __future__ import annotations

import numpy as np

from raymlops.data.split import holdout_mask


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
