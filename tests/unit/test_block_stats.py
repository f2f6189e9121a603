"""One-pass statistics: block statistics merged in any cut equal pandas on the whole data."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from raymlops.config import ColumnSpec
from raymlops.data.validation import validate_frame
from raymlops.examples import make_churn
from raymlops.features.fit import block_stats, merge_stats
from raymlops.schema import Schema
from tests.helpers import CHURN_SCHEMA as SCHEMA
from tests.helpers import assert_stats_match

TYPED, _ = validate_frame(make_churn(400, seed=5), SCHEMA)


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(TYPED)), max_size=6))
def test_merged_block_statistics_equal_pandas_for_any_cut(cuts: list[int]) -> None:
    """Given the rows cut into blocks anywhere (empty blocks too), the merged statistics
    equal pandas's on all rows, and the classes are the sorted labels."""
    edges = [0, *sorted(cuts), len(TYPED)]
    blocks = [TYPED.iloc[a:b] for a, b in zip(edges, edges[1:], strict=False)]
    stats, classes = merge_stats([block_stats(b, SCHEMA) for b in blocks], SCHEMA)
    assert_stats_match(stats, TYPED, SCHEMA)
    assert classes == ["no", "yes"]


def test_an_all_missing_column_has_no_mean_and_numbers_sort_before_text() -> None:
    """Given a numeric column with no value, its statistics say so instead of NaN."""
    schema = Schema.from_columns(
        {"x": ColumnSpec(type="float", nullable=True)}, target="y", task="classification"
    )
    frame = pd.DataFrame({"x": [np.nan, np.nan], "y": [2, 1]})
    stats, classes = merge_stats([block_stats(frame, schema)], schema)
    assert (stats["x"].count, stats["x"].missing, stats["x"].mean, stats["x"].std) == (
        0,
        2,
        None,
        None,
    )
    assert classes == [1, 2]
