"""Feature pipeline: batch and single-row transforms agree; JSON round trip; unseen and missing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raymlops.config import ColumnSpec
from raymlops.data.validation import validate_frame
from raymlops.features.pipeline import FeaturePipeline
from raymlops.schema import Schema
from tests.helpers import pandas_stats

SCHEMA = Schema.from_columns(
    {
        "age": ColumnSpec(type="int", min=0, nullable=True),
        "spend": ColumnSpec(type="float", nullable=True),
        "plan": ColumnSpec(
            type="category", categories=["basic", "pro"], unknown="ignore", nullable=True
        ),
        "region": ColumnSpec(type="category"),
        "autopay": ColumnSpec(type="bool", nullable=True),
        "signup": ColumnSpec(type="datetime", nullable=True),
        "id": ColumnSpec(type="string"),
    },
    target="y",
    task="classification",
)


TRAIN = validate_frame(
    pd.DataFrame(
        {
            "age": [20, 30, None, 50],
            "spend": [1.0, None, 3.0, 4.0],
            "plan": ["basic", "pro", None, "pro"],
            "region": ["n", "s", "s", "e"],
            "autopay": ["true", "false", None, "true"],
            "signup": ["2024-01-01", "2024-02-01", None, "2024-03-01"],
            "id": ["a", "b", "c", "d"],
            "y": ["no", "yes", "no", "yes"],
        }
    ),
    SCHEMA,
)[0]
PIPELINE = FeaturePipeline.from_stats(SCHEMA, pandas_stats(TRAIN, SCHEMA), classes=["no", "yes"])


def test_feature_names_are_stable_and_documented() -> None:
    assert PIPELINE.feature_names == [
        "age",
        "age__missing",
        "spend",
        "spend__missing",
        "plan=basic",
        "plan=pro",
        "plan=__other__",
        "plan__missing",
        "region=s",
        "region=e",
        "region=n",
        "region=__other__",
        "autopay",
        "autopay__missing",
        "signup",
        "signup__missing",
    ]


def test_missing_and_unseen_values_follow_the_schema() -> None:
    rows = validate_frame(
        pd.DataFrame(
            {
                "age": [None],
                "spend": [None],
                "plan": ["gold"],
                "region": ["w"],
                "autopay": [None],
                "signup": [None],
                "id": ["z"],
                "y": ["no"],
            }
        ),
        SCHEMA,
    )[0]
    out = PIPELINE.transform(rows).iloc[0]
    assert out["age"] == 0.0
    assert out["age__missing"] == 1.0
    assert out["plan=__other__"] == 1.0
    assert out["plan=basic"] == 0.0
    assert out["plan__missing"] == 0.0
    assert out["region=__other__"] == 1.0, "learned categories send unseen values to __other__"
    assert out["signup__missing"] == 1.0


def test_standardisation_uses_training_statistics() -> None:
    out = PIPELINE.transform(TRAIN)
    assert out["spend"].iloc[[0, 2, 3]].mean() == pytest.approx(0.0, abs=1e-12)
    assert out["spend"].iloc[[0, 2, 3]].std(ddof=0) == pytest.approx(1.0)


def test_json_round_trip_gives_the_same_transform() -> None:
    again = FeaturePipeline.from_json(PIPELINE.to_json())
    assert again == PIPELINE
    pd.testing.assert_frame_equal(again.transform(TRAIN), PIPELINE.transform(TRAIN))


def test_target_encoding_round_trip() -> None:
    codes = PIPELINE.target.encode(pd.Series(["yes", "no", "yes"]))
    assert codes.tolist() == [1, 0, 1]
    assert PIPELINE.target.decode(codes) == ["yes", "no", "yes"]
    with pytest.raises(ValueError, match="not seen in training"):
        PIPELINE.target.encode(pd.Series(["maybe"]))


rows = st.fixed_dictionaries(
    {
        "age": st.one_of(st.none(), st.integers(0, 10_000)),
        "spend": st.one_of(st.none(), st.floats(-1e9, 1e9, allow_nan=False)),
        "plan": st.one_of(st.none(), st.sampled_from(["basic", "pro", "gold", ""])),
        "region": st.sampled_from(["n", "s", "e", "w", "x"]),
        "autopay": st.one_of(st.none(), st.booleans()),
        "signup": st.one_of(
            st.none(),
            st.datetimes(
                min_value=pd.Timestamp("1990-01-01").to_pydatetime(),
                max_value=pd.Timestamp("2090-01-01").to_pydatetime(),
            ).map(lambda d: d.isoformat()),
        ),
        "id": st.text(min_size=1, max_size=5),
        "y": st.sampled_from(["no", "yes"]),
    }
)


@settings(max_examples=60, deadline=None)
@given(st.lists(rows, min_size=1, max_size=25))
def test_batch_and_single_row_transforms_are_identical(batch: list[dict]) -> None:
    """Serving transforms one row at a time, training whole blocks: the features must match bit for bit."""
    typed, report = validate_frame(pd.DataFrame(batch), SCHEMA)
    whole = PIPELINE.transform(typed).to_numpy()
    one_by_one = np.vstack(
        [PIPELINE.transform(typed.iloc[[i]]).to_numpy() for i in range(len(typed))]
    )
    np.testing.assert_array_equal(whole, one_by_one)


@pytest.mark.parametrize(
    ("labels", "classes"),
    [
        (pd.Series([1, 0, 1, 1, 0]), [0, 1]),
        (pd.Series([True, False, True]), [False, True]),
        (pd.Series([2.0, -0.0, 2.0, 0.0]), [0, 2]),
        (pd.Series([1, None, 0], dtype="Int64"), [0, 1]),
        (pd.Series(["b", "a", "b"], dtype="category"), ["a", "b"]),
        (pd.Series(["b", "a", "b"], dtype="string"), ["a", "b"]),
        (pd.Series([1, True, "x", 1.0], dtype=object), [1, True, "x"]),
    ],
)
def test_target_codes_of_one_type_equal_the_row_by_row_lookup(
    labels: pd.Series, classes: list
) -> None:
    """Given labels of one dtype (coded once per distinct value) or mixed (row by row), the
    codes are those of looking every row's key up, and an unseen label is named."""
    from raymlops.features.pipeline import TargetEncoder, _label_key

    encoder = TargetEncoder("classification", classes)
    lookup = {_label_key(c): i for i, c in enumerate(classes)}
    expected = np.array([lookup.get(_label_key(v), -1) for v in labels], dtype=np.int64)
    if (expected < 0).any():
        with pytest.raises(ValueError, match="was not seen in training"):
            encoder.encode(labels)
    else:
        np.testing.assert_array_equal(encoder.encode(labels), expected)
