"""The one declaration of the data, and everything derived from it.

``data.columns`` in the project config is the only place columns are declared. From it,
:class:`Schema` derives:

* the data validator (:func:`raymlops.data.validation.validate_frame` reads the specs here),
* the pydantic row model of the HTTP API (:meth:`Schema.row_model`, and so the OpenAPI page),
* Evidently's column definitions (:meth:`Schema.evidently_definition`),
* the feature pipeline's inputs (:attr:`Schema.feature_columns`).

Example:
    >>> schema = Schema.from_config(load_config("raymlops.yaml"))  # doctest: +SKIP
    >>> schema.feature_columns
    ['age', 'plan', 'monthly_spend']
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, create_model

from raymlops.config import ColumnSpec, ProjectConfig

if TYPE_CHECKING:
    from evidently import DataDefinition

__all__ = ["Schema", "describe_column"]

Task = Literal["classification", "regression"]


def _implicit_target(task: Task) -> ColumnSpec:
    """The spec of an undeclared target: any label for classification, a number for regression."""
    if task == "classification":
        return ColumnSpec(type="category", role="target", unknown="ignore")
    return ColumnSpec(type="float", role="target")


@dataclass(frozen=True)
class Schema:
    """Column specs (target included), the target name, the task and the extra-column rule."""

    columns: dict[str, ColumnSpec]
    target: str
    task: Task
    extra: Literal["error", "ignore"] = "error"
    _order: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def from_config(cls, config: ProjectConfig) -> Schema:
        """Build the schema from a project config (the target is added if not declared)."""
        return cls.from_columns(
            dict(config.data.columns),
            target=config.data.target,
            task=config.training.task,
            extra=config.data.extra,
        )

    @classmethod
    def from_columns(
        cls,
        columns: dict[str, ColumnSpec],
        *,
        target: str,
        task: Task,
        extra: Literal["error", "ignore"] = "error",
    ) -> Schema:
        specs = dict(columns)
        if target not in specs:
            specs[target] = _implicit_target(task)
        else:
            specs[target] = specs[target].model_copy(update={"role": "target"})
        return cls(columns=specs, target=target, task=task, extra=extra, _order=tuple(specs))

    # -- views -----------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """Every declared column, target included, in declaration order."""
        return list(self._order or self.columns)

    @property
    def feature_columns(self) -> list[str]:
        """Columns the model learns from (the feature pipeline's inputs)."""
        return [n for n in self.names if self.columns[n].effective_role == "feature"]

    @property
    def input_columns(self) -> list[str]:
        """Columns a prediction request carries: every declared column but the target."""
        return [n for n in self.names if n != self.target]

    @property
    def id_columns(self) -> list[str]:
        """Input columns with the role ``id`` (left out of the prediction log with
        ``serving.prediction_log.log_ids: false``)."""
        return [n for n in self.input_columns if self.columns[n].effective_role == "id"]

    @property
    def target_spec(self) -> ColumnSpec:
        return self.columns[self.target]

    # -- persistence -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, stored as ``schema.json`` in every registry version."""
        return {
            "target": self.target,
            "task": self.task,
            "extra": self.extra,
            "columns": {
                n: self.columns[n].model_dump(mode="json", exclude_none=True) for n in self.names
            },
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> Schema:
        columns = {n: ColumnSpec.model_validate(s) for n, s in payload["columns"].items()}
        return cls(
            columns=columns,
            target=payload["target"],
            task=payload["task"],
            extra=payload.get("extra", "error"),
            _order=tuple(columns),
        )

    # -- derived: the HTTP row model ---------------------------------------------------------------

    def row_model(self, name: str = "Row") -> type[BaseModel]:
        """A pydantic model of one prediction row, with types, ranges and categories.

        Used by the serving API, so ``/docs`` shows every column as declared here.
        """
        fields: dict[str, Any] = {}
        for column in self.input_columns:
            spec = self.columns[column]
            annotation, constraints = _field_type(spec)
            if spec.nullable or spec.effective_role in ("ignore", "id", "timestamp"):
                annotation = Optional[annotation]  # noqa: UP045 - runtime-built annotation
                default: Any = None
            else:
                default = ...
            description = spec.description or describe_column(spec)
            fields[column] = (annotation, Field(default, description=description, **constraints))
        extra = "ignore" if self.extra == "ignore" else "forbid"
        return create_model(  # type: ignore[call-overload]
            name, __config__=ConfigDict(extra=extra, allow_inf_nan=False), **fields
        )

    # -- derived: Evidently ----------------------------------------------------------------------

    def evidently_definition(
        self,
        *,
        columns: Sequence[str] | None = None,
        prediction: str | None = None,
        labels: Sequence[Any] = (),
    ) -> DataDefinition:
        """Evidently's ``DataDefinition``: column types and roles as declared here.

        Args:
            columns: the columns the data will hold (default: every feature, plus the id and
                timestamp columns).
            prediction: the prediction column, when labels come with the data: then the task
                is added (regression; binary classification with the positive label the
                feature pipeline uses, the last of the sorted ``labels``; multiclass above two).

        Example:
            >>> schema.evidently_definition(columns=["plan", "tenure_months"])  # doctest: +SKIP
        """
        from evidently import (
            BinaryClassification,
            DataDefinition,
            MulticlassClassification,
            Regression,
        )

        chosen = list(self.feature_columns if columns is None else columns)
        numerical = [c for c in chosen if self.columns[c].type in ("float", "int")]
        categorical = [c for c in chosen if self.columns[c].type in ("category", "bool")]
        datetimes = [c for c in chosen if self.columns[c].type == "datetime"]
        timestamp = id_column = None
        if columns is None:
            for column in self.input_columns:
                role = self.columns[column].effective_role
                if role == "timestamp" and timestamp is None:
                    timestamp = column
                elif role == "id" and id_column is None:
                    id_column = column
        kwargs: dict[str, Any] = {}
        if prediction is not None and self.task == "regression":
            kwargs["regression"] = [Regression(target=self.target, prediction=prediction)]
        elif prediction is not None and len(labels) > 2:
            kwargs["classification"] = [
                MulticlassClassification(target=self.target, prediction_labels=prediction)
            ]
        elif prediction is not None:
            positive = {"pos_label": list(labels)[-1]} if labels else {}
            kwargs["classification"] = [
                BinaryClassification(target=self.target, prediction_labels=prediction, **positive)
            ]
        return DataDefinition(
            id_column=id_column,
            timestamp=timestamp,
            numerical_columns=numerical,
            categorical_columns=categorical,
            datetime_columns=datetimes,
            **kwargs,
        )


def _field_type(spec: ColumnSpec) -> tuple[Any, dict[str, Any]]:
    constraints: dict[str, Any] = {}
    if spec.type in ("float", "int"):
        if spec.min is not None:
            constraints["ge"] = spec.min
        if spec.max is not None:
            constraints["le"] = spec.max
        return (float if spec.type == "float" else StrictInt), constraints
    if spec.type == "bool":
        return StrictBool, constraints
    if spec.type == "category":
        if spec.categories and spec.unknown == "error":
            return Literal[tuple(spec.categories)], constraints  # type: ignore[valid-type]
        return str, constraints
    if spec.type == "datetime":
        return dt.datetime, constraints
    return str, constraints


def describe_column(spec: ColumnSpec) -> str:
    """A column's rule in words (the OpenAPI description of its field)."""
    parts = [spec.type if spec.type != "datetime" else "datetime (ISO 8601)"]
    if spec.min is not None or spec.max is not None:
        low = "-inf" if spec.min is None else f"{spec.min:g}"
        high = "inf" if spec.max is None else f"{spec.max:g}"
        parts.append(f"in [{low}, {high}]")
    if spec.categories:
        parts.append("one of " + ", ".join(spec.categories))
        if spec.unknown == "ignore":
            parts.append("(others accepted as 'other')")
    optional = spec.nullable or spec.effective_role in ("id", "timestamp", "ignore")
    parts.append("nullable" if optional else "required")
    if spec.effective_role != "feature":
        parts.append(f"role {spec.effective_role} (not a feature; may be left out)")
    return ", ".join(parts)
