"""input_schema_change: which differences between two versions' schemas change the requests."""

from __future__ import annotations

from raymlops.config import ColumnSpec
from raymlops.registry.compat import input_schema_change
from raymlops.schema import Schema


def _schema(target: str = "y", extra: str = "error", **columns: ColumnSpec) -> dict:
    return Schema.from_columns(
        columns, target=target, task="classification", extra=extra  # type: ignore[arg-type]
    ).to_dict()


PLAN = ColumnSpec(type="category", categories=["basic", "pro"])
AGE = ColumnSpec(type="int", min=0)


def test_equal_request_columns_are_no_change() -> None:
    old = _schema(age=AGE, plan=PLAN)
    reordered = _schema(plan=PLAN.model_copy(update={"description": "the plan"}), age=AGE)
    assert input_schema_change(old, reordered) is None, "order and descriptions do not count"
    target_changed = _schema(age=AGE, plan=PLAN, y=ColumnSpec(type="category", categories=["a"]))
    assert input_schema_change(old, target_changed) is None, "the target is not in a request"


def test_every_request_visible_difference_is_named() -> None:
    old = _schema(age=AGE, plan=PLAN)
    cases = {
        "new column 'tenure' (float)": _schema(age=AGE, plan=PLAN, tenure=ColumnSpec(type="float")),
        "column 'plan' removed": _schema(age=AGE),
        "column 'age': type 'int' -> 'float'": _schema(age=ColumnSpec(type="float", min=0), plan=PLAN),
        "column 'age': nullable False -> True": _schema(
            age=AGE.model_copy(update={"nullable": True}), plan=PLAN
        ),
        "column 'age': max None -> 120.0": _schema(
            age=AGE.model_copy(update={"max": 120.0}), plan=PLAN
        ),
        "column 'plan': categories": _schema(
            age=AGE, plan=PLAN.model_copy(update={"categories": ["basic", "pro", "team"]})
        ),
        "column 'age': role None -> 'ignore'": _schema(
            age=AGE.model_copy(update={"role": "ignore"}), plan=PLAN
        ),
        "extra columns: 'error' -> 'ignore'": _schema(extra="ignore", age=AGE, plan=PLAN),
    }
    for expected, new in cases.items():
        change = input_schema_change(old, new)
        assert expected in (change or ""), (expected, change)


def test_a_target_that_becomes_an_input_is_a_change() -> None:
    old = _schema(target="y", age=AGE, plan=PLAN)
    new = _schema(target="plan", age=AGE, y=ColumnSpec(type="category", categories=["a"]))
    change = input_schema_change(old, new)
    assert "new column 'y'" in (change or ""), change
    assert "'plan' removed" in (change or ""), change
