"""parallel_drift on Ray: the same verdicts as compute_drift and as Evidently, for every input
kind (DataFrame, ObjectRef, Ray Dataset) and a profile put in the object store once."""

from __future__ import annotations

import pytest

from raymlops.monitoring.drift import ReferenceProfile, compute_drift
from raymlops.monitoring.parallel import parallel_drift
from raymlops.monitoring.reports import evidently_report, evidently_verdicts
from tests.unit.test_drift import DRIFTED, known_drift, known_schema


@pytest.mark.parametrize("reference_rows", [3000, 800])
def test_parallel_equals_compute_drift_and_evidently(reference_rows: int) -> None:
    import ray

    schema = known_schema()
    reference = known_drift(reference_rows, seed=0, drift=False)
    current = known_drift(5000, seed=1, drift=True)
    profile = ReferenceProfile.build(reference, schema)
    profile_ref = ray.put(profile)

    single = compute_drift(profile, current, drift_share=0.5)
    on_ray = parallel_drift(profile_ref, current, drift_share=0.5, groups=3)
    snapshot, _ = evidently_report(reference, current, schema, drift_share=0.5)
    theirs = evidently_verdicts(snapshot)

    assert on_ray == single, "Ray tasks should give exactly the single-process verdicts"
    assert {c.column: c.drifted for c in on_ray.columns} == {
        name: v.drifted for name, v in theirs.items()
    }
    assert set(on_ray.drifted_columns) >= DRIFTED


def test_window_as_object_ref_or_dataset() -> None:
    import ray

    schema = known_schema()
    profile = ReferenceProfile.build(known_drift(2000, seed=0, drift=False), schema)
    current = known_drift(4000, seed=2, drift=True)
    expected = compute_drift(profile, current, drift_share=0.5)

    from_ref = parallel_drift(profile, ray.put(current), drift_share=0.5)
    blocks = [current.iloc[:1500], current.iloc[1500:]]
    from_dataset = parallel_drift(profile, ray.data.from_pandas(blocks), drift_share=0.5)

    assert from_ref == expected
    assert from_dataset == expected


def test_missing_column_is_named_before_any_task() -> None:
    schema = known_schema()
    profile = ReferenceProfile.build(known_drift(2000, seed=0, drift=False), schema)
    current = known_drift(100, seed=2, drift=False).drop(columns=["plan"])

    with pytest.raises(ValueError, match="'plan' is missing"):
        parallel_drift(profile, current, drift_share=0.5)


def test_dataframe_columns_of_every_kind_give_compute_drift_verdicts() -> None:
    """float32, categorical and nullable-int columns go to the tasks (arrays or Series), string
    ones are checked in the caller: the verdicts are still exactly compute_drift's."""
    import numpy as np
    import pandas as pd

    schema = known_schema()
    profile = ReferenceProfile.build(known_drift(2000, seed=0, drift=False), schema)
    current = known_drift(3000, seed=3, drift=True)
    current["shifted"] = current["shifted"].astype("float32")
    current["region"] = current["region"].astype("category")
    current["count"] = current["count"].astype("Int64")
    current.loc[::7, "count"] = pd.NA
    current.loc[::11, "steady"] = np.inf  # infinities count as missing on both paths

    on_ray = parallel_drift(profile, current, drift_share=0.5, groups=2)

    assert on_ray == compute_drift(profile, current, drift_share=0.5)
    assert "shifted" in on_ray.drifted_columns
