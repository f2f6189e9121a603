"""Schema: one declaration -> row model, Evidently definition, feature inputs, JSON round trip."""

from __future__ import annotations

import pydantic
import pytest

from raymlops.config import ColumnSpec
from raymlops.schema import Schema


@pytest.fixture
def schema() -> Schema:
    return Schema.from_columns(
        {
            "id": ColumnSpec(type="string"),
            "when": ColumnSpec(type="datetime", role="timestamp"),
            "age": ColumnSpec(type="int", min=0, max=120),
            "spend": ColumnSpec(type="float", min=0, nullable=True),
            "plan": ColumnSpec(type="category", categories=["basic", "pro"]),
            "region": ColumnSpec(type="category", unknown="ignore", categories=["n", "s"]),
            "autopay": ColumnSpec(type="bool"),
        },
        target="churned",
        task="classification",
    )


def test_roles_decide_features_and_inputs(schema: Schema) -> None:
    assert schema.feature_columns == ["age", "spend", "plan", "region", "autopay"]
    assert schema.input_columns == ["id", "when", "age", "spend", "plan", "region", "autopay"]
    assert schema.target_spec.type == "category", (
        "an undeclared classification target is a category"
    )


def test_row_model_enforces_types_ranges_and_categories(schema: Schema) -> None:
    Row = schema.row_model()
    ok = Row(age=30, spend=None, plan="pro", region="elsewhere", autopay=True)
    assert ok.region == "elsewhere", "unknown: ignore accepts other categories"
    bad = [
        {"age": -1, "plan": "pro", "autopay": True},
        {"age": 30, "plan": "gold", "autopay": True},
        {"age": "30", "plan": "pro", "autopay": True},
        {"age": 30, "plan": "pro", "autopay": "yes"},
        {"age": 30, "plan": "pro", "autopay": True, "unknown_col": 1},
        {"plan": "pro", "autopay": True},
        {"age": 30, "spend": float("nan"), "plan": "pro", "autopay": True},
    ]
    for row in bad:
        with pytest.raises(pydantic.ValidationError):
            Row(**row)


def test_row_model_documents_columns_for_openapi(schema: Schema) -> None:
    properties = schema.row_model().model_json_schema()["properties"]
    assert properties["age"]["minimum"] == 0
    assert properties["age"]["maximum"] == 120
    assert properties["plan"]["enum"] == ["basic", "pro"]
    assert "one of basic, pro" in properties["plan"]["description"]


def test_evidently_definition_follows_the_schema(schema: Schema) -> None:
    definition = schema.evidently_definition(prediction="prediction")
    assert definition.numerical_columns == ["age", "spend"]
    assert definition.categorical_columns == ["plan", "region", "autopay"]
    assert definition.timestamp == "when"
    assert definition.id_column == "id"


def test_json_round_trip_keeps_order_and_specs(schema: Schema) -> None:
    again = Schema.from_dict(schema.to_dict())
    assert again.names == schema.names
    assert again.columns == schema.columns
    assert again.to_dict() == schema.to_dict()


def test_evidently_definition_without_labels_names_no_task(schema: Schema) -> None:
    """Drift-only data has no prediction column: Evidently must not be told of a task."""
    definition = schema.evidently_definition(columns=["age", "plan"])
    assert definition.numerical_columns == ["age"]
    assert definition.categorical_columns == ["plan"]
    assert not definition.classification
    assert definition.id_column is None


def test_evidently_definition_uses_the_pipelines_positive_label(schema: Schema) -> None:
    definition = schema.evidently_definition(prediction="prediction", labels=["no", "yes"])
    (task,) = definition.classification
    assert task.pos_label == "yes"
