"""A registry version loaded for prediction: verified files, the same transform as training.

:func:`load_predictor` reads every file it needs through :meth:`Registry.read_verified` (sha256
checked before anything is deserialised) and returns a :class:`Predictor` that validates raw
rows against the version's own schema, applies its feature pipeline and its model. Training's
evaluation, batch inference and serving all predict through this one class.

Example:
    >>> predictor = load_predictor(registry, "champion")  # doctest: +SKIP
    >>> predictor.predict(pd.DataFrame([{"age": 42, "plan": "pro"}])).labels  # doctest: +SKIP
    ['no']
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from raymlops.contract import Columns, RequestContract, contract_for
from raymlops.data.validation import validate_frame
from raymlops.errors import DataValidationError, IntegrityError
from raymlops.features.pipeline import CompiledTransform, FeaturePipeline, float_values
from raymlops.registry.bundle import VersionBundle
from raymlops.registry.store import Registry
from raymlops.schema import Schema
from raymlops.training.models import load_model, predict_scores

__all__ = ["Prediction", "Predictor", "load_predictor", "read_reference"]


@dataclass(frozen=True)
class Prediction:
    """Labels (or values), and class probabilities for classification."""

    labels: list[Any]
    probabilities: np.ndarray | None
    scores: np.ndarray


@dataclass(frozen=True)
class Predictor:
    """A loaded model version: schema, feature pipeline and model, ready to predict."""

    name: str
    version: str
    kind: str
    schema: Schema
    pipeline: FeaturePipeline
    model: Any
    metrics: dict[str, Any]

    @property
    def n_classes(self) -> int:
        return len(self.pipeline.target.classes)

    def validate(self, raw: pd.DataFrame, *, require_target: bool = False) -> pd.DataFrame:
        """Raw rows -> typed rows of this version's schema, or DataValidationError."""
        typed, report = validate_frame(raw, self.schema, require_target=require_target)
        if not report.ok:
            raise DataValidationError(report.render(), report=report)
        return typed

    def scores(self, typed: pd.DataFrame) -> np.ndarray:
        """Probabilities (n, k) or values (n,) for typed rows."""
        features = self.pipeline.transform(typed).to_numpy(dtype=np.float64)
        return predict_scores(self.model, self.kind, self.schema.task, features, self.n_classes)

    def predict(self, typed: pd.DataFrame) -> Prediction:
        """Predict typed rows (see :meth:`validate`)."""
        return self._answer(self.scores(typed))

    # -- the online path: numpy columns, no pandas ------------------------------------------------

    @cached_property
    def contract(self) -> RequestContract:
        """This version's request contract (decoder and numpy validator of its schema)."""
        return contract_for(self.schema)

    @cached_property
    def compiled(self) -> CompiledTransform:
        return self.pipeline.compile()

    def features(self, columns: Columns) -> np.ndarray:
        """Checked columns -> the feature matrix (the same numbers as the pandas transform)."""
        return self.compiled(columns.data, columns.n)

    def typed_columns(self, typed: pd.DataFrame) -> Columns:
        """Rows typed by :meth:`validate` (a data file's) -> the columns of the online path, so
        batch inference runs the same numpy kernels as serving."""
        data: dict[str, np.ndarray] = {}
        for name in self.contract.columns:
            kind = self.schema.columns[name].type
            column = typed[name] if name in typed else pd.Series([None] * len(typed))
            if kind in ("float", "int", "bool"):
                data[name] = float_values(column, kind)
            elif kind == "datetime":
                stamps = pd.to_datetime(column, utc=True).dt.tz_localize(None)
                data[name] = stamps.to_numpy(dtype="datetime64[ns]")
            else:
                data[name] = column.astype(object).where(column.notna(), None).to_numpy()
        return Columns(len(typed), data, self.contract.digest)

    def predict_columns(self, columns: Columns) -> Prediction:
        """Predict columns decoded or checked by this version's contract (not validated again,
        unless they were checked against another schema)."""
        columns = self.contract.check(columns)
        x = self.features(columns)
        scores = predict_scores(self.model, self.kind, self.schema.task, x, self.n_classes)
        return self._answer(scores)

    def _answer(self, scores: np.ndarray) -> Prediction:
        if self.schema.task == "classification":
            labels = self.pipeline.target.decode(scores.argmax(axis=1))
            return Prediction(labels, scores, scores)
        return Prediction([float(v) for v in scores], None, scores)


def load_predictor(registry: Registry, ref: str = "champion") -> Predictor:
    """Load ``ref`` (version or alias) after checking each file against the manifest.

    Raises:
        RegistryError: no such version or alias.
        IntegrityError: a file does not match its sha256, or the model file is not loadable.
    """
    manifest = registry.manifest(ref)
    version = manifest["version"]

    def read(filename: str) -> bytes:
        return registry.read_verified(version, filename, manifest)

    summary = manifest.get("summary", {})
    kind = summary.get("model")
    model_file = summary.get("model_file")
    if not kind or not model_file:
        raise IntegrityError(f"{registry.name} {version}: manifest does not name its model file")
    schema = Schema.from_dict(json.loads(read(VersionBundle.SCHEMA)))
    pipeline = FeaturePipeline.from_json(read(VersionBundle.FEATURES))
    metrics = json.loads(read(VersionBundle.METRICS))
    try:
        model = load_model(kind, read(model_file))
    except Exception as exc:  # a verified file that still does not load is a registry problem
        raise IntegrityError(
            f"{registry.name} {version}: cannot load {model_file}: {exc}"
        ) from None
    return Predictor(registry.name, version, kind, schema, pipeline, model, metrics)


def read_reference(registry: Registry, ref: str = "champion") -> pd.DataFrame:
    """The version's reference sample (training rows kept for drift comparison)."""
    manifest = registry.manifest(ref)
    data = registry.read_verified(manifest["version"], VersionBundle.REFERENCE, manifest)
    return pd.read_parquet(io.BytesIO(data))
