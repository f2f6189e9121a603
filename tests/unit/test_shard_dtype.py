"""Data-parallel workers read their shard's features as float32 (half the memory of the joined
copy): the model must be the one float64 rows give, since a DMatrix stores float32."""

from __future__ import annotations

import numpy as np
import xgboost as xgb


def test_float32_rows_train_the_same_booster_as_float64_rows() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 6)) * np.array([1e-3, 1, 10, 1e3, 1e6, 0.1])
    x[rng.random(x.shape) < 0.05] = np.nan  # missing values too
    y = (np.nan_to_num(x[:, 0]) * 1e3 + np.nan_to_num(x[:, 1]) > 0).astype(np.int64)
    params = {"tree_method": "hist", "objective": "binary:logistic", "nthread": 1, "seed": 0}
    boosters = [
        xgb.train(params, xgb.DMatrix(x.astype(dtype), label=y, nthread=1), num_boost_round=8)
        for dtype in (np.float64, np.float32)
    ]
    assert boosters[0].save_raw("json") == boosters[1].save_raw("json")
